"""gmmjax.GaussianMixture / BatchGaussianMixture against scikit-learn's contract and numbers.

scikit-learn is the oracle (float64, x64 on in conftest). Compilation dominates the
run time, so the tests share a few data shapes and configurations.
"""

import copy
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmmjax
from conftest import blobs
from gmmjax import BatchGaussianMixture, GaussianMixture, Status

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


@pytest.fixture(scope="module")
def X():
    return blobs(np.random.default_rng(7), n=(150, 100, 120), D=3, spread=2.0)


# ---------------------------------------------------------------- scikit-learn's estimator checks
# The first instance is scikit-learn's own checking configuration for its
# GaussianMixture (n_init=2, max_iter=5; one component, so EM converges). The second
# stresses two components, diagonal covariances and k-means++ seeds with max_iter=5:
# it warns ConvergenceWarning, which scikit-learn's own common tests also ignore.
# SCIPY_ARRAY_API=1 lets check_array_api_input run instead of skipping itself.
@parametrize_with_checks(
    [
        GaussianMixture(n_init=2, max_iter=5, random_state=0),
        GaussianMixture(
            n_components=2, covariance_type="diag", init_params="k-means++", n_init=2, max_iter=5, random_state=0
        ),
    ]
)
def test_sklearn_estimator_checks(estimator, check, monkeypatch):
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with warnings.catch_warnings():
        if estimator.n_components > 1:
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------- the same numbers as scikit-learn
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_densities_and_criteria_equal_sklearn_for_same_params(X, covariance_type):
    sk = SkGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    gm = GaussianMixture.from_sklearn(sk)
    Xt = X[::3] + 0.3
    rtol = 1e-8
    np.testing.assert_allclose(gm.score_samples(Xt), sk.score_samples(Xt), rtol=rtol)
    np.testing.assert_allclose(gm.predict_proba(Xt), sk.predict_proba(Xt), rtol=rtol, atol=1e-300)
    np.testing.assert_array_equal(gm.predict(Xt), sk.predict(Xt))
    np.testing.assert_allclose(gm.score(Xt), sk.score(Xt), rtol=rtol)
    np.testing.assert_allclose(gm.bic(Xt), sk.bic(Xt), rtol=rtol)
    np.testing.assert_allclose(gm.aic(Xt), sk.aic(Xt), rtol=rtol)
    params = gmmjax.GMMParams(sk.weights_, sk.means_, sk.covariances_)
    np.testing.assert_allclose(gmmjax.bic(params, Xt, covariance_type=covariance_type), sk.bic(Xt), rtol=rtol)
    np.testing.assert_allclose(gmmjax.aic(params, Xt, covariance_type=covariance_type), sk.aic(Xt), rtol=rtol)
    # ... and back: to_sklearn() predicts exactly what gmmjax predicts.
    back = gm.to_sklearn()
    np.testing.assert_array_equal(back.predict(Xt), gm.predict(Xt))
    np.testing.assert_allclose(back.score_samples(Xt), gm.score_samples(Xt), rtol=1e-12)
    np.testing.assert_allclose(gm.precisions_cholesky_, sk.precisions_cholesky_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_from_the_same_initial_params_equals_sklearn(X, covariance_type):
    """weights_init / means_init / precisions_init (precisions, as scikit-learn takes them)."""
    start = SkGaussianMixture(3, covariance_type=covariance_type, max_iter=1, random_state=1)
    with pytest.warns(ConvergenceWarning):
        start.fit(X)
    inits = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    sk = SkGaussianMixture(3, covariance_type=covariance_type, tol=1e-6, **inits).fit(X)
    gm = GaussianMixture(3, covariance_type=covariance_type, tol=1e-6, **inits).fit(X)
    assert gm.n_iter_ == sk.n_iter_ and gm.converged_ and gm.status_ == Status.CONVERGED
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=1e-9)
    assert gm.lower_bound_ == gm.lower_bounds_[-1]
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-9)
    np.testing.assert_array_equal(gm.lower_bounds_, gm.trace_.log_likelihood[: gm.n_iter_])
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-7, atol=1e-10, err_msg=name)


def test_hyperparameters_and_defaults_match_sklearn():
    ours = GaussianMixture().get_params()
    assert ours.pop("dtype") is None
    assert ours == SkGaussianMixture().get_params()


