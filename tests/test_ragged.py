"""Length buckets for ragged lists of datasets (gmmjax._ragged, fit_batch(length_buckets=...))."""

import contextlib
import functools
import itertools

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import gmmjax
from gmmjax import _ragged
from gmmjax._types import EMConfig, Status


def test_grid_lengths_pad_by_less_than_an_eighth_and_are_few():
    n = np.arange(1, 20001)
    g = np.array([_ragged.grid_length(int(k)) for k in n])
    assert np.all(g >= n) and np.all(g % 8 == 0)
    assert np.all(g - n < np.maximum(8, n / 8))
    assert len(np.unique(g)) <= 8 * 15  # eight per doubling
    assert np.all(np.diff(g) >= 0)


def _check_partition(buckets, lengths):
    members = np.concatenate([idx for idx, _ in buckets])
    np.testing.assert_array_equal(np.sort(members), np.arange(len(lengths)))  # each dataset once
    sizes = [g for _, g in buckets]
    assert sizes == sorted(sizes) and sizes[-1] == max(lengths)
    for idx, g in buckets:
        assert lengths[idx].max() <= g


def test_plan_buckets_only_where_padding_is_large():
    config = EMConfig(n_components=3, n_init=10)
    assert _ragged.plan([950, 1000, 990, 1000], 10, config, 1, max_buckets=8) is None  # under 10% padding
    assert _ragged.plan([1000], 10, config, 1, max_buckets=8) is None
    lengths = np.exp(np.random.default_rng(0).uniform(np.log(50), np.log(5000), 1000)).astype(int)
    # One call of 1,000 short datasets: a second compilation costs more than it saves.
    assert _ragged.plan(lengths, 10, config, 1, backend="cpu") is None
    buckets = _ragged.plan(lengths, 10, config, 1, backend="cpu", max_buckets=8)
    assert len(buckets) == 8
    _check_partition(buckets, lengths)
    work = sum(idx.size * g for idx, g in buckets)
    assert work < 0.3 * lengths.size * lengths.max()  # against 1 for one padded call
    # Many datasets: buckets pay within the call itself.
    many = np.exp(np.random.default_rng(1).uniform(np.log(50), np.log(5000), 20000)).astype(int)
    auto = _ragged.plan(many, 10, config, 1, backend="cpu")
    assert auto is not None and 2 <= len(auto) <= 8
    _check_partition(auto, many)


@pytest.mark.parametrize("penalty_buckets", [None, 2, 3])
def test_plan_is_the_cheapest_partition(monkeypatch, penalty_buckets):
    """Against every partition of the grid lengths into contiguous buckets (brute force)."""
    monkeypatch.setitem(_ragged.MIN_SAVING, "cpu", 3e4)
    rng = np.random.default_rng(5)
    lengths = rng.choice([20, 40, 90, 200, 400, 900], size=60)
    config = EMConfig(n_components=2, n_init=1)
    unit = 2
    penalty = 0.0 if penalty_buckets else 3e4
    grid = np.array([min(_ragged.grid_length(n), lengths.max()) for n in lengths])
    sizes = np.unique(grid)

    def cost(cuts):
        total, lo = 0.0, 0
        for hi in list(cuts) + [len(sizes)]:
            total += np.sum((grid >= sizes[lo]) & (grid <= sizes[hi - 1])) * sizes[hi - 1] * unit + penalty
            lo = hi
        return total

    options = [c for r in range(len(sizes)) for c in itertools.combinations(range(1, len(sizes)), r)]
    if penalty_buckets:
        options = [c for c in options if len(c) + 1 <= penalty_buckets]
    best = min(cost(c) for c in options)
    buckets = _ragged.plan(lengths, 1, config, 1, backend="cpu", max_buckets=penalty_buckets)
    if buckets is None:
        got = lengths.size * lengths.max() * unit + penalty
    else:
        _check_partition(buckets, lengths)
        got = sum(idx.size * g * unit + penalty for idx, g in buckets)
    assert got == pytest.approx(best)


def _ragged_batch():
    rng = np.random.default_rng(2)
    lengths = [30, 400, 45, 1200, 60, 1, 700, 52, 90, 1500, 35]
    Xs = [rng.normal(size=(n, 2)) + 4.0 * rng.integers(0, 2, size=(n, 1)) for n in lengths]
    Xs[4][7, 1] = np.nan  # NONFINITE_INPUT
    weights = [rng.uniform(0.5, 2.0, size=n) for n in lengths]
    return Xs, weights


