"""fit_batch in blocks (gmmjax/_blocks.py): the same results as one call, one compilation,
a progress bar, errors at the boundary.

Most tests share one data shape (7 datasets of up to 60 points in 2-D, blocks of 3) so
that the two compilations (one call, one block) are shared between them.
"""

import sys

import jax
import numpy as np
import pytest

import gmmjax
from gmmjax import _blocks
from gmmjax._fit import _fit_batch_engine

CONFIG = gmmjax.EMConfig(2, n_init=2, max_iter=30, trace="params", keep_restarts=True)
B, N, D, BLOCK = 7, 60, 2, 3  # 7 = 3 + 3 + 1: the last block is padded


def _datasets(rng, sizes=(40, 60, 25, 50, 33, 60, 12)):
    return [np.concatenate([rng.normal(0, 1, (n // 2, D)), rng.normal(4, 0.5, (n - n // 2, D))]) for n in sizes]


def _padded(Xs):
    X = np.full((len(Xs), N, D), np.nan)  # padding values never matter
    mask = np.zeros((len(Xs), N), bool)
    for i, x in enumerate(Xs):
        X[i, : len(x)] = x
        mask[i, : len(x)] = True
    return X, mask


def _assert_same(a: gmmjax.FitResult, b: gmmjax.FitResult, rows=None):
    """Every leaf (parameters, statuses, traces, restarts) equal, for the given rows."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) and jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        assert isinstance(y, jax.Array) and x.shape == y.shape and x.dtype == y.dtype
        x, y = np.asarray(x), np.asarray(y)
        if rows is not None:
            x, y = x[rows], y[rows]
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-12)
        else:
            np.testing.assert_array_equal(y, x)


def test_array_with_mask_and_weights_equals_one_call(rng):
    X, mask = _padded(_datasets(rng))
    weights = rng.random((B, N)) * 2
    key = jax.random.key(3)
    whole = gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, weights=weights)
    blocked = gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, weights=weights, block_size=BLOCK)
    _assert_same(whole, blocked)
    assert np.all(np.asarray(blocked.status) <= gmmjax.Status.MAX_ITER)


def test_ragged_list_with_weights_equals_one_call(rng):
    Xs = _datasets(rng)
    weights = [rng.random(len(x)) for x in Xs]
    key = jax.random.key(4)
    whole = gmmjax.fit_batch(Xs, CONFIG, key=key, weights=weights)
    blocked = gmmjax.fit_batch(Xs, CONFIG, key=key, weights=weights, block_size=BLOCK)
    _assert_same(whole, blocked)


@pytest.mark.parametrize("kind", ["jax", "memmap"])
def test_device_array_and_memmap_input(rng, tmp_path, kind):
    X, mask = _padded(_datasets(rng))
    X = np.where(mask[..., None], X, 0.0)
    key = jax.random.key(5)
    whole = gmmjax.fit_batch(X, CONFIG, key=key, mask=mask)
    if kind == "jax":
        X = jax.numpy.asarray(X)
    else:
        mm = np.memmap(tmp_path / "X.dat", dtype=X.dtype, mode="w+", shape=X.shape)
        mm[:] = X
        mm.flush()
        X = np.memmap(tmp_path / "X.dat", dtype=X.dtype, mode="r", shape=X.shape)
    _assert_same(whole, gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, block_size=BLOCK))


def test_bad_datasets_get_their_status_and_move_nothing(rng):
    clean = _datasets(rng)
    bad = list(clean)
    bad[4] = clean[4].copy()
    bad[4][3, 1] = np.nan  # NONFINITE_INPUT, in the middle block
    bad[5] = clean[5][:1]  # one point for two components: TOO_FEW_POINTS
    keys = jax.random.split(jax.random.key(6), B)
    res = gmmjax.fit_batch(bad, CONFIG, key=keys, block_size=BLOCK)
    ref = gmmjax.fit_batch(clean, CONFIG, key=keys, block_size=BLOCK)
    status = np.asarray(res.status)
    assert status[4] == gmmjax.Status.NONFINITE_INPUT and status[5] == gmmjax.Status.TOO_FEW_POINTS
    assert np.all(np.isfinite(np.asarray(res.params.means)))
    _assert_same(ref, res, rows=[0, 1, 2, 3, 6])
    _assert_same(gmmjax.fit_batch(bad, CONFIG, key=keys), res)


def test_one_compilation_for_all_blocks(rng):
    config = gmmjax.EMConfig(2, max_iter=5, trace=None)
    X = rng.normal(size=(5, 23, 1))  # a shape no other test uses
    before = _fit_batch_engine._cache_size()
    gmmjax.fit_batch(X, config, key=jax.random.key(0), block_size=2)  # blocks of 2, 2, 1 (+1 padding)
    assert _fit_batch_engine._cache_size() == before + 1
    gmmjax.fit_batch(X + 1.0, config, key=jax.random.key(1), block_size=2)
    assert _fit_batch_engine._cache_size() == before + 1


def test_memory_budget_chooses_blocks(rng, monkeypatch):
    X, mask = _padded(_datasets(rng))
    key = jax.random.key(7)
    args = dict(key=key, mask=mask, weights=None, init_params=None, chunk_size=None, block_size=None, progress=False)
    assert _blocks.plan(X, CONFIG, **args) is None  # a small batch fits: one call
    monkeypatch.setattr(_blocks, "SMALL_CALL_BYTES", 0)  # ask for the free memory whatever the size
    assert _blocks.plan(X, CONFIG, **args) is None
    per = _blocks.dataset_bytes(N, D, CONFIG, X.dtype.itemsize, CONFIG.n_init)
    budget = BLOCK * (2 * (per.input + per.result) + per.engine)  # room for 3 datasets
    budget += B * per.result if jax.default_backend() == "cpu" else 0  # the gathered results
    monkeypatch.setattr(_blocks, "memory_budget", lambda device=None: budget)
    plan = _blocks.plan(X, CONFIG, **args)
    assert (plan.block, plan.chunk, plan.n_blocks) == (BLOCK, BLOCK, 3)
    _assert_same(gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, block_size=BLOCK), gmmjax.fit_batch(X, CONFIG, key=key, mask=mask))


def test_a_small_call_never_asks_for_the_free_memory(rng, monkeypatch):
    X, mask = _padded(_datasets(rng))
    args = dict(key=jax.random.key(7), mask=mask, weights=None, init_params=None, chunk_size=None, block_size=None, progress=False)
    monkeypatch.setattr(_blocks, "memory_budget", lambda device=None: pytest.fail("free memory read"))
    assert _blocks.plan(X, CONFIG, **args) is None
    per = _blocks.dataset_bytes(N, D, CONFIG, X.dtype.itemsize, CONFIG.n_init)
    # ... but a call over SMALL_CALL_BYTES does: here the estimate of 7 datasets is.
    monkeypatch.setattr(_blocks, "SMALL_CALL_BYTES", B * (2 * (per.input + per.result)) - 1)
    with pytest.raises(pytest.fail.Exception, match="free memory read"):
        _blocks.plan(X, CONFIG, **args)


def test_block_size_for_a_budget():
    per = _blocks.DatasetBytes(input=100, result=10, engine=1000)
    # 8 chunks of 8 datasets: 8 * 1000 working set + 64 * 2 * 110 stored.
    assert _blocks.block_size_for(8 * 1000 + 64 * 220, 8, per) == (64, 8)
    assert _blocks.block_size_for(8 * 1000 + 70 * 220, 8, per) == (64, 8)  # whole chunks only
    assert _blocks.block_size_for(3 * 1220, 8, per) == (3, 3)  # not one chunk fits: smaller chunks
    assert _blocks.block_size_for(10, 8, per) == (1, 1)
    # Two parts at once: two chunks' working sets. Where they do not fit, the chunks
    # shrink (a budget below the parts' chunks once gave blocks of 1 dataset).
    assert _blocks.block_size_for(2 * 8 * 1000 + 64 * 220, 8, per, jobs=2) == (64, 8)
    assert _blocks.block_size_for(10_000, 16, per, jobs=2) == (8, 8)  # 8 * 1220 <= 10,000 (was 1)
    assert _blocks.memory_budget() > 0


def test_progress_bar_counts_datasets(rng, capsys):
    X, mask = _padded(_datasets(rng))
    gmmjax.fit_batch(X, CONFIG, key=jax.random.key(8), mask=mask, block_size=BLOCK, progress=True)
    err = capsys.readouterr().err  # tqdm redraws at most every 0.1 s: the first and last states
    assert "fit_batch:" in err and "0/7" in err and "7/7" in err and "dataset/s" in err


def test_progress_without_tqdm_says_what_to_install(rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r'pip install "gmmjax\[progress\]"'):
        gmmjax.fit_batch(rng.normal(size=(2, 10)), CONFIG, key=jax.random.key(0), progress=True)


@pytest.mark.parametrize("block_size", [0, -3, 2.5, True, "3", np.float64(4.0)])
def test_bad_block_size_raises(block_size):
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        gmmjax.fit_batch(np.zeros((2, 10)), CONFIG, key=jax.random.key(0), block_size=block_size)


@pytest.mark.parametrize("progress", ["yes", 1, None])
def test_bad_progress_raises(progress):
    with pytest.raises(ValueError, match="progress must be True or False"):
        gmmjax.fit_batch(np.zeros((2, 10)), CONFIG, key=jax.random.key(0), progress=progress)


def test_bad_weights_raise_before_any_block(rng, monkeypatch):
    X, mask = _padded(_datasets(rng))
    weights = np.ones((B, N))
    weights[6, 0] = -1.0  # in the last block

    def no_fit(*a, **k):
        raise AssertionError("a block ran before the weights were checked")

    monkeypatch.setattr(_blocks._threads, "fit", no_fit)
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        gmmjax.fit_batch(X, CONFIG, key=jax.random.key(0), mask=mask, weights=weights, block_size=BLOCK)