# ---------------------------------------------------------------- warnings and errors
def test_convergence_warning_verbose_and_max_iter_zero(X, capsys):
    with pytest.warns(ConvergenceWarning, match="Best performing initialization did not converge") as caught:
        gm = GaussianMixture(3, max_iter=2, n_init=2, random_state=0, verbose=2, verbose_interval=2).fit(X)
    assert caught[0].filename == __file__  # the user's line, not scikit-learn's fit wrapper
    assert not gm.converged_ and gm.status_ == Status.MAX_ITER and gm.n_iter_ == 2
    out = capsys.readouterr().out  # scikit-learn's messages, printed after the compiled fit
    assert out.count("Initialization did not converge.") == 2
    assert "Initialization 1" in out and "  Iteration 2\t ll change" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # max_iter=0: no warning, as scikit-learn
        gm = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert gm.n_iter_ == 0 and gm.lower_bounds_ == [] and gm.lower_bound_ == -np.inf


def test_too_few_samples_and_numerical_failure_errors():
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 5, n_samples = 3"):
        GaussianMixture(5).fit(np.arange(6.0).reshape(3, 2))
    # Two points repeated, no regularisation: the covariances are singular.
    Xd = np.repeat([[0.0, 0.0], [1.0, 2.0]], 8, axis=0)
    with pytest.raises(ValueError, match="increase reg_covar, or scale the input data"):
        SkGaussianMixture(2, reg_covar=0.0, random_state=0).fit(Xd)
    with pytest.raises(ValueError, match="increase reg_covar, or scale the input data.*NUMERICAL_FAILURE"):
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(Xd)


def test_parameters_validated_in_fit_not_init(X):
    gm = GaussianMixture(n_components=0, dtype="float16")  # stored untouched
    assert gm.n_components == 0 and gm.dtype == "float16"
    with pytest.raises(InvalidParameterError, match="dtype"):
        GaussianMixture(dtype="float16").fit(X)
    with pytest.raises(ValueError, match="'weights' should be normalized"):
        GaussianMixture(2, weights_init=[0.3, 0.3]).fit(X)
    with pytest.raises(ValueError, match="'full precision' should have the shape of"):
        GaussianMixture(2, precisions_init=np.ones((2, 3))).fit(X)
    with pytest.raises(ValueError, match="symmetric, positive-definite"):
        GaussianMixture(2, covariance_type="tied", precisions_init=-np.eye(3)).fit(X)
    # Per-dataset starts of a batch: the failing dataset's sum, and the batched shape.
    with pytest.raises(ValueError, match=r"sum\(weights\) = 1.10000 for datasets \[1\]"):
        BatchGaussianMixture(2, weights_init=[[0.5, 0.5], [0.6, 0.5]]).fit([X, X])
    with pytest.raises(ValueError, match=r"shape of \(2,\) \(or \(2, 2\), one per dataset\), but got \(3, 2\)"):
        BatchGaussianMixture(2, weights_init=np.full((3, 2), 0.5)).fit([X, X])


