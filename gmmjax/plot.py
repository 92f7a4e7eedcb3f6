"""Static figures of fits: the fitted mixture, the EM trace, model selection, a batch.

Needs matplotlib: ``pip install gmmjax[plot]``. Not imported by ``import gmmjax``;
import it explicitly::

    from gmmjax import plot

Each function draws into ``ax`` (or ``axes``) when given, else into a new figure, and
returns what it drew into, so that callers can arrange and style figures themselves.

Example:
  >>> import jax, numpy as np, gmmjax
  >>> from gmmjax import plot
  >>> X = np.random.default_rng(0).normal(size=(300, 2))
  >>> res = gmmjax.fit(X, gmmjax.EMConfig(2, n_init=2), key=jax.random.key(0))
  >>> ax = plot.fit(res, X)
  >>> ax.get_xlabel()
  'feature 0'
"""

from __future__ import annotations

from typing import Optional

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("gmmjax.plot needs matplotlib (and Pillow for GIF files): pip install 'gmmjax[plot]'") from e
import numpy as np

from gmmjax import _plotting as P
from gmmjax._types import GMMParams, Status

__all__ = ["batch_summary", "criterion", "fit", "loglik"]

#: Criteria for which a larger score is better; for every other name (bic, aic, ...)
#: the smallest score wins.
HIGHER_IS_BETTER = frozenset({"loglik", "log_likelihood", "score", "mean_log_likelihood"})


def _new_axes(figsize=None):
    fig = plt.figure(figsize=figsize, layout="constrained")
    return fig.subplots()


def fit(result, X, *, covariance_type: str = "full", ax=None, features=None, colors=None, bins="auto",
        iteration: Optional[int] = None, title: Optional[str] = None, legend: bool = True):
    """Draws a fitted mixture over its data: the last frame of `gmmjax.animation.animate`.

    1-D data: the histogram as a density, the mixture density and each weighted
    component. D >= 2: the points coloured by their most probable component, the means
    and an ellipse per component at 1 and 2 standard deviations, on two features (or
    X's two leading principal axes when D > 2, or ``features=(i, j)``).

    Args:
      result: a `FitResult` of `gmmjax.fit`, or a `GMMParams` of one mixture.
      X: (N,) or (N, D) the data.
      covariance_type: the ``covariance_type`` the parameters have.
      ax: matplotlib Axes to draw into (a new figure if None).
      features: D >= 2: None or a pair (i, j) of feature indices.
      colors: component colors (cycled); tab10 / tab20 if None.
      bins: histogram bins for 1-D data.
      iteration: draw the parameters after this many EM iterations instead of the
        final ones (needs ``EMConfig(trace="params")``).
      title: the axes title; K, the log-likelihood and the status if None.
      legend: draw the legend.

    Returns:
      The matplotlib Axes.
    """
    import gmmjax

    ll = n_iter = status = None
    if isinstance(result, GMMParams):
        params = P.to_numpy(result)
        if iteration is not None:
            raise ValueError("iteration needs a FitResult with a parameter trace, not GMMParams.")
    else:
        P.check_single_result(result, "plot.fit")
        if iteration is None:
            params = P.to_numpy(result.params)
            ll, n_iter = float(result.log_likelihood), int(result.n_iter)
        else:
            P.check_trace_params(result, "plot.fit(iteration=...)")
            n_iter = int(result.n_iter)
            if not isinstance(iteration, (int, np.integer)) or not 0 <= iteration <= n_iter:
                raise ValueError(f"iteration must be an integer in [0, n_iter = {n_iter}], got {iteration!r}.")
            params = P.to_numpy(P.take(result.trace.params, iteration))
            ll = float(np.asarray(result.trace.log_likelihood)[iteration])
            n_iter = int(iteration)
        status = P.status_name(result.status)
    K, D = P.check_params(params, covariance_type)
    X = P.data_matrix(X, D)
    colors = P.component_colors(K, colors)
    point_colors = None
    if D >= 2 and len(X) and np.any(np.asarray(params.weights) > 0):  # weights all 0: no model (not fitted)
        labels = np.asarray(gmmjax.predict(params, X, covariance_type=covariance_type))
        point_colors = [colors[k] if k >= 0 else "lightgray" for k in labels]  # -1: no component (predict)
    if ax is None:
        ax = _new_axes((6.5, 4.2))
    snap = GMMParams(*(np.asarray(a, np.float64)[None] for a in params))
    P.panel_for(ax, X, snap, covariance_type, colors, None, features=features, bins=bins, legend=legend,
                point_colors=point_colors)
    if title is None:
        title = f"K = {K}, {covariance_type} covariances"
        if ll is not None:
            title += f": mean log-likelihood {ll:.4f}" if np.isfinite(ll) else ""
            title += f"\nafter {n_iter} EM iterations ({status})" if iteration is None else f"\nafter {n_iter} EM iterations"
    ax.set_title(title, fontsize="medium")
    return ax


