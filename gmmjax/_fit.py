"""EM fits: the while_loop with its trace buffer, restarts and datasets via vmap.

This is the one place where batch axes are added and where jit is applied (through
`gmmjax._compile.engine_jit`).
One lane is one restart of one dataset:

    _em_start / _em_step / _em_loop / _em_finish   one lane's EM (lax.while_loop)
    _prepare, _select      one dataset: sanitise the data; keep the best restart
    _fit_dataset           vmap over restarts                       X (N, D)
    _lane_starts,          all restarts of a batch as one pool of lanes: their
    _lane_results          starting states; their final E-steps and the best restart
    _fit_compacted         the pool's running lanes compacted between rounds of
                           iterations                               Xs (B, N, D)
    _fit_fused             the pool's EM loops as one fused kernel (`gmmjax._fused`,
                           GPUs, where `_fused.use` says so)
    _fit_batch             chunks of datasets under lax.map, each chunk
                           vmap(_fit_dataset), _fit_compacted or _fit_fused
    fit / fit_batch        the public entry points, one jit each; where the moments
                           path ran (`gmmjax._covariance.uses_moments`), the fits it
                           flags as risky are redone on the centred path (_redo_risky)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from gmmjax import _validate
from gmmjax import _covariance, _fused, _ragged
from gmmjax._compile import engine_jit, traced
from gmmjax._covariance import COVARIANCE
from gmmjax._em import e_step, e_step_resp, highest_precision, is_degenerate, is_finite, m_step
from gmmjax._init import _cumsum, init_params as _init_params
from gmmjax._types import TRACE_FILL, EMConfig, FitResult, GMMParams, Status, Trace


class _LoopState(NamedTuple):
    """EM state of one restart (one lane); vmap adds lane axes to every leaf."""

    t: jax.Array  # () EM iterations done: `params` are params_t
    params: GMMParams  # params_t
    prev_params: GMMParams  # params_{t-1} (params_0 at t = 0)
    prev_ll: jax.Array  # () LL(params_{t-1}), -inf at t = 0
    converged: jax.Array  # () bool
    failed: jax.Array  # () bool: a non-finite value appeared
    skip: jax.Array  # () bool: the dataset cannot be fitted, no iteration runs
    amp: jax.Array  # () largest `moments_amplification` of the params so far (moments path)
    trace_ll: jax.Array  # (T,), or (0,) without a trace (`_trace_len`)
    trace_params: Optional[GMMParams]  # leaves (T, ...), or None


def _write(buf, t, value):
    return jax.lax.dynamic_update_index_in_dim(buf, value, t, axis=0)


def _trace_len(config: EMConfig) -> int:
    """Entries of a lane's log-likelihood trace buffer: none without a trace, so that
    the loop neither writes nor carries one that nobody reads."""
    return config.max_iter + 1 if config.trace is not None else 0


def _em_start(params0: GMMParams, config: EMConfig, skip) -> _LoopState:
    T = config.max_iter + 1
    dtype = params0.means.dtype
    trace_params = None
    if config.trace == "params":
        trace_params = jax.tree_util.tree_map(lambda a: jnp.zeros((T,) + a.shape, a.dtype), params0)
    return _LoopState(
        t=jnp.asarray(0, jnp.int32),
        params=params0,
        prev_params=params0,
        prev_ll=jnp.asarray(-jnp.inf, dtype),
        converged=jnp.asarray(False),
        failed=~is_finite(params0),
        skip=jnp.asarray(skip),
        amp=jnp.asarray(0.0, dtype),
        trace_ll=jnp.full((_trace_len(config),), TRACE_FILL, dtype),
        trace_params=trace_params,
    )


def _em_running(s: _LoopState, config: EMConfig):
    """() bool: the loop condition of one lane."""
    return (s.t < config.max_iter) & ~s.converged & ~s.failed & ~s.skip


def _moments(X, config: EMConfig, moments: bool):
    """The per-point `moments` of X for the moments path, or None (centred path)."""
    return _covariance.moments(config.covariance_type, X) if moments else None


def _amplification(s: _LoopState, params: GMMParams, config: EMConfig, XX):
    if XX is None:
        return s.amp
    return jnp.maximum(s.amp, _covariance.moments_amplification(config.covariance_type, params.means, params.covariances))


def _em_step(X, w, s: _LoopState, config: EMConfig, active, XX=None) -> _LoopState:
    """One EM iteration of one lane: E-step on params_t, M-step to params_{t+1}.

    The stopping rule is scikit-learn's: iteration t (1-based) computes LL(params_{t-1})
    in its E-step, takes the M-step to params_t, and stops when
    |LL(params_{t-1}) - LL(params_{t-2})| < tol. Convergence is decided only between
    finite values. A non-finite log-likelihood or parameter stops the loop and the last
    finite parameters are kept (failed = True). With `moments` XX the E- and M-step use
    them, and `amp` tracks how much precision that may cost.
    """
    ll, resp = e_step_resp(X, w, s.params, config.covariance_type, XX)
    new = m_step(X, w, resp, config.covariance_type, config.reg_covar, active, XX)
    bad_ll = ~jnp.isfinite(ll)
    bad_new = ~is_finite(new)
    # Both sides finite here whenever it matters: inf - (-inf) is never < tol.
    converged = jnp.abs(ll - s.prev_ll) < config.tol
    # A non-finite LL of params_t (t > 0) means the M-step gave unusable params_t:
    # go back to params_{t-1}. A non-finite M-step result: keep params_t.
    back = bad_ll & (s.t > 0)
    keep = jnp.where(back, s.t - 1, s.t)
    kept = jax.tree_util.tree_map(lambda p, q: jnp.where(back, q, p), s.params, s.prev_params)
    ok = ~bad_ll & ~bad_new
    tp = s.trace_params
    if tp is not None:
        tp = jax.tree_util.tree_map(lambda b, a: _write(b, s.t, a), tp, s.params)
    return s._replace(
        t=jnp.where(ok, s.t + 1, keep),
        params=jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, kept),
        prev_params=s.params,
        prev_ll=ll,
        converged=ok & converged,
        failed=~ok,
        amp=_amplification(s, s.params, config, XX),
        trace_ll=_write(s.trace_ll, s.t, jnp.where(bad_ll, TRACE_FILL, ll).astype(X.dtype))
        if config.trace is not None
        else s.trace_ll,
        trace_params=tp,
    )


def _em_loop(X, w, s: _LoopState, config: EMConfig, active, stop=None, XX=None) -> _LoopState:
    """Iterates one lane while it runs (and, if given, while t < stop); XX: the
    `moments` of X for the moments path, or None."""

    def cond(s):
        run = _em_running(s, config)
        return run if stop is None else run & (s.t < stop)

    return jax.lax.while_loop(cond, lambda s: _em_step(X, w, s, config, active, XX), s)


def _em_finish(X, w, s: _LoopState, config: EMConfig, active, XX=None):
    """One lane's FitResult (without restarts) from its final loop state, and `risky`.

    The final E-step gives the log-likelihood of the returned parameters (trace entry
    n_iter); the trace past n_iter is filled; the status is decided here. ``risky``:
    the moments path may have lost precision (see `_covariance.moments_max_error`), or
    failed where the centred path might not (raw moments overflow sooner).
    """
    T = config.max_iter + 1
    ll, _ = e_step(X, w, s.params, config.covariance_type, XX)
    amp = _amplification(s, s.params, config, XX)
    failed = s.failed | ~jnp.isfinite(ll)
    risky = jnp.asarray(False) if XX is None else (amp * jnp.finfo(X.dtype).eps > _covariance.moments_max_error(X.dtype)) | failed
    ll = jnp.where(jnp.isfinite(ll), ll, -jnp.inf)
    idx = jnp.arange(T)
    trace_ll = None if config.trace is None else _write(jnp.where(idx < s.t, s.trace_ll, TRACE_FILL), s.t, ll)
    tp = s.trace_params
    if tp is not None:
        # Entries from n_iter on repeat the final parameters.
        tp = jax.tree_util.tree_map(
            lambda b, a: jnp.where((idx >= s.t).reshape((T,) + (1,) * a.ndim), a[None], b),
            tp,
            s.params,
        )
    degenerate = is_degenerate(s.params, config.covariance_type, config.reg_covar, active)
    status = jnp.where(
        failed,
        Status.NUMERICAL_FAILURE,
        jnp.where(degenerate, Status.DEGENERATE, jnp.where(s.converged, Status.CONVERGED, Status.MAX_ITER)),
    ).astype(jnp.int32)
    trace = None if config.trace is None else Trace(trace_ll, tp)
    return FitResult(s.params, ll, s.t, s.converged, status, trace), risky


def _em(X, w, params0: GMMParams, config: EMConfig, skip, active, XX=None):
    """EM from params0 for one dataset and one restart: (FitResult, risky)."""
    s = _em_loop(X, w, _em_start(params0, config, skip), config, active, XX=XX)
    return _em_finish(X, w, s, config, active, XX)


class _Prepared(NamedTuple):
    """One dataset, sanitised and centred: invalid rows are zeros with weight 0."""

    X: jax.Array  # (N, D) valid rows minus `shift`
    w: jax.Array  # (N,)
    skip: jax.Array  # () bool: not fitted
    bad_status: jax.Array  # () int32: the status when skip
    active: jax.Array  # (K,) bool: component slots in use
    shift: jax.Array  # (D,) weighted mean of the valid rows, added back to the means


@highest_precision
def _prepare(X, w, config: EMConfig, n_active) -> _Prepared:
    """X (N, D) may hold anything where w == 0 (padding: NaN, 1e30, ...); it is replaced
    by zeros with `where`, so padding never reaches the arithmetic.

    EM runs on data centred by their weighted mean (an exact shift: the likelihood and
    covariances do not change). Sums of data far from the origin (values near 1000
    with spread 0.01, say) then keep their digits in float32, on GPUs too.

    The weights are scaled to a mean of 1 over the valid points (unit weights stay
    exactly 1): the fit then does not depend on their overall scale, which the M-step's
    guard against empty components (10 eps added to every component's mass, as
    scikit-learn) would otherwise make it do (weights of 1e-12 gave another fit).
    """
    K = config.n_components
    n_active = jnp.asarray(K if n_active is None else n_active)
    valid = w > 0
    row_finite = jnp.all(jnp.isfinite(X), axis=1)
    nonfinite = jnp.any(valid & ~row_finite)
    too_few = jnp.sum(valid) < n_active
    keep = valid & row_finite
    X = jnp.where(keep[:, None], X, 0.0)
    wk = jnp.where(keep, w, 0.0)
    # Weights over their maximum first: a sum of 80 weights of 1e37 overflows float32.
    # (Unit weights stay exactly 1.)
    top = jnp.max(wk)
    wk = wk / jnp.where(top > 0, top, 1.0)
    total = jnp.sum(wk)
    # The mean as a kept row plus the mean offset from it: exact for constant data, whose
    # centred values are then exactly 0 (a plain mean of 50 copies of 1e30 in float32
    # is off by an ulp, 7.6e22, whose square overflows the diag M-step's sums).
    ref = X[jnp.argmax(keep)]
    Xr = jnp.where(keep[:, None], X - ref, 0.0)
    offset = jnp.where(total > 0, (wk @ Xr) / jnp.where(total > 0, total, 1.0), 0.0)
    shift = ref + offset
    mean_w = jnp.where(total > 0, total / jnp.maximum(jnp.sum(keep), 1).astype(total.dtype), 1.0)
    return _Prepared(
        X=jnp.where(keep[:, None], Xr - offset, 0.0),
        w=jnp.where(keep, wk / mean_w, 0.0),
        skip=nonfinite | too_few,
        bad_status=jnp.where(nonfinite, Status.NONFINITE_INPUT, Status.TOO_FEW_POINTS).astype(jnp.int32),
        active=jnp.arange(K) < n_active,
        shift=shift,
    )


def _start_params(prep: _Prepared, key, init, config: EMConfig, XX=None) -> GMMParams:
    if init is None:
        return _init_params(key, prep.X, prep.w, config, prep.active, XX)
    return init._replace(means=init.means - prep.shift)


def _unshift(r: FitResult, shift) -> FitResult:
    """Adds the centring shift back to every mean of a lane's result (and its trace)."""
    r = r._replace(params=r.params._replace(means=r.params.means + shift))
    if r.trace is not None and r.trace.params is not None:
        tp = r.trace.params
        r = r._replace(trace=r.trace._replace(params=tp._replace(means=tp.means + shift)))
    return r


