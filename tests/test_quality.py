"""Semantics 5: kmeans++ with 10 restarts is at least as good as scikit-learn's best of 10.

Which local optimum 10 restarts find is luck on these small multimodal problems (on
U(0,1) with K=6 one block of 10 restarts ranges over 0.014..0.033 for either
library), so the comparison is made over three independent blocks of 10 restarts on
each side: the median of gmmjax's best-of-10 against the median of scikit-learn's.
"""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax.__main__ import demo_data

BLOCKS = 3


def _sklearn_best_of_10(X, K, block):
    return max(
        GaussianMixture(K, covariance_type="full", n_init=1, init_params="k-means++", random_state=s).fit(X).score(X)
        for s in range(10 * block, 10 * block + 10)
    )


@pytest.mark.parametrize("name, K", [("iris", 3), ("uniform", 3), ("uniform", 6)])
def test_at_least_sklearn_best_of_10(name, K):
    X = load_iris().data if name == "iris" else demo_data()[:, None]
    config = gmmjax.EMConfig(K, n_init=10, init="kmeans++")
    ours = [gmmjax.fit(X, config, key=jax.random.key(b)) for b in range(BLOCKS)]
    assert all(int(r.status) in (gmmjax.Status.CONVERGED, gmmjax.Status.DEGENERATE) for r in ours)
    theirs = [_sklearn_best_of_10(X, K, b) for b in range(BLOCKS)]
    assert np.median([float(r.log_likelihood) for r in ours]) >= np.median(theirs) - 0.01
