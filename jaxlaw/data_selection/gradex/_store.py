"""Projected gradients on disk: one folder per run, resumable chunk by chunk, checked on reuse.

Entry points: `save_grads`, `load_grads`, `check_model`. A store folder holds

- ``meta.json``: the projections (`Projection.to_dict`, never the matrix), the LoRA layout, a
  sha256 fingerprint of theta*'s LoRA values and of the data, the model config, ``eps``, the
  jaxlaw/jax versions and ``complete`` (false while a run is in progress);
- ``grads.npz``: ``grads [projs, examples, proj]`` float32, ``outputs``, ``n_targets``,
  ``example_id``, ``source_id`` and ``sources`` (written once the run is complete);
- ``partial/rows_<start>_<stop>.npz``: the chunks of an unfinished run (removed at the end).

`jaxlaw.data_selection.gradex.projected_grads` with ``store=`` writes and resumes such folders;
one finished store serves any number of subset queries.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from ..._types import Float, Int
from ...lora import split_lora
from ._projection import Projection, tree_paths

FORMAT = "jaxlaw.gradex.grads/1"
_ARRAYS = ("grads", "outputs", "n_targets", "example_id", "source_id")
_CHUNK = re.compile(r"rows_(\d+)_(\d+)\.npz$")
# Fields that must agree for a store to be resumed or reused by the same computation.
_IDENTITY = ("lora_layout", "lora_fingerprint", "data_fingerprint", "eps", "projections")


class ProjectedGrads(NamedTuple):
    """GradEx features of a data set at theta*, in the data set's row order.

    Attributes:
        grads: float32 ``[projs, examples, proj]``: ``P_k^T g_i`` for projection k and example i,
            where ``g_i`` is the gradient of example i's output w.r.t. the LoRA parameters.
        outputs: float32 ``[examples]``: f*_i, the sample output (`output_logodds`) at theta*.
        n_targets: int32 ``[examples]``: target tokens scored per example.
        example_id: ``[examples]`` ids of the rows (from the `TokenizedSet`).
        source_id: ``[examples]`` index into ``sources`` of each row's source.
        sources: source names.
    """

    grads: Float[np.ndarray, "projs examples proj"]
    outputs: Float[np.ndarray, " examples"]
    n_targets: Int[np.ndarray, " examples"]
    example_id: Int[np.ndarray, " examples"]
    source_id: Int[np.ndarray, " examples"]
    sources: tuple[str, ...]


def lora_layout(model: nnx.Module) -> list[list]:
    """``[path, shape]`` of every LoRA leaf of ``model`` (tree-flatten order of its pure dict)."""
    _, lora, _ = split_lora(model)
    return [[path, list(np.shape(leaf))] for path, leaf in tree_paths(lora)]


def lora_fingerprint(model: nnx.Module) -> str:
    """sha256 over the LoRA leaves' paths, shapes and float32 bytes, in flatten order."""
    _, lora, _ = split_lora(model)
    h = hashlib.sha256()
    for path, leaf in tree_paths(lora):
        arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf), np.float32))
        h.update(f"{path}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def data_fingerprint(data) -> str:
    """sha256 over a `jaxlaw.data.TokenizedSet`'s tokens, masks, ids and source names."""
    h = hashlib.sha256()
    for name, dtype in (
        ("tokens", np.int32),
        ("attention_mask", np.uint8),
        ("loss_mask", np.uint8),
        ("example_id", np.int64),
        ("source_id", np.int64),
    ):
        arr = np.ascontiguousarray(np.asarray(getattr(data, name)).astype(dtype))
        h.update(f"{name}:{arr.shape};".encode())
        h.update(arr.tobytes())
    h.update(json.dumps(list(data.sources)).encode())
    return h.hexdigest()


def grads_meta(model: nnx.Module, data, projections: Sequence[Projection], eps: float) -> dict:
    """The metadata `projected_grads` stores: what the gradients are a function of."""
    from ... import __version__

    config = getattr(model, "config", None)
    return {
        "format": FORMAT,
        "projections": [p.to_dict() for p in projections],
        "lora_layout": lora_layout(model),
        "lora_fingerprint": lora_fingerprint(model),
        "data_fingerprint": data_fingerprint(data),
        "model_config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "eps": float(eps),
        "n_examples": int(data.tokens.shape[0]),
        "seq_len": int(data.tokens.shape[1]),
        "sources": list(data.sources),
        "jaxlaw_version": __version__,
        "jax_version": jax.__version__,
    }


def check_model(meta: dict, model: nnx.Module) -> None:
    """Raise unless ``model``'s LoRA state is the theta* the stored gradients were taken at.

    Args:
        meta: the metadata dict of a store (`load_grads`' third value).
        model: the model whose LoRA adapters should be theta*.

    Raises:
        ValueError: "grads were computed for another model: ..." naming the first LoRA leaf whose
            path or shape differs, or stating that the LoRA values differ (fingerprints).
    """
    stored = [[p, list(s)] for p, s in meta["lora_layout"]]
    have = lora_layout(model)
    if stored != have:
        for i, (a, b) in enumerate(zip(stored, have)):
            if a != b:
                raise ValueError(
                    f"grads were computed for another model: LoRA leaf {i} is {a[0]!r} "
                    f"{tuple(a[1])} in the store but {b[0]!r} {tuple(b[1])} in the model"
                )
        raise ValueError(
            f"grads were computed for another model: {len(stored)} LoRA leaves in the store, "
            f"{len(have)} in the model"
        )
    fp = lora_fingerprint(model)
    if fp != meta["lora_fingerprint"]:
        raise ValueError(
            "grads were computed for another model: same LoRA layout but other LoRA values "
            f"(fingerprint {meta['lora_fingerprint'][:12]}... in the store, {fp[:12]}... now)"
        )


def _check_same_run(stored: dict, want: dict, path: Path) -> None:
    """A store is reused only by the computation that wrote it (model, data, projections, eps)."""
    if stored.get("format") != FORMAT:
        raise ValueError(f"{path} is not a GradEx gradient store (format {stored.get('format')!r})")
    for field in _IDENTITY:
        if stored.get(field) != want[field]:
            what = {
                "lora_layout": "the LoRA layout (another model)",
                "lora_fingerprint": "the LoRA values (another theta*)",
                "data_fingerprint": "the data",
                "eps": "eps",
                "projections": "the projections",
            }[field]
            raise ValueError(
                f"gradient store {path} was written for another computation: {what} differs; "
                "use another folder or delete this one"
            )


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a killed run never leaves a truncated file under the name


def save_grads(path: str | Path, grads, projections: Sequence[Projection], meta: dict) -> None:
    """Write a finished `ProjectedGrads` and its metadata to the folder ``path``.

    Args:
        path: folder (created if missing); ``grads.npz`` and ``meta.json`` are (over)written.
        grads: the `ProjectedGrads`.
        projections: the projections of ``grads.grads``' first axis, in order.
        meta: JSON-able metadata (e.g. from `grads_meta`); ``projections`` and ``complete`` are
            set here.

    Raises:
        ValueError: the number of projections or their widths do not match ``grads``.
    """
    path = Path(path)
    g = np.asarray(grads.grads, np.float32)
    if g.ndim != 3 or g.shape[0] != len(projections):
        raise ValueError(f"grads of shape {g.shape} do not fit {len(projections)} projections")
    if any(p.dim != g.shape[2] for p in projections):
        raise ValueError(f"projection widths {[p.dim for p in projections]} != {g.shape[2]}")
    path.mkdir(parents=True, exist_ok=True)
    _write_npz(
        path / "grads.npz",
        grads=g,
        outputs=np.asarray(grads.outputs, np.float32),
        n_targets=np.asarray(grads.n_targets, np.int32),
        example_id=np.asarray(grads.example_id, np.int32),
        source_id=np.asarray(grads.source_id, np.int32),
        sources=np.asarray(list(grads.sources), dtype=str),
    )
    meta = dict(meta, format=FORMAT, projections=[p.to_dict() for p in projections])
    _write_json(path / "meta.json", meta | {"complete": True, "n_examples": g.shape[1]})


def load_grads(path: str | Path):
    """Read a store folder written by `save_grads` (or a finished `projected_grads` run).

    Args:
        path: the folder.

    Returns:
        ``(ProjectedGrads, projections, meta)``: numpy arrays, the `Projection` of each slice of
        ``grads`` (regenerate ``P`` from them, e.g. to `Projection.lift`), and the metadata.

    Raises:
        FileNotFoundError: no store at ``path``.
        ValueError: the run is unfinished, or the files disagree with each other.
    """

    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"no gradient store at {path} (meta.json missing)")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a GradEx gradient store (format {meta.get('format')!r})")
    if not meta.get("complete") or not (path / "grads.npz").exists():
        raise ValueError(
            f"gradient store {path} is unfinished; rerun projected_grads with store= to resume"
        )
    with np.load(path / "grads.npz") as z:
        arrays = {k: z[k] for k in _ARRAYS}
        sources = tuple(str(s) for s in z["sources"])
    projections = tuple(Projection.from_dict(d) for d in meta["projections"])
    g = arrays["grads"]
    if g.shape[0] != len(projections) or any(p.dim != g.shape[2] for p in projections):
        raise ValueError(f"{path}: grads of shape {g.shape} do not match the stored projections")
    return ProjectedGrads(**arrays, sources=sources), projections, meta