def _restart_keys(key, init, config: EMConfig):
    return jax.random.split(key, 1 if init is not None else config.n_init)


def _fallback_params(K, D, config: EMConfig, dtype) -> GMMParams:
    """Finite placeholder parameters for a dataset without a model (not fitted, or a
    failure that left nothing finite). Their weights are all 0: no mixture, as the
    log-likelihood of -inf reported beside them says, so that `gmmjax.predict` and the
    other functions that take params never mistake them for a model (one mixture
    alone raises; in a batch, that dataset answers NaN / -1 with a warning)."""
    return GMMParams(
        weights=jnp.zeros(K, dtype),
        means=jnp.zeros((K, D), dtype),
        covariances=jnp.asarray(COVARIANCE[config.covariance_type].identity(K, D, dtype)),
    )


def best_restart(status, log_likelihood):
    """Index of the restart a fit keeps, from (n_init,) statuses and log-likelihoods.

    The highest log-likelihood among the healthy restarts (CONVERGED or MAX_ITER); a
    collapsed (DEGENERATE) restart only when no healthy one exists, since a component
    on a single point inflates the likelihood; failed (NUMERICAL_FAILURE) ones last.
    The one rule for the engine, the estimators and the pictures.

    Restarts within rounding of the highest (8 eps relative) count as tied, and the
    first of them is kept, as scikit-learn keeps the first of exact ties. Two restarts
    often reach the same fit with the components swapped; which of them came out an
    ulp higher depended on rounding (the padded length of the batch, say), and so did
    the order of the returned components.
    """
    rank = jnp.where(status == Status.NUMERICAL_FAILURE, 0, jnp.where(status == Status.DEGENERATE, 1, 2))
    score = jnp.where(rank == jnp.max(rank), log_likelihood, -jnp.inf)
    top = jnp.max(score)  # -inf when every restart's is: then all count as tied
    tied = score >= top - 8 * jnp.finfo(score.dtype).eps * jnp.maximum(jnp.abs(top), 1.0)
    return jnp.argmax(tied)