# ---------------------------------------------------------------- precision policy
def test_float64_data_is_computed_in_float64_even_with_x64_off(X):
    """dtype=None: float64 data -> float64 fit (64-bit mode switched on for the call)."""
    ref = GaussianMixture(3, random_state=0).fit(X)
    with jax.enable_x64(False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no truncation warning from JAX either
            gm = GaussianMixture(3, random_state=0).fit(X)
            proba = gm.predict_proba(X)
        assert not jax.config.jax_enable_x64  # the caller's setting is left alone
        assert jax.numpy.zeros(1).dtype == np.float32
    assert gm.means_.dtype == np.float64 and proba.dtype == np.float64
    np.testing.assert_array_equal(gm.means_, ref.means_)
    np.testing.assert_array_equal(proba, ref.predict_proba(X))


def test_float32_data_and_dtype_parameter(X):
    g32 = GaussianMixture(3, random_state=0).fit(X.astype(np.float32))
    assert g32.means_.dtype == np.float32 and g32.score_samples(X).dtype == np.float32
    f32 = GaussianMixture(3, random_state=0, dtype="float32").fit(X)
    assert f32.covariances_.dtype == np.float32
    np.testing.assert_array_equal(f32.means_, g32.means_)
    f64 = GaussianMixture(3, random_state=0, dtype="float64").fit(X.astype(np.float32))
    assert f64.means_.dtype == np.float64
    assert f32.converged_ and f64.converged_  # float32 draws its own seeds: compare the fits' quality
    np.testing.assert_allclose(f32.score(X), f64.score(X), rtol=1e-3)
    # Finite float64 values beyond float32's range: said so, not "X contains NaN or infinity".
    big = X.copy()
    big[3, 0] = 1e39
    beyond = r"X holds finite values beyond the range of float32 \(the largest: 1e\+39\).*dtype='float64'"
    with pytest.raises(ValueError, match=beyond):
        g32.score_samples(big)
    with pytest.raises(ValueError, match=beyond):
        GaussianMixture(3, random_state=0, dtype="float32").fit(big)
    with pytest.raises(ValueError, match=beyond):  # a warm start continues in float32
        g32.set_params(warm_start=True).fit(big)


# ---------------------------------------------------------------- behaviour
def test_random_state_int_and_jax_key_agree_and_clone(X):
    a = GaussianMixture(3, random_state=3).fit(X)
    b = GaussianMixture(3, random_state=jax.random.key(3)).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    c = clone(b)
    assert c.get_params()["random_state"] is not b.random_state
    np.testing.assert_array_equal(c.fit(X).means_, a.means_)


def test_warm_start_continues_like_sklearn(X):
    gm = GaussianMixture(3, random_state=0, max_iter=2, tol=0.0, warm_start=True)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    sk = gm.to_sklearn()
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)  # two more iterations from where it stopped
    with pytest.warns(ConvergenceWarning):
        sk.fit(X)
    assert gm.n_iter_ == sk.n_iter_ == 2
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-10)
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    # float32 data continue the float64 model in float64 (as scikit-learn accepts them;
    # this once raised a dtype mismatch).
    twin = copy.deepcopy(gm)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X.astype(np.float32))
    with pytest.warns(ConvergenceWarning):
        twin.fit(X.astype(np.float32).astype(np.float64))
    assert gm.means_.dtype == np.float64
    np.testing.assert_array_equal(gm.means_, twin.means_)



def test_warm_start_with_another_covariance_type_says_so(X):
    gm = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="covariance_type='diag' needs \\(3, 3\\).*warm_start=False"):
        gm.set_params(warm_start=True, covariance_type="diag").fit(X)
    bgm = BatchGaussianMixture(3, random_state=0).fit([X, X])
    with pytest.raises(ValueError, match="covariance_type='spherical' needs \\(3,\\)"):
        bgm.set_params(warm_start=True, covariance_type="spherical").fit([X, X])
    # Data with another number of features: refused, and the fitted model stays usable
    # (n_features_in_ was reset before the check, and predict then refused X itself).
    gm = GaussianMixture(3, random_state=0, warm_start=True).fit(X)
    labels = gm.predict(X)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.fit(X[:, :2])
    assert gm.n_features_in_ == 3
    np.testing.assert_array_equal(gm.predict(X), labels)

def test_fit_predict_sample_and_partial_init(X):
    gm = GaussianMixture(3, random_state=0, means_init=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], n_init=2)
    labels = gm.fit_predict(X)
    np.testing.assert_array_equal(labels, gm.predict(X))
    Xs, ys = gm.sample(500)
    assert Xs.shape == (500, 3) and ys.shape == (500,) and np.all(np.diff(ys) >= 0)
    np.testing.assert_array_equal(gm.sample(500)[0], Xs)  # an int random_state: the same draw
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_pipeline_in_grid_search_over_n_components():
    rng = np.random.default_rng(3)
    Xg = rng.permutation(blobs(rng, n=(90, 90, 90), D=2, spread=6.0)) * [1.0, 50.0]  # unscaled features
    pipe = make_pipeline(StandardScaler(), GaussianMixture(random_state=0))
    search = GridSearchCV(pipe, {"gaussianmixture__n_components": [1, 2, 3]}, cv=3).fit(Xg)
    assert search.best_params_ == {"gaussianmixture__n_components": 3}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_import_gmmjax_without_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np, jax, gmmjax\n"
        "assert 'GaussianMixture' not in gmmjax.__all__\n"
        "r = gmmjax.fit(np.arange(20.0), gmmjax.EMConfig(2), key=jax.random.key(0))\n"
        "try:\n    gmmjax.GaussianMixture\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout and "pip install 'gmmjax[sklearn]'" in out.stdout


