"""The moments path (`gmmjax._covariance.moments`): same EM, and the centred path
wherever it could lose precision."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax import _covariance, _fit
from gmmjax._em import e_step, m_step
from conftest import blobs

TYPES = ["full", "diag", "spherical", "tied"]


def _precisions(cov, covariance_type):
    return np.linalg.inv(cov) if covariance_type in ("full", "tied") else 1.0 / cov


@pytest.mark.parametrize("covariance_type", TYPES)
def test_moment_formulas_equal_centred_ones(covariance_type):
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(300, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0]))
    w = jnp.asarray(rng.uniform(0.5, 2.0, 300))
    resp = jnp.asarray(rng.dirichlet(np.ones(3), size=300).T)  # (K, N)
    active = jnp.ones(3, bool)
    XX = _covariance.moments(covariance_type, X)
    centred = m_step(X, w, resp, covariance_type, 1e-6, active)
    moment = m_step(X, w, resp, covariance_type, 1e-6, active, XX)
    np.testing.assert_allclose(moment.covariances, centred.covariances, rtol=1e-12, atol=1e-14)
    ll_c, lr_c = e_step(X, w, centred, covariance_type)
    ll_m, lr_m = e_step(X, w, centred, covariance_type, XX)
    np.testing.assert_allclose(ll_m, ll_c, rtol=1e-13)
    np.testing.assert_allclose(lr_m, lr_c, atol=1e-11)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_moments_path_matches_sklearn_from_same_start(covariance_type):
    """With 8 features every covariance type runs on the moments path."""
    X = blobs(np.random.default_rng(3), n=(150, 100, 120), D=8, spread=2.0)
    assert _covariance.uses_moments(covariance_type, X.shape[1])
    K, tol, reg = 3, 1e-6, 1e-5
    config = gmmjax.EMConfig(K, covariance_type=covariance_type, init="random_from_data", tol=tol, max_iter=0, reg_covar=reg)
    p0 = gmmjax.fit(X, config, key=jax.random.key(3)).params
    sk = GaussianMixture(
        K, covariance_type=covariance_type, tol=tol, reg_covar=reg, max_iter=500,
        weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
        precisions_init=_precisions(np.asarray(p0.covariances), covariance_type),
    ).fit(X)
    res = gmmjax.fit(X, dataclasses.replace(config, max_iter=500), init_params=p0)
    assert sk.n_iter_ > 2 and int(res.n_iter) == sk.n_iter_
    for got, want in ((res.params.means, sk.means_), (res.params.covariances, sk.covariances_)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(float(res.log_likelihood), sk.score(X), rtol=1e-10)


def test_amplification_measures_distance_in_component_widths():
    D = 4
    unit = jnp.eye(D)[None]
    at_centre = _covariance.moments_amplification("full", jnp.zeros((1, D)), unit)
    far = _covariance.moments_amplification("full", jnp.full((1, D), 30.0), unit)
    narrow_far = _covariance.moments_amplification("full", jnp.full((1, D), 30.0), 1e-4 * unit)
    assert float(at_centre) == pytest.approx(1.0)
    assert float(far) == pytest.approx(1 + D * 30.0**2)
    assert float(narrow_far) == pytest.approx(1 + D * (30 / 1e-2) ** 2, rel=1e-5)
    for ct, cov in (("diag", jnp.ones((1, D))), ("spherical", jnp.ones((1,)))):
        assert float(_covariance.moments_amplification(ct, jnp.full((1, D), 30.0), cov)) == pytest.approx(1 + D * 30.0**2)


def test_amplification_sees_narrow_directions_of_correlated_features():
    """Two features with correlation 0.9999 and a component at (15, 15): along the
    correlation it is only ~15 widths from the centre, but the raw moments' rounding
    reaches the narrow direction, where Sigma^-1 is ~1e4 larger. The measure relative
    to the centred path's own worst case gave ~256 (a float32 fit lost 3 nats a point
    with 9 such features); |mu|^T |Sigma^-1| |mu| gives ~9e6."""
    cov = jnp.array([[[1.0, 0.9999], [0.9999, 1.0]]])
    amp = float(_covariance.moments_amplification("full", jnp.full((1, 2), 15.0), cov))
    lam = np.linalg.inv(np.asarray(cov[0]))
    assert amp == pytest.approx(1 + 15.0**2 * np.abs(lam).sum(), rel=1e-4)
    assert amp * np.finfo(np.float32).eps > _covariance.moments_max_error(np.float32)


def _spike_data(rng, far):
    """float32, 8 features: a wide cluster and a narrow one `far` of its widths away."""
    wide = rng.normal(size=(300, 8))
    narrow = 3.0 + 1e-3 * rng.normal(size=(100, 8)) if far else 3.0 + 0.5 * rng.normal(size=(100, 8))
    return np.concatenate([wide, narrow]).astype(np.float32)


def _centred_fit(X, config, key):
    X, w = jnp.asarray(X), jnp.ones(X.shape[0], X.dtype)
    res, risky = _fit._fit_jit(X, w, key, None, config=config, moments=False)
    assert not bool(risky)
    return res


def test_a_fit_that_could_lose_precision_is_redone_on_the_centred_path():
    rng = np.random.default_rng(0)
    X = _spike_data(rng, far=True)
    config = gmmjax.EMConfig(2, n_init=2, max_iter=30)
    key = jax.random.key(0)
    _, risky = _fit._fit_jit(jnp.asarray(X), jnp.ones(400, np.float32), key, None, config=config, moments=True)
    assert bool(risky)  # the narrow cluster sits ~3000 of its widths from the centre
    got = gmmjax.fit(X, config, key=key)
    want = _centred_fit(X, config, key)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_float64_fits_keep_the_centred_paths_numbers():
    """Two clusters of width 1e-3, 600 from the centre, in float64: eps * amplification
    4e-5, under float32's bound, and the moments path's covariances were 2.7e-4 off the
    centred path's (scikit-learn's, for full covariances). float64's bound is ~1e-10:
    such a fit is redone."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(200, 8)) * 1e-3 + 600, rng.normal(size=(200, 8)) * 1e-3 - 600])
    config = gmmjax.EMConfig(2, tol=1e-10)
    key = jax.random.key(0)
    _, risky = _fit._fit_jit(jnp.asarray(X), jnp.ones(400), key, None, config=config, moments=True)
    assert bool(risky)
    got = gmmjax.fit(X, config, key=key)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(_centred_fit(X, config, key))):
        np.testing.assert_array_equal(a, b)


