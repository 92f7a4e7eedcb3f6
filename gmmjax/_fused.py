"""The EM loop of every lane as ONE fused kernel (JAX Pallas), for few features.

`em_loop` runs `gmmjax._fit._em_loop` (no ``stop``) for every lane (restart) of a
batch in a single kernel launch: one program per lane keeps its dataset's points on
chip (registers, spilled to local memory for the largest datasets), iterates E- and
M-steps until its own stopping rule says so (the same rule, state and log-likelihood
trace as `gmmjax._fit._em_step`) and writes back its loop state. Nothing of
size N x K ever reaches memory, every program stops on its own (no lane waits for the
slowest one, so no compaction is needed) and the restarts of a dataset read the same
data block.

Scope (`applies`): one feature (any covariance type) or two features with full
covariances, up to `MAX_K` components, up to `MAX_POINTS` points (padded to a power
of two), no moments path, a trace of log-likelihoods or none.

The XLA path stays the reference and the path everywhere else; the tests run this
kernel in Pallas' interpret mode on a CPU against it, and lower it for CUDA (Triton)
without a GPU. It is used only where `FUSED_LOOP` says so (off until it is measured on
a GPU: benchmarks/ab_engine.py has the variant).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gmmjax._types import TRACE_FILL, EMConfig, GMMParams

#: Use the kernel on GPUs where it `applies` (read at trace time): False (off: not
#: yet measured on a GPU, see the module docstring), True, or "interpret" (on any
#: backend, through Pallas' interpreter: slow, for the tests).
FUSED_LOOP = False

#: Warps per program (None: `_triton_params`' rule). Read at trace time; the GPU A/B
#: (benchmarks/ab_engine.py) tries 8.
NUM_WARPS = None

#: Components are unrolled in the kernel's code: beyond this the code grows too long.
MAX_K = 8

#: Points of one dataset live in one program's registers, padded to a power of two.
MAX_POINTS = 4096


def applies(N: int, D: int, config: EMConfig, moments: bool) -> bool:
    """Static: the kernel can run this fit's EM loop."""
    return (
        not moments
        and config.trace in (None, "loglik")
        and config.n_components <= MAX_K
        and N <= MAX_POINTS
        and (D == 1 or (D == 2 and config.covariance_type == "full"))
    )


def use(N: int, D: int, config: EMConfig, moments: bool, backend: str | None = None) -> bool:
    """Static: `FUSED_LOOP` is on, the backend is a GPU (any with "interpret") and the
    kernel `applies`."""
    on_backend = FUSED_LOOP == "interpret" or (FUSED_LOOP is True and (backend or jax.default_backend()) == "gpu")
    return on_backend and applies(N, D, config, moments)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# ------------------------------------------------------------------ packing
# Per lane, the loop state travels as one row of floats (params, prev_params, prev_ll)
# and one row of int32 (t, converged, failed, skip, active), each padded to a power of
# two (Triton's block shapes); the trace is its own row, padded likewise.
def _flat(p: GMMParams, L):
    return jnp.concatenate([p.weights.reshape(L, -1), p.means.reshape(L, -1), p.covariances.reshape(L, -1)], axis=1)


def _unflat(a, like: GMMParams) -> GMMParams:
    L = a.shape[0]
    K = like.weights.shape[1]
    nm = like.means[0].size
    return GMMParams(
        weights=a[:, :K],
        means=a[:, K : K + nm].reshape(like.means.shape),
        covariances=a[:, K + nm :].reshape((L,) + like.covariances.shape[1:]),
    )


