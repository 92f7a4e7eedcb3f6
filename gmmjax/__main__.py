"""Command line: ``gmmjax demo`` (also ``python -m gmmjax demo``).

``gmmjax demo`` prints the fitted mixtures; ``gmmjax demo --out DIR`` also writes an
animation of each fit (GIF) and a picture of the final fits (PNG) into DIR.
"""

from __future__ import annotations

import argparse
import os
import importlib.util
import pathlib
import sys

import numpy as np


def demo_data() -> np.ndarray:
    """The prototype's example: 100 samples of U(0, 1) drawn with NumPy seed 13."""
    return np.random.RandomState(13).rand(100)


def _use_compilation_cache(jax) -> None:
    """JAX's persistent compilation cache: a second run skips the compiles.

    In $GMMJAX_CACHE_DIR, else $XDG_CACHE_HOME/gmmjax, else ~/.cache/gmmjax;
    GMMJAX_CACHE_DIR="" turns it off.
    """
    path = os.environ.get("GMMJAX_CACHE_DIR")
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "gmmjax")
    if path:
        jax.config.update("jax_compilation_cache_dir", path)


def run_demo(args) -> int:
    if args.out is not None and not all(importlib.util.find_spec(m) for m in ("matplotlib", "PIL")):
        # Say so before fitting, not after.
        print("gmmjax demo --out needs matplotlib and Pillow: pip install 'gmmjax[plot]'", file=sys.stderr)
        return 1
    import jax

    jax.config.update("jax_enable_x64", True)  # this process owns its JAX config
    _use_compilation_cache(jax)
    import gmmjax

    X = demo_data()
    results = {}
    print(f"gmmjax {gmmjax.__version__} demo: {X.size} samples of U(0, 1), NumPy seed 13, "
          f"{args.n_init} restarts, JAX on {jax.default_backend()}")
    for k in args.components:
        config = gmmjax.EMConfig(n_components=k, n_init=args.n_init, trace="params")
        res = gmmjax.fit(X, config, key=jax.random.key(args.seed))
        results[k] = res
        p = res.params
        order = np.argsort(np.asarray(p.means[:, 0]))
        print(f"\nK = {k}: status {gmmjax.Status(int(res.status)).name}, {int(res.n_iter)} EM iterations, "
              f"mean log-likelihood {float(res.log_likelihood):.6f}")
        print(f"  {'weight':>8} {'mean':>8} {'std':>8}")
        std = np.sqrt(np.asarray(p.covariances)[:, 0, 0])
        for i in order:
            print(f"  {float(p.weights[i]):8.4f} {float(p.means[i, 0]):8.4f} {std[i]:8.4f}")
    if args.out is not None:
        paths = write_pictures(X, results, args.out, n_init=args.n_init)
        print("\nwrote " + "\n      ".join(str(p) for p in paths))
    return 0


def write_pictures(X, results: dict, out, *, n_init: int) -> list:
    """Writes demo_k{K}.gif (the EM trace of the kept restart) per fit and demo_fits.png.

    Args:
      X: the fitted data.
      results: {K: FitResult fitted with trace="params"}.
      out: the directory to write into (created if missing).
      n_init: the number of restarts (for the titles).

    Returns:
      The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no GUI toolkit needed
    import matplotlib.pyplot as plt

    from gmmjax import animation, plot

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, res in results.items():
        title = f"U(0, 1), {X.size} samples: K = {k}, best of {n_init} restarts"
        anim = animation.animate(res, X, title=title)
        paths.append(animation.save(anim, out / f"demo_k{k}.gif", fps=3, dpi=80))
        plt.close(anim.figure)
    fig = plt.figure(figsize=(5.5 * len(results), 4.0), layout="constrained")
    for ax, (k, res) in zip(fig.subplots(1, len(results), squeeze=False)[0], results.items()):
        plot.fit(res, X, ax=ax)
    paths.append(out / "demo_fits.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _int_in(lo: int, hi: int, what: str):
    """An argparse type: an integer in [lo, hi), with a message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value < hi:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _folder(text: str) -> pathlib.Path:
    """A folder path; an empty one (an unset shell variable: --out "$DIR") is an error,
    not the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a folder, got an empty path (use . for the current folder)")
    return pathlib.Path(text)


_positive_int = _int_in(1, 2**31 - 1, "an integer >= 1")
_seed = _int_in(0, 2**32, "an integer in [0, 2**32)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gmmjax", description="Gaussian mixtures fitted with EM in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the U(0,1) example with 3 and 6 components")
    demo.add_argument("--components", type=_positive_int, nargs="+", default=[3, 6], help="values of K (default: 3 6)")
    demo.add_argument("--n-init", type=_positive_int, default=10, help="random restarts (default: 10)")
    demo.add_argument("--seed", type=_seed, default=0, help="JAX random seed (default: 0)")
    demo.add_argument("--out", type=_folder, default=None, metavar="DIR",
                      help="also write an animation of each fit (GIF) and the final fits (PNG) into DIR "
                           "(needs matplotlib and Pillow: pip install gmmjax[plot])")
    args = parser.parse_args(argv)
    if args.command == "demo":
        n = demo_data().size
        if max(args.components) > n:
            demo.error(f"argument --components: at most the {n} samples, got {max(args.components)}")
        if args.out is not None:  # before minutes of fitting, not after
            try:
                args.out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                demo.error(f"argument --out: cannot write into {str(args.out)!r}: {e.strerror or e}")
        return run_demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