def test_correlated_features_far_from_the_centre_are_redone():
    """9 features with correlation 0.9997, clusters at +-15, float32: the moments path's
    fit lost up to 3 nats a point, reported CONVERGED (found by a reviewer)."""
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(400, 1)) + np.sqrt(3e-4) * rng.normal(size=(400, 9))
    X = np.concatenate([Z[:200] + 15, Z[200:] - 15]).astype(np.float32)
    config = gmmjax.EMConfig(2, n_init=2, trace=None)
    key = jax.random.key(0)
    got = gmmjax.fit(X, config, key=key)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(_centred_fit(X, config, key))):
        np.testing.assert_array_equal(a, b)


def test_a_safe_float32_fit_stays_on_the_moments_path_and_agrees_with_float64():
    rng = np.random.default_rng(1)
    X = _spike_data(rng, far=False)
    config = gmmjax.EMConfig(2, max_iter=10, tol=0.0)  # no convergence test to round
    key = jax.random.key(0)
    _, risky = _fit._fit_jit(jnp.asarray(X), jnp.ones(400, np.float32), key, None, config=config, moments=True)
    assert not bool(risky)
    p0 = gmmjax.fit(X.astype(np.float64), dataclasses.replace(config, max_iter=0), key=key).params
    got = gmmjax.fit(X, config, init_params=jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), p0))
    want = gmmjax.fit(X.astype(np.float64), config, init_params=p0)
    assert int(got.n_iter) == int(want.n_iter)
    np.testing.assert_allclose(got.params.covariances, want.params.covariances, rtol=1e-3, atol=1e-5)


