"""Ten thousand small 1-D datasets, one Gaussian mixture each, in one compiled call.

Each dataset has its own size (20 to 100 points) and its own two clusters; two
deliberately broken datasets (a NaN, a single point) show that a bad dataset gets a
status of its own instead of failing the batch.

Writes into OUT_DIR (a new temporary directory if omitted):
  many_datasets_summary.png   EM iterations, final log-likelihood and status counts
  many_datasets_first9.gif    the first nine fits, refitted with a parameter trace

Run:  python examples/many_datasets.py [OUT_DIR] [--n-datasets N] [--max-frames N]
"""

import argparse
import dataclasses
import pathlib
import tempfile
import time

import jax
import matplotlib

matplotlib.use("Agg")  # files only, no window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import animation, plot  # noqa: E402


def make_datasets(rng, n):
    """n 1-D datasets of 20 to 100 points from two Gaussians; the last two are broken."""
    sizes = rng.integers(20, 101, n)
    gap = rng.uniform(1.0, 6.0, n)
    share = rng.uniform(0.2, 0.8, n)
    Xs = []
    for m, g, s in zip(sizes, gap, share):
        first = rng.random(m) < s
        x = np.where(first, rng.normal(0.0, 1.0, m), rng.normal(g, rng.uniform(0.5, 1.5), m))
        Xs.append(x.astype(np.float32))  # JAX's default precision
    Xs[-2][3] = np.nan  # -> Status.NONFINITE_INPUT
    Xs[-1] = Xs[-1][:1]  # one point, two components -> Status.TOO_FEW_POINTS
    return Xs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=pathlib.Path, help="output directory (default: a temporary one)")
    parser.add_argument("--n-datasets", type=int, default=10_000, help="number of datasets (default 10000)")
    parser.add_argument("--max-frames", type=int, default=15, help="frames of the animation (default 15)")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="gmmjax-many-"))
    out.mkdir(parents=True, exist_ok=True)

    Xs = make_datasets(np.random.default_rng(0), args.n_datasets)
    # trace="loglik" keeps one log-likelihood per iteration and dataset; "params" would
    # also keep every iteration's parameters of every dataset: fine for 9, heavy for 10,000.
    config = gmmjax.EMConfig(n_components=2, n_init=3, trace="loglik")
    start = time.perf_counter()
    res = jax.block_until_ready(gmmjax.fit_batch(Xs, config, key=jax.random.key(0)))
    print(f"fitted {len(Xs)} datasets in {time.perf_counter() - start:.1f} s (compilation included)")
    print("statuses:", gmmjax.status_counts(res.status))

    fig = plot.batch_summary(res, title=f"{len(Xs)} datasets of 20 to 100 points, K = 2, 3 restarts each")
    fig.savefig(out / "many_datasets_summary.png", dpi=100)
    plt.close(fig)
    print("wrote", out / "many_datasets_summary.png")

    # The same keys as above (dataset i uses split(key, B)[i]): the same nine fits again,
    # this time with every iteration's parameters.
    first = Xs[:9]
    keys = jax.random.split(jax.random.key(0), len(Xs))[:9]
    traced = gmmjax.fit_batch(first, dataclasses.replace(config, trace="params"), key=keys)
    anim = animation.animate_batch(traced, first, n=9, max_frames=args.max_frames)
    print("wrote", animation.save(anim, out / "many_datasets_first9.gif", fps=4, dpi=60))
    plt.close(anim.figure)


if __name__ == "__main__":
    main()
