"""Helpers shared by `gmmjax.plot` and `gmmjax.animation` (matplotlib, imported lazily).

Nothing here is imported by ``import gmmjax``: only the two plotting modules use it.

Two kinds of helpers:

- NumPy views of results: a `FitResult` moved to the host once, checks with messages
  that say what to do, covariances of every type as (K, D, D) matrices, projections
  to two axes, ellipse geometry, 1-D component densities, frame subsampling.
- Panels: the artists of one axes, created ONCE and then updated in place by
  ``update(f)`` (f indexes the snapshots the panel was built with). The animation
  redraws only what ``update`` returns (blitting); the static plots are a panel
  built with a single snapshot.

Shapes: K = n_components, D = n_features, N = n_samples, F = number of frames,
G = number of grid points of a 1-D curve.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import matplotlib.colors as mcolors
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from gmmjax._covariance import COVARIANCE
from gmmjax._types import COVARIANCE_TYPES, FitResult, GMMParams, Status

#: Standard deviations at which the 2-D panels draw an ellipse per component.
N_STDS = (1.0, 2.0)
_GRID_POINTS = 400


# ---------------------------------------------------------------- results as NumPy
def to_numpy(tree):
    """Every array leaf of a pytree (a FitResult, GMMParams, ...) as a NumPy array."""
    return jax.tree_util.tree_map(np.asarray, tree)


def take(tree, i):
    """Entry i of the leading axis of every leaf (a dataset of a `fit_batch` result)."""
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def check_covariance_type(covariance_type):
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; use one of {', '.join(map(repr, COVARIANCE_TYPES))} "
            "(the one the result was fitted with)."
        )


def check_params(params: GMMParams, covariance_type: str, lead: int = 0):
    """(K, D) of params whose leaves may carry ``lead`` leading axes; checks the shapes."""
    check_covariance_type(covariance_type)
    w, m, c = (np.shape(a) for a in params)
    if len(m) != lead + 2 or len(w) != lead + 1:
        raise ValueError(
            f"expected parameters of ONE dataset (means of shape (K, D)); got means of shape {m[lead:]}. "
            "For a fit_batch result pick a dataset first, e.g. "
            "jax.tree_util.tree_map(lambda a: a[i], result), or use gmmjax.animation.animate_batch."
        )
    K, D = m[lead:]
    want = COVARIANCE[covariance_type].shape(K, D)
    if c[lead:] != want:
        raise ValueError(
            f"covariances of shape {c[lead:]} do not match covariance_type={covariance_type!r} "
            f"(expected {want} for K={K}, D={D}); pass the covariance_type the result was fitted with."
        )
    return K, D


def check_single_result(result, what: str):
    """Raises unless ``result`` is the FitResult of one dataset."""
    if not isinstance(result, FitResult):
        raise ValueError(f"{what} expects a gmmjax.FitResult (from gmmjax.fit), got {type(result).__name__}.")
    if np.ndim(result.log_likelihood) != 0:
        raise ValueError(
            f"{what} draws ONE dataset but this result holds {np.shape(result.log_likelihood)[0]} "
            "(from fit_batch). Pick one with jax.tree_util.tree_map(lambda a: a[i], result) and pass "
            "that dataset's X, or use gmmjax.animation.animate_batch."
        )


def check_trace_params(result, what: str):
    """Raises unless ``result`` carries a parameter trace."""
    trace = result.trace
    if trace is None or trace.params is None:
        have = "no trace at all" if trace is None else "only the log-likelihood trace"
        raise ValueError(
            f"{what} needs the parameters of every EM iteration, but the result has {have}: "
            "fit with EMConfig(trace='params')."
        )


def data_matrix(X, D: Optional[int] = None, name: str = "X"):
    """(N, D) float64 NumPy copy of X ((N,) is one feature) with non-finite rows dropped."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples,) or (n_samples, n_features), got {X.shape}.")
    if D is not None and X.shape[1] != D:
        raise ValueError(f"{name} has {X.shape[1]} features but the fitted means have {D}: pass the data that was fitted.")
    return X[np.all(np.isfinite(X), axis=1)]


