"""Animations of EM fits: watch the mixture move, iteration by iteration.

Needs matplotlib (and Pillow for GIF files): ``pip install gmmjax[plot]``. This module
is not imported by ``import gmmjax``; import it explicitly::

    from gmmjax import animation

Every function reads only a `FitResult` fitted with ``EMConfig(trace="params")``
(parameters of every EM iteration) and the data that was fitted:

- `animate`: one fit. 1-D data: the histogram, the mixture density and each weighted
  component; D >= 2: the points and an ellipse per component at 1 and 2 standard
  deviations, on two named features or on the two leading principal axes of X.
  A side panel draws the log-likelihood curve up to the current iteration.
- `animate_restarts`: every restart of one fit side by side (``keep_restarts=True``),
  the one `fit` kept marked.
- `animate_batch`: small multiples of the first datasets of a `fit_batch` result.
- `save`: a GIF (Pillow), a self-contained HTML page, or an MP4 (needs ffmpeg).

All return a `GMMAnimation`, a `matplotlib.animation.FuncAnimation` that blits: its
artists are created once and updated in place. Because blitting redraws only the
inside of each axes, the changing part of the title (iteration and log-likelihood)
is a status line at the top inside the axes; the axes title above it stays fixed.
Keep a reference to the returned object while it plays (matplotlib's rule).

Example:
  >>> import jax, numpy as np, gmmjax
  >>> from gmmjax import animation
  >>> X = np.random.default_rng(0).normal(size=200)
  >>> res = gmmjax.fit(X, gmmjax.EMConfig(2, trace="params", max_iter=20), key=jax.random.key(0))
  >>> anim = animation.animate(res, X, max_frames=10)
  >>> int(anim.iterations[0]), int(anim.iterations[-1]) == int(res.n_iter)
  (0, True)
  >>> import pathlib, tempfile
  >>> animation.save(anim, pathlib.Path(tempfile.mkdtemp()) / "fit.gif", fps=5).name
  'fit.gif'
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Optional

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("gmmjax.animation needs matplotlib (and Pillow for GIF files): pip install 'gmmjax[plot]'") from e
import numpy as np
from matplotlib.animation import FuncAnimation, HTMLWriter, PillowWriter, writers
from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine

from gmmjax import _plotting as P

__all__ = ["GMMAnimation", "animate", "animate_batch", "animate_restarts", "save"]

_BEST_COLOR = "#d62728"


class GMMAnimation(FuncAnimation):
    """A blitting `FuncAnimation` over EM iterations (what the functions here return).

    Frame f shows the parameters after ``iterations[f]`` EM iterations.

    Attributes:
      figure: the matplotlib Figure.
      iterations: (F,) int array, the EM iteration shown by each frame.
      axes: the data axes, one per fit shown (restart or dataset).
      loglik_axes: the log-likelihood axes, or None.
    """

    def __init__(self, fig, panels, iterations, *, axes, loglik_axes=None, interval=200, repeat_delay=1000):
        self.figure = fig
        self.iterations = np.asarray(iterations, dtype=np.int64)
        self.axes = list(axes)
        self.loglik_axes = loglik_axes
        self._panels = list(panels)
        if not isinstance(interval, (int, float, np.number)) or not interval > 0:
            raise ValueError(f"interval must be a positive number of milliseconds, got {interval!r}.")
        super().__init__(fig, self.set_frame, frames=len(self.iterations), init_func=self._first_frame, blit=True,
                         interval=interval, repeat_delay=repeat_delay)

    def set_frame(self, f: int) -> list:
        """Puts every artist in the state of frame f and returns the artists it changed."""
        f = int(f)
        if not 0 <= f < len(self.iterations):
            raise IndexError(f"frame {f} out of range: this animation has {len(self.iterations)} frames.")
        artists = []
        for panel in self._panels:
            artists += panel.update(f)
        return artists

    def _first_frame(self):
        return self.set_frame(0)

    def save(self, filename, writer=None, *args, **kwargs):
        """`FuncAnimation.save`, with the figure's layout computed once for all frames.

        Only the artists inside the axes change between frames, so the constrained
        layout of the first frame holds for every frame; it is restored afterwards.
        """
        with _frozen_layout(self.figure):
            return super().save(filename, writer, *args, **kwargs)

    def _post_draw(self, framedata, blit):
        # While a writer saves, it renders each frame itself (savefig); matplotlib's
        # extra draw_idle here would draw every frame twice.
        if not blit and self.figure.canvas.is_saving():
            return
        super()._post_draw(framedata, blit)


@contextlib.contextmanager
def _frozen_layout(fig):
    """Runs the figure's layout engine once, then holds that layout until the block ends."""
    engine = fig.get_layout_engine()
    if not isinstance(engine, (ConstrainedLayoutEngine, TightLayoutEngine)):
        yield
        return
    engine.execute(fig)
    fig.set_layout_engine("none")
    try:
        yield
    finally:
        fig.set_layout_engine(engine)


