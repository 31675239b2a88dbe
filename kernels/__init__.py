"""One module per implementation of the network, with the same function names in each.

``numpy_backprop`` is the derivation written by hand, ``numba_backprop`` the same kernels
compiled (their backend is ``numba_backend``), and ``jax_autodiff`` the autodiff reference.
Each is a backend of gradcheck (see ``gradcheck.backends``) and imports its framework only when
it is itself imported.
"""