def datasets(Xs, mask, n: int, D: int):
    """The first n datasets of a list or a padded (B, N, D) / (B, N) array with mask."""
    if isinstance(Xs, (list, tuple)):
        if mask is not None:
            raise ValueError("mask is for a padded array; a list of datasets needs none.")
        return [data_matrix(x, D, f"Xs[{i}]") for i, x in enumerate(Xs[:n])]
    Xs = np.asarray(Xs, dtype=np.float64)
    if Xs.ndim == 2:
        Xs = Xs[:, :, None]
    if Xs.ndim != 3:
        raise ValueError(f"Xs must be a list of arrays or a padded (B, N, D) or (B, N) array, got shape {Xs.shape}.")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != Xs.shape[:2]:
            raise ValueError(f"mask must have shape (B, N) = {Xs.shape[:2]} to match Xs, got {mask.shape}.")
    return [data_matrix(Xs[i] if mask is None else Xs[i][mask[i]], D, f"Xs[{i}]") for i in range(min(n, len(Xs)))]


def best_restart(restarts) -> int:
    """Index of the restart `fit` keeps (the engine's own rule, `gmmjax._fit.best_restart`)."""
    from gmmjax._fit import best_restart as rule

    return int(rule(np.asarray(restarts.status), np.asarray(restarts.log_likelihood)))


def status_name(status) -> str:
    try:
        return Status(int(status)).name
    except ValueError:
        return str(int(status))


# ---------------------------------------------------------------- frames
def frame_iterations(n_iter: int, max_frames: int) -> np.ndarray:
    """At most max_frames EM iterations from 0 to n_iter, evenly spread, both ends kept."""
    if not isinstance(max_frames, (int, np.integer)) or max_frames < 2:
        raise ValueError(f"max_frames must be an integer >= 2 (the first and last iteration), got {max_frames!r}.")
    n_iter = int(n_iter)
    if n_iter + 1 <= max_frames:
        return np.arange(n_iter + 1)
    # floor(x + 1/2) of points spaced >= 1 apart: distinct integers, exactly max_frames.
    return np.floor(np.linspace(0, n_iter, max_frames) + 0.5).astype(int)


def snapshots(trace_params: GMMParams, iterations) -> GMMParams:
    """The trace parameters at the given iterations: leaves with a leading (F,) axis."""
    idx = np.asarray(iterations)
    return GMMParams(*(np.asarray(a, np.float64)[idx] for a in trace_params))


def trace_loglik(trace_ll, n_iter) -> np.ndarray:
    """(n_iter + 1,) the recorded log-likelihood, NaN where it is not finite."""
    ll = np.asarray(trace_ll, np.float64)[: int(n_iter) + 1]
    return np.where(np.isfinite(ll), ll, np.nan)


# ---------------------------------------------------------------- geometry
def full_covariances(cov, covariance_type: str, K: int, D: int) -> np.ndarray:
    """Covariances of any type as (..., K, D, D) matrices (leading axes kept)."""
    cov = np.asarray(cov, np.float64)
    eye = np.eye(D)
    if covariance_type == "full":
        return cov
    if covariance_type == "diag":
        return cov[..., :, :, None] * eye
    if covariance_type == "spherical":
        return cov[..., :, None, None] * eye
    if covariance_type == "tied":
        return np.broadcast_to(cov[..., None, :, :], cov.shape[:-2] + (K, D, D))
    check_covariance_type(covariance_type)


def variances_1d(cov, covariance_type: str, K: int) -> np.ndarray:
    """(..., K) variance of each component of 1-D parameters."""
    return full_covariances(cov, covariance_type, K, 1)[..., 0, 0]


