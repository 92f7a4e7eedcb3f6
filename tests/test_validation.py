"""Semantics 6: bad calls get a ValueError that says what to do."""

import jax
import numpy as np
import pytest

import gmmjax

KEY = jax.random.key(0)
X = np.random.default_rng(0).normal(size=(30, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=0), "n_components must be an integer >= 1"),
        (dict(n_components=2.5), "n_components must be an integer >= 1"),
        (dict(n_components=2, covariance_type="ful"), "Unknown covariance_type 'ful'; use one of"),
        (dict(n_components=2, init="kmeans+"), "Unknown init 'kmeans\\+'; use one of"),
        (dict(n_components=2, tol=-1.0), "tol must be a number >= 0"),
        (dict(n_components=2, tol=float("nan")), "tol must be a number >= 0"),
        (dict(n_components=2, max_iter=-1), "max_iter must be an integer in \\[0, 2\\*\\*31 - 1\\)"),
        (dict(n_components=2, max_iter=2**31), "max_iter must be an integer in \\[0, 2\\*\\*31 - 1\\)"),
        (dict(n_components=2, n_init=0), "n_init must be an integer >= 1"),
        (dict(n_components=2, reg_covar=-1e-6), "reg_covar must be a finite number >= 0"),
        (dict(n_components=2, trace="everything"), "Unknown trace"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gmmjax.EMConfig(**kwargs)


def test_config_is_hashable_and_static():
    a, b = gmmjax.EMConfig(3), gmmjax.EMConfig(3)
    assert a == b and hash(a) == hash(b)
    assert jax.tree_util.tree_leaves(a) == [a]  # not a pytree: it cannot leak into tracing


def test_wrong_ndim():
    with pytest.raises(ValueError, match="use gmmjax.fit_batch"):
        gmmjax.fit(np.zeros((2, 3, 4)), gmmjax.EMConfig(2), key=KEY)
    with pytest.raises(ValueError, match="For one dataset use gmmjax.fit"):
        gmmjax.fit_batch(np.zeros(5), gmmjax.EMConfig(2), key=KEY)


def test_empty_dataset_in_fit():
    with pytest.raises(ValueError, match="X is empty"):
        gmmjax.fit(np.zeros((0, 2)), gmmjax.EMConfig(2), key=KEY)



@pytest.mark.parametrize("shape", [(3, 0, 2), (3, 0)])
def test_padded_batch_of_zero_points_gets_too_few_points(shape):
    res = gmmjax.fit_batch(np.zeros(shape, np.float32), gmmjax.EMConfig(2), key=KEY)
    assert gmmjax.status_counts(res.status) == gmmjax.status_counts(res) == {"TOO_FEW_POINTS": 3}
    for bad in (["CONVERGED"], None, [7], [0.5]):  # once raw NumPy or int() errors
        with pytest.raises(ValueError, match="status_counts takes an array of gmmjax.Status values"):
            gmmjax.status_counts(bad)
    if len(shape) == 3:  # (3, 0) is one dataset of 0 features for select_n_components
        sel = gmmjax.select_n_components(np.zeros(shape, np.float32), [1, 2], key=KEY)
        assert np.all(np.isinf(sel.scores))

def test_mask_shape_must_match():
    with pytest.raises(ValueError, match=r"mask must have shape \(B, N\) = \(2, 30\)"):
        gmmjax.fit_batch(np.stack([X, X]), gmmjax.EMConfig(2), key=KEY, mask=np.ones((2, 29), bool))
    with pytest.raises(ValueError, match="list of datasets is masked for you"):
        gmmjax.fit_batch([X, X], gmmjax.EMConfig(2), key=KEY, mask=np.ones((2, 30), bool))


def test_mask_must_be_boolean_or_0_and_1():
    """A mask of 0.5 once counted as True; fractions belong in weights=."""
    from gmmjax.sklearn import BatchGaussianMixture

    Xs, config = np.stack([X, X + 1]), gmmjax.EMConfig(2)
    half = np.ones((2, 30))
    half[1, 4] = 0.5
    for call in (
        lambda m: gmmjax.fit_batch(Xs, config, key=KEY, mask=m),
        lambda m: BatchGaussianMixture(2).fit(Xs, mask=m),
        lambda m: gmmjax.log_prob(gmmjax.GMMParams(np.full((2, 2), 0.5), Xs[:, :2], np.ones((2, 2))),
                                  Xs, covariance_type="spherical", mask=m),
    ):
        with pytest.raises(ValueError, match="mask must be boolean .* got values such as 0.5; .* weights="):
            call(half)
        with pytest.raises(ValueError, match="mask must be boolean .* got dtype <U1"):
            call(np.full((2, 30), "y"))
    ones = np.ones((2, 30), np.int64)
    ones[1, 10:] = 0
    by_int, by_bool = (gmmjax.fit_batch(Xs, config, key=KEY, mask=m) for m in (ones, ones.astype(bool)))
    for a, b in zip(jax.tree_util.tree_leaves(by_int), jax.tree_util.tree_leaves(by_bool)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_complex_data_are_refused_not_cut_to_their_real_part():
    from gmmjax.sklearn import BatchGaussianMixture

    Z, config = X + 1j, gmmjax.EMConfig(2)
    two_features = "the mixtures are real-valued. Pass the real and imaginary parts as two features"
    with pytest.raises(ValueError, match=r"X is complex \(complex128\); " + two_features):
        gmmjax.fit(Z, config, key=KEY)
    with pytest.raises(ValueError, match="X is complex"):
        gmmjax.fit_batch(np.stack([Z, Z]), config, key=KEY)
    with pytest.raises(ValueError, match="dataset 1 is complex"):
        gmmjax.fit_batch([X, Z], config, key=KEY)
    with pytest.raises(ValueError, match="dataset 1 is complex"):
        BatchGaussianMixture(2).fit([X, Z])
    with pytest.raises(ValueError, match=r"weights is complex \(complex128\); the mixtures are real-valued.$"):
        gmmjax.fit(X, config, key=KEY, weights=np.ones(30) + 0j)
    params = gmmjax.GMMParams(np.full(2, 0.5), X[:2], np.ones(2))
    with pytest.raises(ValueError, match="X is complex"):
        gmmjax.log_prob(params, Z, covariance_type="spherical")


def test_missing_values_and_data_that_are_not_numbers():
    """None in a list of points (an object array) once skipped the finite check of the
    density functions: a silent NaN in log_prob, an unasked-for 'far from every
    component' warning in predict. None is a missing value, as NaN; text is refused."""
    params = gmmjax.GMMParams(np.array([0.5, 0.5]), np.array([[0.0], [3.0]]), np.ones((2, 1, 1)))
    for call in (
        lambda data: gmmjax.log_prob(params, data),
        lambda data: gmmjax.predict(params, data),
        lambda data: gmmjax.fit(data, gmmjax.EMConfig(1), key=KEY),
    ):
        with pytest.raises(ValueError, match=r"X is not numeric \(dtype <U1\)"):
            call(np.array([["a"], ["b"]]))
        with pytest.raises(ValueError, match=r"X is not numeric \(dtype <U3\)"):  # text, even of numbers
            call(np.array([["1.0"], ["2"]]))
    for call in (gmmjax.log_prob, gmmjax.predict):
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            call(params, [[None], [1.0]])
    assert gmmjax.fit([[None], [1.0]], gmmjax.EMConfig(1), key=KEY).status == gmmjax.Status.NONFINITE_INPUT
    res = gmmjax.fit_batch([X, [[None, 1.0]] * 5], gmmjax.EMConfig(1), key=KEY)
    assert gmmjax.status_counts(res) == {"CONVERGED": 1, "NONFINITE_INPUT": 1}
    with pytest.raises(ValueError, match="dataset 1 is not numeric"):
        gmmjax.fit_batch([X, [["a", 1.0]] * 5], gmmjax.EMConfig(1), key=KEY)
    # Numbers held in an object array are numbers.
    np.testing.assert_array_equal(
        np.asarray(gmmjax.log_prob(params, np.array([[0.5], [1.0]], dtype=object))),
        np.asarray(gmmjax.log_prob(params, np.array([[0.5], [1.0]]))),
    )


@pytest.mark.parametrize("covariance_type, cov", [("full", [[[1e-40]], [[1.0]]]), ("diag", [[1e-45], [1.0]])])
def test_subnormal_float32_covariances_are_refused(covariance_type, cov):
    """Compiled code on a CPU reads float32 subnormals as 0: such covariances passed the
    positive definite check in float64 and gave NaN for every point."""
    params = gmmjax.GMMParams(np.array([0.5, 0.5], np.float32), np.array([[0.0], [3.0]], np.float32),
                              np.array(cov, np.float32))
    with pytest.raises(ValueError, match=r"eigenvalues of at least 1.18e-38, the smallest normal float32"):
        gmmjax.log_prob(params, np.zeros((3, 1), np.float32), covariance_type=covariance_type)
    # Finite float64 points beyond float32's range: once silently dropped by bic (weight 0
    # after the cast to the params' dtype) and -inf in log_prob.
    for f in (gmmjax.log_prob, gmmjax.bic):
        with pytest.raises(ValueError, match=r"X holds finite values beyond the range of float32 \(the largest: 1e\+39\)"):
            f(params._replace(covariances=np.ones_like(params.covariances)), np.array([[0.0], [1e39]]),
              covariance_type=covariance_type)
    fine = params._replace(covariances=np.array(cov, np.float32) * 0 + np.float32(2e-38))
    assert np.isfinite(np.asarray(gmmjax.log_prob(fine, np.zeros((3, 1), np.float32), covariance_type=covariance_type))).all()


def test_bad_weights():
    with pytest.raises(ValueError, match=r"weights must have shape \(30,\)"):
        gmmjax.fit(X, gmmjax.EMConfig(2), key=KEY, weights=np.ones(3))
    with pytest.raises(ValueError, match="finite and >= 0"):
        gmmjax.fit(X, gmmjax.EMConfig(2), key=KEY, weights=-np.ones(30))


def test_key_is_required_and_checked():
    with pytest.raises(ValueError, match=r"key=jax.random.key\(0\)"):
        gmmjax.fit(X, gmmjax.EMConfig(2))
    with pytest.raises(ValueError, match="array of 2 keys"):
        gmmjax.fit_batch([X, X], gmmjax.EMConfig(2), key=jax.random.split(KEY, 3))


def test_init_params_shapes_are_checked():
    p = gmmjax.GMMParams(np.ones(2) / 2, np.zeros((2, 3)), np.stack([np.eye(2)] * 2))
    with pytest.raises(ValueError, match=r"init_params.means must have shape \(2, 2\)"):
        gmmjax.fit(X, gmmjax.EMConfig(2), init_params=p)


def test_features_must_agree_in_a_list():
    with pytest.raises(ValueError, match="same number of features"):
        gmmjax.fit_batch([X, X[:, :1]], gmmjax.EMConfig(2), key=KEY)


def test_integer_data_is_promoted():
    res = gmmjax.fit(np.arange(20), gmmjax.EMConfig(2, max_iter=5), key=KEY)
    assert np.issubdtype(res.params.means.dtype, np.floating)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(means=np.array([[0.0, np.nan], [1.0, 1.0]])), "init_params must be finite"),
        (dict(weights=np.array([0.7, 0.7])), "sum to 1"),
        (dict(covariances=np.stack([np.eye(2), -np.eye(2)])), "positive definite"),
    ],
)
def test_init_params_values_are_checked(bad, match):
    good = dict(weights=np.ones(2) / 2, means=np.zeros((2, 2)), covariances=np.stack([np.eye(2)] * 2))
    with pytest.raises(ValueError, match=match):
        gmmjax.fit(X, gmmjax.EMConfig(2), init_params=gmmjax.GMMParams(**{**good, **bad}))
    # In a batch the message names the datasets whose init_params fail (here the third).
    batch = {k: np.stack([v, v, np.asarray(bad.get(k, v), float)]) for k, v in good.items()}
    with pytest.raises(ValueError, match=rf"{match}.*\(datasets \[2\]\)"):
        gmmjax.fit_batch(np.stack([X] * 3), gmmjax.EMConfig(2), init_params=gmmjax.GMMParams(**batch))


