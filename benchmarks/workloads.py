"""The benchmark workloads of issue 3: synthetic data from a fixed seed.

Every workload is a batch of B datasets of N points in D dimensions, fitted with
K components. The data are drawn in fixed chunks, each chunk from its own seed, so
a smaller variant is a prefix of the larger one: W1-cpu is the first 200 datasets
of W1, W4-cpu the first 100,000 points of W4. Values are float64; each system gets
them in the dtype it is run with.

The generating mixtures (documented here and in RESULTS.md):

- W1 seed-1d: per dataset a random 1-D mixture of 3 components: weights from
  Dirichlet(2, 2, 2), means from U(-4, 4), standard deviations log-uniform in
  [0.3, 1.5]. Components overlap more or less from dataset to dataset, as with
  many small real 1-D samples.
- W2 gmmgpu-2d: gmm-gpu's own example: half the points from N(0, I_2), half from
  N((1.5, 1.5), I_2) (in that order), the same design in every dataset.
- W3 many-8d: per dataset 5 components in 8-D: weights from Dirichlet(3, ..., 3),
  means from N(0, 3^2 I), covariances A A^T / D * s + 0.05 I with A standard
  normal (D x D) and s log-uniform in [0.2, 1].
- W4 big-16d: one dataset, 32 components in 16-D, drawn as W3 (weights from
  Dirichlet(5, ..., 5), means from N(0, 4^2 I)).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

#: Root seed of every workload's data. Change it only with a note in RESULTS.md.
SEED = 20260903

#: Datasets (W1-W3) or points (W4) drawn from one seed; smaller sizes are prefixes.
_CHUNK_DATASETS = 8
_CHUNK_POINTS = 50_000


@dataclasses.dataclass(frozen=True)
class Workload:
    """One row group of the benchmark table.

    Attributes:
      name: e.g. "W1-cpu"; family: "W1" .. "W4" (selects the generator).
      B, N, D, K: datasets, points per dataset, features, components.
      n_init: restarts (every system that supports restarts runs as many).
      covariance_type: scikit-learn's meaning.
      per_iteration: time one EM iteration of a single dataset (W4) instead of
        whole fits of a batch.
      sklearn_max_datasets: run scikit-learn on the first this-many datasets only
        and extrapolate its time linearly in B (labelled so in every output).
      sklearn_max_samples: (per_iteration) run scikit-learn on the first this-many
        points only and extrapolate its time per iteration linearly in N.
      iters: (per_iteration) gmmjax's two fixed iteration counts (M1, M2): the time
        per iteration is (t(M2) - t(M1)) / (M2 - M1). Every system starts from the
        same initial parameters.
      sklearn_iters: the same for scikit-learn and pomegranate (slower: fewer
        iterations). Its M2 equals gmmjax's M1, so that the log-likelihoods are
        compared after the same number of EM iterations from the same start.
    """

    name: str
    family: str
    B: int
    N: int
    D: int
    K: int
    n_init: int
    covariance_type: str = "full"
    per_iteration: bool = False
    sklearn_max_datasets: Optional[int] = None
    sklearn_max_samples: Optional[int] = None
    iters: tuple = (2, 10)
    sklearn_iters: tuple = (1, 4)

    def __post_init__(self):
        if self.per_iteration and self.iters[0] != self.sklearn_iters[1]:
            raise ValueError(f"{self.name}: iters[0] must equal sklearn_iters[1] (same iteration count compared)")

    def describe(self) -> str:
        if self.per_iteration:
            return f"one dataset N={self.N:,}, D={self.D}, K={self.K}, {self.covariance_type}; time per EM iteration"
        return (
            f"B={self.B:,} x N={self.N:,}, D={self.D}, K={self.K}, {self.covariance_type}, "
            f"{self.n_init} restart{'s' if self.n_init > 1 else ''}"
        )

    def scaled(self, scale: float) -> "Workload":
        """The same workload with B (or N, for a per-iteration workload) times scale."""
        if scale == 1:
            return self
        if self.per_iteration:
            n = max(1000, int(round(self.N * scale)))
            cap = self.sklearn_max_samples
            return dataclasses.replace(self, N=n, sklearn_max_samples=None if cap is None else min(cap, n))
        b = max(1, int(round(self.B * scale)))
        cap = self.sklearn_max_datasets
        return dataclasses.replace(self, B=b, sklearn_max_datasets=None if cap is None else min(cap, b))


# The full-size workloads (GPU suite) and their CPU-sized variants, as in issue 3.
W1 = Workload("W1", "W1", B=10_000, N=1_000, D=1, K=3, n_init=10, sklearn_max_datasets=320)
W2 = Workload("W2", "W2", B=10_000, N=400, D=2, K=2, n_init=1)
W3 = Workload("W3", "W3", B=1_000, N=2_000, D=8, K=5, n_init=5)
W4 = Workload(
    "W4", "W4", B=1, N=1_000_000, D=16, K=32, n_init=1, per_iteration=True,
    sklearn_max_samples=200_000, iters=(3, 23), sklearn_iters=(1, 3),
)
W1_CPU = dataclasses.replace(W1, name="W1-cpu", B=200, sklearn_max_datasets=None)
W2_CPU = dataclasses.replace(W2, name="W2-cpu", B=200)
W3_CPU = dataclasses.replace(W3, name="W3-cpu", B=40)
W4_CPU = dataclasses.replace(
    W4, name="W4-cpu", N=100_000, sklearn_max_samples=None, iters=(4, 12), sklearn_iters=(1, 4)
)

#: Tiny sizes for --quick (the smoke test): seconds, all code paths.
QUICK = {
    "W1": dataclasses.replace(W1, name="W1-quick", B=6, N=120, n_init=2, sklearn_max_datasets=4),
    "W2": dataclasses.replace(W2, name="W2-quick", B=6, N=80),
    "W3": dataclasses.replace(W3, name="W3-quick", B=3, N=150, D=3, K=2, n_init=2),
    "W4": dataclasses.replace(
        W4, name="W4-quick", N=3_000, D=3, K=3, sklearn_max_samples=2_000, iters=(2, 4), sklearn_iters=(1, 2)
    ),
}

SUITES = {
    "cpu": (W1_CPU, W2_CPU, W3_CPU, W4_CPU),
    "gpu": (W1, W2, W3, W4),
    "all": (W1_CPU, W2_CPU, W3_CPU, W4_CPU, W1, W2, W3, W4),
}


def suite(name: str, *, quick: bool = False, only=None, scale: float = 1.0) -> list:
    """The workloads of a suite, optionally shrunk (quick), filtered and scaled.

    ``only`` is a collection of families ("W1") or names ("W1-cpu").
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; use one of {', '.join(SUITES)}.")
    loads = list(SUITES[name])
    if quick:
        seen, quick_loads = set(), []
        for w in loads:
            if w.family not in seen:
                seen.add(w.family)
                quick_loads.append(QUICK[w.family])
        loads = quick_loads
    if only:
        only = set(only)
        loads = [w for w in loads if w.family in only or w.name in only]
        if not loads:
            raise ValueError(f"--only {sorted(only)} selects no workload of suite {name!r}.")
    return [w.scaled(scale) for w in loads]


