"""fit_batch as concurrent calls on a CPU (gmmjax/_threads.py): how many parts, the same
results as one call, the parts really at once, errors at the boundary.

The data are 7 small 2-D datasets; most tests run them as one call or as 2 parts of 4
(the second part overlaps the first), so that a few compilations serve every test.
"""

import dataclasses
import threading

import jax
import numpy as np
import pytest
import sklearn.base

import gmmjax
from gmmjax import _covariance, _threads

CONFIG = gmmjax.EMConfig(2, n_init=2, max_iter=30, keep_restarts=True)
B, N, D = 7, 60, 2


@pytest.fixture
def data(rng):
    X = np.concatenate([rng.normal(0, 1, (B, N // 2, D)), rng.normal(4, 0.5, (B, N - N // 2, D))], axis=1)
    mask = np.ones((B, N), bool)
    mask[np.arange(B), rng.integers(N // 2, N, B)] = False
    return X, mask


def _assert_close(a: gmmjax.FitResult, b: gmmjax.FitResult):
    """Every leaf equal up to the rounding of another vmap width; statuses and counts exactly."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert isinstance(y, jax.Array) and x.shape == y.shape and x.dtype == y.dtype
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-10)
        else:
            np.testing.assert_array_equal(y, x)


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(_threads, "cpu_cores", lambda: 4)


def test_default_parts_follow_cores_and_work(four_cores):
    big = gmmjax.EMConfig(3, n_init=10)
    # W1-cpu's shape: 200 x 10 restarts x 1,000 points x 3 components: 6,000,000 updates.
    assert _threads.default_jobs(200, 1000, 1, big, 10, backend="cpu") == 4
    # W2-cpu's: 200 x 400 points x 2 x 2 = 320,000: one part pays no thread.
    assert _threads.default_jobs(200, 400, 2, gmmjax.EMConfig(2), 1, backend="cpu") == 1
    # 2 parts' worth of work.
    assert _threads.default_jobs(400, 400, 2, gmmjax.EMConfig(2), 1, backend="cpu") == 2
    # Never more parts than datasets.
    assert _threads.default_jobs(3, 100_000, 1, big, 10, backend="cpu") == 3


def test_explicit_parts_and_where_there_are_none(four_cores):
    cfg = gmmjax.EMConfig(2)
    assert _threads.default_jobs(7, 10, 2, cfg, 1, n_jobs=-1, backend="cpu") == 4
    assert _threads.default_jobs(7, 10, 2, cfg, 1, n_jobs=3, backend="cpu") == 3
    assert _threads.default_jobs(2, 10, 2, cfg, 1, n_jobs=3, backend="cpu") == 2
    assert _threads.default_jobs(7, 10, 2, cfg, 1, n_jobs=1, backend="cpu") == 1
    assert _threads.default_jobs(7, 10, 2, cfg, 1, n_jobs=3, backend="gpu") == 1
    many = _covariance.WRITTEN_OUT_MAX_D + 1  # LAPACK in the program: two at once could hang
    assert _threads.default_jobs(7, 10, many, cfg, 1, n_jobs=3, backend="cpu") == 1
    assert _threads.default_jobs(7, 10, many - 1, cfg, 1, n_jobs=3, backend="cpu") == 3


@pytest.mark.parametrize("n_jobs", [0, -2, 1.5, "2", True])
def test_bad_n_jobs_raises(n_jobs, data):
    with pytest.raises(ValueError, match="n_jobs must be None, -1"):
        gmmjax.fit_batch(data[0], CONFIG, key=jax.random.key(0), n_jobs=n_jobs)


def test_parts_equal_one_call_for_one_key_and_arrays_of_keys(data):
    """7 datasets as 2 parts of 4 (rows 0-3 and 3-6): every leaf (restarts, traces,
    statuses) as from one call, whether the keys come as one key, as the typed array
    split(key, B) or as the same keys' raw uint32 words."""
    X, mask = data
    weights = np.random.default_rng(1).random((B, N)) * 2
    key = jax.random.key(5)
    one = gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, weights=weights, n_jobs=1)
    assert np.all(np.asarray(one.status) <= gmmjax.Status.MAX_ITER)
    _assert_close(one, gmmjax.fit_batch(X, CONFIG, key=key, mask=mask, weights=weights, n_jobs=2))
    keys = jax.random.split(key, B)
    _assert_close(one, gmmjax.fit_batch(X, CONFIG, key=keys, mask=mask, weights=weights, n_jobs=2))
    raw = jax.random.key_data(keys)
    _assert_close(one, gmmjax.fit_batch(X, CONFIG, key=raw, mask=mask, weights=weights, n_jobs=2))


def test_parts_of_blocks_with_init_params_equal_one_call(data):
    """Blocks of 4 datasets, each in 2 parts of 2, from given starting parameters."""
    X, mask = data
    cfg = dataclasses.replace(CONFIG, n_init=1)
    means = np.stack([X[:, 0], X[:, -1]], axis=1)  # (B, 2, D): one point of each cluster
    start = gmmjax.GMMParams(np.full((B, 2), 0.5), means, np.broadcast_to(np.eye(D), (B, 2, D, D)))
    one = gmmjax.fit_batch(X, cfg, mask=mask, init_params=start, n_jobs=1)
    _assert_close(one, gmmjax.fit_batch(X, cfg, mask=mask, init_params=start, n_jobs=2, block_size=4))


CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="a batch runs in parts on a CPU only")


@CPU_ONLY
def test_parts_run_at_once(data, monkeypatch):
    """Each part waits at a barrier for the other: run one after the other, the first
    would wait in vain (BrokenBarrierError after the timeout)."""
    barrier = threading.Barrier(2, timeout=120)
    threads = set()
    engine = _threads._fit_batch_jit

    def meeting(*args, **kwargs):
        threads.add(threading.get_ident())
        barrier.wait()
        return engine(*args, **kwargs)

    monkeypatch.setattr(_threads, "_fit_batch_jit", meeting)
    X, mask = data
    res = gmmjax.fit_batch(X, CONFIG, key=jax.random.key(0), mask=mask, n_jobs=2)
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert res.status.shape == (B,)


def test_moments_path_with_as_many_parts_as_datasets(rng):
    """Diagonal covariances in 8-D take the moments path (with its refit of risky fits
    on the centred path, which a part must do with its own rows of the keys); 3
    datasets in 3 parts of 1, every iteration's parameters kept."""
    X = np.concatenate([rng.normal(0, 1, (3, 40, 8)), rng.normal(3, 0.5, (3, 40, 8))], axis=1)
    cfg = gmmjax.EMConfig(2, covariance_type="diag", n_init=2, max_iter=20, trace="params")
    key = jax.random.key(9)
    _assert_close(gmmjax.fit_batch(X, cfg, key=key, n_jobs=1), gmmjax.fit_batch(X, cfg, key=key, n_jobs=3))


def test_parts_run_under_the_callers_context_settings():
    """jax.enable_x64 and the like act on their own thread: the parts' threads must take
    them over (the tests' process has x64 on globally)."""
    def call(x):
        return np.full(x.shape[0], jax.config.jax_enable_x64)

    with jax.enable_x64(False):
        inside = _threads.gather(_threads.submit(call, 5, 2, (np.zeros(5),)))
    outside = _threads.gather(_threads.submit(call, 5, 2, (np.zeros(5),)))
    assert inside.shape == (5,) and not np.asarray(inside).any() and np.asarray(outside).all()


def test_cores_within_a_container_quota(monkeypatch):
    monkeypatch.setattr(_threads, "_cgroup_cpus", lambda: 1)
    assert _threads.cpu_cores() == 1
    monkeypatch.setattr(_threads, "_cgroup_cpus", lambda: None)
    assert _threads.cpu_cores() >= 1


def test_inside_jit_one_call(data, monkeypatch):
    """Traced, fit_batch cannot wait for threads: it is one call whatever n_jobs says."""
    monkeypatch.setattr(_threads, "_executor", lambda: pytest.fail("threads started inside jit"))
    X, mask = data
    jitted = jax.jit(lambda x: gmmjax.fit_batch(x, CONFIG, key=jax.random.key(0), mask=mask, n_jobs=2).log_likelihood)
    one = gmmjax.fit_batch(X, CONFIG, key=jax.random.key(0), mask=mask, n_jobs=1)
    np.testing.assert_allclose(jitted(X), one.log_likelihood, rtol=1e-9)


def test_an_error_in_a_part_reaches_the_caller(data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("part failed")

    monkeypatch.setattr(_threads, "_fit_batch_jit", broken)
    with pytest.raises(RuntimeError, match="part failed"):
        gmmjax.fit_batch(data[0], CONFIG, key=jax.random.key(0), n_jobs=2)


@CPU_ONLY
def test_batch_estimator_passes_n_jobs_and_keeps_its_results(data, monkeypatch, tmp_path):
    """BatchGaussianMixture(n_jobs=k) asks fit_batch for k parts (a spy on the parts'
    driver), fits as one call does, keeps n_jobs through clone and save/load, and
    leaves it out of a dataset's single GaussianMixture."""
    X, mask = data
    seen = []
    real = _threads.fit
    monkeypatch.setattr(_threads, "fit", lambda *a, **k: seen.append(k["jobs"]) or real(*a, **k))
    kw = dict(n_components=2, n_init=2, max_iter=30, random_state=0)
    one = gmmjax.BatchGaussianMixture(**kw, n_jobs=1).fit(X, mask=mask)
    two = gmmjax.BatchGaussianMixture(**kw, n_jobs=2).fit(X, mask=mask)
    assert seen == [1, 2]
    np.testing.assert_allclose(two.means_, one.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(two.status_, one.status_)
    assert sklearn.base.clone(two).n_jobs == 2
    path = tmp_path / "bgm.npz"
    two.save(path)
    assert gmmjax.BatchGaussianMixture.load(path).n_jobs == 2
    assert "n_jobs" not in two.get_estimator(3).get_params()
    with pytest.raises(ValueError, match="n_jobs"):
        gmmjax.BatchGaussianMixture(n_jobs=0).fit(X, mask=mask)