def _select(results: FitResult, risky, prep: _Prepared, config: EMConfig):
    """The best restart of one dataset (leaves of ``results`` have a leading restart axis).

    Returns (FitResult, risky): ``risky`` says that the result may have lost precision
    on the moments path (the kept restart's, or with keep_restarts any restart's).
    """
    results = _unshift(results, prep.shift)
    best = best_restart(results.status, results.log_likelihood)
    # A failed restart on the moments path may have been the best on the centred one.
    failed = results.status == Status.NUMERICAL_FAILURE
    risky = ~prep.skip & (jnp.any(risky) if config.keep_restarts else risky[best] | jnp.any(risky & failed))
    res = jax.tree_util.tree_map(lambda a: a[best], results)

    # Datasets that cannot be fitted: finite placeholders and their own status.
    fallback = _fallback_params(config.n_components, prep.X.shape[1], config, prep.X.dtype)

    def unfitted(r: FitResult) -> FitResult:
        """r with the placeholders of an unfittable dataset where skip is True."""

        def pick(good, bad):
            return jnp.where(prep.skip, jnp.broadcast_to(bad, good.shape), good)

        # Returned parameters are always finite: a failure that left nothing finite
        # (data so large that even the first covariance overflows) gets placeholders.
        r = r._replace(
            params=jax.tree_util.tree_map(
                lambda a, f: jnp.where(is_finite(r.params), a, jnp.broadcast_to(f, a.shape)), r.params, fallback
            )
        )
        trace = r.trace
        if trace is not None:
            tp = trace.params
            if tp is not None:
                # Snapshots too: a frame that is not finite (the fit failed there) shows
                # the placeholders, as the returned params do.
                finite = jax.vmap(is_finite)(tp)  # (T,)
                tp = jax.tree_util.tree_map(
                    lambda a, f: jnp.where(finite.reshape((-1,) + (1,) * f.ndim), a, f), tp, fallback
                )
                tp = jax.tree_util.tree_map(pick, tp, fallback)
            trace = Trace(pick(trace.log_likelihood, TRACE_FILL), tp)
        return FitResult(
            params=jax.tree_util.tree_map(pick, r.params, fallback),
            log_likelihood=pick(r.log_likelihood, -jnp.inf),
            n_iter=pick(r.n_iter, 0),
            converged=pick(r.converged, False),
            status=pick(r.status, prep.bad_status),
            trace=trace,
        )

    restarts = None
    if config.keep_restarts:
        # Each restart's leaves carry a leading (n_init,) axis; placeholders broadcast.
        restarts = jax.vmap(unfitted)(results)
    return unfitted(res)._replace(restarts=restarts), risky


def _fit_dataset(X, w, key, init, config: EMConfig, n_active=None, moments=False):
    """One dataset: sanitise, run the restarts in parallel (vmap), keep the best.

    ``n_active`` (a traced int, default config.n_components) fits only the first
    n_active component slots; the others get weight 0 (model selection over K).
    Returns (FitResult, risky); ``moments`` (static) runs the moments path, and
    ``risky`` is always False without it.
    """
    prep = _prepare(X, w, config, n_active)
    XX = _moments(prep.X, config, moments)  # once per dataset, shared by its restarts

    def restart(k):
        params0 = _start_params(prep, k, init, config, XX)
        return _em(prep.X, prep.w, params0, config, prep.skip, prep.active, XX)

    results, risky = jax.vmap(restart)(_restart_keys(key, init, config))
    return _select(results, risky, prep, config)


