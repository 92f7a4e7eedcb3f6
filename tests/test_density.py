"""log_prob, predict_proba, predict and sample against SciPy and scikit-learn."""

import warnings

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import gmmjax

TYPES = ["full", "diag", "spherical", "tied"]


def _params(rng, covariance_type, K=3, D=2):
    A = rng.normal(size=(K, D, D))
    full = A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D)
    cov = {
        "full": full,
        "diag": rng.uniform(0.5, 2.0, (K, D)),
        "spherical": rng.uniform(0.5, 2.0, K),
        "tied": full[0],
    }[covariance_type]
    w = rng.uniform(0.2, 1.0, K)
    return gmmjax.GMMParams(w / w.sum(), rng.normal(scale=3, size=(K, D)), cov)


def _full(cov, covariance_type, K, D):
    return {
        "full": lambda: cov,
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: cov[:, None, None] * np.eye(D),
        "tied": lambda: np.broadcast_to(cov, (K, D, D)),
    }[covariance_type]()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_prob_against_scipy_and_sklearn(rng, covariance_type):
    p = _params(rng, covariance_type)
    X = rng.normal(scale=3, size=(50, 2))
    covs = _full(p.covariances, covariance_type, 3, 2)
    want = np.log(sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in zip(p.weights, p.means, covs)))
    got = np.asarray(gmmjax.log_prob(p, X, covariance_type=covariance_type))
    np.testing.assert_allclose(got, want, rtol=1e-10)

    sk = GaussianMixture(3, covariance_type=covariance_type)
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    sk.weights_, sk.means_, sk.covariances_ = p.weights, p.means, p.covariances
    sk.precisions_cholesky_ = _compute_precision_cholesky(p.covariances, covariance_type)
    np.testing.assert_allclose(got, sk.score_samples(X), rtol=1e-10)
    proba = np.asarray(gmmjax.predict_proba(p, X, covariance_type=covariance_type))
    np.testing.assert_allclose(proba, sk.predict_proba(X), rtol=1e-8, atol=1e-300)
    np.testing.assert_array_equal(np.asarray(gmmjax.predict(p, X, covariance_type=covariance_type)), sk.predict(X))


