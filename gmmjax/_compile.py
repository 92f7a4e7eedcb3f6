"""How the engine's entry points are compiled: `engine_jit`.

Two things happen here that a plain ``jax.jit`` does not do:

- On a CPU the programs are compiled with `CPU_COMPILER_OPTIONS` (LLVM -O2).
- Where JAX's persistent compilation cache is on (``jax_compilation_cache_dir``), the
  traced and lowered programs are kept beside it, as `jax.export` programs in
  ``<cache dir>/gmmjax-programs``. JAX's cache skips only XLA's compilation; tracing
  gmmjax's Python and lowering it cost ~0.5 s per program in every new process.
  A new process loads the stored program instead and takes its compilation from
  JAX's cache. Measured on the 2-core CPU (W1-cpu, benchmarks/RESULTS.md): the first
  call of a second process took ~1.0 s with JAX's cache alone, ~0.4 s with both.

A stored program is found by a digest of everything it was built from: gmmjax's
source files, the versions of jax and jaxlib, the backend, JAX's numeric settings,
gmmjax's module-level settings (e.g. `gmmjax._covariance.MOMENTS_MIN_D`), the static
arguments and the shapes and dtypes of the others. Writing it needs the
``flatbuffers`` package (``pip install "gmmjax[cache]"``); without it, or if anything
about a stored program goes wrong, the call takes the plain jit path: the cache can
make a call slower, never wrong.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pathlib
import sys
import tempfile
import threading

import jax
from jax import export

from gmmjax import _validate
from gmmjax._types import FitResult, GMMParams, Trace

#: XLA's CPU backend optimises its LLVM code at -O3 by default. At -O2 the engine
#: compiled in 1.7-2.6 s instead of 2.6-3.1 s (W1-cpu, W2-cpu, W3-cpu on the 2-core
#: CPU), with the same run times (benchmarks/RESULTS.md).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}

#: Folder of the stored programs, inside JAX's compilation cache folder.
PROGRAMS_DIR = "gmmjax-programs"

#: Programs stored and loaded by this process (read by the tests).
stats = {"stored": 0, "loaded": 0}

for _t in (GMMParams, FitResult, Trace):
    try:
        export.register_namedtuple_serialization(_t, serialized_name=f"gmmjax.{_t.__name__}")
    except ValueError:  # registered already (this module reloaded)
        pass

#: JAX settings that change what a traced program computes (random bits, dtypes, checks).
JAX_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_legacy_prng_key",
    "jax_enable_custom_prng",
    "jax_numpy_dtype_promotion",
    "jax_numpy_rank_promotion",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_debug_key_reuse",
)


def traced(tree) -> bool:
    """Some leaf is a tracer: the call is being traced by the caller's jit or vmap."""
    return not all(_validate._concrete(a) for a in jax.tree_util.tree_leaves(tree))


_OWN_ATTRIBUTES = frozenset(
    ("_fun", "_module", "_name", "_static_argnames", "_static", "_cpu", "_other", "_programs", "_lock")
)


def _top_level() -> bool:
    """Not inside any JAX transformation (a caller's jit may close over concrete
    arrays, so the arguments alone do not tell)."""
    clean = getattr(jax._src.core, "trace_state_clean", None)
    return clean() if clean is not None else True