# ---------------------------------------------------------------- generators
def _rng(family: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng([SEED, int(family[1:]), chunk])


def _random_covariances(rng, shape, D):
    """Random SPD matrices of the given leading shape: A A^T / D * s + 0.05 I."""
    A = rng.normal(size=shape + (D, D))
    s = np.exp(rng.uniform(math.log(0.2), math.log(1.0), size=shape))
    return A @ np.swapaxes(A, -1, -2) / D * s[..., None, None] + 0.05 * np.eye(D)


def _sample_mixture(rng, weights, means, chols, N):
    """(c, N, D) points from c mixtures: weights (c, K), means (c, K, D), chols (c, K, D, D)."""
    c, K, D = means.shape
    u = rng.uniform(size=(c, N, 1))
    labels = np.sum(u > np.cumsum(weights, axis=1)[:, None, :], axis=2)  # (c, N)
    labels = np.minimum(labels, K - 1)
    z = rng.normal(size=(c, N, D))
    X = np.empty((c, N, D))
    for k in range(K):
        ci, ni = np.nonzero(labels == k)
        X[ci, ni] = np.einsum("md,med->me", z[ci, ni], chols[ci, k]) + means[ci, k]
    return X


def _w1_chunk(rng, c, N):
    weights = rng.dirichlet([2.0, 2.0, 2.0], size=c)
    means = rng.uniform(-4.0, 4.0, size=(c, 3, 1))
    sd = np.exp(rng.uniform(math.log(0.3), math.log(1.5), size=(c, 3)))
    return _sample_mixture(rng, weights, means, sd[..., None, None], N)


def _w2_chunk(rng, c, N):
    half = N // 2
    a = rng.normal(size=(c, half, 2))
    b = rng.normal(size=(c, N - half, 2)) + 1.5
    return np.concatenate([a, b], axis=1)


def _w3_chunk(rng, c, N, D=8, K=5):
    weights = rng.dirichlet([3.0] * K, size=c)
    means = rng.normal(scale=3.0, size=(c, K, D))
    chols = np.linalg.cholesky(_random_covariances(rng, (c, K), D))
    return _sample_mixture(rng, weights, means, chols, N)


def _w4(N, D, K):
    rng = _rng("W4", 0)
    weights = rng.dirichlet([5.0] * K, size=1)
    means = rng.normal(scale=4.0, size=(1, K, D))
    chols = np.linalg.cholesky(_random_covariances(rng, (1, K), D))
    parts = []
    for i, start in enumerate(range(0, N, _CHUNK_POINTS)):
        n = min(_CHUNK_POINTS, N - start)
        parts.append(_sample_mixture(_rng("W4", i + 1), weights, means, chols, _CHUNK_POINTS)[:, :n])
    return np.concatenate(parts, axis=1)


def make_data(w: Workload) -> np.ndarray:
    """(B, N, D) float64 data of workload w (B = 1 for W4), reproducible from SEED.

    The generating mixture depends on the family only; D and K of the W1-W3 designs
    are fixed by the family (W3 and W4 follow w.D and w.K, so --quick can shrink them).
    """
    if w.family == "W4":
        return _w4(w.N, w.D, w.K)
    chunk = {
        "W1": lambda rng, c: _w1_chunk(rng, c, w.N),
        "W2": lambda rng, c: _w2_chunk(rng, c, w.N),
        "W3": lambda rng, c: _w3_chunk(rng, c, w.N, w.D, w.K),
    }[w.family]
    n_chunks = -(-w.B // _CHUNK_DATASETS)
    X = np.concatenate([chunk(_rng(w.family, i), _CHUNK_DATASETS) for i in range(n_chunks)])
    return X[: w.B]