def _figure(figsize, side):
    """A constrained-layout figure with one data axes and an optional narrower side axes."""
    fig = plt.figure(figsize=figsize, layout="constrained")
    if side:
        ax, axl = fig.subplots(1, 2, width_ratios=[2.2, 1.0])
        return fig, ax, axl
    return fig, fig.subplots(), None


def animate(result, X, *, covariance_type: str = "full", max_frames: int = 60, figsize=None, colors=None,
            interval: float = 200, loglik_panel: bool = True, features=None, bins="auto",
            title: Optional[str] = None) -> GMMAnimation:
    """Animates the EM trace of one fit.

    Args:
      result: the `FitResult` of `gmmjax.fit`, fitted with ``EMConfig(trace="params")``.
      X: (N,) or (N, D) the data that was fitted (non-finite rows are not drawn).
      covariance_type: the ``covariance_type`` the result was fitted with.
      max_frames: at most this many frames (>= 2), iterations evenly spread; the first
        (0, the initial guess) and the last (``result.n_iter``) are always shown.
      figsize: (width, height) in inches; a default that fits the layout if None.
      colors: matplotlib colors for the components (cycled); tab10 / tab20 if None.
      interval: milliseconds between frames (also the default frame rate of `save`).
      loglik_panel: add a side panel with the log-likelihood curve so far.
      features: D >= 2: None (two features, or X's two leading principal axes when
        D > 2) or a pair (i, j) of feature indices to draw.
      bins: histogram bins for 1-D data (any value ``numpy.histogram`` accepts).
      title: the fixed axes title; says K, the covariance type and the status if None.

    Returns:
      A `GMMAnimation` (a FuncAnimation) with ``len(anim.iterations)`` frames.

    Raises:
      ValueError: the result has no parameter trace (fit with ``trace="params"``), holds
        several datasets, or does not match X or covariance_type.
    """
    P.check_single_result(result, "animate")
    P.check_trace_params(result, "animate")
    res = P.to_numpy(result._replace(restarts=None))
    tp = res.trace.params
    K, D = P.check_params(tp, covariance_type, lead=1)
    X = P.data_matrix(X, D)
    n_iter = int(res.n_iter)
    its = P.frame_iterations(n_iter, max_frames)
    ll = P.trace_loglik(res.trace.log_likelihood, n_iter)
    colors = P.component_colors(K, colors)
    if figsize is None:
        figsize = (10.0, 4.2) if loglik_panel else (6.5, 4.2)
    fig, ax, axl = _figure(figsize, loglik_panel)
    panels = [
        P.panel_for(ax, X, P.snapshots(tp, its), covariance_type, colors, P.status_lines(its, n_iter, ll),
                    features=features, bins=bins, animated=True)
    ]
    if title is None:
        title = f"Gaussian mixture: K = {K}, {covariance_type} covariances ({P.status_name(res.status)})"
    ax.set_title(title, fontsize="medium")
    if axl is not None:
        panels.append(P.LoglikPanel(axl, [ll], its, ["black"], animated=True))
    return GMMAnimation(fig, panels, its, axes=[ax], loglik_axes=axl, interval=interval)


def _grid_panels(axs, data, results, its, covariance_type, colors, features, bins):
    """One small animated panel per axes: panel i draws data[i] under fit i of
    ``results`` (leaves with a leading fit axis). Returns (panels, their LL curves)."""
    n_iters = np.asarray(results.n_iter).astype(int)
    panels, curves = [], []
    for i, ax in enumerate(axs):
        ll = P.trace_loglik(results.trace.log_likelihood[i], n_iters[i])
        curves.append(ll)
        panels.append(
            P.panel_for(ax, data[i], P.snapshots(P.take(results.trace.params, i), its), covariance_type, colors,
                        P.status_lines(its, n_iters[i], ll, short=True), features=features, bins=bins,
                        animated=True, small=True)
        )
    return panels, curves


