import numpy as np

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
