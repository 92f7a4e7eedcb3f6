"""The benchmark runner of issue 3: gmmjax against scikit-learn, gmm-gpu and pomegranate.

    python -m benchmarks.run --suite cpu|gpu|all [--out DIR] [--quick] [--only W1,W3]
                             [--scale F] [--repeats R] [--jobs J] [--dtype float32]

For each workload it generates the data (fixed seed, `benchmarks.workloads`), times
gmmjax (first call = compile + run, then the median of warm runs: at least `--repeats`
of them and `--min-time` seconds of them), times
every peer that imports (a peer that does not is skipped with a note), scores every
system's fitted parameters with one float64 scorer, and writes results.json,
results.md and speedups.png into the output folder (after every workload, so a run
cut short keeps what it measured).

For scikit-learn timings, unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the
command only (`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m ...`): they slow
a current numpy. The values in force are recorded in the output.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import sys
import time
import traceback

# JAX and torch share the GPU in one process: leave torch room (set before jax loads).
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

import numpy as np  # noqa: E402

from benchmarks import peers, report  # noqa: E402
from benchmarks.workloads import SEED, Workload, make_data, suite  # noqa: E402

SYSTEMS = ("gmmjax", "sklearn", "gmm-gpu", "pomegranate")
_VERSIONS = (
    "gmmjax", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "numpy", "scipy",
    "scikit-learn", "joblib", "torch", "gmm-gpu", "pomegranate", "matplotlib",
)


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("cpu", "gpu", "all"), default="cpu",
                   help="cpu: W1-cpu..W4-cpu (~10 min on 2 cores); gpu: full-size W1..W4; all: both")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/out/SUITE-DATE)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1 warm run: a smoke test")
    p.add_argument("--only", default=None, help="comma-separated families or names, e.g. W1,W3-cpu")
    p.add_argument("--scale", type=float, default=1.0, help="multiply B (or N for W4) by this")
    p.add_argument("--repeats", type=int, default=None, help="warm runs per timing (default 3; 1 with --quick)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of warm runs per gmmjax or gmm-gpu timing, at least (default 1; 0 with --quick)")
    p.add_argument("--jobs", type=int, default=None, help="joblib workers for scikit-learn (default: all cores)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="gmmjax's dtype")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the fits' random initialisation")
    p.add_argument("--pomegranate-budget", type=float, default=120.0,
                   help="seconds pomegranate may take on one workload before it is skipped")
    p.add_argument("--sklearn-budget", type=float, default=None,
                   help="seconds scikit-learn may take on one batched workload: beyond, it runs a prefix "
                        "of the datasets and its time is extrapolated (default: 60 with --suite gpu, else none)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="let --suite gpu|all run when JAX has no GPU (otherwise it stops at once)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which the peers of the remaining workloads are skipped, gmmjax "
                        "still runs (default: 360 with --suite gpu, else none)")
    return p


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions():
    from importlib import metadata

    out = {}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _blas():
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, {i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ) or "-"
    except Exception as e:  # informational only
        return f"unknown ({type(e).__name__})"


def _git():
    """The commit of the checkout that holds gmmjax, and whether the engine has local changes."""
    import subprocess

    import gmmjax

    root = os.path.dirname(os.path.dirname(os.path.abspath(gmmjax.__file__)))
    try:
        run = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "gmmjax_path": root}
        dirty = run("status", "--porcelain", "--", "gmmjax").stdout.strip()
        return {"commit": head.stdout.strip(), "gmmjax_modified": bool(dirty), "gmmjax_path": root}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "gmmjax_path": root}


def environment(args, argv) -> dict:
    import jax

    meta = {
        "suite": args.suite,
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.run", *argv]),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_backend": jax.default_backend(),
        "dtype": args.dtype,
        "n_jobs": args.jobs,
        "sklearn_budget_s": args.sklearn_budget,
        "deadline_s": args.deadline,
        "repeats": args.repeats,
        "min_time_s": args.min_time,
        "seed": args.seed,
        "data_seed": SEED,
        "env": {
            k: os.environ.get(k, "unset")
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "XLA_FLAGS",
                      "XLA_PYTHON_CLIENT_MEM_FRACTION")
        },
        "blas": _blas(),
        "versions": _versions(),
        "torch_device": None,
        "git": _git(),
    }
    if peers.available("gmm-gpu")[0] or peers.available("pomegranate")[0]:
        import torch

        dev = peers.torch_device()
        meta["torch_device"] = torch.cuda.get_device_name(0) if dev == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return meta


def _applies(system: str, w: Workload):
    """None if the system runs on this workload, else the reason it does not."""
    if system == "gmm-gpu":
        if w.per_iteration:
            return "one big dataset is not gmm-gpu's use case (its docs point to pomegranate)"
        if w.covariance_type != "full":
            return "gmm-gpu fits full covariances only"
    if system == "pomegranate" and not w.per_iteration:
        return "pomegranate fits one dataset at a time; run on the single-dataset workload only"
    return None


def _run_system(system, w, X, args, init):
    if system == "gmmjax":
        return peers.run_gmmjax(
            w, X, dtype=np.dtype(args.dtype), repeats=args.repeats, seed=args.seed, init=init, min_time_s=args.min_time
        )
    if system == "sklearn":
        return peers.run_sklearn(w, X, n_jobs=args.jobs, seed=args.seed, init=init, budget_s=args.sklearn_budget)
    if system == "gmm-gpu":
        return peers.run_gmm_gpu(w, X, repeats=args.repeats, seed=args.seed, min_time_s=args.min_time)
    if system == "pomegranate":
        return peers.run_pomegranate(w, X, init=init, budget_s=args.pomegranate_budget)
    raise ValueError(system)


def _median_finite_first(ll):
    """Median with non-finite values counted as the worst (-inf)."""
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    return float(np.median(ll)) if ll.size else math.nan


def run_workload(w: Workload, systems, args, log, past_deadline=lambda: False) -> dict:
    t0 = time.perf_counter()
    X = make_data(w)
    entry = {
        "name": w.name, "family": w.family, "description": w.describe(), "B": w.B, "N": w.N,
        "D": w.D, "K": w.K, "n_init": w.n_init, "covariance_type": w.covariance_type,
        "per_iteration": w.per_iteration, "data_seconds": round(time.perf_counter() - t0, 3),
        "systems": {},
    }
    lls, init = {}, None
    if w.per_iteration:
        init = peers.shared_init(w, X, dtype=np.dtype(args.dtype), seed=args.seed)
        entry["shared_init_seconds"] = round(init["seconds"], 3)
    for system in systems:
        reason = _applies(system, w)
        ok, version = peers.available(system)
        if reason is None and not ok:
            reason = version
        if reason is None and system != "gmmjax" and past_deadline():
            reason = f"the run passed its --deadline of {args.deadline:.0f} s"
        if reason is not None:
            entry["systems"][system] = {"skipped": reason}
            log(f"[{w.name}] {system}: skipped ({reason})")
            continue
        try:
            load = os.getloadavg()[0]
            r = _run_system(system, w, X, args, init)
        except Exception as e:  # a peer that breaks is a note in the table, never a crash
            entry["systems"][system] = {"skipped": f"failed: {type(e).__name__}: {e}"}
            log(f"[{w.name}] {system}: FAILED\n{traceback.format_exc()}")
            continue
        n = r.datasets or X.shape[0]
        lls[system] = peers.mean_loglik(X[:n], r.weights, r.means, r.covariances, r.prec_chol)
        entry["systems"][system] = {
            "time_s": r.time_s, "times_s": r.times_s, "first_call_s": r.first_call_s,
            "compile_s": None if r.first_call_s is None or w.per_iteration else r.first_call_s - r.time_s,
            "n_init": r.n_init, "datasets": n, "extrapolated_from": r.extrapolated_from,
            "nonfinite_fraction": float(np.mean(~np.isfinite(lls[system]))),
            "median_ll": _median_finite_first(lls[system]),
            "notes": r.notes, "extra": r.extra,
            "loadavg_1min_before": round(load, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
        }
        log(f"[{w.name}] {system}: {report.fmt_time(r.time_s, w.per_iteration)}"
            + (f" (first call {r.first_call_s:.2f} s)" if r.first_call_s is not None else ""))
    # Quality: medians over the datasets scikit-learn ran (all of them if it did not run).
    m = entry["systems"].get("sklearn", {}).get("datasets") or X.shape[0]
    ref = _median_finite_first(lls["sklearn"][:m]) if "sklearn" in lls else None
    ref_time = entry["systems"].get("gmmjax", {}).get("time_s")
    for system, r in entry["systems"].items():
        if "skipped" in r:
            continue
        r["median_ll_vs_sklearn_datasets"] = _median_finite_first(lls[system][:m])
        r["quality_delta"] = None if ref is None else r["median_ll_vs_sklearn_datasets"] - ref
        if ref is not None and system != "sklearn" and len(lls[system]) >= m:
            d = lls[system][:m] - lls["sklearn"][:m]
            r["paired_ll_diff_median"] = float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else None
        if ref_time and r["time_s"] and ref_time > 0:
            r["ratio"] = r["time_s"] / ref_time
    if ref is not None and "gmmjax" in lls:
        q = entry["systems"]["gmmjax"]["quality_delta"]
        entry["quality_guard_ok"] = bool(q >= -report.QUALITY_GUARD)
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    return entry


def main(argv=None) -> dict:
    """Runs the suite; returns the result dict (also written to --out)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.min_time = args.min_time if args.min_time is not None else (0.0 if args.quick else peers.MIN_TIME_S)
    args.jobs = args.jobs if args.jobs is not None else peers.cpu_count()
    gpu = args.suite == "gpu"
    args.sklearn_budget = args.sklearn_budget if args.sklearn_budget is not None else (60.0 if gpu else None)
    args.deadline = args.deadline if args.deadline is not None else (360.0 if gpu else None)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown --systems {sorted(unknown)}; use some of {','.join(SYSTEMS)}")
    if "gmmjax" not in systems:
        systems.insert(0, "gmmjax")
    loads = suite(args.suite, quick=args.quick, only=args.only.split(",") if args.only else None, scale=args.scale)
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    if args.suite != "cpu" and not args.quick and jax.default_backend() == "cpu" and not args.allow_cpu:
        raise SystemExit(
            f"--suite {args.suite} runs the full-size workloads, but JAX sees only {jax.devices()}: "
            "install JAX with CUDA (or pass --allow-cpu to run them on the CPU anyway)."
        )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("benchmarks", "out", f"{args.suite}{'-quick' if args.quick else ''}-{stamp}")

    def log(msg):
        print(msg, flush=True)

    result = {"meta": environment(args, argv), "workloads": []}
    log(f"gmmjax benchmark, suite {args.suite}: {', '.join(w.name for w in loads)} -> {out}")
    start = time.perf_counter()
    def past_deadline():
        return args.deadline is not None and time.perf_counter() - start > args.deadline

    for w in loads:
        result["workloads"].append(run_workload(w, systems, args, log, past_deadline))
        result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
        paths = report.write(_clean(result), out, with_chart=False)
    paths = report.write(_clean(result), out)
    log(report.markdown(_clean(result)))
    log(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']} in {result['meta']['seconds']} s")
    result["paths"] = paths
    return result


def _clean(o):
    """The result with NaN / inf replaced by None (strict JSON) and tuples as lists."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


if __name__ == "__main__":
    main()
