import numpy as np
import pytest

from gradcheck import datasets


def test_seed_xor_is_the_notebooks_data():
    X, y = datasets.seed_xor()
    assert X.dtype == y.dtype == np.float64
    assert X.tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
    assert y.ravel().tolist() == [0, 1, 1, 0]
    # y is the XOR of the first two inputs; the third column is the constant 1.
    assert np.array_equal(y.ravel(), np.logical_xor(X[:, 0], X[:, 1]))


def test_digits_is_scaled_and_one_hot():
    X, y = datasets.digits()
    assert X.shape == (1797, 64)
    assert y.shape == (1797, 10)
    assert X.min() == 0.0
    assert X.max() == 1.0
    assert np.array_equal(y.sum(axis=1), np.ones(1797))
    assert set(np.unique(y)) == {0.0, 1.0}
    # every class is present, roughly 180 of each
    assert y.sum(axis=0).min() > 170


def test_digits_as_images_are_scikit_learns_images_channels_last():
    from sklearn.datasets import load_digits

    X, y = datasets.digits(images=True)
    assert X.shape == (1797, 8, 8, 1)
    np.testing.assert_array_equal(X[..., 0], load_digits().images / 16.0)  # row i, column j
    flat, flat_y = datasets.digits()
    np.testing.assert_array_equal(X[:, 2, 5, 0], flat[:, 8 * 2 + 5])
    np.testing.assert_array_equal(y, flat_y)


def test_digits_images_must_be_a_flag():
    with pytest.raises(ValueError, match="images must be True or False; got 'yes'"):
        datasets.digits(images="yes")
