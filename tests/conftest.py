"""Shared test set-up: float64 on (scikit-learn is the float64 oracle), fixed seeds."""

import os

# The suite compiles some 3,000 XLA programs, and compiling is most of its time. XLA's
# CPU compiler without its newer fusion emitters compiles them a third faster (the whole
# suite on a 2-core AVX2 host: 776 s, and 903 s in a fresh CI clone, against 1,177 s)
# and runs them somewhat slower, which no test measures. Users and the benchmarks keep
# XLA's defaults; set GMMJAX_TEST_XLA_DEFAULTS=1 to run the tests with them too. This
# must come before JAX starts its CPU backend; subprocesses that tests start inherit it.
if not os.environ.get("GMMJAX_TEST_XLA_DEFAULTS") and "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
# `gmmjax demo` turns on JAX's persistent compilation cache in ~/.cache/gmmjax; the
# tests call it in this process and in subprocesses, and must neither write the
# user's cache nor compile the rest of the session through it.
os.environ["GMMJAX_CACHE_DIR"] = ""


@pytest.fixture
def rng():
    return np.random.default_rng(20261126)


def blobs(rng, n=(150, 100, 120), D=2, spread=4.0):
    """Well separated Gaussian clusters: (sum(n), D) float64."""
    centers = rng.normal(scale=spread, size=(len(n), D))
    return np.concatenate([c + rng.normal(size=(m, D)) * (0.5 + 0.5 * i) for i, (c, m) in enumerate(zip(centers, n))])


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop JAX's compiled programs after each test module. The suite compiles
    hundreds of programs; each keeps executable memory mapped, and a whole-suite
    process aborted inside XLA's compiler after ~160 tests (memory maps of the process
    are capped at vm.max_map_count = 65530 here) while every module passed alone."""
    yield
    jax.clear_caches()