def em_loop(X, w, restarts: int, s, config: EMConfig, active, *, interpret: bool | None = None):
    """`_em_loop` of every lane, as one kernel.

    X (B, N, D) and w (B, N): the prepared datasets; ``restarts``: lanes per dataset,
    R; s: `_LoopState` with leaves (L, ...), L = B R, dataset-major (lane i belongs to
    dataset i // R, as `gmmjax._fit._lane_starts` orders them); active (L, K) bool.
    Returns the final `_LoopState`; its ``trace_ll`` is written only when
    ``config.trace`` is set (without a trace the XLA loop writes one that nobody reads).
    ``interpret``: Pallas' interpreter (default: where `FUSED_LOOP` is "interpret").
    """
    from jax.experimental import pallas as pl

    if interpret is None:
        interpret = FUSED_LOOP == "interpret"

    B, N, D = X.shape
    R = int(restarts)
    L = s.t.shape[0]
    if L != B * R:
        raise ValueError(f"{L} lanes for {B} datasets of {R} restarts each.")
    K = config.n_components
    dtype = X.dtype
    NP = max(16, _pow2(N))
    params = _flat(s.params, L)
    P = params.shape[1]  # numbers in one lane's parameters
    FP = _pow2(2 * P + 1)
    IP = _pow2(4 + K)
    T = config.max_iter + 1
    TP = _pow2(T)
    trace = config.trace is not None

    planes = jnp.pad(jnp.swapaxes(X, 1, 2), ((0, 0), (0, 0), (0, NP - N)))  # (B, D, NP)
    wp = jnp.pad(w, ((0, 0), (0, NP - N)))  # padding has weight 0: it never counts (`m_step`)
    fl = jnp.concatenate([params, _flat(s.prev_params, L), s.prev_ll.reshape(L, 1)], axis=1)
    fl = jnp.pad(fl.astype(dtype), ((0, 0), (0, FP - fl.shape[1])))
    it = jnp.concatenate(
        [jnp.stack([s.t, s.converged, s.failed, s.skip], axis=1).astype(jnp.int32), active.astype(jnp.int32)], axis=1
    )
    it = jnp.pad(it, ((0, 0), (0, IP - it.shape[1])))
    kernel = _kernel(K, D, config, dtype, P, trace)

    lane = lambda width: pl.BlockSpec((1, width), lambda i: (i, 0))  # noqa: E731
    in_specs = [
        pl.BlockSpec((1, D, NP), lambda i: (i // R, 0, 0)),
        pl.BlockSpec((1, NP), lambda i: (i // R, 0)),
        lane(FP),
        lane(IP),
    ]
    out_shape = [jax.ShapeDtypeStruct((L, FP), dtype), jax.ShapeDtypeStruct((L, IP), jnp.int32)]
    out_specs = [lane(FP), lane(IP)]
    args = [planes, wp, fl, it]
    aliases = {}
    if trace:
        tr = jnp.pad(s.trace_ll, ((0, 0), (0, TP - T)), constant_values=TRACE_FILL)
        args.append(tr)
        in_specs.append(lane(TP))
        out_shape.append(jax.ShapeDtypeStruct((L, TP), dtype))
        out_specs.append(lane(TP))
        aliases = {4: 2}  # entries the loop does not write stay as they were
    compiler = {} if interpret else {"compiler_params": _triton_params(NP)}
    outs = pl.pallas_call(
        kernel,
        out_shape=tuple(out_shape),
        grid=(L,),
        in_specs=in_specs,
        out_specs=tuple(out_specs),
        input_output_aliases=aliases,
        interpret=interpret,
        **compiler,
    )(*args)
    fl, it = outs[0], outs[1]
    new = s._replace(
        t=it[:, 0],
        converged=it[:, 1].astype(bool),
        failed=it[:, 2].astype(bool),
        params=_unflat(fl[:, :P], s.params),
        prev_params=_unflat(fl[:, P : 2 * P], s.params),
        prev_ll=fl[:, 2 * P],
    )
    if trace:
        new = new._replace(trace_ll=outs[2][:, :T])
    return new


def _triton_params(NP: int):
    """Warps per program: `NUM_WARPS`, else 4 (8 points a thread at W1's 1,024) and 8
    beyond 1,024 points, so that a thread's share of each (NP,) array stays small. A
    guess until measured."""
    from jax.experimental.pallas import triton as plt

    warps = NUM_WARPS if NUM_WARPS is not None else (4 if NP <= 1024 else 8)
    return plt.CompilerParams(num_warps=int(warps))


def _kernel(K, D, config: EMConfig, dtype, P, trace):
    """The kernel of one lane: loads its state, loops, stores it (see `em_loop`)."""
    cov_type = config.covariance_type
    tol, reg, max_iter = config.tol, config.reg_covar, config.max_iter
    eps = float(jnp.finfo(dtype).eps)
    log_2pi = math.log(2 * math.pi)
    # Where each covariance type keeps its numbers in the flat row (see `_flat`).
    n_cov = P - K - K * D

    def unpack(v):
        """Scalars (weights [K], means [K][D], cov [n_cov]) from a sequence."""
        weights = [v[k] for k in range(K)]
        means = [[v[K + k * D + d] for d in range(D)] for k in range(K)]
        cov = [v[K + K * D + c] for c in range(n_cov)]
        return weights, means, cov

    def pack(p):
        weights, means, cov = p
        return list(weights) + [m for row in means for m in row] + list(cov)

    def var_1d(cov, k):
        """The variance of component k (one feature) from the flat covariances."""
        return cov[0] if cov_type == "tied" else cov[k]

    def log_prob(x, p):
        """[K] rows of log pi_k + log N(x | mu_k, Sigma_k): `_log_gaussian_1d` / `_small`."""
        weights, means, cov = p
        rows = []
        for k in range(K):
            if D == 1:
                var = var_1d(cov, k)
                diff = x[0] - means[k][0]
                a = -0.5 * (log_2pi + jnp.log(var)) - 0.5 * diff * diff * (1.0 / var)
            else:  # D == 2, full: `_small_precision_cholesky`, then the planes
                c00, c10, c11 = cov[4 * k], cov[4 * k + 2], cov[4 * k + 3]
                l00 = jnp.sqrt(c00)
                l10 = c10 / l00
                l11 = jnp.sqrt(c11 - l10 * l10)
                p00, p11 = 1.0 / l00, 1.0 / l11
                p01 = -(l10 * p00) * p11
                d0, d1 = x[0] - means[k][0], x[1] - means[k][1]
                y0 = d0 * p00
                y1 = d0 * p01 + d1 * p11
                log_det = jnp.log(p00) + jnp.log(p11)
                a = -0.5 * (2 * log_2pi + (y0 * y0 + y1 * y1)) + log_det
            rows.append(a + jnp.log(weights[k]))
        return rows

    def step(x, wv, total, active, p):
        """One E- and M-step: (ll of p, new params) as `e_step_resp` and `m_step`.
        (Every slot is active here: `_fit_fused` never switches slots off, so
        `m_step`'s unit covariance for switched-off slots is not needed.)"""
        a = log_prob(x, p)
        m = a[0]
        for k in range(1, K):
            m = jnp.maximum(m, a[k])
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        e = [jnp.exp(a[k] - m) for k in range(K)]
        s = e[0]
        for k in range(1, K):
            s = s + e[k]
        log_norm = jnp.log(s) + m
        ll = jnp.sum(jnp.where(wv > 0, wv * log_norm, 0.0)) / jnp.where(total > 0, total, 1.0)
        ll = jnp.where(total > 0, ll, -jnp.inf)
        inv = 1.0 / jnp.maximum(s, jnp.finfo(dtype).tiny)  # as `e_step_resp`: no NaN from weight-0 points
        wr = [e[k] * inv * wv for k in range(K)]
        nk = [jnp.sum(wr[k]) + 10 * eps for k in range(K)]
        means = [[jnp.sum(wr[k] * x[d]) / nk[k] for d in range(D)] for k in range(K)]
        if D == 1:
            var = []
            for k in range(K):
                diff = x[0] - means[k][0]
                var.append(jnp.sum(wr[k] * diff * diff) / nk[k])
            if cov_type == "tied":
                num = var[0] * nk[0]
                den = nk[0]
                for k in range(1, K):
                    num, den = num + var[k] * nk[k], den + nk[k]
                cov = [num / den + reg]
            else:
                cov = [v + reg for v in var]
        else:
            cov = []
            for k in range(K):
                d0, d1 = x[0] - means[k][0], x[1] - means[k][1]
                s00 = jnp.sum(wr[k] * d0 * d0) / nk[k] + reg
                s01 = jnp.sum(wr[k] * d0 * d1) / nk[k]
                s11 = jnp.sum(wr[k] * d1 * d1) / nk[k] + reg
                cov += [s00, s01, s01, s11]
        mass = [jnp.where(active[k], nk[k], 0.0) for k in range(K)]
        total_mass = mass[0]
        for k in range(1, K):
            total_mass = total_mass + mass[k]
        weights = [mass[k] / total_mass for k in range(K)]
        return ll, (weights, means, cov)

    def all_finite(values):
        ok = jnp.isfinite(values[0])
        for v in values[1:]:
            ok = ok & jnp.isfinite(v)
        return ok

    def select(c, a, b):
        return [jnp.where(c, u, v) for u, v in zip(a, b)]

    from jax.experimental import pallas as pl

    def kernel(x_ref, w_ref, f_ref, i_ref, *refs):
        if trace:  # refs: the trace (input, aliased to the output), then the outputs
            _, f_out, i_out, tr_out = refs
        else:
            f_out, i_out = refs
        x = [x_ref[0, d, :] for d in range(D)]
        wv = w_ref[0, :]
        total = jnp.sum(wv)
        f = [f_ref[0, j] for j in range(2 * P + 1)]
        t0, conv0, failed0, skip = (i_ref[0, j] for j in range(4))
        active = [i_ref[0, 4 + k] != 0 for k in range(K)]
        skip = skip != 0

        def cond(c):
            t, conv, failed = c[0], c[1], c[2]
            return (t < max_iter) & (conv == 0) & (failed == 0) & ~skip

        def body(c):
            t, _, _, prev_ll, params, prev_params = c
            ll, new = step(x, wv, total, active, unpack(params))
            new = pack(new)
            bad_ll = ~jnp.isfinite(ll)
            ok = ~bad_ll & all_finite(new)
            converged = jnp.abs(ll - prev_ll) < tol
            back = bad_ll & (t > 0)
            keep = jnp.where(back, t - 1, t)
            kept = select(back, prev_params, params)
            if trace:
                tr_out[0, pl.ds(t, 1)] = jnp.full((1,), jnp.where(bad_ll, TRACE_FILL, ll), dtype)
            return (
                jnp.where(ok, t + 1, keep),
                (ok & converged).astype(jnp.int32),
                (~ok).astype(jnp.int32),
                ll,
                tuple(select(ok, new, kept)),
                tuple(params),
            )

        init = (t0, conv0, failed0, f[2 * P], tuple(f[:P]), tuple(f[P : 2 * P]))
        t, conv, failed, prev_ll, params, prev_params = jax.lax.while_loop(cond, body, init)
        for j, v in enumerate(list(params) + list(prev_params) + [prev_ll]):
            f_out[0, j] = v.astype(dtype)
        for j in range(2 * P + 1, f_out.shape[1]):
            f_out[0, j] = jnp.zeros((), dtype)
        for j, v in enumerate((t, conv, failed)):
            i_out[0, j] = v
        for j in range(3, i_out.shape[1]):
            i_out[0, j] = i_ref[0, j]

    return kernel



