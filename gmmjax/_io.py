"""Saving and loading mixtures: one ``.npz`` file, never pickle.

File format "gmmjax", format version 1
--------------------------------------
A zip archive written by `numpy.savez` (members stored, not compressed) holding

- ``__gmmjax__``: a 1-D uint8 array, the UTF-8 bytes of a JSON object::

      {"format": "gmmjax", "format_version": 1, "gmmjax_version": "0.1.0",
       "class": "GMMParams" | "GaussianMixture" | "BatchGaussianMixture",
       "covariance_type": "full", "hyperparameters": {...}, "attributes": {...},
       "arrays": {"<name>": {"dtype": "<f8", "shape": [3, 2], "sha256": "..."}, ...}}

- one member per entry of ``"arrays"``: a plain numeric array (bool, int, uint or
  float; object arrays cannot be stored and are never read).

Reading never executes code: the archive is opened with
``np.load(..., allow_pickle=False)``, every member's ``.npy`` header is checked
against the metadata before its data is read (so a hostile header cannot make us
allocate more than the file holds), and every array must match its SHA-256 digest.
A file that is not a zip archive (a pickle renamed ``model.npz``, say), a truncated
or corrupted archive, a JSON entry that does not parse, a format version newer than
`FORMAT_VERSION`, or a class other than the one asked for is refused with a
``ValueError`` that says which. A later gmmjax that changes the layout bumps
`FORMAT_VERSION` and keeps reading every older version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import NamedTuple

import numpy as np

from gmmjax._covariance import COVARIANCE
from gmmjax._types import GMMParams
from gmmjax._validate import check_covariance_type

FORMAT_NAME = "gmmjax"
#: The newest format version this gmmjax writes and reads (it reads all older ones).
FORMAT_VERSION = 1
META_KEY = "__gmmjax__"

_ZIP_MAGIC = b"PK\x03\x04"
_NUMERIC_KINDS = "biuf"
# The header of an .npy member written by np.savez is under 256 bytes; allow slack.
_MAX_NPY_HEADER = 64 * 1024


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes(order="C")).hexdigest()


def _name(file) -> str:
    return os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file)


def write(file, cls: str, meta: dict, arrays: dict) -> None:
    """Writes one gmmjax file.

    Args:
      file: a path (written exactly there, atomically: no ``.npz`` is appended) or a
        binary file object.
      cls: the class name recorded in the file ("GMMParams", "GaussianMixture", ...).
      meta: JSON-serialisable entries (``covariance_type``, ``hyperparameters``,
        ``attributes``); non-finite floats must go into ``arrays`` instead.
      arrays: {name: numeric array}.
    """
    from gmmjax import __version__

    out = {}
    described = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"cannot save {name!r}: only numeric arrays are stored, got dtype {a.dtype}.")
        if name == META_KEY or "/" in name or not name:
            raise ValueError(f"invalid array name {name!r}.")
        a = np.array(a, order="C", copy=True)  # (np.ascontiguousarray would make 0-d arrays 1-d)
        out[name] = a
        described[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _digest(a)}
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gmmjax_version": __version__,
        "class": cls,
        **meta,
        "arrays": described,
    }
    text = json.dumps(header, allow_nan=False, sort_keys=True)
    out[META_KEY] = np.frombuffer(text.encode("utf-8"), np.uint8)
    if not isinstance(file, (str, os.PathLike)):
        np.savez(file, **out)
        return
    path = os.fspath(file)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):  # else the error would name the temporary file below
        raise FileNotFoundError(f"cannot save {path!r}: the folder {folder!r} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save {path!r}: it is a folder; name a file in it.")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _Refused(ValueError):
    """A file gmmjax will not load (a ValueError, with the reason in the message)."""


def _refuse(file, why: str) -> ValueError:
    return _Refused(f"{_name(file)} is not a readable gmmjax file: {why}")


def _read_bytes(file) -> bytes:
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return f.read()
    return file.read()


def _sniff(file, data: bytes) -> None:
    if data.startswith(_ZIP_MAGIC):
        return
    if data[:1] == b"\x80" or data[:1] in (b"(", b"]", b"}", b"c"):
        why = (
            "it looks like a pickle, which gmmjax never loads (unpickling can run arbitrary "
            "code). Save models with gmmjax's save() / save_params()."
        )
    elif data.startswith(b"\x93NUMPY"):
        why = "it is a single .npy array, not a .npz archive written by gmmjax."
    elif not data:
        why = "the file is empty."
    else:
        why = "it is not a zip (.npz) archive."
    raise _refuse(file, why)


def _check_member(zf: zipfile.ZipFile, file, name: str, spec: dict) -> None:
    """Checks an .npy member's header against the metadata before numpy reads it."""
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise _refuse(file, f"array {name!r} is compressed; gmmjax writes uncompressed archives.")
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not nbytes <= info.file_size <= nbytes + _MAX_NPY_HEADER:
        raise _refuse(file, f"array {name!r} has {info.file_size} bytes, which does not match its metadata.")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            h_shape, _, h_dtype = np.lib.format.read_array_header_1_0(f)
        else:
            h_shape, _, h_dtype = np.lib.format.read_array_header_2_0(f)
    if tuple(h_shape) != shape or h_dtype != dtype:
        raise _refuse(file, f"array {name!r} does not match its metadata (shape or dtype).")


class _Contents(NamedTuple):
    meta: dict
    arrays: dict


