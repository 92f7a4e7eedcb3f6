"""Saving and loading: exact round trips, and hostile or broken files refused."""

import io
import json
import pickle
import zipfile

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import blobs
import gmmjax
from gmmjax import BatchGaussianMixture, GaussianMixture, GMMParams, Status, _io

COVARIANCE_SHAPES = {"full": (3, 2, 2), "diag": (3, 2), "spherical": (3,), "tied": (2, 2)}


@pytest.fixture(scope="module")
def fitted():
    X = blobs(np.random.default_rng(11), n=(40, 30, 30), D=2)
    return X, GaussianMixture(3, covariance_type="diag", random_state=4).fit(X)


@pytest.mark.parametrize("covariance_type", list(COVARIANCE_SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_round_trip_is_exact(tmp_path, rng, covariance_type, dtype):
    shape = COVARIANCE_SHAPES[covariance_type]
    params = GMMParams(rng.dirichlet(np.ones(3)), rng.normal(size=(3, 2)), rng.uniform(1, 2, size=shape))
    params = GMMParams(*(a.astype(dtype) for a in params))
    path = tmp_path / "model.gmm"
    gmmjax.save_params(path, params, covariance_type=covariance_type)
    assert path.exists() and not (tmp_path / "model.gmm.npz").exists()  # no extension added
    loaded, ct = gmmjax.load_params(path)
    assert ct == covariance_type
    for a, b in zip(loaded, params):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # Batched parameters (leading dataset axis) and JAX arrays round trip as well.
    batched = jax.tree_util.tree_map(lambda a: jax.numpy.stack([a, a + 1]), params)
    gmmjax.save_params(path, batched, covariance_type=covariance_type)
    for a, b in zip(gmmjax.load_params(path).params, batched):
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(ValueError, match="do not fit covariance_type"):
        gmmjax.save_params(path, params, covariance_type="full" if covariance_type != "full" else "diag")


def test_saving_into_a_missing_folder_names_the_folder(tmp_path, fitted):
    """The error named the temporary file (p.npz.tmp-4746), not the user's path."""
    params = GMMParams(np.array([1.0]), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(FileNotFoundError, match=r"the folder '.*nodir' does not exist"):
        gmmjax.save_params(tmp_path / "nodir" / "p.npz", params)
    with pytest.raises(FileNotFoundError, match=r"cannot save '.*nodir.gm\.npz'"):
        fitted[1].save(tmp_path / "nodir" / "gm.npz")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "gm.npz").mkdir()  # a folder where the file would go
    with pytest.raises(IsADirectoryError, match=r"cannot save '.*gm\.npz': it is a folder"):
        fitted[1].save(tmp_path / "gm.npz")
    assert list(tmp_path.iterdir()) == [tmp_path / "gm.npz"]


def test_gaussian_mixture_round_trip_is_exact(tmp_path, fitted):
    X, gm = fitted
    gm.save(tmp_path / "gm.npz")
    back = GaussianMixture.load(tmp_path / "gm.npz")
    assert back.get_params() == gm.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gm, name))
        assert getattr(back, name).dtype == getattr(gm, name).dtype
    for name in ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_"):
        assert getattr(back, name) == getattr(gm, name)
    assert back.status_ is Status.CONVERGED or back.status_ == gm.status_
    np.testing.assert_array_equal(back.trace_.log_likelihood, gm.trace_.log_likelihood)
    np.testing.assert_array_equal(back.predict_proba(X), gm.predict_proba(X))
    # The fitted parameters are readable as plain parameters too.
    params, ct = gmmjax.load_params(tmp_path / "gm.npz")
    assert ct == "diag"
    np.testing.assert_array_equal(params.means, gm.means_)


def test_estimator_hyperparameters_round_trip(tmp_path):
    key = jax.random.key(5)
    gm = GaussianMixture(2, random_state=key, weights_init=[0.25, 0.75], precisions_init=np.ones((2, 3)),
                         covariance_type="diag", dtype="float32", tol=1e-4)
    gm.save(tmp_path / "unfitted")
    back = GaussianMixture.load(tmp_path / "unfitted")
    assert not hasattr(back, "converged_")
    np.testing.assert_array_equal(jax.random.key_data(back.random_state), jax.random.key_data(key))
    np.testing.assert_array_equal(back.weights_init, [0.25, 0.75])
    assert back.precisions_init.shape == (2, 3) and back.dtype == "float32" and back.tol == 1e-4
    with pytest.warns(UserWarning, match="RandomState"):
        GaussianMixture(random_state=np.random.RandomState(0)).save(tmp_path / "rs")
    assert GaussianMixture.load(tmp_path / "rs").random_state is None
    GaussianMixture(tol=float("inf")).save(tmp_path / "inf")  # once JSON's "Out of range float values"
    assert GaussianMixture.load(tmp_path / "inf").tol == float("inf")