def test_log_prob_never_underflows():
    """The prototype multiplied densities and underflowed; log space does not."""
    p = gmmjax.GMMParams(np.array([0.5, 0.5]), np.array([[0.0], [1.0]]), np.array([[[1e-4]], [[1e-4]]]))
    X = np.array([[50.0], [-80.0]])
    lp = np.asarray(gmmjax.log_prob(p, X))
    assert np.all(np.isfinite(lp)) and np.all(lp < -1e6)
    proba = np.asarray(gmmjax.predict_proba(p, X))
    np.testing.assert_allclose(proba, [[0.0, 1.0], [1.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sample_moments(rng, covariance_type):
    p = _params(rng, covariance_type, K=2)
    X, labels = gmmjax.sample(jax.random.key(0), p, 20000, covariance_type=covariance_type)
    assert X.shape == (20000, 2) and labels.shape == (20000,)
    np.testing.assert_allclose(np.bincount(np.asarray(labels), minlength=2) / 20000, p.weights, atol=0.015)
    covs = _full(p.covariances, covariance_type, 2, 2)
    for k in range(2):
        Xk = np.asarray(X)[np.asarray(labels) == k]
        np.testing.assert_allclose(Xk.mean(0), p.means[k], atol=0.1 * np.sqrt(covs[k].max()) + 0.05)
        np.testing.assert_allclose(np.cov(Xk.T), covs[k], atol=0.1 * covs[k].max())


def test_batched_functions(rng):
    ps = [_params(rng, "diag") for _ in range(4)]
    batched = jax.tree_util.tree_map(lambda *a: np.stack(a), *ps)
    X = rng.normal(size=(4, 30, 2))
    lp = np.asarray(gmmjax.log_prob(batched, X, covariance_type="diag"))
    assert lp.shape == (4, 30)
    for i in range(4):
        np.testing.assert_allclose(lp[i], gmmjax.log_prob(ps[i], X[i], covariance_type="diag"), rtol=1e-12)
    assert gmmjax.predict_proba(batched, X, covariance_type="diag").shape == (4, 30, 3)
    assert gmmjax.predict(batched, X, covariance_type="diag").shape == (4, 30)
    S, L = gmmjax.sample(jax.random.key(1), batched, 7, covariance_type="diag")
    assert S.shape == (4, 7, 2) and L.shape == (4, 7)


def test_feature_mismatch_is_an_error(rng):
    p = _params(rng, "full")
    with pytest.raises(ValueError, match="X has 3 features but the means have 2"):
        gmmjax.log_prob(p, np.zeros((5, 3)))


def test_nonfinite_points_and_batch_mismatch_are_errors(rng):
    """Outside jit a NaN or inf point raises (scikit-learn does the same) instead of a
    NaN density and a label 0; batched params need as many datasets in X."""
    p = _params(rng, "full")
    X = rng.normal(size=(5, 2))
    X[2, 1] = np.inf
    for f in (gmmjax.log_prob, gmmjax.predict, gmmjax.predict_proba):
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            f(p, X)
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            f(p, jax.numpy.asarray(X))
    assert not np.isfinite(np.asarray(jax.jit(gmmjax.log_prob)(p, X))[2])  # under jit: no check
    batched = jax.tree_util.tree_map(lambda a: np.stack([a, a]), p)
    with pytest.raises(ValueError, match="X holds 3 datasets but the params 2"):
        gmmjax.log_prob(batched, rng.normal(size=(3, 5, 2)))
    # One dataset for batched params: once "X has 1 features but the means have 2".
    for f in (gmmjax.log_prob, gmmjax.bic):
        with pytest.raises(ValueError, match=r"X of shape \(5, 2\) is one dataset, but the params are batched"):
            f(batched, rng.normal(size=(5, 2)))
    for f in (gmmjax.log_prob, gmmjax.bic):  # once NumPy's "inhomogeneous shape"
        with pytest.raises(ValueError, match="X is a list of datasets, but the params are one mixture's"):
            f(p, [X, X[:3]])
    with pytest.raises(ValueError, match=r"the key comes first: gmmjax.sample\(key, params, n\)"):
        gmmjax.sample(p, jax.random.key(0), 3)


def test_mask_leaves_out_padding_that_may_hold_anything(rng):
    """A padded batch as fit_batch takes it (NaN in the masked slots): with mask=, the
    valid points equal the unpadded calls and the masked ones get NaN / -1."""
    ps = [_params(rng, "full") for _ in range(2)]
    batched = jax.tree_util.tree_map(lambda *a: np.stack(a), *ps)
    lengths = (30, 18)
    X = np.full((2, 30, 2), np.nan)
    for i, n in enumerate(lengths):
        X[i, :n] = rng.normal(size=(n, 2))
    mask = np.arange(30)[None, :] < np.array(lengths)[:, None]
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        gmmjax.log_prob(batched, X)
    lp = np.asarray(gmmjax.log_prob(batched, X, mask=mask))
    pr = np.asarray(gmmjax.predict_proba(batched, X, mask=mask))
    lab = np.asarray(gmmjax.predict(batched, X, mask=mask))
    assert np.isnan(lp[~mask]).all() and np.isnan(pr[~mask]).all() and (lab[~mask] == -1).all()
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(lp[i, :n], gmmjax.log_prob(ps[i], X[i, :n]), rtol=1e-12)
        np.testing.assert_array_equal(lab[i, :n], gmmjax.predict(ps[i], X[i, :n]))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 30\)"):
        gmmjax.log_prob(batched, X, mask=mask[:, :5])
    traced = jax.jit(lambda x, m: gmmjax.log_prob(batched, x, mask=m))(X, mask)  # the mask works under jit too
    np.testing.assert_array_equal(np.isnan(np.asarray(traced)), ~mask)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_batched_dataset_without_usable_params_fails_nothing_else(rng, covariance_type):
    """One dataset of batched params with NaN means, one with zero covariances: they
    answer NaN / -1 with a RuntimeWarning, their points are not checked, and the
    other datasets are answered as alone; one such mixture alone still raises."""
    ps = [_params(rng, covariance_type) for _ in range(3)]
    batched = gmmjax.GMMParams(*(np.array(a) for a in jax.tree_util.tree_map(lambda *a: np.stack(a), *ps)))
    batched.covariances[1] = 0.0
    batched.means[2, 0] = np.nan
    X = rng.normal(size=(3, 20, 2))
    X[1, 0] = np.nan
    warns = pytest.warns(RuntimeWarning, match=r"2 of 3 datasets \(first: \[1, 2\]\) have no usable params")
    with warns:
        lp = np.asarray(gmmjax.log_prob(batched, X, covariance_type=covariance_type))
    with warns:
        pr = np.asarray(gmmjax.predict_proba(batched, X, covariance_type=covariance_type))
    with warns:
        lab = np.asarray(gmmjax.predict(batched, X, covariance_type=covariance_type))
    with warns:
        S, L = gmmjax.sample(jax.random.key(0), batched, 5, covariance_type=covariance_type)
    assert np.isnan(lp[1:]).all() and np.isnan(pr[1:]).all() and (lab[1:] == -1).all()
    assert np.isnan(np.asarray(S)[1:]).all() and (np.asarray(L)[1:] == -1).all()
    np.testing.assert_allclose(lp[0], gmmjax.log_prob(ps[0], X[0], covariance_type=covariance_type), rtol=1e-12)
    np.testing.assert_array_equal(lab[0], gmmjax.predict(ps[0], X[0], covariance_type=covariance_type))
    assert np.isfinite(np.asarray(S)[0]).all()
    one = jax.tree_util.tree_map(lambda a: a[1], batched)
    with pytest.raises(ValueError, match="positive definite"):
        gmmjax.log_prob(one, X[0], covariance_type=covariance_type)


def test_fit_batch_result_with_a_failed_fit_can_still_be_used():
    """fit_batch leaves zero covariances where a constant dataset failed with
    reg_covar=0; predict on the whole result answers the other dataset."""
    X = np.random.default_rng(0).normal(size=(2, 40, 2)).astype(np.float32)
    X[1] = 1.0
    res = gmmjax.fit_batch(X, gmmjax.EMConfig(n_components=2, reg_covar=0.0), key=jax.random.key(0))
    assert res.status.tolist() == [gmmjax.Status.CONVERGED, gmmjax.Status.NUMERICAL_FAILURE]
    with pytest.warns(RuntimeWarning, match=r"1 of 2 datasets \(first: \[1\]\)"):
        lab = np.asarray(gmmjax.predict(res.params, X))
    assert (lab[1] == -1).all() and set(lab[0].tolist()) == {0, 1}


def test_datasets_fit_batch_could_not_fit_have_no_model():
    """fit_batch gives a dataset it could not fit (NaN in it, too few points) weights of
    all 0: every function that takes params answers NaN / -1 / +inf for it, with a
    warning, without checking its points (those placeholders, with uniform weights,
    once gave confident labels, and the NaN point failed the batch); one such mixture
    alone raises. A list of datasets, as fit_batch takes, gives a list of results."""
    rng = np.random.default_rng(1)
    good = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 5])
    with_nan = good.copy()
    with_nan[3, 1] = np.nan
    Xs = [good, with_nan, good[:1]]
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(2), key=jax.random.key(0))
    assert res.status.tolist() == [gmmjax.Status.CONVERGED, gmmjax.Status.NONFINITE_INPUT, gmmjax.Status.TOO_FEW_POINTS]
    weights = np.asarray(res.params.weights)
    assert np.all(weights[1:] == 0) and np.all(np.isfinite(np.asarray(res.params.covariances)))
    one = jax.tree_util.tree_map(lambda a: a[0], res.params)
    no_model = r"2 of 3 datasets \(first: \[1, 2\]\) have no usable params: weights all 0"
    with pytest.warns(RuntimeWarning, match=no_model):
        lab = gmmjax.predict(res.params, Xs)
    with pytest.warns(RuntimeWarning, match=no_model):
        lp = gmmjax.log_prob(res.params, Xs)
    with pytest.warns(RuntimeWarning, match=no_model):
        pr = gmmjax.predict_proba(res.params, Xs)
    assert [np.shape(a) for a in lab] == [(50,), (50,), (1,)] and np.shape(pr[2]) == (1, 2)
    np.testing.assert_array_equal(lab[0], gmmjax.predict(one, good))
    np.testing.assert_allclose(lp[0], gmmjax.log_prob(one, good), rtol=1e-12)
    np.testing.assert_allclose(pr[0], gmmjax.predict_proba(one, good), rtol=1e-12)
    assert all(np.all(np.asarray(lab[i]) == -1) and np.isnan(lp[i]).all() and np.isnan(pr[i]).all() for i in (1, 2))
    with pytest.warns(RuntimeWarning, match="criteria are \\+inf"):
        assert np.isinf(gmmjax.bic(res.params, Xs)[1:]).all()
    with pytest.warns(RuntimeWarning, match=no_model):
        X, y = gmmjax.sample(jax.random.key(1), res.params, 4)
    assert np.isfinite(X[0]).all() and np.isnan(X[1:]).all() and np.all(np.asarray(y[1:]) == -1)
    for i in (1, 2):
        alone = jax.tree_util.tree_map(lambda a: a[i], res.params)
        with pytest.raises(ValueError, match="weights are all 0: the placeholder of a dataset that has no model"):
            gmmjax.predict(alone, good)
    # A call that fails on X raises without a warning about the params first (warnings
    # are errors in this suite).
    for f in (gmmjax.predict, gmmjax.bic):
        with pytest.raises(ValueError, match="features"):
            f(res.params, [x[:, :1] for x in Xs])


