"""gradcheck: prove hand-written backpropagation right.

The same network runs through several implementations — hand-written NumPy kernels, JAX autodiff
and any backend you bring — from the same weights; :func:`verify` shows, number by number, that
their predictions, gradients and training runs agree, or exactly where they part.
"""

from gradcheck import datasets
from gradcheck.backends import Backend, Trajectory, available_backends, get_backend
from gradcheck.network import Network
from gradcheck.verify import Check, Report, verify

__all__ = [
    "Backend",
    "Check",
    "Network",
    "Report",
    "Trajectory",
    "available_backends",
    "datasets",
    "get_backend",
    "verify",
]
__version__ = "0.1.0"
