"""A 2-D fit animated: every component's ellipse (1 and 2 standard deviations) moving
from a random start to three tilted clusters.

Writes into OUT_DIR (a new temporary directory if omitted):
  ellipses_2d.gif            the EM trace of the kept restart, with the log-likelihood
  ellipses_2d_restarts.gif   the four restarts side by side, the kept one in red
  ellipses_2d.png            the final fit, points coloured by component

Run:  python examples/ellipses_2d.py [OUT_DIR] [--max-frames N]
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


def three_clusters(rng):
    """(600, 2): three Gaussian clusters of different sizes, shapes and tilts."""
    parts = []
    for mean, scale, angle, n in [((0, 0), (2.0, 0.4), 30, 250), ((4, 4), (1.2, 0.5), -50, 200), ((-3, 5), (0.6, 0.6), 0, 150)]:
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        rot = np.array([[c, -s], [s, c]])
        parts.append(np.asarray(mean) + (rng.normal(size=(n, 2)) * scale) @ rot.T)
    return np.concatenate(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=pathlib.Path, help="output directory (default: a temporary one)")
    parser.add_argument("--max-frames", type=int, default=60, help="frames per animation (default 60)")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="gmmjax-ellipses-"))
    out.mkdir(parents=True, exist_ok=True)

    X = three_clusters(np.random.default_rng(0)).astype(np.float32)  # JAX's default precision
    # Random responsibilities as the start (init="random") and a small tol: a long, visible walk.
    config = gmmjax.EMConfig(n_components=3, covariance_type="full", n_init=4, init="random", tol=1e-6,
                             max_iter=200, trace="params", keep_restarts=True)
    res = gmmjax.fit(X, config, key=jax.random.key(1))
    print(f"{gmmjax.Status(int(res.status)).name} after {int(res.n_iter)} EM iterations, "
          f"mean log-likelihood {float(res.log_likelihood):.4f}")

    anim = animation.animate(res, X, max_frames=args.max_frames)
    print("wrote", animation.save(anim, out / "ellipses_2d.gif", fps=8, dpi=70))
    plt.close(anim.figure)

    anim = animation.animate_restarts(res, X, max_frames=min(args.max_frames, 30))
    print("wrote", animation.save(anim, out / "ellipses_2d_restarts.gif", fps=6, dpi=60))
    plt.close(anim.figure)

    ax = plot.fit(res, X)
    ax.figure.savefig(out / "ellipses_2d.png", dpi=100)
    print("wrote", out / "ellipses_2d.png")


if __name__ == "__main__":
    main()