def test_a_list_of_datasets_gives_a_list_of_results(rng):
    ps = [_params(rng, "full") for _ in range(3)]
    batched = jax.tree_util.tree_map(lambda *a: np.stack(a), *ps)
    Xs = [rng.normal(scale=3, size=(n, 2)) for n in (7, 12, 1)]
    padded, mask = np.zeros((3, 12, 2)), np.zeros((3, 12), bool)
    for i, x in enumerate(Xs):
        padded[i, : len(x)], mask[i, : len(x)] = x, True
    for f in (gmmjax.log_prob, gmmjax.predict_proba, gmmjax.predict):
        got, want = f(batched, Xs), np.asarray(f(batched, padded, mask=mask))
        assert len(got) == 3 and all(isinstance(g, np.ndarray) for g in got)
        for i, x in enumerate(Xs):
            np.testing.assert_array_equal(got[i], want[i, : len(x)])
            np.testing.assert_allclose(got[i], f(ps[i], x), rtol=1e-12)
    with pytest.raises(ValueError, match="a list of datasets is masked for you"):
        gmmjax.log_prob(batched, Xs, mask=mask)
    with pytest.raises(ValueError, match=r"dataset 0 must have shape \(n_samples,\) or \(n_samples, n_features\)"):
        gmmjax.log_prob(batched, [1.0, 2.0, 3.0])