def test_batch_round_trip_and_wrong_class(tmp_path, rng):
    Xs = [rng.normal(size=(n, 2)) for n in (30, 40)] + [rng.normal(size=(1, 2))]
    with pytest.warns(ConvergenceWarning, match="1 of 3"):
        bgm = BatchGaussianMixture(2, covariance_type="spherical", random_state=0).fit(Xs)
    bgm.save(tmp_path / "batch.npz")
    back = BatchGaussianMixture.load(tmp_path / "batch.npz")
    for name in ("weights_", "means_", "covariances_", "status_", "n_iter_", "converged_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bgm, name))
    for a, b in zip(back.lower_bounds_, bgm.lower_bounds_):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.score_samples(Xs), bgm.score_samples(Xs)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="holds a 'BatchGaussianMixture'"):
        GaussianMixture.load(tmp_path / "batch.npz")


# ---------------------------------------------------------------- refused files
def _saved_bytes(fitted):
    buf = io.BytesIO()
    fitted[1].save(buf)
    return buf.getvalue()


class _Boom:
    """Unpickling this object would run code; loading must never get that far."""

    ran = False

    def __reduce__(self):
        return (_Boom._set_ran, ())

    @staticmethod
    def _set_ran():
        _Boom.ran = True
        return "pwned"


def test_pickle_renamed_to_npz_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"weights_": _Boom()}))
    with pytest.raises(ValueError, match="looks like a pickle"):
        GaussianMixture.load(path)
    with pytest.raises(ValueError, match="looks like a pickle"):
        gmmjax.load_params(path)
    assert not _Boom.ran


def test_object_array_inside_an_npz_is_never_unpickled(tmp_path, fitted):
    """A real .npz whose member is a pickled object array, with forged metadata."""
    meta = json.loads(bytes(np.load(io.BytesIO(_saved_bytes(fitted)))[_io.META_KEY]).decode())
    evil = np.array([_Boom()], dtype=object)
    buf = io.BytesIO()
    arrays = {name: np.zeros(spec["shape"], spec["dtype"]) for name, spec in meta["arrays"].items()}
    arrays["means_"] = evil
    meta["arrays"]["means_"] = {"dtype": "|O", "shape": [1], "sha256": "0"}
    np.savez(buf, **arrays, **{_io.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    with pytest.raises(ValueError, match="not a readable gmmjax file"):
        GaussianMixture.load(io.BytesIO(buf.getvalue()))
    assert not _Boom.ran


def test_corrupted_truncated_and_foreign_files_are_refused(tmp_path, fitted):
    data = _saved_bytes(fitted)
    # One flipped byte inside the means: a checksum mismatch (or a zip CRC error).
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("means_.npy")
    pos = info.header_offset + 30 + len(info.filename) + info.file_size - 3
    corrupted = bytearray(data)
    corrupted[pos] ^= 0xFF
    (tmp_path / "corrupted.npz").write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="corrupted"):
        GaussianMixture.load(tmp_path / "corrupted.npz")
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        GaussianMixture.load(tmp_path / "truncated.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        GaussianMixture.load(tmp_path / "empty.npz")
    np.savez(tmp_path / "plain.npz", means_=np.zeros(3))
    with pytest.raises(ValueError, match="no gmmjax metadata"):
        GaussianMixture.load(tmp_path / "plain.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        gmmjax.load_params(tmp_path / "array.npy")


def _rewrite_meta(data, edit):
    with np.load(io.BytesIO(data)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(bytes(arrays[_io.META_KEY]).decode())
    edit(meta)
    arrays[_io.META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    return buf


def test_newer_format_version_and_bad_metadata_are_refused(fitted):
    data = _saved_bytes(fitted)
    newer = _rewrite_meta(data, lambda m: m.update(format_version=_io.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="format version 2.*Upgrade gmmjax"):
        GaussianMixture.load(newer)
    other = _rewrite_meta(data, lambda m: m.update(format="something-else"))
    with pytest.raises(ValueError, match="does not name the gmmjax format"):
        GaussianMixture.load(other)
    lying = _rewrite_meta(data, lambda m: m["arrays"]["means_"].update(shape=[10**6, 2]))
    with pytest.raises(ValueError, match="does not match its metadata"):
        GaussianMixture.load(lying)
    # A well-formed archive whose data no longer match the recorded digests.
    with np.load(io.BytesIO(data)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["means_"] = arrays["means_"] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with pytest.raises(ValueError, match="checksum mismatch"):
        GaussianMixture.load(buf)
    # The current version reads what it writes; version 1 stays readable.
    assert GaussianMixture.load(io.BytesIO(data)).n_components == 3


def test_a_file_of_the_other_kind_names_the_function_that_loads_it(tmp_path, fitted):
    p = tmp_path / "params.npz"
    gmmjax.save_params(p, GMMParams(np.array([0.5, 0.5]), np.zeros((2, 1)), np.ones((2, 1, 1))))
    with pytest.raises(ValueError, match=r"holds a 'GMMParams'.*\(gmmjax.load_params\)"):
        GaussianMixture.load(p)
    m = tmp_path / "gm.npz"
    fitted[1].save(m)
    with pytest.raises(ValueError, match=r"holds a 'GaussianMixture'.*\(gmmjax.GaussianMixture.load\)"):
        BatchGaussianMixture.load(m)
