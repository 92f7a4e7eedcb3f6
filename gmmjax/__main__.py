"""Command line: ``gmmjax demo`` (also ``python -m gmmjax demo``)."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def demo_data() -> np.ndarray:
    """The prototype's example: 100 samples of U(0, 1) drawn with NumPy seed 13."""
    return np.random.RandomState(13).rand(100)


def run_demo(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # this process owns its JAX config
    import gmmjax

    X = demo_data()
    print(f"gmmjax {gmmjax.__version__} demo: {X.size} samples of U(0, 1), NumPy seed 13, "
          f"{args.n_init} restarts, JAX on {jax.default_backend()}")
    for k in args.components:
        config = gmmjax.EMConfig(n_components=k, n_init=args.n_init, trace="params")
        res = gmmjax.fit(X, config, key=jax.random.key(args.seed))
        p = res.params
        order = np.argsort(np.asarray(p.means[:, 0]))
        print(f"\nK = {k}: status {gmmjax.Status(int(res.status)).name}, {int(res.n_iter)} EM iterations, "
              f"mean log-likelihood {float(res.log_likelihood):.6f}")
        print(f"  {'weight':>8} {'mean':>8} {'std':>8}")
        std = np.sqrt(np.asarray(p.covariances)[:, 0, 0])
        for i in order:
            print(f"  {float(p.weights[i]):8.4f} {float(p.means[i, 0]):8.4f} {std[i]:8.4f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gmmjax", description="Gaussian mixtures fitted with EM in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the U(0,1) example with 3 and 6 components")
    demo.add_argument("--components", type=int, nargs="+", default=[3, 6], help="values of K (default: 3 6)")
    demo.add_argument("--n-init", type=int, default=10, help="random restarts (default: 10)")
    demo.add_argument("--seed", type=int, default=0, help="JAX random seed (default: 0)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
