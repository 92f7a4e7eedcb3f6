"""A W1-shaped batch far larger than one call should hold: B datasets x N=1,000, D=1, K=3,
10 restarts, fitted by one `fit_batch(..., progress=True)` call that runs it block by
block (see `gmmjax._blocks`).

    python -m benchmarks.big_batch --B 1000000 [--block-size 50000] [--json OUT]

The data are W1's first 10,000 datasets (benchmarks/workloads.py) repeated to B, kept
in host memory as float32. Reports the wall time, the host's peak resident memory, the
device's peak memory where the backend reports it, and the statuses. Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

import gmmjax
from benchmarks.workloads import SUITES, make_data


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.big_batch")
    p.add_argument("--B", type=int, default=1_000_000)
    p.add_argument("--base", type=int, default=10_000, help="distinct datasets, repeated to B")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    w1 = next(w for w in SUITES["gpu"] if w.name == "W1").scaled(a.base / 10_000)
    base = make_data(w1).astype(np.float32)
    X = np.tile(base, (-(-a.B // base.shape[0]), 1, 1))[: a.B]
    del base
    config = gmmjax.EMConfig(w1.K, n_init=w1.n_init, tol=1e-3, max_iter=100, reg_covar=1e-6)
    t = time.perf_counter()
    res = gmmjax.fit_batch(X, config, key=jax.random.key(0), progress=True, block_size=a.block_size)
    status = np.asarray(res.status)
    wall = time.perf_counter() - t
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    out = dict(
        B=a.B, N=X.shape[1], data_GB=X.nbytes / 1e9, device=str(dev), jax=jax.__version__,
        wall_s=wall, host_peak_rss_GB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        device_peak_GB=(stats or {}).get("peak_bytes_in_use", float("nan")) / 1e9,
        statuses=gmmjax.status_counts(status), nonfinite_ll=int(np.sum(~np.isfinite(np.asarray(res.log_likelihood)))),
        block_size=a.block_size,
    )
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
