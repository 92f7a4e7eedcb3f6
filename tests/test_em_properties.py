"""Semantics 4 and invariants of EM: monotone log-likelihood, valid parameters, weights."""

import jax
import numpy as np
import pytest

import gmmjax
from conftest import blobs

TYPES = ["full", "diag", "spherical", "tied"]
INITS = ["kmeans++", "kmeans", "random", "random_from_data"]


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init", INITS)
def test_loglik_never_decreases_and_params_are_valid(rng, covariance_type, init):
    X = blobs(rng, n=(80, 60, 70), D=2, spread=2.0)
    config = gmmjax.EMConfig(4, covariance_type=covariance_type, init=init, n_init=2, tol=1e-8, max_iter=40, keep_restarts=True)
    res = gmmjax.fit(X, config, key=jax.random.key(11))
    for r in range(2):
        n = int(res.restarts.n_iter[r])
        trace = np.asarray(res.restarts.trace.log_likelihood[r])[: n + 1]
        assert n >= 3
        assert np.all(np.isfinite(trace))
        assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:])), trace
    np.testing.assert_allclose(float(np.sum(res.params.weights)), 1.0, rtol=1e-12)
    assert np.all(np.asarray(res.params.weights) >= 0)
    cov = np.asarray(res.params.covariances)
    if covariance_type in ("full", "tied"):
        mats = cov.reshape(-1, 2, 2)
        np.testing.assert_allclose(mats, np.swapaxes(mats, -1, -2), atol=1e-14)
        assert np.all(np.linalg.eigvalsh(mats) > 0)
    else:
        assert np.all(cov > 0)
    # The best restart has the highest final log-likelihood among the healthy ones.
    healthy = np.asarray(res.restarts.status) <= gmmjax.Status.MAX_ITER
    assert healthy.any()
    assert float(res.log_likelihood) == float(np.max(np.asarray(res.restarts.log_likelihood)[healthy]))


def test_integer_weights_equal_repeated_points(rng):
    X = blobs(rng, n=(40, 30), D=2)
    counts = rng.integers(0, 4, len(X))
    p0 = gmmjax.fit(X, gmmjax.EMConfig(2, max_iter=0), key=jax.random.key(0)).params
    config = gmmjax.EMConfig(2, tol=1e-10, max_iter=30)
    weighted = gmmjax.fit(X, config, weights=counts.astype(float), init_params=p0)
    repeated = gmmjax.fit(np.repeat(X, counts, axis=0), config, init_params=p0)
    assert int(weighted.n_iter) == int(repeated.n_iter)
    for a, b in zip(jax.tree_util.tree_leaves(weighted.params), jax.tree_util.tree_leaves(repeated.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(weighted.log_likelihood), float(repeated.log_likelihood), rtol=1e-10)



@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_the_scale_of_the_weights_does_not_matter(rng, covariance_type):
    """Weights c * w fit as w for any c > 0 (10 eps added to each component's mass, as
    scikit-learn, once made weights of 1e-12 a different fit with a CONVERGED status)."""
    X = blobs(rng, n=(40, 30), D=2)
    w = rng.uniform(0.5, 2.0, len(X))
    config = gmmjax.EMConfig(2, covariance_type=covariance_type)
    ref = gmmjax.fit(X, config, key=jax.random.key(0), weights=w)
    for c in (1e-30, 1e-12, 1e6, 1e30):
        res = gmmjax.fit(X, config, key=jax.random.key(0), weights=w * c)
        assert int(res.status) == int(ref.status) and int(res.n_iter) == int(ref.n_iter)
        np.testing.assert_allclose(float(res.log_likelihood), float(ref.log_likelihood), rtol=1e-10)
        for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(ref.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-12)

def test_trace_params_follow_the_iterations(rng):
    X = blobs(rng, n=(50, 50), D=1)
    res = gmmjax.fit(X, gmmjax.EMConfig(2, trace="params", max_iter=30, tol=1e-6), key=jax.random.key(0))
    n = int(res.n_iter)
    tp = res.trace.params
    assert tp.means.shape == (31, 2, 1)
    # Snapshot t has log-likelihood trace[t]; past n_iter it repeats the final params.
    for t in (0, n // 2, n):
        snap = jax.tree_util.tree_map(lambda a: a[t], tp)
        ll = float(np.mean(gmmjax.log_prob(snap, X)))
        np.testing.assert_allclose(ll, float(res.trace.log_likelihood[t]), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(tp.means[-1]), np.asarray(res.params.means))
    np.testing.assert_array_equal(np.asarray(tp.means[n]), np.asarray(res.params.means))


def test_init_params_start_exactly_there(rng):
    X = blobs(rng, n=(50, 50), D=2)
    p0 = gmmjax.GMMParams(np.array([0.5, 0.5]), np.array([[0.0, 0.0], [1.0, 1.0]]), np.stack([np.eye(2)] * 2))
    res = gmmjax.fit(X, gmmjax.EMConfig(2, max_iter=0, trace="params"), init_params=p0)
    # EM runs on centred data; the means come back shifted by the same amount.
    np.testing.assert_allclose(np.asarray(res.params.means), p0.means, rtol=0, atol=1e-14)
    want = np.mean(np.asarray(gmmjax.log_prob(p0, X)))
    np.testing.assert_allclose(float(res.log_likelihood), want, rtol=1e-12)


@pytest.mark.parametrize("init", ["kmeans++", "kmeans"])
def test_float32_far_from_origin_fits_as_well_as_centred(init):
    """Each dataset is centred before initialisation and EM: an offset of 3e4 in
    float32 used to wreck the k-means++ distances (|x|^2 - 2 x.c + |c|^2)."""
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    X = (np.repeat(centers, 100, axis=0) + 0.3 * rng.normal(size=(400, 2))).astype(np.float32)
    config = gmmjax.EMConfig(4, init=init, n_init=5)
    near = gmmjax.fit(X, config, key=jax.random.key(0))
    far = gmmjax.fit(X + np.float32(3e4), config, key=jax.random.key(0))
    assert abs(float(far.log_likelihood) - float(near.log_likelihood)) < 1e-3