def _use_moments(X, config: EMConfig) -> bool:
    """Static: the moments path pays for this covariance type and number of features."""
    return _covariance.uses_moments(config.covariance_type, X.shape[-1])


def _redo_risky(res: FitResult, risky, refit) -> FitResult:
    """res with the fits flagged ``risky`` (B,) replaced by refit(idx), the centred path's
    fits of datasets idx. On the host, after the call: the centred path is compiled
    and run only when some fit needs it, for those datasets only (their number padded
    to a power of two, so that few shapes compile)."""
    flags = np.asarray(risky)
    if not flags.any():
        return res
    idx = np.flatnonzero(flags)
    n = idx.size
    padded = np.concatenate([idx, np.full((1 << (n - 1).bit_length()) - n, idx[0])])
    sub = refit(padded)
    return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b[:n]), res, sub)


def _first_running(run, capacity: int):
    """(capacity,) lane indices: the running lanes (``run`` (L,) True) first, then the
    others, each in their order; ``argsort(~run, stable=True)[:capacity]`` without the
    sort: XLA's CPU sort of 2,000 lanes took 273 us, this 12 us, in each round of
    W1-cpu (~70 rounds)."""
    L = run.shape[0]
    ran = _cumsum(run.astype(jnp.float32)).astype(jnp.int32)  # exact below 2**24; jnp.cumsum: O(L^2) on a CPU
    n_run = ran[-1]
    pos = jnp.where(run, ran, n_run + jnp.arange(1, L + 1, dtype=jnp.int32) - ran) - 1
    return jnp.zeros((capacity,), jnp.int32).at[pos].set(jnp.arange(L, dtype=jnp.int32), mode="drop")


def _map_groups(f, xs, group: int):
    """vmap(f) over the leading axis of xs, ``group`` entries at a time (lax.map).

    The last group is filled up with copies of the last entry (their results dropped):
    one loop body, compiled once, and no remainder step running beside the loop. (Keep
    LAPACK calls out of f: jaxlib's batched LAPACK kernels block a CPU pool thread while
    waiting for their own tasks, and with lax.map's remainder step two eigh at once hung
    the 2-thread pool.)
    """
    B = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if group >= B:
        return jax.vmap(f)(*xs)
    n = -(-B // group)
    group = -(-B // n)  # as even as possible: n * group - B < n
    idx = jnp.minimum(jnp.arange(n * group), B - 1).reshape(n, group)
    out = jax.lax.map(lambda i: jax.vmap(f)(*jax.tree_util.tree_map(lambda a: a[i], xs)), idx)
    return jax.tree_util.tree_map(lambda a: a.reshape((n * group,) + a.shape[2:])[:B], out)


def _lane_starts(X, w, key, init, config: EMConfig, group: int | None, moments: bool):
    """Every dataset's restarts as one pool of lanes, with their starting loop states.

    Returns (prep, lanes, dataset, R): the prepared datasets (leaves (B, ...)), the
    `_LoopState` of every lane (leaves (B * R, ...), dataset-major), each lane's dataset
    and the restarts per dataset. The starting parameters are computed for ``group``
    datasets at a time (default `init_group`).
    """
    B = X.shape[0]
    prep = jax.vmap(lambda x, ww: _prepare(x, ww, config, None))(X, w)
    keys = jax.vmap(lambda k: _restart_keys(k, init, config))(key)  # (B, R)
    R = keys.shape[1]

    def starts(p, ks, i):
        XX = _moments(p.X, config, moments)

        def one(k):
            return _em_start(_start_params(p, k, i, config, XX), config, p.skip)

        return jax.vmap(one)(ks)

    if group is None:
        group = init_group(B, R, X.shape[1], X.shape[2], config, X.dtype.itemsize)
    state = _map_groups(starts, (prep, keys, init), group)  # leaves (B, R, ...)
    lanes = jax.tree_util.tree_map(lambda a: a.reshape((B * R,) + a.shape[2:]), state)
    return prep, lanes, jnp.repeat(jnp.arange(B), R), R


def _lane_results(prep: _Prepared, lanes: _LoopState, R: int, config: EMConfig, moments: bool):
    """(FitResult, risky) with a leading (B,) axis from the lanes' final loop states:
    each lane's final E-step and status, then each dataset's best restart."""
    B = prep.X.shape[0]
    state = jax.tree_util.tree_map(lambda a: a.reshape((B, R) + a.shape[1:]), lanes)

    def finish(p, s):
        XX = _moments(p.X, config, moments)
        return jax.vmap(lambda s1: _em_finish(p.X, p.w, s1, config, p.active, XX))(s)

    results, risky = jax.vmap(finish)(prep, state)
    return jax.vmap(lambda r, f, p: _select(r, f, p, config))(results, risky, prep)


def _fit_compacted(
    X, w, key, init, config: EMConfig, capacity: int, round_iter: int, group: int | None = None, moments=False
):
    """All datasets' restarts as one pool of lanes, compacted between rounds.

    Under a plain vmap every lane of the while_loop runs until the slowest lane has
    finished (over 100,000 restarts, some always run to max_iter while the median
    stops after a handful). Here each round gathers up to ``capacity`` running lanes
    (with their datasets), runs at most ``round_iter`` iterations on them and scatters
    them back, until no lane runs. The per-lane math is the same functions as `fit`.
    The starting parameters are computed for ``group`` datasets at a time (default
    `init_group`).
    Returns (FitResult, risky) as `_fit_dataset`, with a leading (B,) axis.
    """
    prep, lanes, dataset, R = _lane_starts(X, w, key, init, config, group, moments)
    cpu = jax.default_backend() == "cpu"
    running = jax.vmap(lambda s: _em_running(s, config))

    def round_body(lanes):
        # Running lanes first, in their order, then the others.
        if cpu:
            idx = _first_running(running(lanes), capacity)
        else:  # the sort measured on GPUs (_first_running's running count is a CPU's choice)
            idx = jnp.argsort(~running(lanes), stable=True)[:capacity]
        sub = jax.tree_util.tree_map(lambda a: a[idx], lanes)
        d = dataset[idx]
        sub = jax.vmap(
            lambda x, ww, a, s: _em_loop(x, ww, s, config, a, stop=s.t + round_iter, XX=_moments(x, config, moments))
        )(
            prep.X[d], prep.w[d], prep.active[d], sub
        )
        return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b), lanes, sub)

    lanes = jax.lax.while_loop(lambda l: jnp.any(running(l)), round_body, lanes)
    return _lane_results(prep, lanes, R, config, moments)