class Projection(NamedTuple):
    """x -> (x - center) @ basis: two plotted coordinates of D-dimensional points.

    center (D,), basis (D, 2), labels: the two axis labels.
    """

    center: np.ndarray
    basis: np.ndarray
    labels: tuple

    def points(self, X):
        """(..., D) -> (..., 2)."""
        return (np.asarray(X) - self.center) @ self.basis

    def covariances(self, cov):
        """(..., D, D) -> (..., 2, 2): basis^T cov basis."""
        return np.einsum("di,...de,ej->...ij", self.basis, cov, self.basis)


def projection(X, features=None) -> Projection:
    """The plane the 2-D panels show: two named features, or X's two principal axes.

    Args:
      X: (N, D) data, D >= 2.
      features: None (D = 2: the two features; D > 2: the leading principal axes of X)
        or a pair of distinct feature indices (i, j).
    """
    N, D = X.shape
    if features is not None:
        try:
            i, j = (int(f) for f in features)
        except (TypeError, ValueError):
            raise ValueError(f"features must be a pair of feature indices (i, j), got {features!r}.") from None
        if not (0 <= i < D and 0 <= j < D) or i == j:
            raise ValueError(f"features must be two different indices in [0, {D}), got {features!r}.")
        basis = np.zeros((D, 2))
        basis[i, 0] = basis[j, 1] = 1.0
        return Projection(np.zeros(D), basis, (f"feature {i}", f"feature {j}"))
    if D == 2:
        return Projection(np.zeros(2), np.eye(2), ("feature 0", "feature 1"))
    center = X.mean(axis=0) if N else np.zeros(D)
    if N < 2:
        basis = np.eye(D)[:, :2]
        return Projection(center, basis, ("feature 0", "feature 1"))
    _, s, vt = np.linalg.svd(X - center, full_matrices=False)
    basis = vt[:2].T.copy()
    # A deterministic sign: the largest loading of each axis is positive.
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), [0, 1]])
    basis *= np.where(signs == 0, 1.0, signs)
    share = s**2 / max(np.sum(s**2), np.finfo(float).tiny)
    labels = tuple(f"principal axis {a + 1} ({100 * share[a]:.0f}% of variance)" for a in range(2))
    return Projection(center, basis, labels)


def ellipse_geometry(cov2, n_std: float):
    """Width, height and angle (degrees) of the n_std ellipse of (..., 2, 2) covariances.

    The ellipse {x : (x - mu)^T cov^{-1} (x - mu) = n_std^2} has axes along the
    eigenvectors of cov, half-lengths n_std * sqrt(eigenvalue); width runs along the
    eigenvector of the LARGEST eigenvalue, at ``angle`` from the x axis.
    """
    vals, vecs = np.linalg.eigh(np.asarray(cov2, np.float64))
    vals = np.clip(vals, 0.0, None)
    width = 2.0 * n_std * np.sqrt(vals[..., 1])
    height = 2.0 * n_std * np.sqrt(vals[..., 0])
    angle = np.degrees(np.arctan2(vecs[..., 1, 1], vecs[..., 0, 1]))
    return width, height, angle