@pytest.mark.parametrize("init", [False, True])
def test_buckets_give_the_fits_of_one_padded_call(monkeypatch, init):
    """Statuses, iteration counts, parameters, log-likelihoods and traces of the bucketed
    fit equal the single padded call's, in the caller's order (float64)."""
    Xs, weights = _ragged_batch()
    config = EMConfig(n_components=2, n_init=3, trace="loglik")
    kw = dict(key=jax.random.key(3), weights=weights)
    warns = contextlib.nullcontext
    if init:
        base = gmmjax.fit_batch(Xs, config, length_buckets=False, **kw)
        kw = dict(weights=weights, init_params=base.params)
        # Datasets 4 and 5 were not fitted: no model to start from (said once a call).
        warns = functools.partial(pytest.warns, RuntimeWarning, match=r"2 of \d+ datasets \(first: \[4, 5\]\) have no model")
    with warns():
        one = gmmjax.fit_batch(Xs, config, length_buckets=False, **kw)
    monkeypatch.setattr(_ragged, "MAX_BUCKETS", 3)  # three compilations, not eight
    with warns():
        buckets = gmmjax.fit_batch(Xs, config, length_buckets=True, **kw)
    assert len(_ragged.plan([len(x) for x in Xs], 1 if init else 3, config, 2, max_buckets=3)) == 3
    np.testing.assert_array_equal(buckets.status, one.status)
    assert buckets.status[4] == Status.NONFINITE_INPUT and buckets.status[5] == Status.TOO_FEW_POINTS
    np.testing.assert_array_equal(buckets.n_iter, one.n_iter)
    np.testing.assert_allclose(buckets.log_likelihood, one.log_likelihood, rtol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(buckets.params)):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(buckets.trace.log_likelihood, one.trace.log_likelihood, rtol=1e-10)


def test_the_default_buckets_where_it_pays(monkeypatch):
    """With a compilation made cheap, the default (None) buckets this small batch itself:
    one bucketed fit, the fits of one padded call. Weights as one array take the one
    call (buckets read a list of weight arrays)."""
    Xs, weights = _ragged_batch()
    config = EMConfig(n_components=2, n_init=3, trace="loglik")  # the one call compiled above
    monkeypatch.setitem(_ragged.MIN_SAVING, jax.default_backend(), 3e4)
    assert len(_ragged.plan([len(x) for x in Xs], 3, config, 2, backend=jax.default_backend())) == 2
    calls = []
    fit_buckets = _ragged.fit_buckets
    monkeypatch.setattr(_ragged, "fit_buckets", lambda *a, **k: calls.append(1) or fit_buckets(*a, **k))
    one = gmmjax.fit_batch(Xs, config, key=jax.random.key(3), weights=weights, length_buckets=False)
    auto = gmmjax.fit_batch(Xs, config, key=jax.random.key(3), weights=weights)
    assert calls == [1]
    np.testing.assert_array_equal(auto.status, one.status)
    np.testing.assert_allclose(auto.params.means, one.params.means, rtol=1e-8, atol=1e-10)
    # Weights as one array: fine for datasets of one length, the one call's own
    # message for ragged ones.
    same = [x[:30] for x in Xs if len(x) >= 30]
    gmmjax.fit_batch(same, config, key=jax.random.key(0), weights=np.ones((len(same), 30)))
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(30,\)"):
        gmmjax.fit_batch(Xs, config, key=jax.random.key(0), weights=np.ones((len(Xs), 1500)))
    assert calls == [1]


