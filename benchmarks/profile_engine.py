"""Where gmmjax's time goes on one workload: each engine piece timed alone, batched
as fit_batch batches it (datasets x restarts), next to whole fits.

    python -m benchmarks.profile_engine --workload W1-cpu [--repeats 5] [--json OUT]

It calls PRIVATE engine functions (gmmjax._em, _init, _covariance), so it follows the
engine: when their signatures change, change this file with them. The benchmark
runner (benchmarks/run.py) uses the public API only.

Reported, all warm (compile excluded), median of --repeats:
  fit          fit_batch as in the benchmark, for several variants of the config
               (covariance types, trace on/off, n_init=1);
  lanes        EM iterations per (dataset, restart) lane: under vmap the while_loop
               runs every lane until the slowest lane of the whole batch finishes;
  pieces       init (k-means++ + one M-step), one E-step, one M-step, one EM step,
               the log-density alone, the precision Cholesky alone, the covariance
               estimate alone, the collapse check (eigvalsh), each over all lanes;
  estimate     init + max_iter_executed x EM step + final E-step + collapse check,
               against the measured fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax
from gmmjax import _covariance, _em, _init
from benchmarks import workloads


def _time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))  # compile
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _extra(engine_fn, K):
    """() or (active,): the (K,) all-True ``active`` argument, if this engine version takes one."""
    return (jnp.ones((K,), bool),) if "active" in inspect.signature(engine_fn).parameters else ()


def _lanes(out, X, base, key):
    """Fills out["lanes"]; returns (datasets per chunk, number of chunks) of this engine."""
    B, N, D = X.shape
    res = gmmjax.fit_batch(X, dataclasses.replace(base, keep_restarts=True), key=key)
    it = np.asarray(res.restarts.n_iter)  # (B, R)
    chunk = B
    try:  # engines with cache-sized chunks of datasets (gmmjax._fit.default_chunk_size)
        from gmmjax import _fit

        chunk = int(_fit.default_chunk_size(B, N, D, base, X.dtype.itemsize))
    except (AttributeError, TypeError):
        pass
    n_chunks = -(-B // chunk)
    per_chunk_max = [int(it[i : i + chunk].max()) for i in range(0, B, chunk)]
    executed = sum(m * it[i : i + chunk].size for m, i in zip(per_chunk_max, range(0, B, chunk)))
    out["lanes"] = {
        "n_iter_mean": float(it.mean()), "n_iter_median": float(np.median(it)), "n_iter_max": int(it.max()),
        "useful_fraction_one_vmap": float(it.sum() / (it.max() * it.size)),
        "chunk_datasets": chunk, "n_chunks": n_chunks,
        "useful_fraction_chunked": float(it.sum() / executed),
        "executed_lane_iterations": int(executed), "useful_lane_iterations": int(it.sum()),
        "loop_iterations_all_chunks": int(sum(per_chunk_max)),
    }
    return chunk, n_chunks


def profile(w, repeats=5, dtype=np.float32, pieces_only=False):
    X = jnp.asarray(workloads.make_data(w).astype(dtype))
    B, N, D = X.shape
    K, R, cov = w.K, w.n_init, w.covariance_type
    base = gmmjax.EMConfig(n_components=K, covariance_type=cov, n_init=R, trace=None)
    key = jax.random.key(0)
    out = {"workload": w.name, "B": B, "N": N, "D": D, "K": K, "n_init": R, "fit_s": {}, "pieces_s": {}}

    # --- whole fits, several configs
    variants = {"benchmark config (trace=None)": base, "trace='loglik' (default)": dataclasses.replace(base, trace="loglik"),
                "n_init=1": dataclasses.replace(base, n_init=1)}
    for c in ("diag", "spherical"):
        variants[f"covariance_type={c}"] = dataclasses.replace(base, covariance_type=c)
    if pieces_only:  # e.g. W4: one big dataset, pieces of one EM iteration only
        variants = {}
        out["lanes"] = {"chunk_datasets": B, "n_chunks": 1, "loop_iterations_all_chunks": 1}
    for name, cfg in variants.items():
        out["fit_s"][name] = _time(lambda X, cfg=cfg: gmmjax.fit_batch(X, cfg, key=key), X, repeats=repeats)

    # --- lanes: iterations of every restart, and how many the while_loop executes
    chunk, n_chunks = B, 1
    if not pieces_only:
        chunk, n_chunks = _lanes(out, X, base, key)

    # --- pieces over the lanes of ONE chunk (chunk datasets x R restarts), as the engine runs them
    X = X[:chunk]
    B = chunk
    keys = jax.random.split(key, B * R).reshape(B, R)
    wts = jnp.ones((B, N), X.dtype)
    a_init, a_m, a_deg = (_extra(f, K) for f in (_init.init_params, _em.m_step, _em.is_degenerate))
    init_one = lambda k, x, ww: _init.init_params(k, x, ww, base, *a_init)  # noqa: E731
    estep_one = lambda x, ww, p: _em.e_step(x, ww, p, cov)  # noqa: E731
    mstep_one = lambda x, ww, r: _em.m_step(x, ww, r, cov, base.reg_covar, *a_m)  # noqa: E731
    degen_one = lambda p: _em.is_degenerate(p, cov, base.reg_covar, *a_deg)  # noqa: E731
    C = _covariance.COVARIANCE[cov]

    def lanes(f, in_axes_restart):
        g = jax.vmap(f, in_axes=in_axes_restart)  # restarts
        return jax.jit(jax.vmap(g))  # datasets

    def hp(f):
        def g(*a):
            with jax.default_matmul_precision("highest"):
                return f(*a)
        return g

    init_f = lanes(hp(init_one), (0, None, None))
    P0 = init_f(keys, X, wts)
    estep_f = lanes(hp(estep_one), (None, None, 0))
    _, logr = estep_f(X, wts, P0)
    resp = jnp.exp(logr)
    mstep_f = lanes(hp(mstep_one), (None, None, 0))
    em_f = lanes(hp(lambda x, ww, p: mstep_one(x, ww, jnp.exp(estep_one(x, ww, p)[1]))), (None, None, 0))
    logg_f = lanes(hp(lambda x, p: C.log_gaussian(x, p.means, p.covariances)), (None, 0))
    degen_f = lanes(hp(degen_one), (0,))
    p = out["pieces_s"]
    p["init (k-means++ + M-step)"] = _time(init_f, keys, X, wts, repeats=repeats)
    p["E-step"] = _time(estep_f, X, wts, P0, repeats=repeats)
    p["  log-density alone"] = _time(logg_f, X, P0, repeats=repeats)
    if cov == "full":
        chol_f = jax.jit(jax.vmap(jax.vmap(jax.vmap(_covariance._precision_cholesky))))
        p["  precision Cholesky alone"] = _time(chol_f, P0.covariances, repeats=repeats)
    p["M-step"] = _time(mstep_f, X, wts, resp, repeats=repeats)
    nk = jnp.sum(resp, axis=3) + 1e-6  # resp (B, R, K, N)
    wr_means = jnp.einsum("brkn,bnd->brkd", resp, X) / nk[..., None]
    est_f = lanes(hp(lambda x, r, n, m: C.estimate(x, r, n, m, base.reg_covar)), (None, 0, 0, 0))
    p["  covariance estimate alone"] = _time(est_f, X, resp, nk, wr_means, repeats=repeats)
    p["EM step (E + M)"] = _time(em_f, X, wts, P0, repeats=repeats)
    p["collapse check (eigenvalues)"] = _time(degen_f, P0, repeats=repeats)
    est_init = n_chunks * p["init (k-means++ + M-step)"]
    est_loop = out["lanes"]["loop_iterations_all_chunks"] * p["EM step (E + M)"]
    est_rest = n_chunks * (p["E-step"] + p["collapse check (eigenvalues)"])
    out["estimate_s"] = {"init (all chunks)": est_init, "EM loop (executed iterations x EM step)": est_loop,
                         "final E-step + collapse check": est_rest, "sum": est_init + est_loop + est_rest,
                         "measured fit": out["fit_s"].get("benchmark config (trace=None)", float("nan"))}
    out["temporaries_MB_per_chunk"] = {"(lanes, N, K, D)": B * R * N * K * D * X.dtype.itemsize / 1e6,
                                       "(lanes, N, K)": B * R * N * K * X.dtype.itemsize / 1e6}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_engine")
    p.add_argument("--workload", default="W1-cpu", help="a workload name, e.g. W1-cpu, W3-cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--pieces-only", action="store_true", help="skip whole fits (e.g. for W4-cpu)")
    a = p.parse_args(argv)
    loads = {w.name: w for w in workloads.SUITES["all"]} | {w.name: w for w in workloads.QUICK.values()}
    res = profile(loads[a.workload], a.repeats, pieces_only=a.pieces_only)
    print(f"{res['workload']}: B={res['B']} N={res['N']} D={res['D']} K={res['K']} n_init={res['n_init']}")
    for section in ("fit_s", "pieces_s", "estimate_s"):
        print(f"-- {section}" + (" (one chunk of lanes)" if section == "pieces_s" else ""))
        for k, v in res[section].items():
            print(f"  {k:56s} " + (f"{v:10.2e}" if "err" in k else f"{v * 1e3:10.2f} ms"))
    print("-- lanes", res["lanes"])
    print("-- temporaries", res["temporaries_MB_per_chunk"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
