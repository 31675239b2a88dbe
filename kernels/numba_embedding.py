"""The Embedding's gradient of ``numpy_backprop``, compiled with Numba: a scatter-add.

    ∂C/∂E[v] = Σ_{n,t: ids[n,t] = v} ∂C/∂y[n,t]        (V, D)             embedding_grad

The forward pass, each id's row of E, is NumPy's ``take`` into a preallocated buffer.
"""

from __future__ import annotations

from numba import njit

jit = njit(cache=True, nogil=True, error_model="numpy")


@jit
def embedding_grad(ids, grad, dE):
    """dE (V, D) = each position's gradient (N·T, D) added into its id's row, ids (N·T,)."""
    dE[:] = dE.dtype.type(0)
    for i in range(ids.size):
        row = ids[i]
        for d in range(dE.shape[1]):
            dE[row, d] += grad[i, d]
