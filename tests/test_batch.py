"""Semantics 2: batch and padding invariance; no recompilation on a second call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax
from gmmjax._fit import _fit_batch_engine, _fit_batch_jit

CONFIG = gmmjax.EMConfig(3, n_init=3, max_iter=60, trace="params")


def _datasets(rng):
    sizes = [40, 200, 120, 75]
    return [np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(4, 0.5, (n - n // 2, 2))]) for n in sizes]


def _assert_same(a: gmmjax.FitResult, b: gmmjax.FitResult, rtol=1e-9):
    assert int(a.n_iter) == int(b.n_iter)
    assert int(a.status) == int(b.status)
    assert bool(a.converged) == bool(b.converged)
    for x, y in zip(jax.tree_util.tree_leaves((a.params, a.log_likelihood, a.trace)),
                    jax.tree_util.tree_leaves((b.params, b.log_likelihood, b.trace))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-12)


def _row(res, i):
    return jax.tree_util.tree_map(lambda a: a[i], res)


def test_each_dataset_equals_its_own_fit(rng):
    Xs = _datasets(rng)
    key = jax.random.key(42)
    batch = gmmjax.fit_batch(Xs, CONFIG, key=key)
    keys = jax.random.split(key, len(Xs))
    for i, X in enumerate(Xs):
        _assert_same(_row(batch, i), gmmjax.fit(X, CONFIG, key=keys[i]))


def test_key_array_is_accepted(rng):
    Xs = _datasets(rng)
    keys = jax.random.split(jax.random.key(5), len(Xs))
    a = gmmjax.fit_batch(Xs, CONFIG, key=keys)
    b = gmmjax.fit_batch(Xs, CONFIG, key=jax.random.key(5))
    _assert_same(_row(a, 2), _row(b, 2), rtol=0)


@pytest.mark.parametrize("pad_value", [0.0, np.nan, 1e30, -np.inf])
def test_padding_values_do_not_matter(rng, pad_value):
    Xs = _datasets(rng)
    N = max(len(x) for x in Xs) + 17
    padded = np.full((len(Xs), N, 2), pad_value)
    mask = np.zeros((len(Xs), N), bool)
    for i, X in enumerate(Xs):
        padded[i, : len(X)] = X
        mask[i, : len(X)] = True
    key = jax.random.key(1)
    from_list = gmmjax.fit_batch(Xs, CONFIG, key=key)
    from_array = gmmjax.fit_batch(padded, CONFIG, key=key, mask=mask)
    assert np.all(np.asarray(from_array.status) <= gmmjax.Status.MAX_ITER)
    for i in range(len(Xs)):
        _assert_same(_row(from_array, i), _row(from_list, i))


def test_masked_points_in_the_middle_equal_zero_weights(rng):
    X = _datasets(rng)[1]
    keep = rng.random(len(X)) > 0.3
    key = jax.random.key(9)
    masked = gmmjax.fit_batch(X[None], CONFIG, key=key, mask=keep[None])
    weighted = gmmjax.fit_batch(X[None], CONFIG, key=key, weights=keep[None].astype(float))
    _assert_same(_row(masked, 0), _row(weighted, 0), rtol=0)


def test_other_datasets_do_not_change_a_result(rng):
    Xs = _datasets(rng)
    key = jax.random.split(jax.random.key(0), 4)
    alone = gmmjax.fit_batch(Xs[:2], CONFIG, key=key[:2])
    with_others = gmmjax.fit_batch(Xs, CONFIG, key=key)
    for i in range(2):
        _assert_same(_row(alone, i), _row(with_others, i))


def test_one_dimensional_batches(rng):
    Xs = rng.random((3, 50))
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(2, max_iter=20), key=jax.random.key(0))
    assert res.params.means.shape == (3, 2, 1)
    assert res.params.covariances.shape == (3, 2, 1, 1)


def test_second_call_does_not_recompile(rng):
    Xs = _datasets(rng)
    config = gmmjax.EMConfig(2, max_iter=7)
    gmmjax.fit_batch(Xs, config, key=jax.random.key(0))
    size = _fit_batch_engine._cache_size()
    other = [x + 1.0 for x in Xs]  # same shapes, new values and key
    gmmjax.fit_batch(other, config, key=jax.random.key(1))
    assert _fit_batch_engine._cache_size() == size


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunks_do_not_change_results(rng, chunk_size):
    Xs = _datasets(rng)  # 4 datasets: chunk 3 pads the batch with two empty ones
    key = jax.random.key(4)
    whole = gmmjax.fit_batch(Xs, CONFIG, key=key, chunk_size=len(Xs))
    chunked = gmmjax.fit_batch(Xs, CONFIG, key=key, chunk_size=chunk_size)
    assert chunked.status.shape == (len(Xs),)
    for i in range(len(Xs)):
        _assert_same(_row(chunked, i), _row(whole, i))


def test_default_chunks_on_cpu_are_compaction_pools_or_a_few_datasets():
    from gmmjax._fit import default_chunk_size, default_compaction

    def plan(B, N, D, config):
        chunk = default_chunk_size(B, N, D, config, 4, backend="cpu")
        lane_work = N * config.n_components * D  # as fit_batch passes it
        return chunk, default_compaction(chunk * config.n_init, config, backend="cpu", lane_work=lane_work)

    # W1-cpu: 2,000 lanes of 24 KiB: one pool of the whole batch, 1/16 of it a round.
    assert plan(200, 1000, 1, gmmjax.EMConfig(3, n_init=10)) == (200, (125, 2))
    # W3-cpu: 648 KiB a lane (moments included): 4 MiB rounds of 6 lanes, pools of at
    # most 19 datasets, here 3 chunks of 14 (2 datasets of padding, not 18).
    assert plan(40, 2000, 8, gmmjax.EMConfig(5, n_init=5)) == (14, (5, 2))
    # A huge batch is split into pools of the same size.
    chunk, compact = plan(10**6, 1000, 1, gmmjax.EMConfig(3, n_init=10, trace=None))
    assert chunk == 278 and compact == (174, 2)
    # Lanes too small for rounds of at least CPU_MIN_ROUND_WORK updates: one plain vmap.
    assert plan(1, 200, 2, gmmjax.EMConfig(3, n_init=32)) == (1, None)
    assert plan(4, 100, 2, gmmjax.EMConfig(3, n_init=8))[1] is None
    # Too few lanes for compaction: a few datasets per plain vmap (48 KiB).
    assert plan(3, 400, 2, gmmjax.EMConfig(2, trace=None)) == (3, None)
    assert plan(200, 400, 2, gmmjax.EMConfig(2, max_iter=5, trace=None)) == (5, None)
    assert plan(1, 10**7, 16, gmmjax.EMConfig(32)) == (1, None)
    assert default_chunk_size(200, 1000, 1, gmmjax.EMConfig(3, n_init=10), 4, backend="gpu") == 200
    # Parameter traces count: 1,000 iterations of K=3, D=2 snapshots for 10 restarts.
    big_trace = gmmjax.EMConfig(3, n_init=10, max_iter=1000, trace="params")
    assert default_chunk_size(10**5, 100, 2, big_trace, 4, backend="gpu") < 10**4


@pytest.mark.parametrize("config", [CONFIG, gmmjax.EMConfig(2, covariance_type="diag", n_init=2, keep_restarts=True)])
def test_compacted_lanes_equal_plain_vmap(rng, config):
    """Lane compaction (used for batches of many lanes) changes no result."""
    from gmmjax._validate import batch

    Xs = _datasets(rng) + [rng.normal(size=(60, 2)), np.full((30, 2), np.nan), np.ones((1, 2))]
    X, w = batch(Xs, None, None)
    keys = jax.random.split(jax.random.key(8), len(Xs))
    plain = _fit_batch_jit(X, w, keys, None, config=config)
    # 3 lanes at a time, 2 iterations a round: many rounds, lanes moving around.
    compact = _fit_batch_jit(X, w, keys, None, config=config, compact=(3, 2))
    # ... and the starting parameters 4 datasets at a time: 2 groups of 4, the last
    # filled up with a copy of the last dataset.
    assert len(Xs) == 7
    grouped = _fit_batch_jit(X, w, keys, None, config=config, compact=(3, 2, 4))
    assert np.asarray(plain.status).tolist()[-2:] == [gmmjax.Status.NONFINITE_INPUT, gmmjax.Status.TOO_FEW_POINTS]
    for res in (compact, grouped):
        for i in range(len(Xs)):
            _assert_same(_row(res, i), _row(plain, i))
            if config.keep_restarts:
                for a, b in zip(jax.tree_util.tree_leaves(_row(res.restarts, i)),
                                jax.tree_util.tree_leaves(_row(plain.restarts, i))):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_first_running_is_a_stable_argsort_of_the_running_lanes():
    from gmmjax._fit import _first_running

    rng = np.random.default_rng(3)
    masks = [rng.random(L) < p for L in (1, 7, 200, 2000, 5000) for p in (0.0, 0.05, 0.5, 1.0)]
    for run in masks:
        L = run.size
        for capacity in sorted({1, max(1, L // 16), L}):
            expected = np.argsort(~run, kind="stable")[:capacity]
            np.testing.assert_array_equal(np.asarray(_first_running(jnp.asarray(run), capacity)), expected)


def test_starting_parameters_are_computed_in_cache_sized_groups_on_cpu():
    from gmmjax._fit import init_group

    w1 = gmmjax.EMConfig(3, n_init=10, trace=None)
    # W1-cpu: 10 lanes of (1000 points x 3 components x 2) floats per dataset.
    assert init_group(200, 10, 1000, 1, w1, 4, backend="cpu") == (8 << 20) // (10 * 6000 * 4)
    assert init_group(200, 10, 1000, 1, w1, 4, backend="gpu") == 200
    assert init_group(10, 10, 1000, 1, w1, 4, backend="cpu") == 10  # never more than the pool
    assert init_group(200, 1, 10**7, 8, w1, 4, backend="cpu") == 1  # at least one dataset


def test_compaction_needs_many_lanes_off_cpu():
    from gmmjax._fit import default_compaction

    config = gmmjax.EMConfig(3, n_init=10)
    assert default_compaction(100_000, config, backend="cpu") == (6_250, 2)
    assert default_compaction(31, config, backend="cpu") is None
    assert default_compaction(100, config, backend="gpu") is None
    assert default_compaction(100_000, config, backend="gpu") == (6_250, 4)
    assert default_compaction(5_000, config, backend="gpu") == (313, 4)
    # Small lanes get a larger pool, so that a round keeps the device busy.
    assert default_compaction(10_000, config, backend="gpu", lane_work=400 * 2 * 2) == (2_500, 4)
    assert default_compaction(10_000, config, backend="gpu", lane_work=100) is None


@pytest.mark.parametrize("init", ["random", "kmeans++", "random_from_data"])
def test_mask_in_the_middle_equals_fit_on_the_kept_rows(rng, init):
    X = _datasets(rng)[1]
    keep = np.zeros(len(X), bool)
    keep[::3] = True
    config = gmmjax.EMConfig(3, init=init, n_init=2, max_iter=40)
    key = jax.random.key(6)
    masked = gmmjax.fit_batch(X[None], config, key=jax.random.split(key, 1), mask=keep[None])
    alone = gmmjax.fit(X[keep], config, key=jax.random.split(key, 1)[0])
    _assert_same(_row(masked, 0), alone)
