"""The fused EM-loop kernel (gmmjax._fused) against the XLA path, in Pallas' interpreter.

The kernel is meant for GPUs; here it runs through Pallas' interpreter on the CPU,
which executes the same kernel code, and it is lowered for CUDA (Triton) without a GPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax
from gmmjax import _fit, _fused
from gmmjax._types import EMConfig, Status

em_loop = _fused.em_loop


def _lanes(X, w, config, key=0):
    """Prepared datasets and every lane's starting loop state, as the engine makes them."""
    keys = jax.random.split(jax.random.key(key), len(X))
    prep, lanes, dataset = _starts(jnp.asarray(X), jnp.asarray(w), keys, config)
    return prep, lanes, dataset, config.n_init


@functools.partial(jax.jit, static_argnames="config")
def _starts(X, w, keys, config):
    return _fit._lane_starts(X, w, keys, None, config, None, False)[:3]


@functools.partial(jax.jit, static_argnames="config")
def _xla_loop(prep, dataset, lanes, config):
    return jax.vmap(lambda i, s: _fit._em_loop(prep.X[i], prep.w[i], s, config, prep.active[i]))(dataset, lanes)


@functools.partial(jax.jit, static_argnames="config")
def _kernel_loop(prep, dataset, lanes, config):
    return _fused.em_loop(prep.X, prep.w, config.n_init, lanes, config, prep.active[dataset], interpret=True)


def _assert_same_states(out, ref, rtol=1e-10):
    """Two final loop states agree: flags and counts exactly, numbers to ``rtol``."""
    for name in ("t", "converged", "failed", "skip"):
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)
    pairs = zip(jax.tree_util.tree_leaves((ref.params, ref.prev_params)), jax.tree_util.tree_leaves((out.params, out.prev_params)))
    for a, b in pairs:
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(out.prev_ll, ref.prev_ll, rtol=rtol)
    np.testing.assert_allclose(out.trace_ll, ref.trace_ll, rtol=rtol)


# One feature: full and diag covariances take the same code in the kernel (one variance
# per component, as spherical's); tied shares one.
CASES = [(1, 3, "full"), (1, 2, "spherical"), (1, 3, "tied"), (2, 2, "full"), (2, 4, "full")]


@pytest.mark.parametrize("D,K,covariance_type", CASES)
def test_kernel_loop_equals_the_xla_loop(D, K, covariance_type):
    """Every lane's final loop state (iterations, flags, parameters, previous
    parameters, log-likelihood trace) equals vmap(_em_loop)'s, float64: sample weights,
    rows of weight 0, constant data, a skipped dataset and a lane that starts done."""
    rng = np.random.default_rng(D * 10 + K)
    B, N = 5, 150
    X = rng.normal(size=(B, N, D)) + 3.0 * rng.integers(0, K, size=(B, N, 1))
    w = np.ones((B, N))
    w[1, 90:] = 0.0  # a shorter dataset: rows with weight 0
    X[2] = 7.0  # constant data: components collapse onto reg_covar
    w[3, 1:] = 0.0  # fewer points than components: not fitted, skipped
    X[4, :, 0] *= rng.uniform(0.5, 2.0, size=N)  # a wider, uneven dataset
    w[0] = rng.uniform(0.2, 5.0, size=N)  # sample weights
    config = EMConfig(n_components=K, n_init=3, covariance_type=covariance_type, tol=1e-4, max_iter=60, trace="loglik")
    prep, lanes, dataset, R = _lanes(X, w, config)
    lanes = lanes._replace(t=lanes.t.at[0].set(config.max_iter))  # a lane that starts done
    ref = _xla_loop(prep, dataset, lanes, config)
    out = _kernel_loop(prep, dataset, lanes, config)
    assert int(jnp.sum(ref.t)) > 3 * B  # the loops really ran
    assert bool(ref.skip[3 * R]) and int(ref.t[0]) == config.max_iter
    _assert_same_states(out, ref)


