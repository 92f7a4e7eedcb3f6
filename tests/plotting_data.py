"""Data, fits and fixtures shared by the plotting tests (test_animation, test_plot).

One definition, so that in a pytest run both modules fit the same data with the same
configs and share the compiles. Import the fixtures into a test module by name.
"""

import jax
import numpy as np
import pytest

import gmmjax

#: tol=0 runs exactly MAX_ITER iterations: a known number of frames.
MAX_ITER = 6


def by_gid(artists, gid):
    found = [a for a in artists if a.get_gid() == gid]
    assert len(found) == 1, (gid, len(found))
    return found[0]


def data_1d(n=120):
    rng = np.random.default_rng(5)
    return np.concatenate([rng.normal(-2.0, 0.6, n // 2), rng.normal(1.5, 1.0, n - n // 2)])


def data_2d(D=2, n=(90, 70, 60)):
    rng = np.random.default_rng(7)
    centers = rng.normal(scale=3.0, size=(len(n), D))
    A = rng.normal(size=(D, D)) * 0.5 + np.eye(D)  # correlated features: tilted ellipses
    return np.concatenate([c + rng.normal(size=(m, D)) @ A for c, m in zip(centers, n)])


def fit(X, K=3, n_init=1, **kw):
    config = gmmjax.EMConfig(K, n_init=n_init, max_iter=MAX_ITER, tol=0.0, trace="params", init="random", **kw)
    return gmmjax.fit(X, config, key=jax.random.key(3))


def batch_data():
    """Five 1-D datasets: three good ones, one with a NaN, one with too few points."""
    rng = np.random.default_rng(11)
    Xs = [np.concatenate([rng.normal(0, 1, n // 2), rng.normal(4, 1, n - n // 2)]) for n in (40, 60, 50, 30)]
    Xs[3][5] = np.nan
    return Xs + [np.array([1.0])]


BATCH_CONFIG = gmmjax.EMConfig(2, max_iter=MAX_ITER, tol=0.0, trace="params")


# One compiled fit per data shape for the whole module (compiling dominates test time).
@pytest.fixture(scope="module")
def fit_1d():
    X = data_1d()
    return X, fit(X, n_init=3, keep_restarts=True)


@pytest.fixture(scope="module")
def fit_2d():
    X = data_2d()
    return X, fit(X)


@pytest.fixture(scope="module")
def fit_batch():
    Xs = batch_data()
    return Xs, gmmjax.fit_batch(Xs, BATCH_CONFIG, key=jax.random.key(0))