class engine_jit:
    """``jax.jit(fun, static_argnames=...)`` with the two additions above.

    The backend is read at each call, not at import (importing gmmjax starts no JAX
    backend). Inside a caller's jit or vmap the caller's compilation decides (JAX
    takes compiler options only at the top level). ``lower``, ``trace`` and the like
    reach the jitted function of the current backend.
    """

    def __init__(self, fun, static_argnames):
        self._fun = fun
        self._module = fun.__module__
        code = getattr(fun, "__code__", None)
        self._name = f"{fun.__module__}.{fun.__qualname__}:{getattr(code, 'co_firstlineno', 0)}"
        self._static_argnames = tuple(static_argnames)
        self._static = frozenset(static_argnames)
        self._cpu = jax.jit(fun, static_argnames=static_argnames, compiler_options=CPU_COMPILER_OPTIONS)
        self._other = jax.jit(fun, static_argnames=static_argnames)
        self._programs = {}  # (folder, digest) -> jitted call of a stored program (None: plain jit)
        # Parts of a batch call from several threads at once (`gmmjax._threads`): one
        # stores or loads the program, the others wait for it rather than compile the
        # plain jit beside it.
        self._lock = threading.Lock()
        functools.update_wrapper(self, fun)

    def _jitted(self):
        return self._cpu if jax.default_backend() == "cpu" else self._other

    def __call__(self, *args, **kwargs):
        if traced((args, kwargs)) or not _top_level():
            return self._other(*args, **kwargs)
        jitted = self._jitted()
        store = _store_dir()
        if store is not None and set(kwargs) <= self._static and not jax.config.jax_disable_jit:
            key = (str(store), self._digest_or_none(args, kwargs))
            with self._lock:
                call = self._stored(store, key, args, kwargs) if key[1] is not None else None
            if call is not None:
                try:
                    return call(*args)
                except Exception:  # e.g. an argument the stored program does not take:
                    self._programs[key] = None  # the plain jit from now on
        return jitted(*args, **kwargs)

    def __getattr__(self, name):
        # Reached only for names not set in __init__. Dunder probes (copy, pickle) and our
        # own names (missing on a copy being built) must not recurse or start a backend.
        if name.startswith("__") or name in _OWN_ATTRIBUTES:
            raise AttributeError(name)
        return getattr(self._jitted(), name)

    def _digest_or_none(self, args, kwargs):
        try:
            return self._digest(args, kwargs)
        except Exception:
            return None

    def _stored(self, store: pathlib.Path, key, args, kwargs):
        """The jitted call of the stored program for these arguments (stored now if
        there is none yet), or None for the plain jit path."""
        if key in self._programs:
            return self._programs[key]
        self._programs[key] = None
        if _source_digest() != _current_source_digest():
            return None  # gmmjax's files changed since import: their programs are not ours
        path = store / f"{key[1]}.jaxexport"
        program = None
        try:
            if path.exists():
                program = export.deserialize(bytearray(path.read_bytes()))
                stats["loaded"] += 1
        except Exception:  # unreadable: stored again below
            program = None
        if program is None:
            try:
                # A fresh jit of the function: jax.jit's own trace cache may hold a trace
                # made under other settings (a benchmark switching engine paths).
                fresh = jax.jit(functools.wraps(self._fun)(lambda *a, **k: self._fun(*a, **k)),
                                static_argnames=self._static_argnames)
                program = export.export(fresh)(*args, **kwargs)
            except Exception:  # not exportable: the plain jit path
                return None
            try:
                _write_atomic(path, program.serialize())
                stats["stored"] += 1
            except Exception:  # no flatbuffers, or the folder is not writable: use it here only
                pass
        options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
        call = self._programs[key] = jax.jit(program.call, compiler_options=options)
        return call

    def _digest(self, args, kwargs) -> str:
        leaves, treedef = jax.tree_util.tree_flatten(args)
        # The abstract value says shape, dtype and weak type; concrete arrays add where they live.
        avals = [(str(jax.typeof(a)), str(getattr(a, "sharding", ""))) for a in leaves]
        parts = (
            self._name,
            _source_digest(),
            jax.__version__,
            _jaxlib_version(),
            jax.default_backend(),
            str(jax.devices()[0].device_kind),  # "gpu" is CUDA or ROCm, of any generation
            repr(sorted(kwargs.items())),
            repr(avals),
            str(treedef),
            repr(_settings(self._module)),
        )
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _store_dir():
    """The stored programs' folder, or None where JAX's persistent cache is off (or
    is not a local folder)."""
    base = jax.config.jax_compilation_cache_dir
    if not base or "://" in str(base) or not _can_serialize():
        return None
    path = pathlib.Path(str(base)) / PROGRAMS_DIR  # as JAX takes it (no ~ expansion)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


@functools.lru_cache(maxsize=1)
def _can_serialize() -> bool:
    """jax.export serialises programs with the flatbuffers package (the cache extra)."""
    return importlib.util.find_spec("flatbuffers") is not None


def _write_atomic(path: pathlib.Path, data) -> None:
    """Writes a file that other processes see either whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        os.chmod(tmp, 0o644)  # as the cache's other files, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _current_source_digest() -> str:
    """Digest of gmmjax's source files as they are on disk now."""
    h = hashlib.sha256()
    for f in sorted(pathlib.Path(__file__).parent.rglob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


_IMPORTED_SOURCE_DIGEST = _current_source_digest()


def _source_digest() -> str:
    """Digest of gmmjax's source files when it was imported (the code this process
    runs): a changed engine never loads an old program, and a process whose files
    changed under it (a git checkout, an editable install) stores none."""
    return _IMPORTED_SOURCE_DIGEST


@functools.lru_cache(maxsize=1)
def _jaxlib_version() -> str:
    import jaxlib

    return getattr(jaxlib, "__version__", "?")


def _simple(v) -> bool:
    if isinstance(v, (bool, int, float, str, type(None))):
        return True
    if isinstance(v, (tuple, list)):  # not sets: their order (repr) differs between processes
        return all(_simple(x) for x in v)
    if isinstance(v, dict):
        return all(_simple(k) and _simple(x) for k, x in v.items())
    return False


#: The modules whose settings the engine reads while it is traced (with the module of
#: the jitted function itself).
ENGINE_MODULES = (
    "gmmjax._compile", "gmmjax._covariance", "gmmjax._em", "gmmjax._fit", "gmmjax._fused", "gmmjax._init", "gmmjax._select",
)


def _settings(module_name):
    """JAX's numeric settings and the engine modules' settings (public UPPER_CASE names
    of plain values), read at each call: the benchmarks switch engine paths through them.
    Only the engine's modules: another module imported or not (gmmjax.plot, say) must
    not make a new process miss its stored program."""
    out = [(name, str(getattr(jax.config, name, None))) for name in JAX_SETTINGS]
    for name in sorted(set(ENGINE_MODULES) | {module_name}):
        module = sys.modules.get(name)
        if module is None:
            continue
        for attr, value in sorted(vars(module).items()):
            if attr.isupper() and not attr.startswith("_") and _simple(value):
                out.append((f"{name}.{attr}", value))
    return out
