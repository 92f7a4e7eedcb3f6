"""The systems under test and the one scorer that judges them all.

Each ``run_*`` function fits one workload and returns a `Run`: times, the fitted
parameters (weights, means, and covariances or precision Cholesky factors), and
notes. A peer that does not import returns ``None`` from `available` with the
reason, and the runner skips it with that note: never a crash.

Quality is measured outside every system, by `mean_loglik`: the per-dataset mean
log-likelihood of each system's fitted parameters on the same float64 data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
import warnings
from typing import Callable, Optional

import numpy as np

from benchmarks.workloads import Workload

#: EM settings shared by every system (scikit-learn's defaults, as issue 3 asks).
TOL = 1e-3
MAX_ITER = 100
REG_COVAR = 1e-6


@dataclasses.dataclass
class Run:
    """What one system did on one workload.

    Attributes:
      time_s: the headline: median warm wall time of one fit of the whole batch,
        or, for a per-iteration workload, seconds per EM iteration.
      times_s: the individual timed runs behind time_s.
      first_call_s: gmmjax only: the first call (compile + run).
      extrapolated_from: None, or a note such as "B=320 of 10,000" when the time
        was measured on part of the workload and scaled linearly.
      weights, means, covariances / prec_chol: fitted parameters, leading (B,) axis,
        on the datasets in ``datasets`` (all of them unless extrapolated).
      n_init: restarts actually run (gmm-gpu always runs 1).
      extra: anything else worth keeping in the JSON (statuses, iterations, ...).
    """

    time_s: float
    times_s: list
    n_init: int
    weights: np.ndarray
    means: np.ndarray
    covariances: Optional[np.ndarray] = None
    prec_chol: Optional[np.ndarray] = None
    datasets: Optional[int] = None
    first_call_s: Optional[float] = None
    extrapolated_from: Optional[str] = None
    notes: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)


def _per_iteration(t1, t2, m1, m2, notes):
    """(t2 - t1) / (m2 - m1); t2 / m2 (an upper bound, noted) when timer noise makes it <= 0."""
    per_iter = (t2 - t1) / (m2 - m1)
    if per_iter > 0:
        return per_iter
    notes.append(f"t({m2}) <= t({m1}) (timer noise): reported t({m2}) / {m2}, an upper bound")
    return t2 / m2


#: Warm runs of a timing go on for at least this many seconds (beyond `repeats` runs):
#: the median of 3 runs of a 6-80 ms call spans a fraction of a second, and on a shared
#: machine one slow spell of the host moved W1-cpu's median from 78 to 174 and 357 ms
#: while scikit-learn, timed over seconds, moved 3.9 -> 4.2 s (benchmarks/RESULTS.md).
MIN_TIME_S = 1.0


def _timed(fn: Callable, repeats: int, budget_s: float, min_time_s: float):
    """Runs fn at least once, until `repeats` runs and `min_time_s` seconds have passed,
    or `budget_s` seconds; (times, last result)."""
    times, out, start = [], None, time.perf_counter()
    while len(times) < max(1, repeats) or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return times, out


# ---------------------------------------------------------------- availability
def available(name: str):
    """(True, version) if the system imports, else (False, the reason for the note)."""
    from importlib import metadata

    try:
        if name == "gmmjax":
            import gmmjax  # noqa: F401

            return True, getattr(gmmjax, "__version__", "?")
        if name == "sklearn":
            import sklearn.mixture  # noqa: F401

            return True, metadata.version("scikit-learn")
        if name == "gmm-gpu":
            import gmm_gpu.gmm  # noqa: F401

            return True, metadata.version("gmm-gpu")
        if name == "pomegranate":
            import pomegranate.gmm  # noqa: F401
            import pomegranate.distributions  # noqa: F401

            return True, metadata.version("pomegranate")
    except Exception as e:  # any import failure is a skip with a note, never a crash
        return False, f"{name} not importable ({type(e).__name__}: {e})"
    raise ValueError(f"unknown system {name!r}")


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- gmmjax
def run_gmmjax(
    w: Workload, X: np.ndarray, *, dtype, repeats: int, seed: int, init=None, min_time_s: float = MIN_TIME_S
) -> Run:
    import jax

    import gmmjax

    cfg = gmmjax.EMConfig(
        n_components=w.K, covariance_type=w.covariance_type, n_init=w.n_init, init="kmeans++",
        max_iter=MAX_ITER, tol=TOL, reg_covar=REG_COVAR, trace=None,
    )
    key = jax.random.key(seed)
    if w.per_iteration:
        return _gmmjax_per_iteration(w, X[0], cfg, init, dtype, max(repeats, 5), min_time_s)
    Xd = jax.device_put(X.astype(dtype))
    fn = lambda: jax.block_until_ready(gmmjax.fit_batch(Xd, cfg, key=key))  # noqa: E731
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times, res = _timed(fn, repeats, budget_s=max(60.0, 3 * repeats * first), min_time_s=min_time_s)
    n_iter = np.asarray(res.n_iter)
    return Run(
        time_s=statistics.median(times), times_s=times, n_init=w.n_init, first_call_s=first,
        weights=np.asarray(res.params.weights), means=np.asarray(res.params.means),
        covariances=np.asarray(res.params.covariances),
        extra={
            "status_counts": gmmjax.status_counts(res.status),
            "n_iter_median": float(np.median(n_iter)),
            "n_iter_mean": float(np.mean(n_iter)),
            "n_iter_max": int(n_iter.max()),
            "dtype": np.dtype(dtype).name,
        },
    )


def shared_init(w: Workload, X: np.ndarray, *, dtype, seed: int) -> dict:
    """Initial parameters every system starts from on a per-iteration workload (float64).

    gmmjax's k-means++ initialisation (``max_iter=0``) of the single dataset X (1, N, D):
    the same start for all, so that after the same number of EM iterations their
    log-likelihoods can be compared (EM arithmetic, not luck of the draw).
    """
    import jax

    import gmmjax

    cfg = gmmjax.EMConfig(
        n_components=w.K, covariance_type=w.covariance_type, init="kmeans++", max_iter=0,
        reg_covar=REG_COVAR, trace=None,
    )
    t = time.perf_counter()
    p = jax.block_until_ready(gmmjax.fit(X[0].astype(dtype), cfg, key=jax.random.key(seed))).params
    weights = np.asarray(p.weights, np.float64)
    return {
        "weights": weights / weights.sum(), "means": np.asarray(p.means, np.float64),
        "covariances": np.asarray(p.covariances, np.float64), "seconds": time.perf_counter() - t,
    }


def _gmmjax_per_iteration(w, X, cfg, init, dtype, repeats, min_time_s) -> Run:
    """Seconds per EM iteration: (t(M2) - t(M1)) / (M2 - M1) from the shared initial parameters."""
    import jax

    import gmmjax

    Xd = jax.device_put(X.astype(dtype))
    p0 = gmmjax.GMMParams(*(jax.device_put(init[k].astype(dtype)) for k in ("weights", "means", "covariances")))
    medians, firsts, all_times, results = [], [], {}, []
    for m in w.iters:
        c = dataclasses.replace(cfg, max_iter=m, tol=0.0)
        fn = lambda c=c: jax.block_until_ready(gmmjax.fit(Xd, c, init_params=p0))  # noqa: E731
        t = time.perf_counter()
        fn()
        firsts.append(time.perf_counter() - t)
        times, res = _timed(fn, repeats, budget_s=60.0, min_time_s=min_time_s)
        all_times[str(m)] = times
        medians.append(statistics.median(times))
        results.append(res)
    m1, m2 = w.iters
    res = results[0]  # M1 = scikit-learn's M2 iterations: the state whose LL is compared
    notes = [f"LL after {int(res.n_iter)} EM iterations from the shared init (tol=0)"]
    per_iter = _per_iteration(medians[0], medians[1], m1, m2, notes)
    return Run(
        time_s=per_iter, times_s=all_times, n_init=1, first_call_s=firsts[1],
        weights=np.asarray(res.params.weights)[None], means=np.asarray(res.params.means)[None],
        covariances=np.asarray(res.params.covariances)[None], notes=notes,
        extra={
            "iters": list(w.iters), "median_s_at_iters": medians, "first_call_s_at_iters": firsts,
            "n_iter": [int(r.n_iter) for r in results], "status": [int(r.status) for r in results],
            "dtype": np.dtype(dtype).name,
        },
    )


# ---------------------------------------------------------------- scikit-learn
def _sk_fit_chunk(Xs, seeds, K, covariance_type, n_init):
    """Fits scikit-learn to each dataset of a chunk (runs in a joblib worker)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    B, _, D = Xs.shape
    out = {
        "weights": np.full((B, K), np.nan), "means": np.full((B, K, D), np.nan),
        "covariances": np.full((B, K, D, D), np.nan), "lower_bound": np.full(B, np.nan),
        "n_iter": np.zeros(B, int), "converged": np.zeros(B, bool), "errors": 0,
    }
    for i in range(B):
        gm = GaussianMixture(
            K, covariance_type=covariance_type, n_init=n_init, tol=TOL, max_iter=MAX_ITER,
            reg_covar=REG_COVAR, init_params="k-means++", random_state=int(seeds[i]),
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm.fit(Xs[i])
        except (ValueError, np.linalg.LinAlgError):  # ill-defined covariance: a failed fit
            out["errors"] += 1
            continue
        out["weights"][i], out["means"][i], out["covariances"][i] = gm.weights_, gm.means_, gm.covariances_
        out["lower_bound"][i], out["n_iter"][i], out["converged"][i] = gm.lower_bound_, gm.n_iter_, gm.converged_
    return out


def run_sklearn(w: Workload, X: np.ndarray, *, n_jobs: int, seed: int, init=None, budget_s=None) -> Run:
    """scikit-learn looped over datasets, chunks spread over n_jobs joblib workers.

    With ``budget_s``, a pilot round (up to 4 datasets per worker) predicts the time of
    the whole batch; if it exceeds the budget, only a prefix of the datasets is run
    and the time is extrapolated (labelled so), as with ``w.sklearn_max_datasets``.
    """
    if w.per_iteration:
        return _sklearn_per_iteration(w, X[0], init, seed)
    from joblib import Parallel, delayed

    B = w.B if w.sklearn_max_datasets is None else min(w.B, w.sklearn_max_datasets)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=w.B)
    parallel = Parallel(n_jobs=n_jobs)
    # Start the worker processes before the clock runs (a warm pool, as for gmmjax).
    parallel(delayed(_sk_fit_chunk)(X[:1], seeds[:1], w.K, w.covariance_type, 1) for _ in range(n_jobs))
    per_worker = max(1, min(4, w.B // n_jobs))  # a few datasets per task: joblib's overhead amortised
    pilot = min(w.B, n_jobs * per_worker)
    t = time.perf_counter()
    parallel(
        delayed(_sk_fit_chunk)(X[i : i + per_worker], seeds[i : i + per_worker], w.K, w.covariance_type, w.n_init)
        for i in range(0, pilot, per_worker)
    )
    predicted = (time.perf_counter() - t) * B / pilot
    budget_note = None
    if budget_s is not None and predicted > budget_s:
        B_budget = max(pilot, int(B * budget_s / predicted))
        if B_budget < B:
            budget_note = f"the whole batch was predicted at {predicted * w.B / B:.0f} s, over the {budget_s:.0f} s budget"
            B = B_budget
    Xs, seeds = X[:B], seeds[:B]
    n_chunks = min(B, max(1, 4 * n_jobs))
    bounds = np.linspace(0, B, n_chunks + 1).astype(int)
    t = time.perf_counter()
    parts = parallel(
        delayed(_sk_fit_chunk)(Xs[a:b], seeds[a:b], w.K, w.covariance_type, w.n_init)
        for a, b in zip(bounds[:-1], bounds[1:])
    )
    elapsed = time.perf_counter() - t
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "errors"}
    errors = sum(p["errors"] for p in parts)
    run = Run(
        time_s=elapsed * w.B / B, times_s=[elapsed], n_init=w.n_init, datasets=B,
        weights=cat["weights"], means=cat["means"], covariances=cat["covariances"],
        extra={
            "n_jobs": n_jobs, "fit_errors": int(errors),
            "n_iter_median": float(np.median(cat["n_iter"])), "n_iter_max": int(cat["n_iter"].max()),
            "converged_fraction": float(np.mean(cat["converged"])),
        },
    )
    if B < w.B:
        run.extrapolated_from = f"B={B:,} of {w.B:,}"
        run.notes.append(f"time measured on the first {B:,} datasets ({elapsed:.2f} s) and scaled by {w.B / B:.1f}")
        if budget_note:
            run.notes.append(budget_note)
    return run


def _sklearn_per_iteration(w: Workload, X: np.ndarray, init: dict, seed: int) -> Run:
    """Per EM iteration: fresh fits of M1 and M2 iterations (tol=0) from the shared init."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    n = len(X) if w.sklearn_max_samples is None else min(len(X), w.sklearn_max_samples)
    Xs = X[:n]
    prec = np.linalg.inv(init["covariances"])
    prec = (prec + np.swapaxes(prec, -1, -2)) / 2

    def fit(m, data):
        # init_params only shapes the (overridden) start: "random" is the cheapest.
        gm = GaussianMixture(
            w.K, covariance_type=w.covariance_type, n_init=1, tol=0.0, max_iter=m, reg_covar=REG_COVAR,
            init_params="random", random_state=seed, weights_init=init["weights"],
            means_init=init["means"], precisions_init=prec,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t = time.perf_counter()
            gm.fit(data)
            return time.perf_counter() - t, gm

    fit(1, Xs[:2000])  # warm-up: first-call costs out of the timed fits
    times, gm = {}, None
    for m in w.sklearn_iters:
        times[str(m)], gm = fit(m, Xs)
    m1, m2 = w.sklearn_iters
    notes = [f"LL after {m2} EM iterations from the shared init (tol=0)"]
    per_iter = _per_iteration(times[str(m1)], times[str(m2)], m1, m2, notes)
    run = Run(
        time_s=per_iter * len(X) / n, times_s=times, n_init=1, datasets=1,
        weights=gm.weights_[None], means=gm.means_[None], covariances=gm.covariances_[None], notes=notes,
        extra={"iters": list(w.sklearn_iters), "samples": n},
    )
    if n < len(X):
        run.extrapolated_from = f"N={n:,} of {len(X):,}"
        run.notes.append(
            f"per-iteration time measured on the first {n:,} points ({per_iter * 1e3:.0f} ms) "
            f"and scaled by {len(X) / n:.1f}; EM ran on those points, LL scored on all {len(X):,}"
        )
    return run


# ---------------------------------------------------------------- gmm-gpu
def run_gmm_gpu(w: Workload, X: np.ndarray, *, repeats: int, seed: int, min_time_s: float = MIN_TIME_S) -> Run:
    """gmm-gpu 0.2.8: full covariance only, one restart, float32, batched (B, N, D)."""
    import torch
    from gmm_gpu.gmm import GMM

    device = torch_device()
    Xt = torch.as_tensor(X.astype(np.float32)).to(device)

    def fit():
        g = GMM(
            n_components=w.K, max_iter=MAX_ITER, device=device, tol=TOL, reg_covar=REG_COVAR,
            dtype=torch.float32, random_seed=seed + 1,  # its seed 0 means "unseeded"
        )
        g.fit(Xt)
        if device == "cuda":
            torch.cuda.synchronize()
        return g

    t = time.perf_counter()
    fit()  # warm-up: CUDA context, kernels, allocator
    first = time.perf_counter() - t
    times, g = _timed(fit, repeats, budget_s=max(30.0, 2 * first), min_time_s=min_time_s)
    stack = lambda xs: torch.stack(xs, dim=1).detach().cpu().double().numpy()  # noqa: E731
    own = g.score(Xt).double().numpy()
    run = Run(
        time_s=statistics.median(times), times_s=times, n_init=1, first_call_s=first,
        weights=stack(g._pi), means=stack(g.means), prec_chol=stack(g._precisions_cholesky),
        extra={
            "device": device, "own_score_nonfinite_fraction": float(np.mean(~np.isfinite(own))),
            "convergence_iters_median": float(np.median(g.convergence_iters.cpu().numpy())),
        },
    )
    if w.n_init > 1:
        run.notes.append(f"1 restart (gmm-gpu has no restarts; the others run {w.n_init})")
    run.notes.append(f"torch {device}; reg_covar is accepted but not applied by gmm-gpu 0.2.8")
    return run


# ---------------------------------------------------------------- pomegranate
def run_pomegranate(w: Workload, X: np.ndarray, *, init: dict, budget_s: float) -> Run:
    """pomegranate 1.x GeneralMixtureModel of full-covariance Normals; per iteration (W4 only).

    Fresh models start from the shared init (so no k-means runs) and fit M1 and M2
    iterations (scikit-learn's counts) with tol=-inf, so that no early stop happens.
    """
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    device = torch_device()
    Xt = torch.as_tensor(X[0].astype(np.float32)).to(device)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731

    def fit(m, data):
        model = GeneralMixtureModel(
            [Normal(means=f32(init["means"][k]), covs=f32(init["covariances"][k]), covariance_type="full")
             for k in range(w.K)],
            priors=f32(init["weights"]), max_iter=m, tol=-math.inf,
        )
        if device == "cuda":
            model = model.cuda()
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.fit(data)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, model

    m1, m2 = w.sklearn_iters
    fit(1, Xt[:2000])  # warm-up: first-call costs (torch kernels, CUDA context) out of the timed fits
    times = {}
    times[str(m1)], model = fit(m1, Xt)
    if times[str(m1)] / m1 * m2 > budget_s:
        raise TimeoutError(
            f"{m1} iterations took {times[str(m1)]:.1f} s; {m2} would exceed the {budget_s:.0f} s budget"
        )
    times[str(m2)], model = fit(m2, Xt)
    to_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    notes = [f"torch {device}; no reg_covar; LL after {m2} EM iterations from the shared init"]
    return Run(
        time_s=_per_iteration(times[str(m1)], times[str(m2)], m1, m2, notes), times_s=times, n_init=1,
        weights=to_np(model.priors)[None],
        means=np.stack([to_np(d.means) for d in model.distributions])[None],
        covariances=np.stack([to_np(d.covs) for d in model.distributions])[None], notes=notes,
        extra={"device": device, "iters": list(w.sklearn_iters)},
    )


# ---------------------------------------------------------------- the common scorer
def _prec_chol_from_cov(cov):
    """(..., D, D) upper-triangular P with P P^T = cov^{-1}, NaN where cov is not SPD."""
    cov = np.asarray(cov, np.float64)
    out = np.full(cov.shape, np.nan)
    flat_c, flat_o = cov.reshape((-1,) + cov.shape[-2:]), out.reshape((-1,) + cov.shape[-2:])
    ok = np.all(np.isfinite(flat_c), axis=(1, 2))
    eye = np.eye(cov.shape[-1])
    try:
        L = np.linalg.cholesky(flat_c[ok])
        flat_o[ok] = np.swapaxes(np.linalg.solve(L, eye), -1, -2)
    except np.linalg.LinAlgError:  # some matrix is not SPD: find which, one by one
        for i in np.flatnonzero(ok):
            try:
                flat_o[i] = np.linalg.solve(np.linalg.cholesky(flat_c[i]), eye).T
            except np.linalg.LinAlgError:
                pass
    return flat_o.reshape(cov.shape)


def mean_loglik(X, weights, means, covariances=None, prec_chol=None):
    """(B,) mean per-sample log-likelihood of each dataset under its fitted mixture, float64.

    X (B, N, D); weights (B, K); means (B, K, D); full covariances (B, K, D, D) or
    precision Cholesky factors (B, K, D, D) (scikit-learn's ``precisions_cholesky_``:
    cov^{-1} = P P^T). Non-finite or non-SPD parameters give NaN for that dataset.
    """
    X = np.asarray(X, np.float64)
    B, N, D = X.shape
    P = _prec_chol_from_cov(covariances) if prec_chol is None else np.asarray(prec_chol, np.float64)
    weights, means = np.asarray(weights, np.float64), np.asarray(means, np.float64)
    bad = ~(
        np.all(np.isfinite(weights), axis=1)
        & np.all(np.isfinite(means), axis=(1, 2))
        & np.all(np.isfinite(P), axis=(1, 2, 3))
        & np.all(weights >= 0, axis=1)
    )
    K = weights.shape[1]
    logw = np.log(np.where(bad[:, None] | (weights <= 0), 1.0, weights))
    logw = np.where(weights <= 0, -np.inf, logw)
    P = np.where(bad[:, None, None, None], np.eye(D), P)
    means = np.where(bad[:, None, None], 0.0, means)
    diagP = np.diagonal(P, axis1=-2, axis2=-1)
    log_det = np.sum(np.log(np.where(diagP > 0, diagP, np.nan)), axis=-1)  # (B, K)
    lp = np.empty((B, N, K))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for k in range(K):
            y = np.matmul(X - means[:, k][:, None, :], P[:, k])  # (B, N, D)
            lp[..., k] = -0.5 * (D * math.log(2 * math.pi) + np.sum(y * y, axis=-1)) + log_det[:, k][:, None] + logw[:, k][:, None]
        m = np.max(lp, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        ll = np.mean(np.log(np.sum(np.exp(lp - m), axis=-1)) + m[..., 0], axis=1)
    return np.where(bad, np.nan, ll)


def cpu_count() -> int:
    return os.cpu_count() or 1
