"""Semantics 3: one bad dataset never poisons a batch; every status has a test."""

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmmjax
from gmmjax import Status

TYPES = ["full", "diag", "spherical", "tied"]
N = 60


def _good(rng, n=N):
    return np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(5, 1, (n - n // 2, 2))])


def _all_finite(res):
    return all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(res.params))


def _row(res, i):
    return jax.tree_util.tree_map(lambda a: a[i], res)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_bad_datasets_get_their_status_and_others_do_not_move(rng, covariance_type):
    config = gmmjax.EMConfig(3, covariance_type=covariance_type, n_init=2, max_iter=50)
    good = _good(rng)
    with_nan = good.copy()
    with_nan[7, 1] = np.nan
    with_inf = good.copy()
    with_inf[3, 0] = np.inf
    constant = np.full((N, 2), 3.25)
    bad = [with_nan, with_inf, good[:2], np.zeros((0, 2)), constant]
    keys = jax.random.split(jax.random.key(0), 1 + len(bad))

    res = gmmjax.fit_batch([good] + bad, config, key=keys)
    status = [Status(int(s)) for s in res.status]
    assert status[0] in (Status.CONVERGED, Status.MAX_ITER)
    assert status[1:] == [Status.NONFINITE_INPUT, Status.NONFINITE_INPUT, Status.TOO_FEW_POINTS,
                          Status.TOO_FEW_POINTS, Status.DEGENERATE]
    assert _all_finite(res)
    ll = np.asarray(res.log_likelihood)
    assert np.isfinite(ll[[0, 5]]).all() and np.all(ll[1:5] == -np.inf)
    assert not np.isnan(np.asarray(res.trace.log_likelihood)).any()

    # Same batch layout (same N, same position), bad neighbours replaced: bitwise equal.
    clean = gmmjax.fit_batch([good] + [good] * len(bad), config, key=keys)
    for x, y in zip(jax.tree_util.tree_leaves(_row(res, 0)), jax.tree_util.tree_leaves(_row(clean, 0))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_constant_data_gives_reg_covar_and_degenerate():
    X = np.full((40, 1), -2.0)
    res = gmmjax.fit(X, gmmjax.EMConfig(2, reg_covar=1e-4), key=jax.random.key(0))
    assert int(res.status) == Status.DEGENERATE
    np.testing.assert_allclose(np.asarray(res.params.covariances).ravel(), 1e-4, rtol=1e-6)
    # Every point sits in the first component; the other is empty (weight ~ 10 eps / N).
    np.testing.assert_allclose(np.asarray(res.params.means)[0], -2.0)
    np.testing.assert_allclose(np.asarray(res.params.weights), [1.0, 0.0], atol=1e-12)
    assert np.isfinite(float(res.log_likelihood))


def test_constant_data_far_out_is_degenerate_not_a_failure():
    """Copies of 1e30 in float32: a plain mean is an ulp off (7.6e22), whose square
    overflowed the diag and spherical M-step (NUMERICAL_FAILURE, LL -inf, where full
    and tied gave DEGENERATE). Centred exactly, they agree."""
    X = np.full((200, 2), 1e30, np.float32)  # the shape and configs of the test above: no new compilation
    for ct in ("diag", "spherical"):
        res = gmmjax.fit(X, gmmjax.EMConfig(2, covariance_type=ct), key=jax.random.key(0))
        assert int(res.status) == Status.DEGENERATE, ct
        assert np.isfinite(float(res.log_likelihood)) and np.allclose(np.asarray(res.params.means)[0], 1e30)


def test_collapsed_component_is_degenerate(rng):
    # 30 copies of one point beside a Gaussian cloud: one component sits on the copies.
    X = np.concatenate([rng.normal(size=(100, 2)), np.tile([[8.0, 8.0]], (30, 1))])
    res = gmmjax.fit(X, gmmjax.EMConfig(2, n_init=3), key=jax.random.key(0))
    assert int(res.status) == Status.DEGENERATE
    assert _all_finite(res)



@pytest.mark.parametrize("covariance_type, dtype", [("diag", np.float32), ("spherical", np.float32), ("diag", np.float64)])
def test_component_on_one_point_without_reg_covar_is_degenerate(rng, covariance_type, dtype):
    """With reg_covar=0 a component on one point keeps a variance of rounding alone
    (~1e-13 in float32), which once passed as CONVERGED; a narrow but real component
    (spread 0.01 at 1000, beside a cloud at 0) stays CONVERGED."""
    X = rng.normal(size=(100, 2)).astype(dtype)
    config = gmmjax.EMConfig(2, covariance_type=covariance_type, reg_covar=0.0)
    with jax.enable_x64(dtype == np.float64):
        assert int(gmmjax.fit(X[:2], config, key=jax.random.key(0)).status) == Status.DEGENERATE
        one_point = np.concatenate([X, np.repeat(X[:1] + 5, 100, axis=0)])  # 200 points, as below: one compilation
        # (a variance of exactly 0 on the way fails the E-step instead: NUMERICAL_FAILURE)
        assert int(gmmjax.fit(one_point, config, key=jax.random.key(0)).status) in (
            Status.DEGENERATE, Status.NUMERICAL_FAILURE)
        narrow = np.concatenate([X, (X * 0.01 + 1000).astype(dtype)])
        assert int(gmmjax.fit(narrow, config, key=jax.random.key(0)).status) == Status.CONVERGED
        # Near float32's resolution (83 distinct values at 1000) and the default reg_covar:
        # reg_covar alone is the floor there, not reg_covar plus the rounding term.
        narrower = np.concatenate([X, (rng.normal(size=(100, 2)) * 0.0013 + 1000).astype(dtype)])
        default = dataclasses.replace(config, reg_covar=1e-6)
        assert int(gmmjax.fit(narrower, default, key=jax.random.key(0)).status) == Status.CONVERGED

@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_features_in_different_units_are_not_degenerate(covariance_type):
    """Two healthy clusters, feature scales 1 and 1e5, float32: every fit was DEGENERATE
    (a variance compared with 16 eps times another feature's; the 2x2 eigenvalues'
    cancellation; a variance compared with another feature's mean). Found by a reviewer."""
    rng = np.random.default_rng(0)
    Z = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 4])
    X = (Z * np.array([1.0, 1e5])).astype(np.float32)
    res = gmmjax.fit(X, gmmjax.EMConfig(2, covariance_type=covariance_type, n_init=2), key=jax.random.key(0))
    assert gmmjax.Status(int(res.status)) == gmmjax.Status.CONVERGED
    cov = np.asarray(res.params.covariances).reshape(-1, 2, 2) if covariance_type != "diag" else np.asarray(res.params.covariances)
    variances = np.diagonal(cov, axis1=-2, axis2=-1) if covariance_type != "diag" else cov
    np.testing.assert_allclose(variances / np.array([1.0, 1e10]), 1.0, rtol=0.2)