# ---------------------------------------------------------------- many datasets
def _datasets(rng):
    good = [blobs(rng, n=(n, n // 2), D=2, spread=3.0) for n in (20, 30, 40)]  # one padded size
    bad_nan = good[0].copy()
    bad_nan[5, 1] = np.nan
    return good, [good[0], bad_nan, good[1], good[2][:1], good[2]]


def test_batch_bad_datasets_get_statuses_and_one_warning(rng):
    good, Xs = _datasets(rng)
    with pytest.warns(ConvergenceWarning) as record:
        bgm = BatchGaussianMixture(2, random_state=0).fit(Xs)
    assert len(record) == 1 and record[0].filename == __file__
    assert "2 of 5 datasets" in str(record[0].message) and "NONFINITE_INPUT': 1" in str(record[0].message)
    assert [Status(s) for s in bgm.status_] == [
        Status.CONVERGED, Status.NONFINITE_INPUT, Status.CONVERGED, Status.TOO_FEW_POINTS, Status.CONVERGED
    ]
    assert bgm.means_.shape == (5, 2, 2) and bgm.converged_.shape == bgm.n_iter_.shape == (5,)
    # The good datasets equal separate fits with dataset i's key.
    keys = jax.random.split(jax.random.key(0), 5)
    labels = bgm.predict(Xs)
    for i in (0, 2, 4):
        gm = GaussianMixture(2, random_state=keys[i]).fit(Xs[i])
        assert gm.n_iter_ == bgm.n_iter_[i]
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_allclose(getattr(bgm, name)[i], getattr(gm, name), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bgm.lower_bounds_[i], gm.lower_bounds_, rtol=1e-10)
        np.testing.assert_array_equal(labels[i], gm.predict(Xs[i]))
        one = bgm.get_estimator(i)
        np.testing.assert_allclose(one.score_samples(Xs[i]), gm.score_samples(Xs[i]), rtol=1e-9)
    # Unfitted datasets give no predictions, and no estimators (their placeholders once
    # became estimators that predicted confidently).
    assert np.all(labels[1] == -1) and np.all(np.isnan(bgm.score(Xs)[[1, 3]]))
    with pytest.raises(ValueError, match="dataset 3 has no model \\(status TOO_FEW_POINTS\\)"):
        bgm.get_estimator(-2)
    with pytest.raises(IndexError, match="out of range"):
        bgm.get_estimator(5)
    with pytest.warns(RuntimeWarning, match=r"2 of 5 datasets \(first: \[1, 3\]\) have no model"):
        sks = bgm.to_sklearn()
    assert sks[1] is None and sks[3] is None
    np.testing.assert_array_equal(sks[4].predict(Xs[4]), labels[4])



# full and spherical (the stand-in covariances of the most and the fewest numbers);
# test_density covers the stand-ins of all four types without fits.
@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_batch_dataset_without_a_model_fails_nothing_else(rng, covariance_type):
    """A constant dataset with reg_covar=0 has covariances with no Cholesky factor:
    it gets NUMERICAL_FAILURE, and every call on the batch (predict, score, bic,
    sample, a warm start) still answers for the others, NaN / -1 for it."""
    good, _ = _datasets(rng)
    Xs = [good[0], np.ones((20, 2)), good[1]]
    with pytest.warns(ConvergenceWarning):
        bgm = BatchGaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(Xs)
    assert Status(bgm.status_[1]) == Status.NUMERICAL_FAILURE and np.isnan(bgm.precisions_cholesky_[1]).all()
    assert list(bgm.status_[[0, 2]]) == [Status.CONVERGED] * 2
    labels, score, bic = bgm.predict(Xs), bgm.score(Xs), bgm.bic(Xs)
    assert np.all(labels[1] == -1) and np.isnan(score[1]) and np.isnan(bic[1])
    for i in (0, 2):
        gm = bgm.get_estimator(i)
        np.testing.assert_array_equal(labels[i], gm.predict(Xs[i]))
        np.testing.assert_allclose(score[i], gm.score(Xs[i]), rtol=1e-9)
    X, y = bgm.sample(4)
    assert np.isnan(X[1]).all() and np.all(y[1] == -1) and np.isfinite(X[[0, 2]]).all()
    if covariance_type != "full":  # the warm starts below take compilations of their own
        return
    with pytest.warns(ConvergenceWarning):
        bgm.set_params(warm_start=True).fit(Xs)
    assert Status(bgm.status_[1]) == Status.NUMERICAL_FAILURE
    # A warm start on new data: the dataset without a model starts afresh, as a cold
    # fit with its key (from the stand-in all components would stay alike).
    new = [good[0], good[2], good[1]]
    bgm.set_params(reg_covar=1e-6).fit(new)
    cold = BatchGaussianMixture(2, covariance_type=covariance_type, reg_covar=1e-6, random_state=0).fit(new)
    assert Status(bgm.status_[1]) == Status.CONVERGED
    np.testing.assert_allclose(bgm.means_[1], cold.means_[1], rtol=1e-9)
    assert not np.allclose(bgm.means_[1, 0], bgm.means_[1, 1])


def test_batch_prediction_data_with_nan_raises(rng):
    good, _ = _datasets(rng)
    bgm = BatchGaussianMixture(2, random_state=0).fit(good)
    bad = [x.copy() for x in good]
    bad[2][3, 0] = np.inf
    for method in (bgm.predict, bgm.score, bgm.score_samples, bgm.bic):
        with pytest.raises(ValueError, match=r"NaN or infinity in datasets \[2\]"):
            method(bad)
    n = max(len(x) for x in bad)
    padded, mask = np.zeros((3, n, 2)), np.zeros((3, n), bool)
    for i, x in enumerate(bad):
        padded[i, : len(x)], mask[i, : len(x)] = x, np.isfinite(x).all(axis=1)
    padded[~mask] = np.nan  # masked points may be anything
    assert bgm.predict(padded, mask=mask)[2, 3] == -1

def test_batch_padded_array_with_lengths_or_mask_equals_list(rng):
    good, _ = _datasets(rng)
    lengths = [len(x) for x in good]
    padded = np.full((3, max(lengths), 2), np.nan)
    for i, x in enumerate(good):
        padded[i, : len(x)] = x
    mask = ~np.isnan(padded[..., 0])
    a = BatchGaussianMixture(2, covariance_type="diag", random_state=1).fit(good)
    b = BatchGaussianMixture(2, covariance_type="diag", random_state=1).fit(padded, lengths=lengths)
    c = BatchGaussianMixture(2, covariance_type="diag", random_state=1).fit(padded, mask=mask)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.means_, c.means_)
    lab = b.predict(padded, lengths=lengths)
    assert lab.shape == mask.shape and np.all(lab[~mask] == -1)
    for i, li in enumerate(a.predict(good)):
        np.testing.assert_array_equal(lab[i, : lengths[i]], li)
    proba = c.predict_proba(padded, mask=mask)
    assert proba.shape == (3, max(lengths), 2) and np.isnan(proba[~mask]).all()
    sk = a.to_sklearn()
    np.testing.assert_allclose(a.bic(good), [s.bic(x) for s, x in zip(sk, good)], rtol=1e-10)
    np.testing.assert_allclose(a.aic(good), [s.aic(x) for s, x in zip(sk, good)], rtol=1e-10)
    Xs, ys = a.sample(10)
    assert Xs.shape == (3, 10, 2) and ys.shape == (3, 10)
    with pytest.raises(ValueError, match="expecting 2 features"):
        a.predict([x[:, :1] for x in good])


def test_batch_get_estimator_uses_the_fitting_key(tmp_path, capsys):
    Xs = [np.random.default_rng(i).normal(size=(60, 2)) for i in range(3)]
    bgm = gmmjax.BatchGaussianMixture(n_components=2).fit(Xs)  # random_state=None
    a, b = bgm.get_estimator(1), bgm.get_estimator(1)
    np.testing.assert_array_equal(jax.random.key_data(a.random_state), jax.random.key_data(b.random_state))
    refit = a.fit(Xs[1])
    np.testing.assert_allclose(refit.means_, bgm.means_[1], rtol=1e-9)
    # The key survives saving (with random_state=None it is the only record of it).
    bgm.save(tmp_path / "b.npz")
    back = gmmjax.BatchGaussianMixture.load(tmp_path / "b.npz").get_estimator(1).random_state
    np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(a.random_state))
    with pytest.raises(TypeError, match="dataset index must be an integer, got 1.0"):
        bgm.get_estimator(1.0)
    # verbose: one summary of the batch (no per-restart report)
    bgm.set_params(verbose=2).fit(Xs)
    out = capsys.readouterr().out
    assert out.startswith("Fitted 3 datasets: {'CONVERGED': 3}; EM iterations median") and "Lower bound min" in out
