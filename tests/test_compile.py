"""gmmjax._compile: the programs stored beside JAX's persistent compilation cache give
the same fits, are loaded by a new process, and are never reused for another setting."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import gmmjax
from gmmjax import _compile, _covariance
from gmmjax._fit import _fit_batch_engine

pytest.importorskip("flatbuffers")

CONFIG = gmmjax.EMConfig(2, n_init=2, max_iter=30)


def _data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-2, 1, (5, 40)), rng.normal(2, 0.5, (5, 40))], axis=1)


def _leaves(res):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(res)]


@pytest.fixture
def cache_dir(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    _fit_batch_engine._programs.clear()
    try:
        yield tmp_path
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        _fit_batch_engine._programs.clear()


def _programs(path):
    return sorted((path / _compile.PROGRAMS_DIR).glob("*.jaxexport"))


def test_a_stored_program_gives_the_same_fit_and_a_new_process_loads_it(cache_dir):
    jax.config.update("jax_compilation_cache_dir", None)
    plain = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1)))
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))

    stored = _compile.stats["stored"]
    res = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1)))
    assert _compile.stats["stored"] == stored + 1
    assert len(_programs(cache_dir)) == 1
    for a, b in zip(res, plain):
        np.testing.assert_array_equal(a, b)

    script = textwrap.dedent(f"""
        import json, sys, jax, numpy as np, gmmjax
        from gmmjax import _compile
        jax.config.update("jax_compilation_cache_dir", {str(cache_dir)!r})
        jax.config.update("jax_enable_x64", True)  # as in this process (conftest)
        rng = np.random.default_rng(0)
        X = np.concatenate([rng.normal(-2, 1, (5, 40)), rng.normal(2, 0.5, (5, 40))], axis=1)
        res = gmmjax.fit_batch(X, gmmjax.EMConfig(2, n_init=2, max_iter=30), key=jax.random.key(1))
        np.savez({str(cache_dir / "child.npz")!r}, *[np.asarray(a) for a in jax.tree_util.tree_leaves(res)])
        print(json.dumps(_compile.stats))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats == {"stored": 0, "loaded": 1}
    child = np.load(cache_dir / "child.npz")
    for i, a in enumerate(plain):
        np.testing.assert_array_equal(child[f"arr_{i}"], a)


def test_parts_of_a_batch_store_one_program_and_load_it(cache_dir):
    """Parts run at once from threads (gmmjax._threads): one program stored, not one per
    part, and read back (with its key rows) once the process forgets it."""
    jax.config.update("jax_compilation_cache_dir", None)
    plain = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1), n_jobs=2))
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    stored, loaded = _compile.stats["stored"], _compile.stats["loaded"]
    first = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1), n_jobs=2))
    assert _compile.stats["stored"] == stored + 1 and len(_programs(cache_dir)) == 1
    _fit_batch_engine._programs.clear()
    again = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1), n_jobs=2))
    assert _compile.stats["loaded"] == loaded + 1
    for a, b, c in zip(first, again, plain):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


def test_another_setting_shape_or_config_is_another_program(cache_dir):
    gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1))
    first = _programs(cache_dir)
    gmmjax.fit_batch(_data()[:4], CONFIG, key=jax.random.key(1))
    gmmjax.fit_batch(_data(), dataclasses.replace(CONFIG, tol=1e-4), key=jax.random.key(1))
    assert len(_programs(cache_dir)) == 3
    stored = set(_programs(cache_dir))
    before = _covariance.POINT_SUM_PRODUCTS
    try:
        _covariance.POINT_SUM_PRODUCTS = not before  # an engine setting read at trace time
        gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1))
    finally:
        _covariance.POINT_SUM_PRODUCTS = before
    (new,) = set(_programs(cache_dir)) - stored
    # ... and it holds the program traced under the new setting, not jax.jit's cached
    # trace of the old one.
    assert new.read_bytes() != first[0].read_bytes()
    partitionable = jax.config.jax_threefry_partitionable
    try:
        jax.config.update("jax_threefry_partitionable", not partitionable)  # other random bits
        gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1))
    finally:
        jax.config.update("jax_threefry_partitionable", partitionable)
    assert len(_programs(cache_dir)) == 5


def test_an_unreadable_program_is_stored_again(cache_dir):
    want = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1)))
    (path,) = _programs(cache_dir)
    path.write_bytes(b"not a program")
    _fit_batch_engine._programs.clear()  # as in a new process
    stored = _compile.stats["stored"]
    got = _leaves(gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1)))
    assert _compile.stats["stored"] == stored + 1 and path.stat().st_size > 100
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_inside_a_callers_jit_nothing_is_stored(cache_dir):
    X = _data()
    means = jax.jit(lambda x: gmmjax.fit_batch(x, CONFIG, key=jax.random.key(1)).params.means)(X)
    # Concrete arrays closed over by the caller's jit: still inside a trace.
    Xj = jax.numpy.asarray(X)
    closed = jax.jit(lambda: gmmjax.fit_batch(Xj, CONFIG, key=jax.random.key(1)).params.means)()
    assert _programs(cache_dir) == []
    want = gmmjax.fit_batch(X, CONFIG, key=jax.random.key(1)).params.means
    np.testing.assert_allclose(means, want, rtol=1e-6)
    np.testing.assert_allclose(closed, want, rtol=1e-6)


def test_without_the_persistent_cache_nothing_is_stored(tmp_path):
    assert not jax.config.jax_compilation_cache_dir
    stored = _compile.stats["stored"]
    gmmjax.fit_batch(_data(), CONFIG, key=jax.random.key(1))
    assert _compile.stats["stored"] == stored