def test_numerical_failure_keeps_last_finite_params():
    # reg_covar = 0 on constant data: the first covariance is singular.
    X = np.full((20, 2), 1.0)
    res = gmmjax.fit(X, gmmjax.EMConfig(2, reg_covar=0.0), key=jax.random.key(0))
    assert int(res.status) == Status.NUMERICAL_FAILURE
    assert _all_finite(res)
    assert not np.isnan(float(res.log_likelihood))
    assert not np.isnan(np.asarray(res.trace.log_likelihood)).any()


def test_a_failed_fits_parameter_trace_is_finite():
    """float32 data at 1e20: the fit fails at its start, and the returned params are the
    finite placeholders; the trace's snapshots held inf and NaN (the animation plots
    them). Found by a reviewer."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 2)) * 1e20).astype(np.float32)
    X[:30] += 4e20
    config = gmmjax.EMConfig(2, n_init=2, trace="params", keep_restarts=True)
    res = gmmjax.fit(X, config, key=jax.random.key(0))
    assert gmmjax.Status(int(res.status)) == gmmjax.Status.NUMERICAL_FAILURE
    for r in (res, jax.tree_util.tree_map(lambda a: a[0], res.restarts), jax.tree_util.tree_map(lambda a: a[1], res.restarts)):
        for snap, final in zip(r.trace.params, r.params):
            assert np.all(np.isfinite(np.asarray(snap)))
            np.testing.assert_array_equal(np.asarray(snap)[int(r.n_iter)], np.asarray(final))


def test_weights_zero_points_do_not_count_as_valid(rng):
    X = _good(rng)
    w = np.zeros(N)
    w[:2] = 1.0
    res = gmmjax.fit(X, gmmjax.EMConfig(3), key=jax.random.key(0), weights=w)
    assert int(res.status) == Status.TOO_FEW_POINTS


def test_healthy_fit_under_debug_nans(rng):
    X = _good(rng)
    with jax.debug_nans(True):
        for ct in TYPES:
            res = gmmjax.fit_batch([X, X[:20]], gmmjax.EMConfig(3, covariance_type=ct, trace="params"), key=jax.random.key(0))
            jax.block_until_ready(res)
    assert np.all(np.asarray(res.status) <= Status.MAX_ITER)


finite_or_bad = st.sampled_from([0.0, 1.0, -3.5, 1e6, -1e12, np.nan, np.inf, -np.inf])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(finite_or_bad, min_size=1, max_size=6),
    positions=st.lists(st.integers(0, N - 1), min_size=1, max_size=6),
    length=st.integers(0, N),
    constant=st.booleans(),
)
def test_property_bad_neighbour_never_moves_good_dataset(rng, values, positions, length, constant):
    config = gmmjax.EMConfig(2, n_init=2, max_iter=30)
    good = _good(np.random.default_rng(0))
    bad = np.full((N, 2), 2.0) if constant else np.random.default_rng(1).normal(size=(N, 2))
    for v, p in zip(values, positions):
        bad[p % N, p % 2] = v
    mask = np.ones((2, N), bool)
    mask[1, length:] = False
    keys = jax.random.split(jax.random.key(3), 2)
    res = gmmjax.fit_batch(np.stack([good, bad]), config, key=keys, mask=mask)
    ref = gmmjax.fit_batch(np.stack([good, good]), config, key=keys)
    for x, y in zip(jax.tree_util.tree_leaves(_row(res, 0)), jax.tree_util.tree_leaves(_row(ref, 0))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert _all_finite(res)
    s = Status(int(res.status[1]))
    valid = bad[:length]
    if not np.isfinite(valid).all():
        assert s == Status.NONFINITE_INPUT
    elif length < 2:
        assert s == Status.TOO_FEW_POINTS
    else:
        assert s in set(Status) - {Status.NONFINITE_INPUT, Status.TOO_FEW_POINTS}
        assert np.isfinite(float(res.log_likelihood[1]))


def test_healthy_restart_beats_a_collapsed_one_with_higher_likelihood():
    # 25 points of N(0, 1) with K = 3: some restarts put a component on one point,
    # which inflates the likelihood; a healthy restart is kept whenever one exists.
    Xs = np.random.default_rng(0).normal(size=(40, 25))
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(3, n_init=4, keep_restarts=True), key=jax.random.key(0))
    st, ll = np.asarray(res.restarts.status), np.asarray(res.restarts.log_likelihood)
    healthy = st <= Status.MAX_ITER
    mixed = [i for i in range(40) if healthy[i].any() and ll[i][~healthy[i]].max(initial=-np.inf) > ll[i][healthy[i]].max()]
    assert len(mixed) >= 3  # the situation really arises
    for i in mixed:
        assert int(res.status[i]) <= Status.MAX_ITER
        assert float(res.log_likelihood[i]) == ll[i][healthy[i]].max()
    # Where every restart collapsed, a collapsed one is kept (and says so).
    for i in np.flatnonzero(~healthy.any(axis=1)):
        assert int(res.status[i]) == Status.DEGENERATE


def test_best_restart_keeps_the_first_of_restarts_tied_within_rounding():
    """Restarts within 8 eps of the best count as tied (often the same fit with its
    components swapped): the first is kept, so the order of the returned components no
    longer follows rounding (a batch's padded length). Statuses still come first."""
    from gmmjax._fit import best_restart

    ok = np.zeros(3, np.int32)
    for dtype in (np.float32, np.float64):
        ll = np.array([-3.5, -3.5, -4.0], dtype)
        ll[1] = np.nextafter(ll[0], 0)  # an ulp higher
        assert int(best_restart(ok, ll)) == 0
        ll[1] = -3.4  # clearly higher
        assert int(best_restart(ok, ll)) == 1
    ll = np.array([-3.5, -1.0, -np.inf])
    assert int(best_restart(np.array([0, Status.DEGENERATE, 0]), ll)) == 0  # healthy before collapsed
    assert int(best_restart(np.array([3, 3, 3]), np.full(3, -np.inf))) == 0
