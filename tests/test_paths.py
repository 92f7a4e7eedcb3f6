"""The engine's alternative formulations compute the same numbers as the generic ones:
the written-out paths for a few features, the precision Cholesky factor, and the
log-sum-exp over the rows of a (K, N) array."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from gmmjax import _covariance
from gmmjax._em import logsumexp_rows


def _spd(rng, K, D):
    A = rng.normal(size=(K, D, D))
    return A @ np.swapaxes(A, 1, 2) + 0.3 * np.eye(D)


@pytest.mark.parametrize("D", [1, 2, 3, 4])
def test_small_precision_cholesky_equals_lapack(D):
    cov = _spd(np.random.default_rng(D), 5, D)
    got = np.asarray(_covariance._small_precision_cholesky(jnp.asarray(cov)))
    want = np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert np.all(np.tril(got[:, :, :], -1) == 0)  # upper triangular, as scikit-learn's


@pytest.mark.parametrize("D", [5, 8, 16, 32])
def test_written_out_precision_cholesky_equals_lapack(D):
    cov = _spd(np.random.default_rng(D), 6, D).reshape(2, 3, D, D)
    got = np.asarray(_covariance._precision_cholesky(jnp.asarray(cov)))
    want = np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), -1, -2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all(np.tril(got, -1) == 0)
    bad = np.eye(D)
    bad[0, 1] = bad[1, 0] = 2.0  # indefinite
    assert np.isnan(np.asarray(_covariance._precision_cholesky(jnp.asarray(bad)))).any()


def test_small_precision_cholesky_of_an_indefinite_matrix_is_nan():
    got = np.asarray(_covariance._small_precision_cholesky(jnp.asarray([[1.0, 2.0], [2.0, 1.0]])))
    assert np.isnan(got).any()


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("D", [2, 3, 4])
def test_small_d_path_equals_the_generic_one(covariance_type, D):
    rng = np.random.default_rng(10 * D)
    K, N = 3, 60
    X = jnp.asarray(rng.normal(size=(N, D)))
    means = jnp.asarray(rng.normal(size=(K, D)))
    cov = jnp.asarray(_spd(rng, K, D) if covariance_type == "full" else _spd(rng, 1, D)[0])
    wr = jnp.asarray(rng.uniform(size=(K, N)))
    nk = jnp.sum(wr, axis=1)
    assert _covariance._small_d(X, covariance_type)
    generic = _covariance.COVARIANCE[covariance_type]
    np.testing.assert_allclose(
        _covariance.log_gaussian(covariance_type, X, means, cov), generic.log_gaussian(X, means, cov), rtol=1e-12
    )
    np.testing.assert_allclose(
        _covariance.estimate(covariance_type, X, wr, nk, means, 1e-6),
        generic.estimate(X, wr, nk, means, 1e-6),
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("K", [1, 3, 70])  # 70: past UNROLL_K, jax's own logsumexp
def test_logsumexp_rows_equals_jax(K):
    a = np.random.default_rng(K).normal(size=(K, 9)) * 40
    a[:, 0] = -np.inf  # every component impossible
    a[0, 1] = np.inf
    a[-1, 2] = np.nan
    if K > 1:
        a[1, 3] = -np.inf  # one component impossible
    got = np.asarray(logsumexp_rows(jnp.asarray(a)))
    want = np.asarray(logsumexp(jnp.asarray(a), axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_predict_proba_keeps_scikit_learns_layout():
    """The engine works on (K, N) arrays; the public densities stay (N, K)."""
    import gmmjax

    X = np.random.default_rng(0).normal(size=(40, 2))
    res = gmmjax.fit(X, gmmjax.EMConfig(3, max_iter=5), key=jax.random.key(0))
    proba = np.asarray(gmmjax.predict_proba(res.params, X))
    assert proba.shape == (40, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("D", [1, 3, 8, 9])
def test_kmeans_distances_equal_the_definition(D):
    """k-means++'s squared distances: feature by feature (D <= 8) or expanded (D > 8)."""
    from gmmjax import _init

    assert (D <= _init.ELEMENTWISE_MAX_D) == (D != 9)
    rng = np.random.default_rng(D)
    X, C = rng.normal(size=(50, D)), rng.normal(size=(4, D))
    got = np.asarray(_init._sq_dist(jnp.asarray(X), jnp.asarray(C)))
    want = np.sum((X[None, :, :] - C[:, None, :]) ** 2, axis=-1)  # (C, N)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(got >= 0)


@pytest.mark.parametrize("K", [1, 3, 70])
def test_nearest_center_is_argmin_over_active_centers(K):
    from gmmjax import _init

    rng = np.random.default_rng(K)
    X, C = rng.normal(size=(200, 2)), rng.normal(size=(K, 2))
    X[:5] = C[0]  # ties between equal centers go to the first, as np.argmin
    X[5, 0] = np.nan  # a NaN distance to every center: argmin's first NaN
    C = np.concatenate([C, C[:1]])
    active = np.arange(K + 1) != K // 2 if K > 1 else np.ones(K + 1, bool)
    got = np.asarray(_init._nearest(jnp.asarray(X), jnp.asarray(C), jnp.asarray(active)))
    d = np.sum((X[None] - C[:, None]) ** 2, axis=-1)
    d[~active] = np.inf
    np.testing.assert_array_equal(got, np.argmin(d, axis=0))