def component_densities_1d(params: GMMParams, grid, covariance_type: str) -> np.ndarray:
    """(..., K, G) weighted component densities w_k N(x | mu_k, var_k) of 1-D parameters."""
    K = np.shape(params.weights)[-1]
    var = variances_1d(params.covariances, covariance_type, K)[..., None]  # (..., K, 1)
    mu = np.asarray(params.means, np.float64)[..., 0][..., None]  # (..., K, 1)
    w = np.asarray(params.weights, np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        z = (np.asarray(grid)[None, :] - mu) ** 2 / var
        dens = w * np.exp(-0.5 * z) / np.sqrt(2.0 * np.pi * var)
    return np.where(np.isfinite(dens), dens, 0.0)


def component_colors(K: int, colors=None) -> list:
    """K matplotlib colors: ``colors`` cycled, or tab10 / tab20 / an evenly spaced hue wheel."""
    if colors is not None:
        colors = [colors] if isinstance(colors, str) else list(colors)
        if not colors:
            raise ValueError("colors must hold at least one matplotlib color.")
        for c in colors:
            if not mcolors.is_color_like(c):
                raise ValueError(f"{c!r} is not a matplotlib color.")
        return [colors[k % len(colors)] for k in range(K)]
    import matplotlib

    if K <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [mcolors.to_hex(cmap(k)) for k in range(K)]
    if K <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [mcolors.to_hex(cmap(k)) for k in range(K)]
    cmap = matplotlib.colormaps["hsv"]
    return [mcolors.to_hex(cmap(k / K)) for k in range(K)]


#: Ellipses wider than this many views are not drawn (`EllipsePanel`).
MAX_ELLIPSE_VIEWS = 1e3


def _pad(lo, hi, frac=0.05):
    """Limits around [lo, hi]; a span of 0, or one lost in the values' rounding (below
    1e-9 of their size), becomes max(|lo|, |hi|, 1)."""
    span = hi - lo
    if not np.isfinite(span) or span <= 1e-9 * max(abs(lo), abs(hi)):
        span = max(abs(lo), abs(hi), 1.0)
    return lo - frac * span, hi + frac * span


# ---------------------------------------------------------------- panels
def _status_text(ax, small: bool):
    return ax.text(
        0.02,
        0.97,
        "",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize="small" if small else "medium",
        bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor="0.8", alpha=0.85),
        gid="status",
    )


class DensityPanel:
    """1-D data: the histogram as a density (static), the mixture density and every
    weighted component curve (updated in place).

    Args:
      ax: the axes to draw in.
      x: (N,) data.
      params: GMMParams with a leading (F,) axis: the snapshot shown in each frame.
      covariance_type: of the parameters.
      colors: K colors.
      texts: F strings for the status line (None: no status line).
      animated: mark the updated artists animated (for blitting).
      small: a small multiple: no legend, small fonts.
    """

    def __init__(self, ax, x, params: GMMParams, covariance_type, colors, texts=None, *, bins="auto",
                 animated=False, small=False, legend=True):
        self.ax = ax
        K = np.shape(params.weights)[-1]
        x = np.asarray(x, np.float64).ravel()
        lo, hi = (x.min(), x.max()) if x.size else (-1.0, 1.0)
        lo, hi = _pad(lo, hi, 0.12)
        self.grid = np.linspace(lo, hi, _GRID_POINTS)
        self.components = component_densities_1d(params, self.grid, covariance_type)  # (F, K, G)
        self.mixture = self.components.sum(axis=-2)  # (F, G)
        self.texts = texts
        active = np.asarray(params.weights)[-1] > 0  # slots switched off (weight 0) are not drawn

        hist_top = 0.0
        if x.size:
            heights, _, _ = ax.hist(x, bins=bins, density=True, color="0.82", edgecolor="white",
                                    linewidth=0.5, label="data (histogram)", gid="histogram")
            hist_top = float(np.max(heights)) if len(heights) else 0.0
        (self.mixture_line,) = ax.plot(self.grid, self.mixture[0], color="black", lw=2.0,
                                       label="mixture density", gid="mixture", animated=animated)
        self.component_lines = []
        for k in range(K):
            (line,) = ax.plot(self.grid, self.components[0, k], color=colors[k], lw=1.4, ls="--",
                              label="_nolegend_", gid=f"component-{k}", animated=animated,
                              visible=bool(active[k]))
            self.component_lines.append(line)
        base = max(hist_top, float(self.mixture[-1].max()))
        peak = float(self.mixture.max())
        top = min(max(base, peak), 2.0 * base) if base > 0 else max(peak, 1.0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(0.0, 1.45 * top)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        self.status = _status_text(ax, small) if texts is not None else None
        if self.status is not None:
            self.status.set_animated(animated)
        if legend and not small:
            handles, _ = ax.get_legend_handles_labels()
            if active.any():
                # One neutral entry for all components (each has its own color).
                handles.append(Line2D([], [], color="0.35", lw=1.4, ls="--", label="weighted components"))
            else:  # no model (weights all 0: not fitted): nothing of one to name
                handles = [h for h in handles if h is not self.mixture_line]
            ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.85)
        if small:
            ax.tick_params(labelsize="x-small")
            ax.xaxis.label.set_fontsize("small")
            ax.yaxis.label.set_fontsize("small")

    def update(self, f: int) -> list:
        self.mixture_line.set_ydata(self.mixture[f])
        for k, line in enumerate(self.component_lines):
            line.set_ydata(self.components[f, k])
        artists = [self.mixture_line, *self.component_lines]
        if self.status is not None:
            self.status.set_text(self.texts[f])
            artists.append(self.status)
        return artists