def read(file, classes=None) -> _Contents:
    """Reads and checks one gmmjax file; see the module docstring for what is refused.

    Args:
      file: a path or a binary file object.
      classes: optional collection of accepted ``class`` values.

    Returns:
      (meta, arrays): the JSON metadata and {name: NumPy array}.
    """
    data = _read_bytes(file)
    _sniff(file, data)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = set(zf.namelist())
        if f"{META_KEY}.npy" not in members:
            raise _refuse(file, "it has no gmmjax metadata entry (not written by gmmjax).")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            raw = npz[META_KEY]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise _refuse(file, "the metadata entry is not a uint8 array.")
            try:
                meta = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _refuse(file, f"the metadata entry is not valid JSON ({e}).") from None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                raise _refuse(file, "the metadata does not name the gmmjax format.")
            version = meta.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise _refuse(file, f"invalid format version {version!r}.")
            if version > FORMAT_VERSION:
                raise _Refused(
                    f"{_name(file)} uses gmmjax file format version {version}, written by gmmjax "
                    f"{meta.get('gmmjax_version', '?')}; this gmmjax reads versions up to "
                    f"{FORMAT_VERSION}. Upgrade gmmjax to load it."
                )
            cls = meta.get("class")
            if classes is not None and cls not in classes:
                raise _Refused(
                    f"{_name(file)} holds a {cls!r}, not {' or '.join(map(repr, classes))}; "
                    "load it with the matching function ("
                    + ("gmmjax.load_params" if cls == "GMMParams" else f"gmmjax.{cls}.load") + ")."
                )
            specs = meta.get("arrays")
            if not isinstance(specs, dict) or members != {f"{n}.npy" for n in specs} | {f"{META_KEY}.npy"}:
                raise _refuse(file, "its arrays do not match the metadata.")
            arrays = {}
            for name, spec in specs.items():
                _check_member(zf, file, name, spec)
                a = npz[name]
                if a.dtype.kind not in _NUMERIC_KINDS or _digest(a) != spec["sha256"]:
                    raise _refuse(file, f"array {name!r} is corrupted (checksum mismatch).")
                arrays[name] = a
    except _Refused:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, TypeError, ValueError, MemoryError) as e:
        raise _refuse(file, f"the archive is truncated or corrupted ({type(e).__name__}: {e}).") from None
    return _Contents(meta, arrays)


# ---------------------------------------------------------------- plain parameters
class LoadedParams(NamedTuple):
    """What `load_params` returns: NumPy parameters and their covariance type."""

    params: GMMParams
    covariance_type: str


def check_params(params, covariance_type: str) -> GMMParams:
    """GMMParams of NumPy arrays whose shapes agree (optional leading batch axes)."""
    check_covariance_type(covariance_type)
    if not isinstance(params, tuple) or len(params) != 3:
        raise ValueError("params must be a gmmjax.GMMParams(weights, means, covariances).")
    w, m, c = (np.asarray(a) for a in params)
    if w.ndim < 1 or m.ndim != w.ndim + 1:
        raise ValueError(f"weights (..., K) and means (..., K, D) disagree: {w.shape} and {m.shape}.")
    lead, (K, D) = m.shape[:-2], m.shape[-2:]
    want = lead + COVARIANCE[covariance_type].shape(K, D)
    if w.shape != lead + (K,) or c.shape != want:
        raise ValueError(
            f"params do not fit covariance_type={covariance_type!r}: weights {w.shape}, means {m.shape}, "
            f"covariances {c.shape} (expected covariances {want})."
        )
    return GMMParams(w, m, c)


def save_params(path, params: GMMParams, *, covariance_type: str = "full") -> None:
    """Saves mixture parameters (one mixture, or a batch with leading axes) to ``path``.

    Args:
      path: where to write (no extension is added), or a binary file object.
      params: `GMMParams`; JAX or NumPy arrays, any float dtype (kept as is).
      covariance_type: "full", "diag", "spherical" or "tied".

    Example:
      >>> import io, numpy as np, gmmjax
      >>> p = gmmjax.GMMParams(np.array([0.5, 0.5]), np.zeros((2, 1)), np.ones((2, 1, 1)))
      >>> f = io.BytesIO(); gmmjax.save_params(f, p); _ = f.seek(0)
      >>> gmmjax.load_params(f).covariance_type
      'full'
    """
    p = check_params(params, covariance_type)
    write(path, "GMMParams", {"covariance_type": covariance_type}, dict(zip(GMMParams._fields, p)))


def load_params(path) -> LoadedParams:
    """Loads parameters written by `save_params` (or the fitted parameters of a saved
    GaussianMixture / BatchGaussianMixture).

    Returns:
      ``LoadedParams(params, covariance_type)``: NumPy arrays with the saved dtypes
      and shapes, bit for bit.
    """
    meta, arrays = read(path, classes=("GMMParams", "GaussianMixture", "BatchGaussianMixture"))
    ct = meta.get("covariance_type")
    if meta["class"] == "GMMParams":
        names = GMMParams._fields
    else:
        names = ("weights_", "means_", "covariances_")
        if not all(n in arrays for n in names):
            raise ValueError(f"{_name(path)} holds an unfitted {meta['class']}: it has no parameters.")
    try:
        params = check_params(GMMParams(*(arrays[n] for n in names)), ct)
    except KeyError:
        raise _refuse(path, "parameter arrays are missing.") from None
    return LoadedParams(params, ct)