def test_batch_redoes_only_the_risky_datasets():
    rng = np.random.default_rng(2)
    Xs = np.stack([_spike_data(rng, far=f) for f in (False, True, False, False, True)])
    config = gmmjax.EMConfig(2, max_iter=30)
    keys = jax.random.split(jax.random.key(5), 5)
    got = gmmjax.fit_batch(Xs, config, key=keys)
    for i, far in enumerate((False, True, False, False, True)):
        one = gmmjax.fit(Xs[i], config, key=keys[i])  # its own fit: moments, or redone
        mine = jax.tree_util.tree_map(lambda a: a[i], got)
        if far:  # the centred fit, up to the rounding of a batched program against a single one
            for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(_centred_fit(Xs[i], config, keys[i]))):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mine.params.means, one.params.means, rtol=1e-5, atol=1e-6)
        assert int(mine.n_iter) == int(one.n_iter)


def test_one_narrow_off_centre_feature_is_enough_to_be_risky():
    """The amplification is the worst feature's, not an average over 64 features."""
    D = 64
    means = jnp.zeros((1, D)).at[0, 0].set(2.0)
    var = jnp.ones((1, D)).at[0, 0].set(0.02**2)
    amp = float(_covariance.moments_amplification("diag", means, var))
    assert amp == pytest.approx(1 + (2.0 / 0.02) ** 2, rel=1e-5)
    full = float(_covariance.moments_amplification("full", means, jax.vmap(jnp.diag)(var)))
    assert full == pytest.approx(amp, rel=1e-5)


@pytest.mark.parametrize("covariance_type, D", [("diag", 2), ("full", 8)])
def test_a_fit_that_fails_on_the_moments_path_is_redone(covariance_type, D):
    """Raw moments overflow float32 before centred sums do: two clusters at +-7e17."""
    rng = np.random.default_rng(0)
    scale = 7e17
    X = np.concatenate([rng.normal(size=(1000, D)) * 0.1 * scale + s for s in (scale, -scale)]).astype(np.float32)
    var = (0.1 * scale) ** 2
    cov = np.full((2, D), var) if covariance_type == "diag" else np.broadcast_to(np.eye(D) * var, (2, D, D))
    p0 = gmmjax.GMMParams(
        np.array([0.5, 0.5], np.float32), np.array([[scale] * D, [-scale] * D], np.float32), np.asarray(cov, np.float32)
    )
    config = gmmjax.EMConfig(2, covariance_type=covariance_type, max_iter=50)
    w = jnp.ones(2000, np.float32)
    key = jax.random.key(0)  # unused with init_params, as in fit
    on_moments, risky = _fit._fit_jit(jnp.asarray(X), w, key, p0, config=config, moments=True)
    assert int(on_moments.status) == gmmjax.Status.NUMERICAL_FAILURE and bool(risky)
    got = gmmjax.fit(X, config, init_params=p0)
    want, _ = _fit._fit_jit(jnp.asarray(X), w, key, p0, config=config, moments=False)
    assert int(got.status) == int(want.status) == gmmjax.Status.CONVERGED
    np.testing.assert_array_equal(got.params.means, want.params.means)


def test_fit_and_fit_batch_work_inside_jit_and_vmap_on_the_moments_path():
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    config = gmmjax.EMConfig(2, covariance_type="diag", max_iter=20)
    assert _covariance.uses_moments("diag", 3)
    key = jax.random.key(0)
    eager = np.asarray(gmmjax.fit(X, config, key=key).params.means)
    jitted = jax.jit(lambda x: gmmjax.fit(x, config, key=key).params.means)(X)
    mapped = jax.vmap(lambda x: gmmjax.fit(x, config, key=key).params.means)(np.stack([X, X]))
    batch = jax.jit(lambda x: gmmjax.fit_batch(x, config, key=jax.random.split(key, 2)).params.means)(np.stack([X, X]))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    np.testing.assert_allclose(mapped[1], eager, rtol=1e-5)
    np.testing.assert_allclose(batch[0], gmmjax.fit(X, config, key=jax.random.split(key, 2)[0]).params.means, rtol=1e-5)


def test_moments_width_is_the_width_of_the_moments():
    """The memory estimates (`gmmjax._fit.moments_floats`) read moments_width."""
    for covariance_type in TYPES:
        for D in (1, 2, 5, 16):
            XX = _covariance.moments(covariance_type, jnp.ones((3, D)))
            assert XX.shape == (3, _covariance.moments_width(covariance_type, D))