@pytest.mark.parametrize("N", [1, 31, 32, 33, 1000, 1025, 40_000, 1_000_000])
def test_blocked_running_sums_equal_cumsum(N):
    from gmmjax import _init

    a = np.random.default_rng(N).random(N)
    np.testing.assert_allclose(np.asarray(_init._cumsum(jnp.asarray(a))), np.cumsum(a), rtol=1e-13)
    # Blocks of blocks: working memory stays linear in N (one (N/32, N/32) matrix of
    # ones took 3.9 GB at N = 1e6). On a CPU: a GPU's figure includes cuBLAS workspace.
    if jax.default_backend() == "cpu":
        temp = jax.jit(_init._cumsum).lower(jnp.asarray(a)).compile().memory_analysis().temp_size_in_bytes
        assert temp <= 64 * N + 65536


def test_point_sums_as_products_equal_sums_under_vmap():
    a = np.random.default_rng(0).normal(size=(7, 3, 101))
    got = jax.vmap(_covariance.point_sum)(jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(got), a.sum(axis=-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [1, 3, 70])
def test_responsibilities_from_shared_exponentials_equal_exp_of_log_responsibilities(K):
    from gmmjax import GMMParams
    from gmmjax._em import e_step, e_step_resp

    rng = np.random.default_rng(K)
    X = jnp.asarray(rng.normal(size=(60, 2)) * 3)
    weights = np.full(K, 1.0 / K)
    if K > 1:
        weights[-1], weights[0] = 0.0, weights[0] + weights[-1]  # an empty slot: log weight -inf
    params = GMMParams(jnp.asarray(weights), jnp.asarray(rng.normal(size=(K, 2))), jnp.ones((K, 2)))
    w = jnp.asarray((rng.random(60) > 0.2).astype(float))
    ll, log_resp = e_step(X, w, params, "diag")
    ll2, resp = e_step_resp(X, w, params, "diag")
    np.testing.assert_allclose(float(ll2), float(ll), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(resp), np.exp(np.asarray(log_resp)), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.asarray(resp).sum(axis=0), 1.0, rtol=1e-12)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_written_out_eigenvalues_equal_lapack(D):
    """`eigvalsh` (written out for D <= 2) against numpy's LAPACK, float64: random SPD
    matrices over 12 orders of magnitude, nearly singular ones, and a NaN."""
    rng = np.random.default_rng(D)
    A = rng.normal(size=(200, D, D))
    C = A @ np.swapaxes(A, 1, 2) * 10.0 ** rng.uniform(-6, 6, (200, 1, 1))
    u = rng.normal(size=(50, D, 1))
    C = np.concatenate([C, u @ np.swapaxes(u, 1, 2) + 1e-9 * np.eye(D)])  # rank one + a little
    got = np.asarray(_covariance.eigvalsh(jnp.asarray(C)))
    nan = np.asarray(_covariance.eigvalsh(jnp.full((D, D), jnp.nan)))
    want = np.linalg.eigvalsh(C)
    scale = np.abs(want).max(axis=-1, keepdims=True)
    assert got.dtype == np.float64
    assert np.all(np.abs(got - want) <= 1e-14 * scale)  # as LAPACK's own error bound
    assert np.all(np.isnan(nan))
    # float32 far from 1: the squares of 1e20 overflow, those of 1e-20 flush to zero.
    for s in (1e20, 1e-20):
        got32 = np.asarray(_covariance.eigvalsh(jnp.asarray(C[:20] / scale[:20, None] * s, jnp.float32)))
        want32 = np.linalg.eigvalsh(C[:20] / scale[:20, None]) * s
        assert np.all(np.isfinite(got32))
        assert np.all(np.abs(got32 - want32) <= 1e-5 * s)
    # Features in different units: each eigenvalue to its own relative precision (the
    # smaller one once came out as mid - r, ~0 instead of 1 for variances 1 and 1e8).
    if D == 2:
        V = np.array([[1.0, 0.3], [0.3, 1.0]]) * np.sqrt(np.outer([1.0, 1e8], [1.0, 1e8]))
        for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
            np.testing.assert_allclose(np.asarray(_covariance.eigvalsh(jnp.asarray(V, dtype))), np.linalg.eigvalsh(V), rtol=rtol)


@pytest.mark.parametrize("D", [3, 8, 17, 32])
def test_jacobi_eigenvalues_equal_lapack(D):
    """The collapse check's eigenvalues on a CPU (Jacobi rotations, no LAPACK; an odd D
    gets a padding row): random SPD, diagonal, repeated, nearly singular, indefinite
    matrices in float64 and float32, and NaN in, NaN out."""
    rng = np.random.default_rng(D)
    A = rng.normal(size=(12, D, D))
    S = A @ np.swapaxes(A, 1, 2) / D
    S[0] = np.diag(np.arange(D, 0, -1.0))
    S[1] = 3.0 * np.eye(D)
    S[2] = np.ones((D, D)) + 1e-6 * np.eye(D)  # seven-fold 1e-6 beside D: equal diagonals
    S[3] = A[3] + A[3].T
    S[4] = np.diag(10.0 ** rng.uniform(-6, 6, D))
    S[5] = S[5] * 1e-8
    S[6, 0, 1] = S[6, 1, 0] = np.nan
    ok = np.isfinite(S).all(axis=(1, 2))
    for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-5)):
        x = S.astype(dtype)
        got = np.asarray(jax.jit(_covariance.eigvalsh)(jnp.asarray(x)))
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(got, np.asarray(_covariance._jacobi_eigvalsh(jnp.asarray(x))))
        want = np.linalg.eigvalsh(x[ok].astype(np.float64))
        scale = np.max(np.abs(want), axis=1, keepdims=True)
        assert np.max(np.abs(got[ok] - want) / scale) < tol
        assert np.all(np.diff(got[ok], axis=1) >= 0)  # ascending, as eigvalsh
        assert np.isnan(got[~ok]).all()