def _small_multiples(n_panels, side, ncols, figsize, panel_size):
    """A figure with n_panels small axes (and one more for the log-likelihood)."""
    total = n_panels + (1 if side else 0)
    nrows, ncols = P.grid_shape(total, ncols)
    if figsize is None:
        figsize = (panel_size[0] * ncols, panel_size[1] * nrows)
    fig = plt.figure(figsize=figsize, layout="constrained")
    axs = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axs[total:]:
        ax.remove()
    return fig, list(axs[:n_panels]), (axs[n_panels] if side else None)


def animate_restarts(result, X, *, covariance_type: str = "full", max_frames: int = 60, figsize=None,
                     colors=None, interval: float = 200, loglik_panel: bool = True, features=None,
                     ncols: Optional[int] = None, bins="auto") -> GMMAnimation:
    """Animates every restart of one fit side by side; the one `fit` kept is marked.

    All restarts share one clock: frame f shows each restart after ``iterations[f]``
    EM iterations (a restart that stopped earlier shows its final parameters).

    Args:
      result: the `FitResult` of `gmmjax.fit` with
        ``EMConfig(trace="params", keep_restarts=True)``.
      X: (N,) or (N, D) the data that was fitted.
      ncols: panels per row (about square if None).
      Other arguments as in `animate`; the log-likelihood panel draws every restart,
      the best one in red.

    Returns:
      A `GMMAnimation`; ``anim.axes[i]`` shows restart i.
    """
    P.check_single_result(result, "animate_restarts")
    if result.restarts is None:
        raise ValueError(
            "animate_restarts needs every restart, but result.restarts is None: "
            "fit with EMConfig(keep_restarts=True, trace='params')."
        )
    P.check_trace_params(result.restarts, "animate_restarts")
    r = P.to_numpy(result.restarts)
    tp = r.trace.params
    K, D = P.check_params(tp, covariance_type, lead=2)
    X = P.data_matrix(X, D)
    R = tp.weights.shape[0]
    best = P.best_restart(r)
    n_iters = np.asarray(r.n_iter).astype(int)
    its = P.frame_iterations(int(n_iters.max()), max_frames)
    colors = P.component_colors(K, colors)
    fig, axs, axl = _small_multiples(R, loglik_panel, ncols, figsize, (3.2, 2.7))
    panels, curves = _grid_panels(axs, [X] * R, r, its, covariance_type, colors, features, bins)
    for i, ax in enumerate(axs):
        final = r.log_likelihood[i]
        label = f"restart {i}: LL {final:.4f}" if np.isfinite(final) else f"restart {i}: {P.status_name(r.status[i])}"
        if i == best:
            ax.set_title(label + "  (best)", fontsize="small", fontweight="bold", color=_BEST_COLOR)
            for spine in ax.spines.values():
                spine.set_edgecolor(_BEST_COLOR)
                spine.set_linewidth(2.5)
        else:
            ax.set_title(label, fontsize="small")
    if axl is not None:
        curve_colors = ["0.55"] * R
        curve_colors[best] = _BEST_COLOR
        panels.append(P.LoglikPanel(axl, curves, its, curve_colors, highlight=best, animated=True))
        axl.set_title("log-likelihood (best in red)", fontsize="small")
    fig.suptitle(f"{R} restarts, K = {K}, {covariance_type} covariances", fontsize="medium")
    return GMMAnimation(fig, panels, its, axes=axs, loglik_axes=axl, interval=interval)