def _fit_fused(X, w, key, init, config: EMConfig):
    """As `_fit_compacted`, with every lane's whole EM loop in one fused kernel
    (`gmmjax._fused`): each lane stops on its own, so nothing waits and nothing is
    compacted."""
    prep, lanes, dataset, R = _lane_starts(X, w, key, init, config, None, False)
    lanes = _fused.em_loop(prep.X, prep.w, R, lanes, config, prep.active[dataset])
    return _lane_results(prep, lanes, R, config, False)


#: Working set of one chunk of datasets, in bytes, by JAX backend, and the fewest
#: datasets a chunk holds, where a chunk runs as one plain vmap (few lanes, see
#: `default_compaction`). On a CPU small chunks win: fewer lanes wait for the slowest
#: one, and XLA's CPU code for a vmap over a few lanes ran fastest. Measured on the
#: 2-core CPU (warm ms by datasets per chunk): W1-cpu 602 / 281 / 279 / 292 for 1 / 2 /
#: 4 / 8; W2-cpu 20 / 18 / 17 / 16 / 36 / 39 / 40 for 1 / 2 / 4 / 5 / 6 / 8 / 200;
#: W3-cpu 243 / 190 / 218 / 194 for 1 / 2 / 3 / 4. Elsewhere the limit is device memory.
CHUNK_BYTES = {"cpu": 48 << 10}
MIN_CHUNK = {"cpu": 2}
DEFAULT_CHUNK_BYTES = 4 << 30


def params_floats(K: int, D: int, covariance_type: str) -> int:
    """Numbers in one GMMParams: weights, means, covariances."""
    return K + K * D + math.prod(COVARIANCE[covariance_type].shape(K, D))


def trace_floats(D: int, config: EMConfig) -> int:
    """Numbers in one lane's trace buffers (0 without a trace)."""
    if config.trace is None:
        return 0
    snapshot = params_floats(config.n_components, D, config.covariance_type) if config.trace == "params" else 0
    return (config.max_iter + 1) * (1 + snapshot)


def moments_floats(N: int, D: int, config: EMConfig) -> int:
    """Numbers in one dataset's per-point `moments` (0 off the moments path)."""
    if not _covariance.uses_moments(config.covariance_type, D):
        return 0
    return N * _covariance.moments_width(config.covariance_type, D)


def dataset_floats(N: int, D: int, config: EMConfig, restarts: int) -> int:
    """Working set of one dataset with all its restarts, in numbers."""
    return restarts * lane_floats(N, D, config) + moments_floats(N, D, config)


def lane_floats(N: int, D: int, config: EMConfig) -> int:
    """Working set of one lane (one restart of one dataset), in numbers: the (K, N, D)
    temporaries of an E- or M-step and the trace buffers."""
    return N * config.n_components * (D + 1) + trace_floats(D, config)


#: Lane compaction (see `_fit_compacted`): each round runs 1 / COMPACT_FRACTION of a
#: chunk's lanes (restarts x datasets), the running ones, for a few iterations.
COMPACT_FRACTION = 16

#: Off CPU, compaction pays from this many lanes in a chunk. Capacity L/16 and 4
#: iterations a round measured best overall on an H200 (benchmarks/RESULTS.md):
#: W1 90 ms plain -> 44 ms, W3 58 ms -> 42 ms.
COMPACT_MIN_LANES = 4096

#: ... but a round should keep the device busy: at least this many point-component-
#: feature updates per EM iteration (N K D per lane). W2 (N=400, K=2, D=2) ran 12.4 ms
#: at L/16 = 625 lanes against 6.9-8.0 ms at L/8, L/2 or plain on an H200.
COMPACT_MIN_WORK = 4_000_000

#: On a CPU compaction pays from a few dozen lanes, with 2 iterations a round, and a
#: round's temporaries should stay within a few MB (the caches): the chunk is then the
#: pool of lanes that the rounds draw from, COMPACT_FRACTION rounds' worth. Measured
#: on the 2-core CPU (warm ms, plain small chunks -> whole-batch pool at L/16-L/20):
#: W1-cpu 271 -> 152-157, W2-cpu 14.9 -> 12.3-12.7, W3-cpu 175 -> 123-133.
CPU_COMPACT_MIN_LANES = 32
CPU_ROUND_ITER = 2
CPU_ROUND_BYTES = 4 << 20

#: ... and a round should hold at least this many point-component-feature updates
#: (N K D per lane): smaller rounds cost more in gathers and sorting than they save
#: (one dataset of 200 points with 32 restarts: 18.7 ms at 2 lanes a round against
#: 6.9 ms as one plain vmap).
CPU_MIN_ROUND_WORK = 20_000


#: On a CPU `_fit_compacted` computes the lanes' starting parameters (k-means++ and the
#: first M-step) for this many bytes of lane temporaries at a time, a lax.map over
#: groups of datasets (`_map_groups`): over all 2,000 lanes of W1-cpu at once every pass
#: streamed (lanes, N) arrays through memory. Measured on the 2-core CPU (W1-cpu, whole
#: pool -> groups of 25-50 datasets): init and final E-step 42-51 -> 20-28 ms, whole fit
#: 119 -> 95 ms. The final E-steps stay one vmap: in groups they gained nothing
#: measurable and cost 0.4 s of compile time. Off CPU the whole pool runs at once.
INIT_GROUP_BYTES = {"cpu": 8 << 20}