def test_points_far_from_every_component_in_float32():
    """At 1e10 standard deviations (float32) logsumexp absorbed the log K and every
    responsibility came out 1; they now sum to one. At 1e20 and at float32's largest
    value (a sentinel) every density underflows: log_prob -inf, responsibilities NaN
    and label -1 with a warning, also from the estimator; under jit, NaN / -1."""
    p = gmmjax.GMMParams(
        np.array([0.5, 0.5], np.float32), np.array([[0, 0], [3, 3]], np.float32), np.stack([np.eye(2, dtype=np.float32)] * 2)
    )
    X = np.array([[1, 1], [1e10, 1e10], [1e20, 1e20], [np.finfo(np.float32).max, 0]], np.float32)
    lp = np.asarray(gmmjax.log_prob(p, X))
    assert np.isfinite(lp[:2]).all() and np.isneginf(lp[2:]).all()
    with pytest.warns(RuntimeWarning, match=r"2 point\(s\) lie so far from every component"):
        pr = np.asarray(gmmjax.predict_proba(p, X))
    np.testing.assert_allclose(pr[:2].sum(axis=1), 1.0, rtol=1e-6)
    assert np.isnan(pr[2:]).all()
    with pytest.warns(RuntimeWarning, match="float32"):
        assert np.asarray(gmmjax.predict(p, X)).tolist()[2:] == [-1, -1]
    assert np.asarray(jax.jit(gmmjax.predict)(p, X)).tolist()[2:] == [-1, -1]
    gm = gmmjax.GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32))
    with pytest.warns(RuntimeWarning, match="so far from every component"):
        assert gm.predict(X).tolist()[2:] == [-1, -1]


