"""An opt-in on-disk cache of compiled fits, for processes that fit once and exit (the CLI).

Tracing, lowering and compiling `fit_curves` (a vmapped, multi-stage solver) costs a CLI
process several times the fit itself. With `use_executable_cache(folder)`, `cached_fit_curves`
compiles the fit once per law, static options, shapes and dtypes, stores the compiled
executable (`jax.experimental.serialize_executable`), and later processes load and run it:
no tracing, no lowering, no compilation, not even a lookup in jax's persistent cache (which
needs the lowered program for its key).

Entries are keyed by a hash of jaxlaw's own source, the jax and jaxlib versions and the
device as well, so an edit, an upgrade or another machine never runs a stale program. Library
users who fit in a long-lived process do not need this (jit's in-memory cache serves them);
it is off until `use_executable_cache` is called. The files are pickles: like jax's own
compilation cache, the folder must be one only its user can write.
"""

import hashlib
import inspect
import os
import tempfile
from functools import cache, partial
from pathlib import Path

import jax
import jax.random as jr
import numpy as np

from ..laws import Law
from ._fit import COMPILER_OPTIONS, fit_curves
from ._result import FitResult

_FOLDER: list[Path | None] = [None]


def use_executable_cache(folder: str | os.PathLike | None) -> None:
    """Store compiled fits in ``folder`` (created if needed); None turns the cache off."""
    _FOLDER[0] = None if folder is None else Path(folder)


@cache
def _source_hash() -> str:
    """Hash of every .py file of the jaxlaw package (an edit invalidates every entry)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _all_options(static: dict) -> dict:
    """``static`` with `fit_curves`' defaults filled in, so that every spelling of one fit
    (``fit`` passes ``loss="mse"``, ``select`` leaves it out) shares one entry."""
    params = inspect.signature(fit_curves).parameters
    unknown = set(static) - {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    if unknown:
        raise TypeError(f"fit_curves() got unexpected options {sorted(unknown)}")
    return {
        n: static.get(n, p.default)
        for n, p in params.items()
        if p.kind is p.KEYWORD_ONLY and n != "key"
    }


def _treedef(law: Law):
    """The pytree structure of a `FitResult` of ``law`` (built without tracing anything)."""
    fields = {f: 0 for f in FitResult._fields if f != "params"}
    params = law.params(*range(len(law.params._fields)))
    return jax.tree.structure(FitResult(params=params, **fields))


def cached_fit_curves(law: Law, log_d, log_l, mask, *, seed: int = 0, **static) -> FitResult:
    """`fit_curves` with ``key=jax.random.key(seed)``, through the executable cache when on.

    Same numbers as `fit_curves`: the stored executable is compiled from `fit_curves`, with
    the key made from ``seed`` inside it. Host inputs (numpy) only; inside ``jit``/``vmap``
    call `fit_curves` itself.
    """
    folder = _FOLDER[0]
    if folder is None:
        return fit_curves(law, log_d, log_l, mask, key=jr.key(seed), **static)
    static = _all_options(static)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    args = (
        np.asarray(log_d, dtype),
        np.asarray(log_l, dtype),
        np.asarray(mask, bool),
        np.asarray(seed, np.uint32),
    )
    device = jax.devices()[0]
    signature = repr(
        (
            law.name,
            sorted(static.items()),
            [(a.shape, a.dtype.str) for a in args],
            jax.__version__,
            jax.lib.__version__,  # jaxlib
            device.platform,
            device.device_kind,
            device.client.platform_version,
            _source_hash(),
        )
    )
    path = folder / f"fit_curves-{hashlib.sha256(signature.encode()).hexdigest()[:32]}.bin"
    n_out = _treedef(law).num_leaves
    compiled = _load(path, args, n_out) if path.exists() else None
    if compiled is None:
        fn = jax.jit(partial(_flat_fit, law, static), compiler_options=COMPILER_OPTIONS)
        hits = _persistent_hits()
        compiled = fn.lower(*args).compile()
        # An executable that jax's persistent compilation cache served serializes without
        # its kernels (a stored copy then fails with "Function ... not found"); that cache
        # holds this program when an entry of ours was lost or jaxlaw's source changed
        # elsewhere. Such a process runs the served copy and stores nothing.
        if _persistent_hits() == hits:
            _store(path, compiled)
    return jax.tree.unflatten(_treedef(law), compiled(*args))


_HITS = [0]


def _count_hits(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS[0] += 1


@cache
def _listen() -> None:
    jax.monitoring.register_event_listener(_count_hits)


def _persistent_hits() -> int:
    """Programs jax's persistent compilation cache has served in this process so far."""
    _listen()
    return _HITS[0]


def _flat_fit(law: Law, static: dict, log_d, log_l, mask, seed):
    out = fit_curves(law, log_d, log_l, mask, key=jr.key(seed), **static)
    return jax.tree.leaves(out)


def _load(path: Path, args: tuple, n_out: int):
    """The executable stored at ``path``, or None for a truncated or foreign file."""
    from jax.experimental.serialize_executable import deserialize_and_load

    in_tree = jax.tree.structure((args, {}))
    out_tree = jax.tree.structure([0] * n_out)
    try:
        return deserialize_and_load(path.read_bytes(), in_tree, out_tree)
    except Exception:  # compile again and overwrite it
        return None


def _store(path: Path, compiled) -> None:
    from jax.experimental.serialize_executable import serialize

    payload = serialize(compiled)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
        try:
            f.write(payload)
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(f.name, path)  # atomic: a concurrent reader never sees half a file