def test_kernel_loop_fails_like_the_xla_loop():
    """The three ways a lane fails: a start whose log-likelihood is not finite (a zero
    variance); a log-likelihood turning non-finite after some iterations (weights all
    0 at t = 3: back to the previous parameters and iteration count); a finite
    log-likelihood with a non-finite M-step (no active slot: weights 0 / 0)."""
    rng = np.random.default_rng(3)
    config = EMConfig(n_components=2, n_init=1, covariance_type="full", max_iter=20, trace="loglik")
    prep, lanes, dataset, R = _lanes(rng.normal(size=(4, 80, 1)), np.ones((4, 80)), config)
    p = lanes.params
    p = p._replace(covariances=p.covariances.at[1, 0].set(0.0), weights=p.weights.at[2].set(0.0))
    lanes = lanes._replace(
        params=p, prev_params=p._replace(weights=lanes.params.weights),
        t=lanes.t.at[2].set(3).at[3].set(4), prev_ll=lanes.prev_ll.at[2].set(-1.5),
    )
    prep = prep._replace(active=prep.active.at[3].set(False))
    ref = _xla_loop(prep, dataset, lanes, config)
    out = _kernel_loop(prep, dataset, lanes, config)
    np.testing.assert_array_equal(ref.failed, [False, True, True, True])
    np.testing.assert_array_equal(ref.t[1:], [0, 2, 4])  # lane 2 went back one iteration
    _assert_same_states(out, ref)


def test_points_of_weight_zero_never_count_where_every_density_underflows(monkeypatch):
    """Rows with weight 0 (ragged padding here, and the kernel's own padding to a power
    of two) sit at the data's mean, where two far clusters' densities underflow:
    responsibilities there are NaN, and must not reach the fit. Both paths: DEGENERATE
    (each cluster is constant), not NUMERICAL_FAILURE."""
    a = np.where(np.arange(128) % 2 == 0, 2.0**60, -(2.0**60)).astype(np.float32)
    Xs = [a[:, None], a[:100, None]]  # 128 points (no kernel padding) and 100 (padded)
    config = EMConfig(n_components=2, n_init=2, max_iter=50, trace=None)  # the kernel without a trace
    ref = gmmjax.fit_batch(Xs, config, key=jax.random.key(1))
    np.testing.assert_array_equal(ref.status, [Status.DEGENERATE] * 2)
    np.testing.assert_allclose(np.sort(np.asarray(ref.params.means[:, :, 0]), axis=1), [[-(2.0**60), 2.0**60]] * 2)
    monkeypatch.setattr(_fused, "FUSED_LOOP", "interpret")
    jax.clear_caches()
    out = gmmjax.fit_batch(Xs, config, key=jax.random.key(1))
    np.testing.assert_array_equal(out.status, ref.status)
    np.testing.assert_array_equal(out.n_iter, ref.n_iter)
    jax.clear_caches()


def test_fit_batch_through_the_kernel_equals_the_xla_path(monkeypatch):
    """fit_batch with the kernel (interpreted) gives the XLA path's fits: ragged
    datasets, one with NaN input, one too small, statuses and traces included. (The
    kernel without a trace: the weight-0 test below.)"""
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(n, 2)) + 3.0 * rng.integers(0, 2, size=(n, 1)) for n in (60, 150, 1, 90, 40)]
    Xs[3][5] = np.nan
    config = EMConfig(n_components=2, n_init=3, trace="loglik")
    ref = gmmjax.fit_batch(Xs, config, key=jax.random.key(0))
    monkeypatch.setattr(_fused, "FUSED_LOOP", "interpret")
    traced = []
    monkeypatch.setattr(_fused, "em_loop", lambda X, *a, **k: traced.append(X.shape) or em_loop(X, *a, **k))
    jax.clear_caches()
    out = gmmjax.fit_batch(Xs, config, key=jax.random.key(0))
    assert traced and all(shape[1:] == (150, 2) for shape in traced)  # the kernel ran (on each chunk)
    np.testing.assert_array_equal(out.status, ref.status)
    assert list(np.asarray(ref.status)).count(Status.CONVERGED) == 3
    np.testing.assert_array_equal(out.n_iter, ref.n_iter)
    np.testing.assert_allclose(out.log_likelihood, ref.log_likelihood, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(out.params)):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.trace.log_likelihood, ref.trace.log_likelihood, rtol=1e-12)
    jax.clear_caches()


def test_where_the_kernel_applies():
    full = EMConfig(n_components=3)
    assert _fused.applies(1000, 1, full, False)
    assert _fused.applies(400, 2, full, False)
    assert _fused.applies(400, 1, EMConfig(n_components=3, covariance_type="tied"), False)
    assert not _fused.applies(400, 2, EMConfig(n_components=3, covariance_type="diag"), False)
    assert not _fused.applies(400, 3, full, False)
    assert not _fused.applies(_fused.MAX_POINTS + 1, 1, full, False)
    assert not _fused.applies(400, 1, EMConfig(n_components=_fused.MAX_K + 1), False)
    assert not _fused.applies(400, 1, EMConfig(n_components=3, trace="params"), False)
    assert not _fused.applies(400, 1, full, True)  # the moments path
    # Off by default; on, only on a GPU (or anywhere through the interpreter).
    assert not _fused.use(400, 1, full, False, backend="gpu")


