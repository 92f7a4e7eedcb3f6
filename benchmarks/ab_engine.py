"""A/B timings of the engine's execution choices, all in one process and one run.

    python -m benchmarks.ab_engine [--only W1,W2,W3] [--scale F] [--repeats R] [--out DIR]

For W1-W3 (full size on a GPU; use --scale on a CPU) it times gmmjax.fit_batch under
the engine's execution variants, which change speed but not results:

- ``default``: what fit_batch picks on this backend (chunk size, lane compaction,
  the one-feature elementwise path);
- ``plain``: one vmap over the whole batch, no compaction;
- ``compact C/R``: lane compaction with capacity C lanes and R iterations a round;
- ``no-1d`` / ``1d``: W1 with the one-feature path forced off / on;
- ``centred``: the default with the moments path off (W3: 8 features, full);
- ``small-D off``: the default without the elementwise paths for few features
  (W2: the written-out Cholesky factor and covariance entries);
- ``point sums off``: the default with XLA's reductions instead of products with ones
  for the sums over the points (`gmmjax._covariance.POINT_SUM_PRODUCTS`; W1, W2);
- ``fused loop (Pallas)``: every lane's EM loop as one fused kernel
  (`gmmjax._fused.FUSED_LOOP`; GPUs only, where the kernel applies: W1, W2), and the
  same with 8 warps a program (`gmmjax._fused.NUM_WARPS`).

Each variant: the first call (compile + run) and the median of ``--repeats`` warm
runs; the mean log-likelihood and the iteration counts show that every variant did
the same fits. Writes ab.json and ab.md into --out (default benchmarks/out).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np

import gmmjax
from gmmjax import _covariance, _fused
from gmmjax._fit import _fit_batch_jit, default_chunk_size, default_compaction
from gmmjax._validate import batch as _as_batch
from benchmarks.workloads import SUITES, make_data


def _time(fn, repeats):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        warm.append(time.perf_counter() - t)
    return first, float(np.median(warm)), out


def _parse_variants(spec, w, lanes, config):
    """"plain;compact:8:8;..." -> variants (compact:F:R = capacity L/F, R iterations a round)."""
    out = []
    for item in spec.split(";"):
        if item == "fused":
            if _fused.applies(w.N, w.D, config, _covariance.uses_moments(config.covariance_type, w.D)):
                out.append(("fused loop (Pallas)", dict(chunk=w.B, compact=None), "fused"))
        elif item == "centred":
            out.append(("centred path (moments off)", dict(chunk=w.B, compact=None), "centred"))
        elif item == "plain":
            out.append(("plain", dict(chunk=w.B, compact=None), None))
        else:
            _, frac, r = item.split(":")
            cap = max(1, -(-lanes // int(frac)))
            out.append((f"compact L/{frac}, {r} it", dict(chunk=w.B, compact=(cap, int(r))), None))
    return out


def _variants(w, lanes, config, backend):
    B = w.B
    chunk = default_chunk_size(B, w.N, w.D, config, 4)
    comp = default_compaction(min(chunk, B) * config.n_init, config, lane_work=w.N * w.K * w.D)
    out = [("default", dict(chunk=min(chunk, B), compact=comp), None)]
    if backend == "gpu" and _fused.applies(w.N, w.D, config, _covariance.uses_moments(config.covariance_type, w.D)):
        out.append(("fused loop (Pallas)", dict(chunk=min(chunk, B), compact=comp), "fused"))
        out.append(("fused loop, 8 warps", dict(chunk=min(chunk, B), compact=comp), "fused8"))
    out.append(("plain", dict(chunk=B, compact=None), None))
    for frac, r in ((2, 8), (8, 8)):
        cap = max(1, -(-lanes // frac))
        out.append((f"compact L/{frac}, {r} it", dict(chunk=B, compact=(cap, r)), None))
    if w.D == 1:
        out.append(("default, 1-D path off", dict(chunk=min(chunk, B), compact=comp), False))
    if _covariance.uses_moments(config.covariance_type, w.D):
        out.append(("default, centred path (moments off)", dict(chunk=min(chunk, B), compact=comp), "centred"))
    if 2 <= w.D <= _covariance.SMALL_D:
        out.append(("default, small-D paths off", dict(chunk=min(chunk, B), compact=comp), "small-D off"))
    if w.D <= _covariance.SMALL_D:
        out.append(("default, point sums off", dict(chunk=min(chunk, B), compact=comp), "point sums off"))
    return out


def _save(out: pathlib.Path, meta: dict, rows: list):
    """ab.json and ab.md, rewritten after every variant: a run cut short keeps its rows."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# Engine A/B on {meta['devices'][0]} ({meta['date']}, jax {meta['jax']})", "",
             "| workload | variant | first call s | warm ms | mean LL | n_iter median/max |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['variant']} | failed: {r['error'][:80]} | | | |" for r in rows if "error" in r]
    lines += [f"| {r['workload']} | {r['variant']} | {r['first_s']:.2f} | {r['warm_s'] * 1e3:.1f} | {r['mean_ll']:.6f} | "
              f"{r['n_iter_median']:.0f}/{r['n_iter_max']} |" for r in rows if "error" not in r]
    (out / "ab.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab_engine")
    p.add_argument("--only", default="W1,W2,W3")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--variants", default=None, help='e.g. "plain;compact:8:8;compact:16:4" (default: a standard set)')
    args = p.parse_args(argv)
    backend = jax.default_backend()
    one_d_default = _covariance.ONE_D_PATH
    rows = []
    out = pathlib.Path(args.out)
    meta = dict(backend=backend, devices=[str(d) for d in jax.devices()], jax=jax.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), scale=args.scale, repeats=args.repeats)
    for w in SUITES["gpu"]:
        if w.family not in args.only.split(",") or w.per_iteration:
            continue
        w = w.scaled(args.scale)
        config = gmmjax.EMConfig(w.K, covariance_type=w.covariance_type, n_init=w.n_init, trace=None)
        X, wts = _as_batch(make_data(w).astype(np.float32), None, None)
        keys = jax.random.split(jax.random.key(0), w.B)
        lanes = w.B * w.n_init
        variants = _variants(w, lanes, config, backend) if args.variants is None else _parse_variants(args.variants, w, lanes, config)
        moments_min_d, small_d = dict(_covariance.MOMENTS_MIN_D), _covariance.SMALL_D
        for name, kw, one_d in variants:
            _covariance.MOMENTS_MIN_D.update(moments_min_d)
            _covariance.SMALL_D = small_d
            _covariance.POINT_SUM_PRODUCTS = one_d != "point sums off"
            _fused.FUSED_LOOP = one_d in ("fused", "fused8")
            _fused.NUM_WARPS = 8 if one_d == "fused8" else None
            if one_d == "centred":
                _covariance.MOMENTS_MIN_D.update(dict.fromkeys(moments_min_d))
                one_d = None
            elif one_d == "small-D off":
                _covariance.SMALL_D = 0
                one_d = None
            elif one_d == "point sums off":
                one_d = None
            _covariance.ONE_D_PATH = one_d_default if one_d in (None, "fused", "fused8") else one_d
            jax.clear_caches()
            if one_d in ("fused", "fused8") and backend != "gpu":
                print(f"{w.name:4s} {name:22s} skipped: the kernel runs on GPUs only", flush=True)
                continue
            fn = lambda: _fit_batch_jit(X, wts, keys, None, config=config, **kw)  # noqa: E731
            try:
                first, warm, res = _time(fn, args.repeats)
            except Exception as e:  # a variant that fails (a kernel that does not compile) is reported, not fatal
                rows.append(dict(workload=w.name, desc=w.describe(), variant=name, error=f"{type(e).__name__}: {e}"[:500]))
                print(f"{w.name:4s} {name:22s} FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
                _save(out, meta, rows)
                continue
            n_iter = np.asarray(res.n_iter)
            row = dict(
                workload=w.name, desc=w.describe(), variant=name, first_s=first, warm_s=warm,
                mean_ll=float(np.mean(np.asarray(res.log_likelihood))), n_iter_median=float(np.median(n_iter)),
                n_iter_max=int(n_iter.max()), statuses=gmmjax.status_counts(res.status),
                kwargs={k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
            )
            rows.append(row)
            _save(out, meta, rows)
            print(f"{w.name:4s} {name:22s} first {first:8.3f} s  warm {warm * 1e3:9.1f} ms  "
                  f"mean LL {row['mean_ll']:.6f}  n_iter med/max {row['n_iter_median']:.0f}/{row['n_iter_max']}", flush=True)
        _covariance.MOMENTS_MIN_D.update(moments_min_d)
        _covariance.SMALL_D = small_d
    _covariance.ONE_D_PATH = one_d_default
    _covariance.POINT_SUM_PRODUCTS = True
    _fused.FUSED_LOOP, _fused.NUM_WARPS = False, None
    _save(out, meta, rows)

if __name__ == "__main__":
    main()
