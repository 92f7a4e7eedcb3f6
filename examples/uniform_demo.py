"""The prototype's example, animated: 100 samples of U(0, 1) fitted with K = 3 and K = 6.

Ten restarts run in parallel; the animation plays the one `fit` kept (the best
log-likelihood). A uniform density has no Gaussian components to find, so watch how
EM spreads the components to tile the square shape: with K = 6 they pile up at the
edges, where the density drops from 1 to 0.

Writes into OUT_DIR (a new temporary directory if omitted):
  uniform_k3.gif, uniform_k6.gif   the EM trace of the kept restart
  uniform_k6_restarts.gif          all ten restarts of K = 6 side by side
  uniform_fits.png                 the final fits and their log-likelihood traces

Run:  python examples/uniform_demo.py [OUT_DIR] [--max-frames N]
(`gmmjax demo --out DIR` writes the same pictures from the command line.)
"""

import argparse
import pathlib
import tempfile

import jax
import matplotlib

matplotlib.use("Agg")  # files only, no window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import animation, plot  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=pathlib.Path, help="output directory (default: a temporary one)")
    parser.add_argument("--max-frames", type=int, default=60, help="frames per animation (default 60)")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="gmmjax-uniform-"))
    out.mkdir(parents=True, exist_ok=True)

    jax.config.update("jax_enable_x64", True)  # the same numbers as `gmmjax demo`
    X = np.random.RandomState(13).rand(100)

    results = {}
    for K in (3, 6):
        config = gmmjax.EMConfig(n_components=K, n_init=10, trace="params", keep_restarts=True)
        res = gmmjax.fit(X, config, key=jax.random.key(0))
        results[K] = res
        print(f"K = {K}: {gmmjax.Status(int(res.status)).name} after {int(res.n_iter)} EM iterations, "
              f"mean log-likelihood {float(res.log_likelihood):.4f}")
        anim = animation.animate(res, X, max_frames=args.max_frames, title=f"U(0, 1), K = {K}: the kept restart")
        print("wrote", animation.save(anim, out / f"uniform_k{K}.gif", fps=3, dpi=80))
        plt.close(anim.figure)

    anim = animation.animate_restarts(results[6], X, max_frames=args.max_frames)
    print("wrote", animation.save(anim, out / "uniform_k6_restarts.gif", fps=3, dpi=60))
    plt.close(anim.figure)

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    for col, (K, res) in enumerate(results.items()):
        plot.fit(res, X, ax=axes[0, col])
        plot.loglik(res, ax=axes[1, col], title=f"K = {K}: every restart (grey) and the kept one")
    fig.savefig(out / "uniform_fits.png", dpi=100)
    print("wrote", out / "uniform_fits.png")


if __name__ == "__main__":
    main()