@pytest.mark.parametrize("covariance_type", TYPES)
def test_far_points_have_probabilities_that_sum_to_one(rng, covariance_type):
    """predict_proba in [0, 1] with rows summing to one, and predict equal to SciPy's
    float64 argmax, for points 10 to 1e9 standard deviations away. Far from the data
    the log densities are large (~1e7 at 1e3 standard deviations in float32); XLA
    computed them once for the maximum and again for the subtraction, rounding the
    copies differently: rows summed to 2, or to inf, and labels were wrong. (With
    XLA's default code generation only: `test_sklearn_match.py` runs this test with it.)"""
    p64 = _params(rng, covariance_type)
    K = len(p64.weights)
    cov = _full(np.asarray(p64.covariances), covariance_type, K, 2)
    for dtype, scales in ((np.float64, (1e3, 1e6, 1e9)), (np.float32, (1e1, 1e2, 1e3, 1e4))):
        p = gmmjax.GMMParams(*(np.asarray(a, dtype) for a in p64))
        X = np.concatenate([s * rng.normal(size=(200, 2)) for s in scales]).astype(dtype)
        pr = np.asarray(gmmjax.predict_proba(p, X, covariance_type=covariance_type))
        assert np.all((pr >= 0) & (pr <= 1)), (dtype, pr.max())
        np.testing.assert_allclose(pr.sum(axis=1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)
        ref = np.stack([multivariate_normal(p64.means[k], cov[k]).logpdf(X.astype(np.float64)) for k in range(K)], axis=1)
        labels = np.asarray(gmmjax.predict(p, X, covariance_type=covariance_type))
        np.testing.assert_array_equal(labels, np.argmax(ref + np.log(p64.weights), axis=1))


def test_far_points_warn_once_at_the_users_line_and_only_for_real_points():
    """The warning points to the caller's line whatever the depth (the function, the
    estimator); an estimator's padding rows (zeros, far from data at 2**60) are not
    counted, and its log densities (score, bic) do not warn about labels."""
    X = np.full((8, 1), 2.0**60, np.float32)  # constant: a variance of reg_covar, 1e21 sd from 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing about padding in fit or predict
        gm = gmmjax.GaussianMixture(1, random_state=0).fit(X)
        assert gm.predict(X).tolist() == [0] * 8
        with pytest.warns(ConvergenceWarning, match="DEGENERATE"):
            bgm = gmmjax.BatchGaussianMixture(1, random_state=0).fit([X, X[:5]])
        assert [a.tolist() for a in bgm.predict([X, X[:5]])] == [[0] * 8, [0] * 5]
        far = [np.float32(1e30) * np.ones((2, 1), np.float32), X[:5]]
        assert np.isneginf(bgm.score_samples(far)[0]).all() and np.isinf(bgm.bic(far)[0])
    for call in (lambda: gm.predict(X * 0 + 1e30), lambda: bgm.predict(far), lambda: gmmjax.predict(gm_params(gm), X * 0 + 1e30)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call()
        assert [w.filename for w in seen] == [__file__], [(w.filename, str(w.message)) for w in seen]


def gm_params(gm):
    return gmmjax.GMMParams(gm.weights_, gm.means_, gm.covariances_)


def test_batched_params_of_no_datasets():
    p0 = gmmjax.GMMParams(np.zeros((0, 2)), np.zeros((0, 2, 2)), np.zeros((0, 2, 2, 2)))
    assert np.asarray(gmmjax.log_prob(p0, np.zeros((0, 5, 2)))).shape == (0, 5)
    assert np.asarray(gmmjax.sample(jax.random.key(0), p0, 3)[0]).shape == (0, 3, 2)