class EllipsePanel:
    """D >= 2 data on a plane: the points (static), one ellipse per component at 1 and
    2 standard deviations, the means and their paths so far (updated in place).

    Args:
      ax: the axes to draw in.
      X: (N, D) data.
      params: GMMParams with a leading (F,) axis.
      covariance_type: of the parameters.
      proj: the `Projection` onto the plotted plane.
      colors: K colors.
      texts: F strings for the status line (None: no status line).
      point_colors: None (grey points) or (N,) colors.
      trails: draw the path of each mean up to the current frame.
      animated: mark the updated artists animated (for blitting).
      small: a small multiple: no legend, small fonts.
    """

    def __init__(self, ax, X, params: GMMParams, covariance_type, proj: Projection, colors, texts=None, *,
                 point_colors=None, trails=True, animated=False, small=False, legend=True):
        self.ax = ax
        F, K, D = np.shape(params.means)
        self.texts = texts
        self.means = proj.points(np.asarray(params.means, np.float64))  # (F, K, 2)
        cov2 = proj.covariances(full_covariances(params.covariances, covariance_type, K, D))  # (F, K, 2, 2)
        self.geometry = [ellipse_geometry(cov2, n) for n in N_STDS]  # per n_std: (F, K) each
        active = np.asarray(params.weights)[-1] > 0
        P = proj.points(X)
        ax.scatter(P[:, 0], P[:, 1], s=6 if small else 10, c="0.6" if point_colors is None else point_colors,
                   alpha=0.55, linewidths=0, label="data", gid="points", rasterized=False)
        self.ellipses = []  # [k][n_std index]
        self.trails = []
        self.mean_markers = []
        for k in range(K):
            row = []
            for j, n in enumerate(N_STDS):
                w, h, a = (g[0, k] for g in self.geometry[j])
                e = Ellipse(self.means[0, k], w, h, angle=a, facecolor="none", edgecolor=colors[k],
                            lw=2.0 if j == 0 else 1.2, ls="-" if j == 0 else "--", gid=f"ellipse-{k}-{n:g}sd",
                            animated=animated, visible=bool(active[k]))
                ax.add_patch(e)
                row.append(e)
            self.ellipses.append(row)
            if trails:
                (tr,) = ax.plot(self.means[:1, k, 0], self.means[:1, k, 1], color=colors[k], lw=1.0, alpha=0.7,
                                gid=f"trail-{k}", animated=animated, visible=bool(active[k]))
                self.trails.append(tr)
            (m,) = ax.plot(self.means[0, k, 0:1], self.means[0, k, 1:2], ls="none", marker="X",
                           ms=7 if small else 10, color=colors[k], mec="black", mew=0.8, gid=f"mean-{k}",
                           animated=animated, visible=bool(active[k]))
            self.mean_markers.append(m)
        # Fixed limits (blitting needs them): the data, and the final 2-sd ellipses within reason.
        lo = P.min(axis=0) if len(P) else self.means[-1].min(axis=0)
        hi = P.max(axis=0) if len(P) else self.means[-1].max(axis=0)
        span = hi - lo
        half = 2.0 * np.sqrt(np.clip(np.diagonal(cov2[-1], axis1=-2, axis2=-1), 0, None))  # (K, 2)
        ext_lo = np.min(np.where(active[:, None], self.means[-1] - half, np.inf), axis=0)
        ext_hi = np.max(np.where(active[:, None], self.means[-1] + half, -np.inf), axis=0)
        ext = np.where(np.isfinite(ext_hi - ext_lo), ext_hi - ext_lo, 0.0)
        # Ellipses may reach a quarter of the data's span beyond it, or all of their own
        # extent where the data have no span beyond rounding (constant data: limits of
        # 1 +- 3e-13 around ellipses 1e10 times as wide once made the drawing hang).
        flat = span <= 1e-9 * np.maximum(np.abs(lo), np.abs(hi))
        allow = np.where(flat, ext, 0.25 * span)
        lo = np.minimum(lo, np.maximum(ext_lo, lo - allow))
        hi = np.maximum(hi, np.minimum(ext_hi, hi + allow))
        xlo, xhi = _pad(lo[0], hi[0])
        ylo, yhi = _pad(lo[1], hi[1])
        if texts is not None:
            yhi += 0.12 * (yhi - ylo)  # room for the status line
        ax.set_xlim(xlo, xhi)
        ax.set_ylim(ylo, yhi)
        # An ellipse far larger than the view shows nothing there (its mean marker stays),
        # and Agg can take minutes to draw one: not drawn.
        view = max(xhi - xlo, yhi - ylo)
        self.drawable = [
            np.isfinite(w) & np.isfinite(h) & (np.maximum(w, h) <= MAX_ELLIPSE_VIEWS * view) for w, h, _ in self.geometry
        ]  # per n_std: (F, K)
        self.active = active
        for k, row in enumerate(self.ellipses):
            for j, e in enumerate(row):
                e.set_visible(bool(active[k] and self.drawable[j][0, k]))
        ax.set_xlabel(proj.labels[0])
        ax.set_ylabel(proj.labels[1])
        self.status = _status_text(ax, small) if texts is not None else None
        if self.status is not None:
            self.status.set_animated(animated)
        if legend and not small:
            handles = [
                Line2D([], [], ls="none", marker="o", color="0.6",
                       label="data" if point_colors is None else "data (by component)"),
                Line2D([], [], ls="none", marker="X", color="0.3", mec="black", ms=8, label="component means"),
                Line2D([], [], color="0.3", lw=2.0, label=f"{N_STDS[0]:g} sd ellipse"),
                Line2D([], [], color="0.3", lw=1.2, ls="--", label=f"{N_STDS[1]:g} sd ellipse"),
            ]
            if not active.any():  # no model (weights all 0: not fitted): only the data
                handles = handles[:1]
            # Below the axes: points and ellipses can fill any corner of the plane.
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                      fontsize="small", frameon=False, handlelength=1.6, columnspacing=1.2)
        if small:
            ax.tick_params(labelsize="x-small")
            ax.xaxis.label.set_fontsize("small")
            ax.yaxis.label.set_fontsize("small")

    def update(self, f: int) -> list:
        artists = []
        for k, row in enumerate(self.ellipses):
            for j, e in enumerate(row):
                w, h, a = (g[f, k] for g in self.geometry[j])
                e.set_center(self.means[f, k])
                e.set_width(w)
                e.set_height(h)
                e.set_angle(a)
                e.set_visible(bool(self.active[k] and self.drawable[j][f, k]))
                artists.append(e)
            if self.trails:
                self.trails[k].set_data(self.means[: f + 1, k, 0], self.means[: f + 1, k, 1])
                artists.append(self.trails[k])
            self.mean_markers[k].set_data(self.means[f, k, 0:1], self.means[f, k, 1:2])
            artists.append(self.mean_markers[k])
        if self.status is not None:
            self.status.set_text(self.texts[f])
            artists.append(self.status)
        return artists


