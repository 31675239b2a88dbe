"""gradcheck: prove hand-written backpropagation right.

The same network runs through several implementations — hand-written NumPy kernels, JAX autodiff
and any backend you bring — from the same weights; `verify` shows, number by number, that
their predictions, gradients and training runs agree, or exactly where they part.
"""

from gradcheck import adapters, datasets
from gradcheck.backends import (
    Backend,
    TimeSteps,
    Trace,
    Trajectory,
    available_backends,
    get_backend,
)
from gradcheck.check_backward import BackwardCheck, InputCheck, check_backward, check_jvp
from gradcheck.network import Network
from gradcheck.report import Check, Report
from gradcheck.rules import check_rule
from gradcheck.verify import verify

__all__ = [
    "Backend",
    "BackwardCheck",
    "Check",
    "InputCheck",
    "Network",
    "Report",
    "TimeSteps",
    "Trace",
    "Trajectory",
    "adapters",
    "available_backends",
    "check_backward",
    "check_jvp",
    "check_rule",
    "datasets",
    "get_backend",
    "verify",
]
__version__ = "0.1.0"