def loglik(result, *, ax=None, restarts: bool = True, n: int = 20, title: Optional[str] = None):
    """Draws the log-likelihood trace: mean per-sample log-likelihood against EM iteration.

    Args:
      result: a `FitResult` fitted with ``EMConfig(trace="loglik")`` or ``"params"``.
        From `gmmjax.fit`: its curve, and every restart's in grey when the result kept
        them (``keep_restarts=True``) and ``restarts`` is True. From `gmmjax.fit_batch`:
        the curves of the first n datasets.
      ax: matplotlib Axes to draw into (a new figure if None).
      restarts: also draw the other restarts, when present.
      n: how many datasets of a batch to draw.
      title: the axes title.

    Returns:
      The matplotlib Axes.
    """
    trace = getattr(result, "trace", None)
    if trace is None:
        raise ValueError("loglik needs the log-likelihood trace, but result.trace is None: "
                         "fit with EMConfig(trace='loglik') (or trace='params').")
    P.check_positive_int("n", n)
    ll = np.asarray(trace.log_likelihood, np.float64)
    n_iter = np.asarray(result.n_iter)
    if ax is None:
        ax = _new_axes((6.0, 3.8))
    if ll.ndim == 1:
        r = result.restarts
        if restarts and r is not None and r.trace is not None:
            r_ll = np.asarray(r.trace.log_likelihood, np.float64)
            r_n = np.asarray(r.n_iter)
            for i in range(r_ll.shape[0]):
                c = P.trace_loglik(r_ll[i], r_n[i])
                ax.plot(np.arange(len(c)), c, color="0.6", lw=1.0, alpha=0.8,
                        label="every restart" if i == 0 else "_nolegend_", gid=f"restart-{i}")
        c = P.trace_loglik(ll, n_iter)
        ax.plot(np.arange(len(c)), c, color="black", lw=2.0, marker="o", ms=3,
                label="fit (best restart)" if restarts and r is not None else "fit", gid="loglik")
        default = f"Log-likelihood over {int(n_iter)} EM iterations ({P.status_name(result.status)})"
        if restarts and r is not None:
            ax.legend(loc="lower right", fontsize="small")
    elif ll.ndim == 2:
        B = ll.shape[0]
        m = min(n, B)
        colors = P.component_colors(m)
        for i in range(m):
            c = P.trace_loglik(ll[i], n_iter[i])
            ax.plot(np.arange(len(c)), c, color=colors[i], lw=1.0, alpha=0.8, gid=f"loglik-{i}")
        default = f"Log-likelihood of the first {m} of {B} datasets"
    else:
        raise ValueError(f"result.trace.log_likelihood has shape {ll.shape}; expected (T,) or (B, T).")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood")
    ax.set_title(default if title is None else title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    return ax


def criterion(selection, *, ax=None, dataset: Optional[int] = None, title: Optional[str] = None):
    """Draws a model-selection score against K, one line per covariance type.

    ``selection`` is read by field names only: ``ks`` (the K values tried),
    ``covariance_types`` (tuple of str), ``criterion`` (its name, e.g. "bic"),
    ``scores`` of shape (len(ks), len(covariance_types)) or (B, len(ks),
    len(covariance_types)) for a batch, ``n_components`` (the chosen K: a scalar,
    or (B,)) and, if present, ``covariance_type`` (the chosen type: a str, or (B,)),
    as in the result of ``select_n_components``. Non-finite scores (fits that failed) are left out. The best score (the
    smallest, or the largest for a log-likelihood) is starred and the chosen K marked.

    Args:
      selection: the model-selection result.
      ax: matplotlib Axes to draw into (a new figure if None).
      dataset: for a batch, the dataset to draw; None draws the median over datasets
        with a band from the 25th to the 75th percentile (a failed fit counts as the
        worst score), and the most frequent K.
      title: the axes title.

    Returns:
      The matplotlib Axes.
    """
    for field in ("ks", "covariance_types", "criterion", "scores", "n_components"):
        if not hasattr(selection, field):
            raise ValueError(f"selection has no field {field!r}: pass a model-selection result "
                             "(fields ks, covariance_types, criterion, scores, n_components).")
    ks = np.asarray(selection.ks).ravel()
    types = tuple(str(t) for t in selection.covariance_types)
    name = str(selection.criterion)
    scores = np.asarray(selection.scores, np.float64)
    chosen = np.asarray(selection.n_components)
    if scores.shape[-2:] != (len(ks), len(types)) or scores.ndim not in (2, 3):
        raise ValueError(f"selection.scores has shape {scores.shape}; expected ({len(ks)}, {len(types)}) or "
                         f"(B, {len(ks)}, {len(types)}) for ks={ks.tolist()} and covariance_types={types}.")
    scores = np.where(np.isfinite(scores), scores, np.nan)
    chosen_type = getattr(selection, "covariance_type", None)  # optional field: the chosen type
    band = None
    summary = ""
    if scores.ndim == 3:
        B = scores.shape[0]
        if dataset is not None:
            if not isinstance(dataset, (int, np.integer)) or not -B <= dataset < B:
                raise ValueError(f"dataset must be an integer index into the {B} datasets, got {dataset!r}.")
            scores, chosen = scores[dataset], chosen.reshape(B)[dataset]
            if chosen_type is not None and not isinstance(chosen_type, str):
                chosen_type = np.asarray(chosen_type).reshape(B)[dataset]
            summary = f" (dataset {int(dataset)})"
        else:
            # A failed fit counts as the worst score, so that every cell's median is over
            # all B datasets (leaving them out compared medians over different datasets:
            # a one-point dataset scoring only at K = 1 pulled that K's median down). A
            # cell where most fits failed is not drawn.
            worst = -np.inf if name.lower() in HIGHER_IS_BETTER else np.inf
            with np.errstate(invalid="ignore"):  # inf - inf between two failed fits: NaN
                qs = np.percentile(np.where(np.isnan(scores), worst, scores), [25, 50, 75], axis=0)
            lo, med, hi = np.where(np.isfinite(qs), qs, np.nan)
            band, scores = (lo, hi), med
            values, counts = np.unique(chosen.ravel(), return_counts=True)
            chosen = values[np.argmax(counts)] if len(values) else None
            chosen_type = None
            summary = f" (median of {B} datasets)"
    elif dataset is not None:
        raise ValueError("dataset is for a batch of selections (scores of shape (B, n_ks, n_types)).")
    if ax is None:
        ax = _new_axes((6.0, 3.8))
    colors = P.component_colors(len(types))
    for j, ct in enumerate(types):
        ax.plot(ks, scores[:, j], marker="o", ms=4, color=colors[j], label=ct, gid=f"criterion-{ct}")
        if band is not None:
            ax.fill_between(ks, band[0][:, j], band[1][:, j], color=colors[j], alpha=0.15, lw=0)
    if np.any(np.isfinite(scores)):
        higher = name.lower() in HIGHER_IS_BETTER
        flat = np.where(np.isfinite(scores), scores, -np.inf if higher else np.inf)
        i, j = np.unravel_index(np.argmax(flat) if higher else np.argmin(flat), flat.shape)
        ax.plot([ks[i]], [scores[i, j]], ls="none", marker="*", ms=15, color=colors[j], mec="black",
                label=f"best: K = {ks[i]}, {types[j]}", gid="best", zorder=5)
    if chosen is not None and np.ndim(chosen) == 0:
        label = f"chosen K = {int(chosen)}"
        label += f", {chosen_type}" if chosen_type is not None else ""
        label += " (most often)" if band is not None else ""
        ax.axvline(float(chosen), color="0.3", ls=":", lw=1.2, label=label, gid="chosen")
    ax.set_xticks(ks)
    ax.set_xlabel("number of components K")
    label = name.upper() if len(name) <= 4 else name
    ax.set_ylabel(label + (" (higher is better)" if name.lower() in HIGHER_IS_BETTER else " (lower is better)"))
    ax.set_title(f"{label} against K{summary}" if title is None else title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", title="covariance type", title_fontsize="small")
    return ax


def batch_summary(result, *, axes=None, bins: int = 30, title: Optional[str] = None):
    """Summarises a `fit_batch` result in three panels: EM iterations, final
    log-likelihood (finite values), and the count of each `Status`.

    Args:
      result: the `FitResult` of `gmmjax.fit_batch` (a leading (B,) axis); any trace.
      axes: three matplotlib Axes to draw into (a new figure if None).
      bins: histogram bins.
      title: the figure title; the number of datasets if None.

    Returns:
      The matplotlib Figure.
    """
    n_iter = np.asarray(result.n_iter).ravel()
    ll = np.asarray(result.log_likelihood, np.float64).ravel()
    status = np.asarray(result.status).ravel()
    if np.ndim(result.log_likelihood) == 0:
        raise ValueError("batch_summary expects the result of gmmjax.fit_batch (one value per dataset); "
                         "for one fit use plot.loglik or plot.fit.")
    P.check_positive_int("bins", bins)
    if axes is None:
        fig = plt.figure(figsize=(12.0, 3.6), layout="constrained")
        axes = fig.subplots(1, 3)
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"axes must hold 3 Axes (EM iterations, log-likelihood, status), got {len(axes)}.")
    fig = axes[0].figure
    B = n_iter.size
    a0, a1, a2 = axes
    top = int(n_iter.max()) if B else 0
    edges = np.arange(-0.5, top + 1.5, max(1, int(np.ceil((top + 1) / bins))))
    a0.hist(n_iter, bins=edges, color="#1f77b4", edgecolor="white", linewidth=0.5)
    a0.set_xlabel("EM iterations run")
    a0.set_ylabel("datasets")
    a0.set_title("EM iterations", fontsize="medium")
    finite = ll[np.isfinite(ll)]
    if finite.size:
        a1.hist(finite, bins=bins, color="#2ca02c", edgecolor="white", linewidth=0.5)
    else:
        a1.text(0.5, 0.5, "no finite log-likelihood", transform=a1.transAxes, ha="center", va="center")
    a1.set_xlabel("final mean log-likelihood")
    a1.set_ylabel("datasets")
    left_out = B - finite.size
    a1.set_title("Final log-likelihood" + (f" ({left_out} not finite, left out)" if left_out else ""),
                 fontsize="medium")
    names = [s.name for s in Status]
    counts = [int(np.sum(status == s.value)) for s in Status]
    colors = ["#2ca02c", "#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#7f7f7f"]
    bars = a2.barh(names[::-1], counts[::-1], color=colors[::-1])
    a2.bar_label(bars, labels=[str(c) for c in counts[::-1]], padding=3, fontsize="small")
    a2.set_xlim(0, max(max(counts), 1) * 1.2)
    a2.set_xlabel("datasets")
    a2.set_title("Status", fontsize="medium")
    fig.suptitle(f"{B} datasets" if title is None else title, fontsize="medium")
    return fig