class LoglikPanel:
    """Log-likelihood curves up to the current frame's iteration (one per fit), with a
    dot at the current value.

    Args:
      ax: the axes to draw in.
      curves: list of (n_i + 1,) recorded log-likelihoods (NaN where not finite).
      iterations: (F,) the EM iteration each frame shows.
      colors: one color per curve.
      highlight: index of the curve drawn thick (the best fit), or None.
      labels: one legend label per curve, or None.
    """

    def __init__(self, ax, curves, iterations, colors, *, highlight=None, labels=None, animated=False):
        self.ax = ax
        self.curves = [np.asarray(c, np.float64) for c in curves]
        self.iterations = np.asarray(iterations)
        self.lines, self.dots = [], []
        order = [i for i in range(len(self.curves)) if i != highlight] + ([highlight] if highlight is not None else [])
        for i in order:
            thick = i == highlight or len(self.curves) == 1
            (line,) = ax.plot([], [], color=colors[i], lw=2.0 if thick else 1.0, alpha=1.0 if thick else 0.6,
                              label=None if labels is None else labels[i], gid=f"loglik-{i}", animated=animated)
            (dot,) = ax.plot([], [], ls="none", marker="o", ms=5 if thick else 3, color=colors[i],
                             gid=f"loglik-dot-{i}", animated=animated)
            self.lines.append((i, line))
            self.dots.append((i, dot))
        finite = np.concatenate([c[np.isfinite(c)] for c in self.curves] + [np.zeros(0)])
        n_max = max([len(c) - 1 for c in self.curves] + [1])
        ax.set_xlim(-0.02 * n_max, 1.02 * n_max)
        if finite.size:
            ax.set_ylim(*_pad(float(finite.min()), float(finite.max()), 0.08))
        ax.set_xlabel("EM iteration")
        ax.set_ylabel("mean log-likelihood")
        ax.set_title("log-likelihood", fontsize="medium")
        ax.grid(True, alpha=0.3)
        if labels is not None:
            ax.legend(loc="lower right", fontsize="x-small")

    def update(self, f: int) -> list:
        t = int(self.iterations[f])
        artists = []
        for (i, line), (_, dot) in zip(self.lines, self.dots):
            c = self.curves[i]
            s = min(t, len(c) - 1)
            line.set_data(np.arange(s + 1), c[: s + 1])
            dot.set_data([s], [c[s]])
            artists += [line, dot]
        return artists