def test_use_follows_the_setting_and_the_backend(monkeypatch):
    config = EMConfig(n_components=2)
    monkeypatch.setattr(_fused, "FUSED_LOOP", True)
    assert _fused.use(400, 2, config, False, backend="gpu")
    assert not _fused.use(400, 2, config, False, backend="cpu")
    monkeypatch.setattr(_fused, "FUSED_LOOP", "interpret")
    assert _fused.use(400, 2, config, False, backend="cpu")


@pytest.mark.parametrize(
    "D,K,N,covariance_type,trace,dtype",
    [
        (1, 3, 1000, "full", None, jnp.float32),  # W1
        (2, 2, 400, "full", "loglik", jnp.float32),  # W2
        (1, 8, 4096, "tied", "loglik", jnp.float32),
        (1, 1, 7, "spherical", "loglik", jnp.float64),
        (2, 5, 1000, "full", None, jnp.float64),
    ],
)
def test_kernel_lowers_for_cuda_without_a_gpu(D, K, N, covariance_type, trace, dtype):
    """Pallas lowers the kernel to Triton for CUDA here (compiling that to GPU code
    needs a GPU): the block shapes, the loop, the scalar and dynamic stores and the
    aliased trace are all accepted, and the program holds exactly one Triton kernel."""
    pytest.importorskip("jax.experimental.pallas.triton")
    config = EMConfig(n_components=K, n_init=2, trace=trace, covariance_type=covariance_type)
    B = 3

    def run(X, w, keys):
        prep, lanes, dataset, R = _fit._lane_starts(X, w, keys, None, config, None, False)
        return _fused.em_loop(prep.X, prep.w, R, lanes, config, prep.active[dataset], interpret=False)

    lowered = jax.jit(run).trace(
        jax.ShapeDtypeStruct((B, N, D), dtype),
        jax.ShapeDtypeStruct((B, N), dtype),
        jax.random.split(jax.random.key(0), B),
    ).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 1
    assert f"num_warps = {4 if N <= 1024 else 8} : i32" in text  # a thread's share of the points stays small


def _gpu():
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


@pytest.mark.skipif(not _gpu(), reason="the compiled kernel needs a GPU (benchmarks/gpu_session.sh runs this)")
@pytest.mark.parametrize(
    "D,K,covariance_type,dtype", [(1, 3, "full", np.float64), (1, 3, "full", np.float32), (2, 2, "full", np.float32)]
)
def test_kernel_on_a_gpu_equals_the_xla_loop(D, K, covariance_type, dtype):
    """The compiled Triton kernel against vmap(_em_loop) on the same GPU: in float64
    the same iteration counts, flags and traces and the parameters to 1e-9; in float32
    rounding may move a stopping decision by an iteration in a few lanes, so 90% of
    the lanes must stop at the same iteration, with the same log-likelihood there."""
    rng = np.random.default_rng(7)
    B, N = 64, 1000
    X = (rng.normal(size=(B, N, D)) + 3.0 * rng.integers(0, K, size=(B, N, 1))).astype(dtype)
    w = np.ones((B, N), dtype)
    w[::3, 700:] = 0.0
    config = EMConfig(n_components=K, n_init=4, covariance_type=covariance_type, tol=1e-4, max_iter=100, trace="loglik")
    prep, lanes, dataset, R = _lanes(X, w, config)
    ref = _xla_loop(prep, dataset, lanes, config)
    out = jax.jit(lambda p, d, s: _fused.em_loop(p.X, p.w, R, s, config, p.active[d], interpret=False))(prep, dataset, lanes)
    if dtype == np.float64:
        _assert_same_states(out, ref, rtol=1e-9)
    else:
        assert np.mean(np.asarray(out.t) == np.asarray(ref.t)) > 0.9
        same = np.asarray(out.t) == np.asarray(ref.t)
        np.testing.assert_allclose(np.asarray(out.prev_ll)[same], np.asarray(ref.prev_ll)[same], rtol=1e-4)
    assert not np.any(np.asarray(out.failed))