def test_length_buckets_is_checked_and_leaves_arrays_alone(monkeypatch):
    Xs, _ = _ragged_batch()
    config = EMConfig(n_components=2)
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match="length_buckets"):
            gmmjax.fit_batch(Xs, config, key=jax.random.key(0), length_buckets=bad)
    bad_weights = [np.ones(len(x)) for x in Xs]
    bad_weights[-1][0] = -1.0  # in the last bucket: reported before any bucket runs
    with pytest.raises(ValueError, match="weights"):
        gmmjax.fit_batch(Xs, config, key=jax.random.key(0), weights=bad_weights, length_buckets=True)
    calls = []
    monkeypatch.setattr(_ragged, "fit_buckets", lambda *a, **k: calls.append(1))
    # A padded array, False, and the default on a small batch: one call, no buckets.
    X = np.random.default_rng(0).normal(size=(3, 50, 1))
    gmmjax.fit_batch(X, config, key=jax.random.key(0), length_buckets=True)
    gmmjax.fit_batch(Xs, config, key=jax.random.key(0), length_buckets=False)
    gmmjax.fit_batch(Xs, config, key=jax.random.key(0))
    monkeypatch.setitem(_ragged.MIN_SAVING, jax.default_backend(), 2e4)  # buckets would pay, but a bar keeps one call
    pytest.importorskip("tqdm")
    gmmjax.fit_batch(Xs, config, key=jax.random.key(0), progress=True)
    assert calls == []


def test_batch_estimator_takes_buckets_where_they_pay(monkeypatch):
    """BatchGaussianMixture on a ragged list fits in length buckets where they pay (made
    to pay here by a cheap compilation), with the fits of its one padded call; the
    statuses of the dataset with NaN and of the one-point dataset included."""
    Xs, _ = _ragged_batch()
    calls = []
    fit_buckets = _ragged.fit_buckets
    monkeypatch.setattr(_ragged, "fit_buckets", lambda *a, **k: calls.append(1) or fit_buckets(*a, **k))
    kw = dict(n_components=2, n_init=3, random_state=3)
    with pytest.warns(ConvergenceWarning):
        one = gmmjax.BatchGaussianMixture(**kw).fit(Xs)
    assert calls == []  # the default keeps this small batch in one call
    monkeypatch.setitem(_ragged.MIN_SAVING, jax.default_backend(), 3e4)
    with pytest.warns(ConvergenceWarning):
        bucketed = gmmjax.BatchGaussianMixture(**kw).fit(Xs)
    assert calls == [1]
    np.testing.assert_array_equal(bucketed.status_, one.status_)
    assert bucketed.status_[4] == Status.NONFINITE_INPUT and bucketed.status_[5] == Status.TOO_FEW_POINTS
    np.testing.assert_array_equal(bucketed.n_iter_, one.n_iter_)
    for name in ("means_", "covariances_", "weights_", "lower_bound_"):
        np.testing.assert_allclose(getattr(bucketed, name), getattr(one, name), rtol=1e-8, atol=1e-10)
    for a, b in zip(bucketed.predict(Xs), one.predict(Xs)):
        np.testing.assert_array_equal(a, b)
    # The same datasets as a padded array whose mask has holes (anything in them): the
    # valid points, in order, are the datasets above, so the fits are the same.
    rng = np.random.default_rng(1)
    N = max(len(x) for x in Xs) + 40
    Xp, mask = np.full((len(Xs), N, 2), 1e6), np.zeros((len(Xs), N), bool)
    for i, x in enumerate(Xs):
        where = np.sort(rng.choice(N, size=len(x), replace=False))
        Xp[i, where], mask[i, where] = x, True
    with pytest.warns(ConvergenceWarning):
        masked = gmmjax.BatchGaussianMixture(**kw).fit(Xp, mask=mask)
    assert calls == [1, 1]
    np.testing.assert_array_equal(masked.status_, one.status_)
    np.testing.assert_allclose(masked.means_, one.means_, rtol=1e-8, atol=1e-10)


def test_a_list_of_datasets_inside_jit_equals_the_eager_fit(rng):
    """Inside jit the list is padded in the trace (no length buckets, no blocks);
    once a TracerArrayConversionError from the host-side readers."""
    Xs = [rng.normal(size=(n, 2)) for n in (30, 55, 41)]
    w = [rng.uniform(0.5, 2.0, len(x)) for x in Xs]
    config = EMConfig(2, n_init=2)
    eager = gmmjax.fit_batch(Xs, config, key=jax.random.key(3), weights=w)
    traced = jax.jit(lambda xs, ws: gmmjax.fit_batch(xs, config, key=jax.random.key(3), weights=ws))(Xs, w)
    np.testing.assert_array_equal(np.asarray(traced.status), np.asarray(eager.status))
    np.testing.assert_allclose(np.asarray(traced.params.means), np.asarray(eager.params.means), rtol=1e-9, atol=1e-12)
