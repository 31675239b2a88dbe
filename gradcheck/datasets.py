"""The problems gradcheck verifies on: the notebook's four samples and scikit-learn's digits."""

from __future__ import annotations

import numpy as np

#: The public names, as the API reference shows them.
__all__ = [
    "digits",
    "seed_xor",
]


def seed_xor() -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data: ``X`` of shape ``(4, 3)`` (the third column a constant 1) and ``y``
    of shape ``(4, 1)``, the XOR of the first two columns, both float64."""
    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, y


def digits(images: bool = False, tokens: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits: ``X`` of shape ``(1797, 64)`` scaled to [0, 1] — or,
    with ``images``, ``(1797, 8, 8, 1)``, each image channels-last with its rows in order; or,
    with ``tokens``, the pixel intensities 0 to 16 themselves, as int64 ids for an Embedding —
    and one-hot ``y`` of shape ``(1797, 10)``, float64. Read from the copy that ships inside
    scikit-learn (the ``digits`` extra), so nothing is downloaded."""
    for name, value in (("images", images), ("tokens", tokens)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False; got {value!r}")
    if images and tokens:
        raise ValueError("digits are images or tokens, not both; got images=True, tokens=True")
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
    return X, y
