"""Model selection over K (and covariance types) in one compiled call, and BIC/AIC/ICL."""

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmjax
from gmmjax import EMConfig, GMMParams, Status
from gmmjax._select import _select_jit

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def three_clusters(rng, n=60):
    """3 well separated 2-D clusters (centres 8 standard deviations apart), shuffled."""
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [4.0, 7.0]]) + rng.normal(size=(1, 2))
    X = np.concatenate([c + rng.normal(size=(n + rng.integers(0, 20), 2)) for c in centres])
    return rng.permutation(X)


def _sklearn_model(params, covariance_type):
    """A fitted scikit-learn GaussianMixture holding ``params``."""
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    w, m, c = (np.asarray(a) for a in params)
    sk = SkGaussianMixture(len(w), covariance_type=covariance_type)
    sk.weights_, sk.means_, sk.covariances_ = w, m, c
    sk.precisions_cholesky_ = _compute_precision_cholesky(c, covariance_type)
    return sk


def test_picks_three_clusters_for_fifty_datasets_in_one_compilation(rng):
    Xs = [three_clusters(rng) for _ in range(50)]
    before = _select_jit._cache_size()
    sel = gmmjax.select_n_components(Xs, range(1, 7), EMConfig(1, n_init=2), key=jax.random.key(0))
    assert _select_jit._cache_size() - before <= 1  # every K and every dataset: one program
    assert np.mean(sel.n_components == 3) >= 0.9
    assert sel.scores.shape == (50, 6, 1) and sel.ks == (1, 2, 3, 4, 5, 6)
    assert sel.covariance_types == ("full",) and sel.criterion == "bic"
    assert list(sel.covariance_type) == ["full"] * 50
    assert sel.params.weights.shape == (50, 6) and sel.status.shape == (50,)
    # Padded slots of the chosen model have weight exactly 0, the others sum to one.
    active = np.arange(6)[None, :] < sel.n_components[:, None]
    assert np.all(sel.params.weights[~active] == 0)
    np.testing.assert_allclose(sel.params.weights.sum(axis=1), 1.0, rtol=1e-12)
    # The chosen params reproduce the chosen score (the zero-weight slots are not counted).
    np.testing.assert_allclose(gmmjax.bic(sel.params, Xs), sel.scores.min(axis=(1, 2)), rtol=1e-10)
    # A second call with another criterion reuses the compiled program.
    again = gmmjax.select_n_components(Xs, range(1, 7), EMConfig(1, n_init=2), key=jax.random.key(0), criterion="aic")
    assert _select_jit._cache_size() - before <= 1
    assert again.criterion == "aic" and np.all(np.isfinite(again.scores))


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_reg_covar_zero_does_not_fail_the_smaller_models(rng, covariance_type):
    """The switched-off slots of K < max(ks) had covariance reg_covar * I = 0 and a NaN
    log-density: every smaller K was a NUMERICAL_FAILURE and the largest K won."""
    X = three_clusters(rng)
    config = EMConfig(1, covariance_type=covariance_type, reg_covar=0.0)
    sel = gmmjax.select_n_components(X, range(1, 6), config, key=jax.random.key(0))
    statuses = np.asarray(sel.fits[covariance_type].status)
    assert np.all(statuses == gmmjax.Status.CONVERGED), statuses
    assert sel.n_components == 3 and np.all(np.isfinite(sel.scores))