def test_config_must_be_an_emconfig():
    with pytest.raises(ValueError, match="config must be a gmmjax.EMConfig"):
        gmmjax.fit(X, {"n_components": 2}, key=KEY)
    with pytest.raises(ValueError, match="config must be a gmmjax.EMConfig"):
        gmmjax.fit_batch([X], 2, key=KEY)


def test_density_checks_the_covariance_layout():
    # K == D: spherical (K,) or tied (D, D) params passed as "diag" used to broadcast silently.
    p = gmmjax.GMMParams(np.ones(2) / 2, np.zeros((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match=r"params.covariances must have shape \(2, 2\)"):
        gmmjax.log_prob(p, X, covariance_type="diag")
    with pytest.raises(ValueError, match=r"params.covariances must have shape \(2, 2, 2\)"):
        gmmjax.predict(p, X)  # default "full"


def test_overflowing_data_still_returns_finite_params():
    res = gmmjax.fit(np.random.default_rng(0).normal(size=(50, 2)) * 1e200, gmmjax.EMConfig(2), key=KEY)
    assert int(res.status) == gmmjax.Status.NUMERICAL_FAILURE
    for a in jax.tree_util.tree_leaves(res.params):
        assert np.all(np.isfinite(np.asarray(a)))


@pytest.mark.parametrize(
    "key, match",
    [
        (np.zeros((2, 2), np.int64), "key must be a PRNG key .* got dtype int"),
        (np.zeros((2, 2)), "key must be a PRNG key .* got dtype float"),
        (np.zeros((2, 4), np.uint32), "not uint32 key data of JAX's default PRNG"),
    ],
)
def test_keys_that_are_not_keys(key, match):
    """Once raw JAX errors from inside the fit ("invalid PRNG key data")."""
    with pytest.raises(ValueError, match=match):
        gmmjax.fit_batch(np.stack([X, X]), gmmjax.EMConfig(2), key=key)


def test_sample_key_and_random_state_are_checked():
    p = gmmjax.fit(X, gmmjax.EMConfig(2), key=KEY).params
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        gmmjax.sample(0, p, 3)
    with pytest.raises(ValueError, match="random_state of shape \\(3,\\) is not uint32 key data"):
        gmmjax.GaussianMixture(2, random_state=jax.numpy.zeros(3, jax.numpy.uint32)).fit(X)
    # Raw uint32 key data of the right shape still works, as jax.random.PRNGKey gives it.
    assert gmmjax.GaussianMixture(2, random_state=jax.random.PRNGKey(1)).fit(X).converged_


def test_asymmetric_init_covariances_are_refused():
    p = gmmjax.fit(X, gmmjax.EMConfig(2), key=KEY).params
    c = np.array([[[1.0, 0.5], [-0.5, 1.0]]] * 2)  # eigvalsh would read only one triangle
    with pytest.raises(ValueError, match="init_params.covariances must be symmetric"):
        gmmjax.fit(X, gmmjax.EMConfig(2), init_params=p._replace(covariances=c))


def test_weights_that_float32_cannot_hold_are_refused_with_what_to_do():
    X32 = X.astype(np.float32)
    with pytest.raises(ValueError, match="weights overflow float32 .* divide them by a constant"):
        gmmjax.fit(X32, gmmjax.EMConfig(2), key=KEY, weights=np.full(30, 1e300))
    # Subnormal weights read as 0 in compiled CPU code: the fit said TOO_FEW_POINTS.
    for w in (np.full(30, 1e-40, np.float32), np.full(30, 1e-300)):
        with pytest.raises(ValueError, match="weights must be 0 or at least 1.18e-38 .* multiply them"):
            gmmjax.fit(X32, gmmjax.EMConfig(2), key=KEY, weights=w)
    with pytest.raises(ValueError, match="weights must be 0 or at least"):
        gmmjax.fit_batch([X32, X32], gmmjax.EMConfig(2), key=KEY, weights=[np.ones(30), np.full(30, 1e-40)])
    # float64 data holds them.
    assert gmmjax.fit(X, gmmjax.EMConfig(2), key=KEY, weights=np.full(30, 1e-300)).status == gmmjax.Status.CONVERGED


def test_weights_whose_sum_overflows_give_the_unit_weight_fit():
    """Only the weights' ratios matter: 1e37 each (their float32 sum overflows) is the
    fit of unit weights, where it used to be a NUMERICAL_FAILURE."""
    X32 = np.concatenate([X, X + 6]).astype(np.float32)
    Xs = np.stack([X32, X32])
    W = np.ones((2, 60), np.float32)
    W[1] = 1e37
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(2), key=jax.numpy.stack([KEY, KEY]), weights=W)  # same seeds
    assert [gmmjax.Status(int(s)) for s in res.status] == [gmmjax.Status.CONVERGED] * 2
    np.testing.assert_allclose(res.log_likelihood[1], res.log_likelihood[0], rtol=1e-6)
    np.testing.assert_allclose(res.params.means[1], res.params.means[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call", ["fit", "fit_batch", "estimator"])
def test_a_trace_larger_than_memory_is_refused_before_the_fit(call):
    """The trace buffers hold max_iter + 1 entries per restart whatever the iterations
    run: max_iter = 2**31 - 2 with trace="params" asks for terabytes. A ValueError
    that names max_iter, not XLA's out-of-memory error (or a hang)."""
    config = gmmjax.EMConfig(5, covariance_type="full", n_init=10, max_iter=2**31 - 2, trace="params")
    with pytest.raises(ValueError, match=r"max_iter \+ 1 = 2147483647 entries per restart .* lower max_iter"):
        if call == "fit":
            gmmjax.fit(X, config, key=KEY)
        elif call == "fit_batch":
            gmmjax.fit_batch(np.stack([X, X]), config, key=KEY)
        else:  # the estimator keeps a log-likelihood trace: 10 restarts x 2**31 x 8 bytes
            gmmjax.GaussianMixture(2, max_iter=2**31 - 2, n_init=10).fit(X)