def status_lines(iterations, n_iter, ll, *, short=False) -> list:
    """F status strings: 'EM iteration t of n_iter, mean log-likelihood ...'."""
    n_iter = int(n_iter)
    out = []
    for t in np.asarray(iterations):
        s = min(int(t), n_iter)
        v = ll[s] if s < len(ll) else np.nan
        val = f"{v:.4f}" if np.isfinite(v) else "n/a"
        if short:
            out.append(f"it {s}/{n_iter}  LL {val}")
        else:
            out.append(f"EM iteration {s} of {n_iter}   mean log-likelihood {val}")
    return out


def panel_for(ax, X, params: GMMParams, covariance_type, colors, texts, *, features=None, bins="auto",
              animated=False, small=False, legend=True, point_colors=None):
    """A DensityPanel (D = 1) or EllipsePanel (D >= 2) for params with a leading (F,) axis."""
    D = np.shape(params.means)[-1]
    if D == 1:
        if features is not None:
            raise ValueError("features selects two of several features; this data has one.")
        return DensityPanel(ax, X[:, 0], params, covariance_type, colors, texts, bins=bins, animated=animated,
                            small=small, legend=legend)
    proj = projection(X, features)
    return EllipsePanel(ax, X, params, covariance_type, proj, colors, texts, animated=animated, small=small,
                        legend=legend, point_colors=point_colors)


def grid_shape(n: int, ncols: Optional[int] = None):
    if ncols is None:
        ncols = min(n, max(1, math.ceil(math.sqrt(n))))
    if not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be an integer >= 1, got {ncols!r}.")
    return math.ceil(n / ncols), ncols


def check_positive_int(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")