def test_parts_and_types_at_once_equal_one_call_after_another(rng):
    """On a CPU the batch's parts and the covariance types run at once from threads
    (gmmjax._threads): the same selection as one call after another."""
    Xs = [three_clusters(rng, n=30) for _ in range(5)]
    args = dict(config=EMConfig(1, n_init=2), key=jax.random.key(1), covariance_types=("full", "spherical"))
    one = gmmjax.select_n_components(Xs, range(1, 4), n_jobs=1, **args)
    many = gmmjax.select_n_components(Xs, range(1, 4), n_jobs=2, **args)
    np.testing.assert_array_equal(many.n_components, one.n_components)
    np.testing.assert_array_equal(many.covariance_type, one.covariance_type)
    np.testing.assert_array_equal(many.status, one.status)
    np.testing.assert_allclose(many.scores, one.scores, rtol=1e-9)
    for a, b in zip(jax.tree_util.tree_leaves((many.params, many.fits)), jax.tree_util.tree_leaves((one.params, one.fits))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the types run at once on a CPU only")
def test_covariance_types_run_at_once(rng, monkeypatch):
    """Each type's call waits at a barrier for the other's: one after the other, the
    first would wait in vain (BrokenBarrierError)."""
    import threading

    from gmmjax import _select

    barrier = threading.Barrier(2, timeout=120)
    engine = _select._select_jit

    def meeting(*a, **k):
        barrier.wait()
        return engine(*a, **k)

    monkeypatch.setattr(_select, "_select_jit", meeting)
    Xs = [three_clusters(rng, n=30) for _ in range(5)]  # the programs of the test above: nothing to compile
    args = dict(config=EMConfig(1, n_init=2), key=jax.random.key(1), covariance_types=("full", "spherical"))
    sel = gmmjax.select_n_components(Xs, range(1, 4), **args)  # too little work for parts: one each
    assert sel.scores.shape == (5, 3, 2)


def test_scores_equal_sklearn_criteria_for_every_k_and_covariance_type(rng):
    X = three_clusters(rng, n=40)
    before = _select_jit._cache_size()
    sel = gmmjax.select_n_components(X, [1, 2, 3, 4], key=jax.random.key(1), covariance_types=COVARIANCE_TYPES)
    assert _select_jit._cache_size() - before <= len(COVARIANCE_TYPES)  # one per covariance type
    kw = dict(key=jax.random.key(1), covariance_types=COVARIANCE_TYPES)
    aic = gmmjax.select_n_components(X, [1, 2, 3, 4], criterion="aic", **kw)
    icl = gmmjax.select_n_components(X, [1, 2, 3, 4], criterion="icl", **kw)
    assert sel.scores.shape == (4, 4)
    for j, ct in enumerate(COVARIANCE_TYPES):
        fits = sel.fits[ct]
        for i, K in enumerate(sel.ks):
            p = jax.tree_util.tree_map(lambda a: np.asarray(a)[i], fits.params)
            w = p.weights
            assert np.all(w[K:] == 0)
            cov = p.covariances if ct == "tied" else p.covariances[:K]
            params = GMMParams(w[:K], p.means[:K], cov)
            sk = _sklearn_model(params, ct)
            np.testing.assert_allclose(sel.scores[i, j], sk.bic(X), rtol=1e-8)
            np.testing.assert_allclose(aic.scores[i, j], sk.aic(X), rtol=1e-8)
            r = sk.predict_proba(X)
            entropy = -np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0))
            np.testing.assert_allclose(icl.scores[i, j], sk.bic(X) + 2 * entropy, rtol=1e-8)
            assert icl.scores[i, j] >= sel.scores[i, j]
            if K == 3:
                np.testing.assert_allclose(gmmjax.icl(params, X, covariance_type=ct), icl.scores[i, j], rtol=1e-8)
    # The single-dataset result holds exactly the chosen model.
    K, ct = sel.n_components, sel.covariance_type
    assert isinstance(K, int) and K == 3 and ct in COVARIANCE_TYPES
    assert sel.params.weights.shape == (K,) and sel.params.means.shape == (K, 2)  # the chosen type's layout
    assert sel.status in (Status.CONVERGED, Status.DEGENERATE, Status.MAX_ITER)
    np.testing.assert_allclose(gmmjax.bic(sel.params, X, covariance_type=ct), sel.scores.min(), rtol=1e-8)


def test_plain_criteria_equal_sklearn(rng):
    X = three_clusters(rng, n=30)
    for ct in COVARIANCE_TYPES:
        sk = SkGaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
        params = GMMParams(sk.weights_, sk.means_, sk.covariances_)
        np.testing.assert_allclose(gmmjax.bic(params, X, covariance_type=ct), sk.bic(X), rtol=1e-8)
        np.testing.assert_allclose(gmmjax.aic(params, X, covariance_type=ct), sk.aic(X), rtol=1e-8)
        # Batched params with a padded, masked X: one value per dataset.
        both = jax.tree_util.tree_map(lambda a: np.stack([a, a]), params)
        padded = np.stack([X, np.where(np.arange(len(X))[:, None] < 50, X, np.nan)])
        mask = np.stack([np.ones(len(X), bool), np.arange(len(X)) < 50])
        np.testing.assert_allclose(
            gmmjax.bic(both, padded, covariance_type=ct, mask=mask), [sk.bic(X), sk.bic(X[:50])], rtol=1e-8
        )