def animate_batch(result, Xs, *, n: int = 9, mask=None, covariance_type: str = "full", max_frames: int = 60,
                  figsize=None, colors=None, interval: float = 200, loglik_panel: bool = False, features=None,
                  ncols: Optional[int] = None, bins="auto") -> GMMAnimation:
    """Animates the first n datasets of a `fit_batch` result as a grid of small multiples.

    Args:
      result: the `FitResult` of `gmmjax.fit_batch` with ``EMConfig(trace="params")``
        (a leading (B,) axis on every leaf).
      Xs: the datasets that were fitted: a list of (N_i,) / (N_i, D) arrays, or a padded
        (B, N, D) / (B, N) array with ``mask``.
      n: how many datasets to draw (the first n; fewer if B < n).
      mask: (B, N) bool, True for valid points of a padded array.
      loglik_panel: add a panel with every drawn dataset's log-likelihood curve.
      Other arguments as in `animate`; each panel's title gives the dataset's status.

    Returns:
      A `GMMAnimation`; ``anim.axes[i]`` shows dataset i.
    """
    if not isinstance(result, P.FitResult) or np.ndim(result.log_likelihood) != 1:
        raise ValueError(
            "animate_batch expects the FitResult of gmmjax.fit_batch (a leading dataset axis); "
            "for the result of gmmjax.fit use animate."
        )
    P.check_trace_params(result, "animate_batch")
    P.check_positive_int("n", n)
    n = min(n, int(np.shape(result.log_likelihood)[0]))
    res = P.to_numpy(P.take(result._replace(restarts=None), slice(0, n)))  # only n datasets leave the device
    tp = res.trace.params
    K, D = P.check_params(tp, covariance_type, lead=2)
    data = P.datasets(Xs, mask, n, D)
    if len(data) < n:
        raise ValueError(f"Xs holds {len(data)} datasets but the result holds at least {n}: pass the fitted data.")
    n_iters = np.asarray(res.n_iter).astype(int)
    its = P.frame_iterations(int(n_iters.max()), max_frames)
    colors = P.component_colors(K, colors)
    fig, axs, axl = _small_multiples(n, loglik_panel, ncols, figsize, (2.9, 2.5))
    panels, curves = _grid_panels(axs, data, res, its, covariance_type, colors, features, bins)
    for i, ax in enumerate(axs):
        ax.set_title(f"dataset {i}: {P.status_name(res.status[i])}", fontsize="small")
    if axl is not None:
        panels.append(P.LoglikPanel(axl, curves, its, P.component_colors(n), animated=True))
    fig.suptitle(f"First {n} datasets, K = {K}, {covariance_type} covariances", fontsize="medium")
    return GMMAnimation(fig, panels, its, axes=axs, loglik_axes=axl, interval=interval)


def save(anim, path, *, fps: Optional[float] = None, dpi: Optional[float] = None) -> pathlib.Path:
    """Writes an animation to a file; the format comes from the extension.

    - ``.gif``: Pillow (`matplotlib.animation.PillowWriter`), always available with the
      ``plot`` extra.
    - ``.html`` / ``.htm``: a self-contained page with a JavaScript player, the frames
      embedded as PNG (the page ``anim.to_jshtml()`` returns, with no size limit).
    - ``.mp4``: ffmpeg (`matplotlib.animation.FFMpegWriter`), where matplotlib finds it.

    Args:
      anim: a `GMMAnimation` or any matplotlib `Animation`.
      path: the file to write; missing parent directories are created.
      fps: frames per second; from the animation's ``interval`` if None.
      dpi: resolution; matplotlib's ``savefig.dpi`` if None.

    Returns:
      The path written, as a `pathlib.Path`.

    Raises:
      ValueError: the extension is not one of the above.
      RuntimeError: ``.mp4`` asked for but matplotlib's 'ffmpeg' writer is not available.
    """
    path = pathlib.Path(path)
    ext = path.suffix.lower()
    if ext not in (".gif", ".html", ".htm", ".mp4"):
        raise ValueError(
            f"cannot save an animation as {ext or 'a file without extension'!r} ({path}): use .gif (Pillow), "
            ".html (a JavaScript player) or .mp4 (needs ffmpeg)."
        )
    if ext == ".mp4" and not writers.is_available("ffmpeg"):
        raise RuntimeError(
            f"saving {path.name} as MP4 needs matplotlib's 'ffmpeg' writer, and no ffmpeg executable was "
            "found: install ffmpeg (e.g. 'conda install ffmpeg' or 'apt-get install ffmpeg', or set "
            "rcParams['animation.ffmpeg_path']), or save as .gif or .html instead."
        )
    if fps is None:
        fps = 1000.0 / getattr(anim, "_interval", 200)
    if not isinstance(fps, (int, float, np.number)) or not fps > 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    if dpi is not None and (not isinstance(dpi, (int, float, np.number)) or not 0 < dpi < float("inf")):
        raise ValueError(f"dpi must be a positive number (or None for matplotlib's default), got {dpi!r}.")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the animation as {str(path)!r}: it is a folder; name a file in it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".gif":
        writer = PillowWriter(fps=fps)
    elif ext == ".mp4":
        writer = writers["ffmpeg"](fps=fps)
    else:
        writer = HTMLWriter(fps=fps, embed_frames=True, default_mode="loop", embed_limit=float("inf"))
    anim.save(str(path), writer=writer, dpi=dpi)
    return path