def init_group(B: int, R: int, N: int, D: int, config: EMConfig, itemsize: int, backend: str | None = None) -> int:
    """Datasets (of R lanes each) whose starting parameters `_fit_compacted` computes
    side by side: B, or fewer on a CPU (`INIT_GROUP_BYTES`)."""
    budget = INIT_GROUP_BYTES.get(backend or jax.default_backend())
    if budget is None:
        return B
    return int(max(1, min(B, budget // max(1, R * lane_floats(N, D, config) * itemsize))))


def default_chunk_size(
    B: int, N: int, D: int, config: EMConfig, itemsize: int, backend: str | None = None, restarts: int | None = None
) -> int:
    """How many datasets `fit_batch` runs side by side in each step of its lax.map.

    Off CPU: as many as fit the device memory budget. On a CPU, where the batch has
    enough lanes for `default_compaction`, the pool its rounds draw from (whole batch
    when it is small); otherwise a few datasets: under a plain vmap every lane of a
    while_loop runs until the slowest lane of its chunk has finished. ``restarts``:
    lanes per dataset (default config.n_init; 1 with init_params).
    """
    backend = backend or jax.default_backend()
    R = config.n_init if restarts is None else restarts
    if backend == "cpu":
        round_bytes = dataset_floats(N, D, config, 1) * itemsize
        most = max(1, COMPACT_FRACTION * max(1, CPU_ROUND_BYTES // max(round_bytes, 1)) // R)
        pool = -(-B // -(-B // most))  # as many datasets in every chunk: little padding
        if default_compaction(pool * R, config, backend, lane_work=_lane_work(N, D, config)) is not None:
            return pool
    dataset_bytes = dataset_floats(N, D, config, R) * itemsize
    fits = CHUNK_BYTES.get(backend, DEFAULT_CHUNK_BYTES) // max(dataset_bytes, 1)
    return int(max(1, min(B, max(fits, MIN_CHUNK.get(backend, 1)))))


def default_compaction(lanes: int, config: EMConfig, backend: str | None = None, lane_work: int | None = None):
    """(capacity, round_iter) for `_fit_compacted` of a chunk of ``lanes`` lanes, or None
    for a plain vmap.

    ``lane_work``: N * K * D of one lane (one restart of one dataset), if known.
    """
    if config.max_iter <= 8:
        return None
    capacity = -(-lanes // COMPACT_FRACTION)
    if (backend or jax.default_backend()) == "cpu":
        if lane_work:
            capacity = max(capacity, -(-CPU_MIN_ROUND_WORK // lane_work))
        return (capacity, CPU_ROUND_ITER) if lanes >= CPU_COMPACT_MIN_LANES and 2 * capacity <= lanes else None
    if lanes < COMPACT_MIN_LANES:
        return None
    capacity = max(COMPACT_MIN_LANES // COMPACT_FRACTION, capacity)
    if lane_work:
        capacity = max(capacity, -(-COMPACT_MIN_WORK // lane_work))
    return None if capacity >= lanes else (capacity, 4)


def _lane_work(N: int, D: int, config: EMConfig) -> int:
    return N * config.n_components * D


@functools.partial(jax.tree_util.register_dataclass, data_fields=["key", "first"], meta_fields=["total"])
@dataclasses.dataclass(frozen=True)
class KeyRows:
    """The keys of datasets first, first + 1, ... of a batch of ``total`` datasets fitted
    with one key: rows of ``split(key, total)``, split inside the compiled call (an
    eager split compiles a program of its own: 0.2 s). `gmmjax._threads` passes one to
    each part of a batch; ``first`` is an argument, so all parts share one compilation."""

    key: jax.Array  # one PRNG key
    first: jax.Array  # () int32
    total: int


try:
    export.register_pytree_node_serialization(
        KeyRows, serialized_name="gmmjax.KeyRows",
        serialize_auxdata=lambda meta: repr(tuple(meta)).encode(),  # (total,)
        deserialize_auxdata=lambda b: (int(bytes(b).decode().strip("(),")),),
    )
except ValueError:  # registered already (this module reloaded)
    pass


def _per_dataset_keys(key, B: int):
    """(B,) keys: ``key`` itself, ``split(key, B)`` of a single key, or the rows of a `KeyRows`."""
    if isinstance(key, KeyRows):
        return jax.lax.dynamic_slice_in_dim(jax.random.split(key.key, key.total), key.first, B)
    return jax.random.split(key, B) if _validate._is_single_key(key) else key


def _fit_batch(X, w, key, init, config: EMConfig, chunk: int | None = None, compact=None, moments=None):
    """Datasets via vmap: X (B, N, D), w (B, N) or None (all ones), key (B,) or one key (dataset i then uses
    ``split(key, B)[i]``; split here, which spares a separate compiled program), init
    leaves (B, ...) or None.

    With ``chunk`` < B the datasets run ``chunk`` at a time, the chunks one after
    another under lax.map, in one compiled call. The batch is padded to a multiple of
    ``chunk`` with empty datasets (weight 0: not fitted, cheap). Where `_fused.use`
    says so, each chunk runs as `_fit_fused` (whatever ``compact``); otherwise with
    ``compact`` = (capacity, round_iter[, group]) as `_fit_compacted`. ``moments``: the
    moments path (None: where `_use_moments`). Returns (FitResult, risky (B,)).
    """
    if w is None:  # no weights, no mask
        w = jnp.ones(X.shape[:2], X.dtype)
    if moments is None:
        moments = _use_moments(X, config)
    key = _per_dataset_keys(key, X.shape[0])

    fused = _fused.use(X.shape[1], X.shape[2], config, moments)

    def fit_many(x, ww, k, i):
        if fused:
            return _fit_fused(x, ww, k, i, config)
        if compact is not None:
            return _fit_compacted(x, ww, k, i, config, *compact, moments=moments)
        return jax.vmap(lambda *a: _fit_dataset(*a, config, moments=moments))(x, ww, k, i)

    B = X.shape[0]
    if chunk is None or chunk >= B:
        return fit_many(X, w, key, init)
    n = -(-B // chunk)
    pad = n * chunk - B

    def split(a, fill):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(fill(a[:1]), (pad,) + a.shape[1:])])
        return a.reshape((n, chunk) + a.shape[1:])

    args = (
        split(X, jnp.zeros_like),
        split(w, jnp.zeros_like),
        split(key, lambda k: k),
        jax.tree_util.tree_map(lambda a: split(a, lambda b: b), init),
    )
    res = jax.lax.map(lambda a: fit_many(*a), args)
    return jax.tree_util.tree_map(lambda a: a.reshape((n * chunk,) + a.shape[2:])[:B], res)


_fit_jit = engine_jit(_fit_dataset, static_argnames=("config", "moments"))
_fit_batch_engine = engine_jit(_fit_batch, static_argnames=("config", "chunk", "compact", "moments"))


def _fit_batch_jit(X, w, key, init, *, config: EMConfig, chunk: int | None = None, compact=None) -> FitResult:
    """The compiled `_fit_batch`, then the centred path for every fit that needs it."""
    res, risky = _fit_batch_engine(X, w, key, init, config=config, chunk=chunk, compact=compact)
    if not _use_moments(X, config):  # risky is all False: no need to wait for the device
        return res
    if traced((X, w, key, init)):  # inside the caller's jit or vmap: redo in the trace
        exact = lambda: _fit_batch_engine(X, w, key, init, config=config, chunk=chunk, moments=False)[0]  # noqa: E731
        return jax.lax.cond(jnp.any(risky), lambda: _where_rows(risky, exact(), res), lambda: res)

    def refit(idx):
        sub_init = jax.tree_util.tree_map(lambda a: a[idx], init)
        n = idx.size
        keys = _per_dataset_keys(key, X.shape[0])  # split only when some fit is redone
        return _fit_batch_engine(
            X[idx], None if w is None else w[idx], keys[idx], sub_init, config=config, chunk=min(chunk or n, n), moments=False
        )[0]

    return _redo_risky(res, risky, refit)


def _where_rows(flags, a: FitResult, b: FitResult) -> FitResult:
    """a's rows where flags (B,), else b's."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(flags.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)


def fit(X, config: EMConfig, *, key=None, weights=None, init_params: GMMParams | None = None) -> FitResult:
    """Fits a Gaussian mixture to one dataset with EM.

    Args:
      X: (N,) or (N, D) data. A 1-D array is one feature.
      config: an `EMConfig`.
      key: a JAX PRNG key (``jax.random.key(0)``); restarts use ``split(key, n_init)``.
        May be omitted when ``init_params`` is given.
      weights: optional (N,) non-negative sample weights; 0 ignores the point.
      init_params: optional `GMMParams` to start EM from instead of ``config.init``
        (then a single restart runs: all would be identical).

    Returns:
      A `FitResult`; check ``result.status`` (a `Status`) before using the fit.

    Example:
      >>> import jax, numpy as np, gmmjax
      >>> X = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
      >>> res = gmmjax.fit(X, gmmjax.EMConfig(n_components=2, n_init=4), key=jax.random.key(0))
      >>> res.params.means.shape
      (2, 2)
    """
    _validate.check_config_type(config)
    X, w = _validate.one_dataset(X, weights)
    key = _validate.key_for(key, init_params, batch=None)
    init = _validate.init_params(init_params, config, X.shape[1], X.dtype, batch=None)
    from gmmjax import _blocks  # the host-side driver (it imports this module)

    _blocks.check_one_dataset_fits(*X.shape, config, X.dtype.itemsize, 1 if init is not None else config.n_init)
    moments = _use_moments(X, config)
    res, risky = _fit_jit(X, w, key, init, config=config, moments=moments)
    if not moments:
        return res

    def centred():  # precision lost on the moments path: the centred path
        return _fit_jit(X, w, key, init, config=config, moments=False)[0]

    if traced((X, w, key, init)):  # inside the caller's jit or vmap
        return jax.lax.cond(risky, centred, lambda: res)
    return centred() if bool(risky) else res


def fit_batch(
    Xs,
    config: EMConfig,
    *,
    key=None,
    mask=None,
    weights=None,
    init_params=None,
    chunk_size: int | None = None,
    block_size: int | None = None,
    progress: bool = False,
    length_buckets: bool | None = None,
    n_jobs: int | None = None,
) -> FitResult:
    """Fits one Gaussian mixture per dataset, all datasets in one compiled call (on a
    CPU, one call per part of the batch, the parts at once: ``n_jobs``).

    Args:
      Xs: a padded (B, N, D) array, a (B, N) array of 1-D datasets, or a list of B
        arrays of shapes (N_i, D) or (N_i,) (padded here).
      config: an `EMConfig`, shared by all datasets.
      key: one PRNG key (dataset i uses ``jax.random.split(key, B)[i]``) or a (B,)
        array of keys. May be omitted when ``init_params`` is given.
      mask: optional (B, N) bool, True for valid points (arrays only; a list is
        masked for you). Masked values may be anything, NaN and inf included.
      weights: optional (B, N) non-negative sample weights (or a list of (N_i,)).
      init_params: optional `GMMParams` with a leading (B,) axis on every leaf.
      chunk_size: datasets run side by side under vmap; chunks run one after another
        in the same compiled call. Default: `default_chunk_size` (memory-sized on a
        GPU; on a CPU a pool of datasets whose running restarts are gathered a few at a
        time, or a few datasets for small batches). It changes speed, not results
        (beyond rounding).
      block_size: datasets sent to the device at a time: the batch runs as blocks of
        this many datasets, one compiled call each (the same compilation for all), and
        only one block's data and results are on the device at a time; a host array
        (numpy, ``np.memmap``) is read block by block. Default: blocks only where the
        batch does not fit `gmmjax._blocks.memory_budget` (free device memory; host RAM
        on a CPU), or with ``progress``. It changes memory use, not results (beyond
        rounding).
      progress: show a tqdm progress bar of the datasets done, block by block (needs
        ``pip install "gmmjax[progress]"``).
      length_buckets: for a list of datasets of different lengths: group them by length
        and fit each group as one call, padded to its own length (`gmmjax._ragged`), so
        that short datasets are not padded to the longest one. None (default): where
        padding would be over 10% of the work, in the groups that save more work than
        their compilations cost in this call (not with ``progress``, which keeps one
        bar); True: up to 8 groups wherever padding is over 10%, for the fastest warm
        calls (up to 8 compilations in the first; with ``progress``, a bar per group);
        False: never. It changes speed, not results (beyond rounding).
      n_jobs: on a CPU, the batch runs as up to this many parts at once, each a call of
        the same compiled program from its own thread (`gmmjax._threads`): XLA keeps
        about one core busy per call. None (default): as many parts as cores, where
        each part has enough work to pay for it; -1: one part per core; 1: one call.
        Off CPU, inside jit or vmap, and above 32 features: one call. It changes speed,
        not results (beyond rounding).

    Returns:
      A `FitResult` whose leaves all have a leading (B,) axis. Dataset i equals
      ``fit(Xs[i][mask[i]], config, key=split(key, B)[i])`` up to rounding. With blocks
      the leaves are gathered in host memory and become JAX arrays on the default
      device once, at the end, as without blocks.

    Example:
      >>> import jax, numpy as np, gmmjax
      >>> rng = np.random.default_rng(0)
      >>> Xs = [rng.normal(size=(n, 1)).astype(np.float32) for n in (50, 80, 120)]
      >>> res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(n_components=2), key=jax.random.key(0))
      >>> res.status.shape
      (3,)
    """
    from gmmjax import _blocks, _threads  # the host-side drivers (they import this module)

    _validate.check_config_type(config)
    if length_buckets is not None and not isinstance(length_buckets, (bool, np.bool_)):
        raise ValueError(f"length_buckets must be None, True or False, got {length_buckets!r}.")
    _threads.check_n_jobs(n_jobs)
    if isinstance(Xs, (list, tuple)) and length_buckets is not False:
        kwargs = dict(chunk_size=chunk_size, block_size=block_size, progress=progress, n_jobs=n_jobs)
        res = _fit_ragged(Xs, config, key, mask, weights, init_params, length_buckets, kwargs)
        if res is not None:
            return res
    blocks = _blocks.plan(
        Xs, config, key=key, mask=mask, weights=weights, init_params=init_params,
        chunk_size=chunk_size, block_size=block_size, progress=progress, n_jobs=n_jobs,
    )
    if blocks is not None:
        return blocks.run()
    X, w = _validate.batch(Xs, mask, weights, unit_weights=False)
    B, N, D = X.shape
    key = _validate.key_for(key, init_params, batch=B, split=False)
    init = _validate.init_params(init_params, config, D, X.dtype, batch=B)
    restarts = 1 if init is not None else config.n_init
    if chunk_size is not None and (not _validate._is_int(chunk_size) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 (datasets per chunk), got {chunk_size!r}.")
    jobs = 1 if traced((X, w, key, init)) else _threads.default_jobs(B, N, D, config, restarts, n_jobs)
    return _threads.fit(X, w, key, init, config, jobs=jobs, chunk_size=chunk_size, restarts=restarts)


def _fit_ragged(Xs, config: EMConfig, key, mask, weights, init_params, length_buckets, kwargs):
    """`fit_batch` of a list in length buckets (`gmmjax._ragged`), or None where the
    buckets do not pay or the input is for the usual path (and its errors) to read.
    Without an explicit ``length_buckets=True`` a progress bar keeps the one call (one
    bar for the batch)."""
    if mask is not None or (kwargs["progress"] and not length_buckets):
        return None
    if weights is not None and not isinstance(weights, (list, tuple)):
        return None  # a padded array of weights: the usual path reads (or rejects) it
    if not all(_validate._concrete(a) for a in list(Xs) + list(weights or [])):
        return None
    listed = _validate.read_list(Xs, weights)
    if listed is None:
        return None
    arrays, weights = listed
    B, D = len(arrays), arrays[0].shape[1]
    restarts = 1 if init_params is not None else config.n_init
    most = _ragged.MAX_BUCKETS if length_buckets else None
    buckets = _ragged.plan([a.shape[0] for a in arrays], restarts, config, D, max_buckets=most)
    if buckets is None:
        return None
    # Everything the one call would check, before any bucket is fitted.
    from gmmjax._blocks import _compute_dtype

    keys = _validate.key_for(key, init_params, batch=B)  # (B,): dataset i keeps split(key, B)[i]
    source = np.result_type(*{a.dtype for a in arrays})
    dtype = _compute_dtype(source)
    init = _validate.init_params(init_params, config, D, dtype, batch=B)
    _validate.check_host_weights(weights or [], dtype)
    _validate.warn_if_downcast(source, dtype)  # said once here, not once per bucket

    def fit(sub, sub_weights, k, i):
        with warnings.catch_warnings():  # said once above, not once per bucket
            warnings.filterwarnings("ignore", message="float64 data is computed in float32")
            return fit_batch(sub, config, key=k, weights=sub_weights, init_params=i, length_buckets=False, **kwargs)

    return _ragged.fit_buckets(buckets, arrays, weights, keys, init, fit)


def status_counts(status) -> dict:
    """{Status name: count} for an array of statuses (e.g. ``fit_batch(...).status``; a
    result with a ``status`` field, such as the FitResult itself, is read the same way)."""
    status = getattr(status, "status", status)
    try:
        values = np.asarray(status)
        ok = values.size == 0 or (values.dtype.kind in "iu" and np.isin(values, [int(s) for s in Status]).all())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"status_counts takes an array of gmmjax.Status values (e.g. fit_batch(...).status), got {status!r:.80}."
        )
    values, counts = np.unique(values.ravel(), return_counts=True)
    return {Status(int(v)).name: int(c) for v, c in zip(values, counts)}