def test_criteria_check_their_params_and_points(rng):
    X = three_clusters(rng, n=30)
    sk = SkGaussianMixture(3, random_state=0).fit(X)
    params = GMMParams(sk.weights_, sk.means_, sk.covariances_)
    for f in (gmmjax.bic, gmmjax.aic, gmmjax.icl):
        with pytest.raises(ValueError, match="X contains NaN or infinity"):  # once dropped silently
            f(params, np.vstack([X, [[np.nan, 0.0]]]))
        with pytest.raises(ValueError, match="sum to 1"):
            f(params._replace(weights=np.full(3, 0.9)), X)
        with pytest.raises(ValueError, match="must have shape"):
            f(params._replace(covariances=np.ones((3, 2))), X)
        with pytest.raises(ValueError, match="positive definite"):
            f(params._replace(covariances=-sk.covariances_), X)
    # Batched params are checked per dataset: a dataset without a usable model (here one
    # with singular covariances) scores +inf, with a warning, and the others still score.
    Xs = np.stack([X, np.ones_like(X)])
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(3, reg_covar=0.0), key=jax.random.key(0))
    for f in (gmmjax.bic, gmmjax.aic, gmmjax.icl):
        with pytest.warns(RuntimeWarning, match=r"1 of 2 datasets \(first: \[1\]\).*criteria are \+inf"):
            scores = f(res.params, Xs)
        assert np.isfinite(scores[0]) and scores[1] == np.inf
    # Finite but wrong values (weights summing to 2.7) once scored as if they were a
    # model; that dataset's points (NaN here) are not checked either.
    bad = jax.tree_util.tree_map(lambda a: np.stack([a, a, a]), params)
    bad = bad._replace(weights=bad.weights * np.array([[1.0], [3.0], [1.0]]))
    Xs = np.stack([X, np.full_like(X, np.nan), X[::-1]])
    for f in (gmmjax.bic, gmmjax.aic, gmmjax.icl):
        with pytest.warns(RuntimeWarning, match=r"1 of 3 datasets \(first: \[1\]\)"):
            scores = f(bad, Xs)
        np.testing.assert_allclose(scores[[0, 2]], f(params, X), rtol=1e-10)
        assert scores[1] == np.inf
    # One mixture takes a mask as the density functions do: the criterion of the kept points.
    keep = np.arange(len(X)) % 3 > 0
    held_out = np.where(keep[:, None], X, np.nan)
    for f in (gmmjax.bic, gmmjax.aic, gmmjax.icl):
        np.testing.assert_allclose(f(params, held_out, mask=keep), f(params, X[keep]), rtol=1e-12)
        with pytest.raises(ValueError, match="0 samples"):
            f(params, X[:0])

def test_criteria_work_inside_jit_and_vmap(rng):
    """bic/aic/icl inside a caller's jit or vmap give JAX arrays equal to the eager
    floats (they once failed converting a tracer to NumPy); select_n_components, which
    decides on the host, says it cannot run there."""
    X = three_clusters(rng, n=30)
    sk = SkGaussianMixture(3, random_state=0).fit(X)
    params = GMMParams(sk.weights_, sk.means_, sk.covariances_)
    Xs = np.stack([X, X[::-1] + 1.0])
    for f in (gmmjax.bic, gmmjax.aic, gmmjax.icl):
        np.testing.assert_allclose(float(jax.jit(f)(params, X)), f(params, X), rtol=1e-12)
        np.testing.assert_allclose(
            np.asarray(jax.vmap(lambda x: f(params, x))(Xs)), [f(params, x) for x in Xs], rtol=1e-12
        )
    with pytest.raises(ValueError, match="cannot run inside jit or vmap"):
        jax.jit(lambda x: gmmjax.select_n_components(x, [1, 2], key=jax.random.key(0)).scores)(X)


def test_too_few_points_mask_and_weights(rng):
    Xs = [three_clusters(rng, n=30), three_clusters(rng, n=30)[:3]]
    sel = gmmjax.select_n_components(Xs, range(1, 6), key=jax.random.key(2))
    assert np.all(np.isinf(sel.scores[1, 3:])) and np.all(np.isfinite(sel.scores[1, :3]))
    assert sel.n_components[0] == 3
    # The same batch as a padded array with a mask: the same result.
    N = max(len(x) for x in Xs)
    padded = np.full((2, N, 2), np.nan)
    mask = np.zeros((2, N), bool)
    for i, x in enumerate(Xs):
        padded[i, : len(x)], mask[i, : len(x)] = x, True
    masked = gmmjax.select_n_components(padded, range(1, 6), key=jax.random.key(2), mask=mask)
    np.testing.assert_array_equal(masked.scores, sel.scores)
    # Sample weights: n in BIC is their sum; weight 2 on every point = the data twice.
    w2 = gmmjax.select_n_components(Xs, range(1, 6), key=jax.random.key(2), weights=[np.full(len(x), 2.0) for x in Xs])
    p = jax.tree_util.tree_map(lambda a: np.asarray(a)[0, 2], w2.fits["full"].params)  # dataset 0, K = 3
    twice = np.concatenate([Xs[0], Xs[0]])
    np.testing.assert_allclose(w2.scores[0, 2, 0], gmmjax.bic(GMMParams(*p), twice), rtol=1e-8)


def test_input_errors():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="criterion"):
        gmmjax.select_n_components(X, [1, 2], key=jax.random.key(0), criterion="bicc")
    with pytest.raises(ValueError, match="ks must be"):
        gmmjax.select_n_components(X, [], key=jax.random.key(0))
    with pytest.raises(ValueError, match="ks must be"):
        gmmjax.select_n_components(X, [0, 1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="covariance_types"):
        gmmjax.select_n_components(X, [1], key=jax.random.key(0), covariance_types=["ful"])
    with pytest.raises(ValueError, match="random key"):
        gmmjax.select_n_components(X, [1], key=None)
