"""An opt-in on-disk cache of traced fits, for processes that fit once and exit (the CLI).

Tracing `fit_curves` (a vmapped, multi-stage solver) costs a CLI process more than the fit
itself, and jax's persistent compilation cache only saves the compile that follows. With
`use_export_cache(folder)`, `cached_fit_curves` stores the traced program
(`jax.export` StableHLO) per law, static options, shapes and dtypes, and later processes call
the stored program: no tracing, and the compile is a hit in the persistent compilation cache.

Entries are keyed by a hash of jaxlaw's own source and the jax version as well, so an edit or
an upgrade never runs a stale program. Library users who fit in a long-lived process do not
need this (jit's in-memory cache serves them); it is off until `use_export_cache` is called.
"""

import hashlib
import os
import tempfile
from functools import cache, partial
from pathlib import Path

import jax
import jax.random as jr
import numpy as np

from ..laws import Law
from ._fit import fit_curves
from ._result import FitResult

_FOLDER: list[Path | None] = [None]


def use_export_cache(folder: str | os.PathLike | None) -> None:
    """Store traced fits in ``folder`` (created if needed); None turns the cache off."""
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


def _treedef(law: Law):
    """The pytree structure of a `FitResult` of ``law`` (built without tracing anything)."""
    fields = {f: 0 for f in FitResult._fields if f != "params"}
    params = law.params(*range(len(law.params._fields)))
    return jax.tree.structure(FitResult(params=params, **fields))


def cached_fit_curves(law: Law, log_d, log_l, mask, *, seed: int = 0, **static) -> FitResult:
    """`fit_curves` with ``key=jax.random.key(seed)``, through the export cache when it is on.

    Same numbers as `fit_curves`: the stored program is the one `fit_curves` compiles. Host
    inputs (numpy) only; inside ``jit``/``vmap`` call `fit_curves` itself.
    """
    key = jr.key(seed)
    folder = _FOLDER[0]
    if folder is None:
        return fit_curves(law, log_d, log_l, mask, key=key, **static)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    args = (
        np.asarray(log_d, dtype),
        np.asarray(log_l, dtype),
        np.asarray(mask, bool),
        np.asarray(jr.key_data(key)),
    )
    signature = repr(
        (
            law.name,
            sorted(static.items()),
            [(a.shape, a.dtype.str) for a in args],
            jax.__version__,
            jax.default_backend(),
            _source_hash(),
        )
    )
    path = folder / f"fit_curves-{hashlib.sha256(signature.encode()).hexdigest()[:32]}.bin"
    exported = None
    if path.exists():
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # a truncated or foreign file: trace again and overwrite it
            exported = None
    if exported is None:
        exported = jax.export.export(jax.jit(partial(_flat_fit, law, static)))(
            *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args)
        )
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as f:
            try:
                f.write(exported.serialize())
            except BaseException:
                os.unlink(f.name)
                raise
        os.replace(f.name, path)  # atomic: a concurrent reader never sees half a file
    return jax.tree.unflatten(_treedef(law), exported.call(*args))


def _flat_fit(law: Law, static: dict, log_d, log_l, mask, key_data):
    out = fit_curves(law, log_d, log_l, mask, key=jr.wrap_key_data(key_data), **static)
    return jax.tree.leaves(out)
