"""Wall time of model selection (issue 4): choose K for 50 datasets in one call.

    python -m benchmarks.select_time [--datasets 50] [--repeats 3]

Each dataset: 3 well separated 2-D clusters drawn fresh (200 points each, centres
on a circle of radius 6, unit covariances); `gmmjax.select_n_components` over
ks = 1..6, full covariances, 2 restarts, BIC. Prints the first call (compile + run),
the median warm time, and how often K = 3 was picked. A scikit-learn loop (fit every
K on every dataset, pick by BIC) runs beside it for the ratio.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import gmmjax


def three_clusters(rng, n=200):
    angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2])
    centres = 6.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.concatenate([c + rng.normal(size=(n, 2)) for c in centres]).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.select_time")
    p.add_argument("--datasets", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    Xs = [three_clusters(rng) for _ in range(args.datasets)]
    config = gmmjax.EMConfig(1, n_init=2)
    run = lambda: gmmjax.select_n_components(Xs, range(1, 7), config, key=jax.random.key(0))  # noqa: E731
    t = time.perf_counter()
    sel = run()
    first = time.perf_counter() - t
    warm = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        sel = run()
        warm.append(time.perf_counter() - t)
    from sklearn.mixture import GaussianMixture

    t = time.perf_counter()
    picks = [min(range(1, 7), key=lambda k: GaussianMixture(k, n_init=2, random_state=0).fit(X).bic(X)) for X in Xs]
    sk = time.perf_counter() - t
    print(f"gmmjax select_n_components, {args.datasets} datasets x ks 1..6: first call {first:.2f} s, "
          f"warm {np.median(warm):.3f} s (median of {args.repeats}); picked K=3 for "
          f"{np.mean(np.asarray(sel.n_components) == 3):.0%}; backend {jax.default_backend()}")
    print(f"scikit-learn loop (same grid, n_init=2, BIC): {sk:.2f} s ({sk / np.median(warm):.1f}x); "
          f"picked K=3 for {np.mean(np.asarray(picks) == 3):.0%}")


if __name__ == "__main__":
    main()
