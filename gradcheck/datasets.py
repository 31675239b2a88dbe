"""The problems gradcheck verifies on: the notebook's four samples, scikit-learn's digits and a
generated sequence task, the running parity of a bit stream."""

from __future__ import annotations

import numpy as np

#: The public names, as the API reference shows them.
__all__ = [
    "digits",
    "parity",
    "seed_xor",
]


def seed_xor() -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data: ``X`` of shape ``(4, 3)`` (the third column a constant 1) and ``y``
    of shape ``(4, 1)``, the XOR of the first two columns, both float64."""
    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, y


def digits(
    images: bool = False, tokens: bool = False, sequences: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits: ``X`` of shape ``(1797, 64)`` scaled to [0, 1] — or,
    with ``images``, ``(1797, 8, 8, 1)``, each image channels-last with its rows in order; or,
    with ``sequences``, ``(1797, 8, 8)``, each image's 8 rows as 8 time steps of 8 pixels; or,
    with ``tokens``, the pixel intensities 0 to 16 themselves, as int64 ids for an Embedding —
    and one-hot ``y`` of shape ``(1797, 10)``, float64. Read from the copy that ships inside
    scikit-learn (the ``digits`` extra), so nothing is downloaded."""
    forms = {"images": images, "tokens": tokens, "sequences": sequences}
    for name, value in forms.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False; got {value!r}")
    if sum(forms.values()) > 1:
        chosen = ", ".join(f"{name}=True" for name, value in forms.items() if value)
        raise ValueError(f"digits come in one form at a time; got {chosen}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install 'gradcheck[digits]'"
        ) from error
    pixels, labels = load_digits(return_X_y=True)
    y = np.eye(10)[labels]  # (1797,) labels -> (1797, 10) one-hot rows
    if tokens:
        return pixels.astype(np.int64), y
    X = pixels / 16.0  # pixel intensities are 0..16
    if images:
        X = X.reshape(-1, 8, 8, 1)  # each row of 64 is the image's 8 rows of 8, in order
    if sequences:
        X = X.reshape(-1, 8, 8)  # the 8 rows as time steps
    return X, y


def parity(samples: int = 1024, steps: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bit streams and their running parity, a target at every step: ``X`` of shape
    ``(samples, steps, 1)``, each bit 0 or 1 drawn from ``np.random.default_rng(seed)``, and
    one-hot ``y`` of shape ``(samples, steps, 2)``: at step t, whether bits 0…t hold an odd
    number of ones. Both float64; generated, so nothing is downloaded."""
    for name, value, least in (("samples", samples, 1), ("steps", steps, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer of at least {least}; got {value!r}")
    bits = np.random.default_rng(seed).integers(0, 2, (samples, steps))
    odd = np.cumsum(bits, axis=1) % 2  # (samples, steps)
    return bits[..., None].astype(np.float64), np.eye(2)[odd]