class GradStore:
    """An in-progress store: the metadata, then chunks of rows, then the consolidated arrays.

    Every process reads it (to resume at the same row); only a ``write=True`` one (process 0 of
    a multi-process run, on a shared file system) writes.
    """

    def __init__(self, path: str | Path, meta: dict, *, write: bool = True):
        self.path = Path(path)
        self.partial = self.path / "partial"
        self.meta = meta
        self.write = write
        meta_file = self.path / "meta.json"
        if meta_file.exists():
            _check_same_run(json.loads(meta_file.read_text()), meta, self.path)
        elif write:
            self.partial.mkdir(parents=True, exist_ok=True)
            _write_json(meta_file, meta | {"complete": False})

    @property
    def complete(self) -> bool:
        meta = json.loads((self.path / "meta.json").read_text())
        return bool(meta.get("complete")) and (self.path / "grads.npz").exists()

    def done(self) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
        """Rows ``[0, stop)`` already saved (a contiguous prefix), with their grads and outputs."""
        chunks = []
        if self.partial.exists():
            for f in self.partial.iterdir():
                m = _CHUNK.match(f.name)
                if m:
                    chunks.append((int(m[1]), int(m[2]), f))
        stop, grads, outputs = 0, [], []
        for start, end, f in sorted(chunks):
            if start != stop:
                break  # a gap: recompute from here (chunk files are written in row order)
            with np.load(f) as z:
                grads.append(z["grads"])
                outputs.append(z["outputs"])
            stop = end
        return stop, grads, outputs

    def save_chunk(self, start: int, stop: int, grads: np.ndarray, outputs: np.ndarray) -> None:
        if not self.write:
            return
        self.partial.mkdir(parents=True, exist_ok=True)
        name = self.partial / f"rows_{start:09d}_{stop:09d}.npz"
        _write_npz(name, grads=grads, outputs=outputs)

    def finish(self, result, projections: Sequence[Projection]) -> None:
        if not self.write:
            return
        save_grads(self.path, result, projections, self.meta)
        shutil.rmtree(self.partial, ignore_errors=True)


def store_matches(path: str | Path, meta: dict) -> bool:
    """Whether a finished store at ``path`` holds exactly the computation ``meta`` describes."""
    path = Path(path)
    if not (path / "meta.json").exists():
        return False
    stored = json.loads((path / "meta.json").read_text())
    _check_same_run(stored, meta, path)
    return bool(stored.get("complete")) and (path / "grads.npz").exists()
