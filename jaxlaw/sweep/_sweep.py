"""The fine-tuning sweep behind model selection: each candidate LoRA-fine-tuned on nested random
subsets of the training pool, its test loss recorded in the rectified loss-table format.

Resuming is safe: beside the CSV ``out`` the sweep keeps ``out`` + ``.fingerprint.json``, the
settings every cell depends on (the `SweepConfig` fields, the seed, hashes of the train and eval
data and of each model directory). A later run on the same ``out`` refuses, naming the first
field that differs, instead of mixing cells computed under other settings. Both files are
written to a temporary file and moved into place (`os.replace`), so an interrupted write leaves
the previous version intact.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.random as jr
import numpy as np
import pandas as pd
from flax import nnx
from jax.sharding import Mesh

from ..data import Examples, LossTable, Task, load_table, load_tokenizer, take, tokenize_examples
from ..lora import LoraConfig, apply_lora
from ..models import load_pretrained
from ..training import TrainConfig, evaluate, mean_loss, train


@dataclass(frozen=True)
class SweepConfig:
    """How each cell of the sweep is fine-tuned.

    Attributes:
        sizes: subset sizes D (examples), ascending; the zero-shot column 0 is always added.
        lora: adapter targets, rank, scaling, dropout.
        train: optimiser settings; ``steps`` is replaced per cell by `cell_steps`.
        epochs: passes over a subset of size D; the cell trains
            ``clip(ceil(epochs * D / batch_size), min_steps, max_steps)`` steps.
        min_steps: floor on the steps of a cell (tiny subsets still get a real fine-tune).
        max_steps: cap on the steps of a cell.
        seq_len: token length of every example (None: smallest bucket that fits).
        eval_batch: examples per evaluation batch.
        seed: draws the nested subsets, the adapters' init and the data order.
    """

    sizes: tuple[int, ...]
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16, lr=1e-3))
    epochs: float = 3.0
    min_steps: int = 20
    max_steps: int = 1000
    seq_len: int | None = None
    eval_batch: int = 64
    seed: int = 0

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError(f"sizes must be distinct positive integers, ascending; got {sizes}")
        if self.min_steps < 1 or self.max_steps < self.min_steps:
            raise ValueError("need 1 <= min_steps <= max_steps")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        object.__setattr__(self, "sizes", sizes)


def cell_steps(size: int, config: SweepConfig) -> int:
    """Optimizer steps of the cell with subset size ``size``."""
    steps = math.ceil(config.epochs * size / config.train.batch_size)
    return int(np.clip(steps, config.min_steps, config.max_steps))


def nested_subsets(n_pool: int, sizes: Sequence[int], *, key) -> list[np.ndarray]:
    """Nested random subsets: prefixes of one permutation of the pool, one per size.

    Raises:
        ValueError: when a size exceeds the pool.
    """
    if max(sizes) > n_pool:
        raise ValueError(f"subset size {max(sizes)} exceeds the training pool of {n_pool} examples")
    perm = np.asarray(jax.device_get(jr.permutation(key, n_pool)))
    return [np.sort(perm[:s]) for s in sizes]


# Fields a cell's result does not depend on: ``sizes`` only lists which cells exist (a subset is
# a prefix of one seeded permutation, whatever the other sizes), ``train.steps`` and
# ``train.seed`` are replaced per cell by `cell_steps` and ``seed``.
_NOT_FINGERPRINTED = ("sizes", "train.steps", "train.seed")


def _flat_fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(v):
            out.update(_flat_fields(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def _hash_texts(task: Examples | Task) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(task.prompts), list(task.responses)]).encode())
    return h.hexdigest()[:16]


def _hash_model_dir(d: Path) -> str:
    """config.json's bytes plus the name and size of every file (weights are not read)."""
    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()[:16]


def sweep_fingerprint(
    config: "SweepConfig", train_task: Examples | Task, eval_task: Examples | Task
) -> dict[str, Any]:
    """What every cell of a sweep depends on, as a flat ``{field: value}`` dict.

    The `SweepConfig` fields (nested ones dotted, e.g. ``train.lr``; ``seed`` included) except
    ``sizes``, ``train.steps`` and ``train.seed`` (set per cell), and ``data.train`` /
    ``data.eval``: hashes of the prompts and responses. `run_sweep` adds ``model.<name>`` per
    model directory.
    """
    fp = {f"config.{k}": v for k, v in _flat_fields(config).items() if k not in _NOT_FINGERPRINTED}
    fp["data.train"] = _hash_texts(train_task)
    fp["data.eval"] = _hash_texts(eval_task)
    return fp


def _fingerprint_path(out: Path) -> Path:
    return out.with_name(out.name + ".fingerprint.json")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then move ``tmp`` over ``path``: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_csv(df: pd.DataFrame, out: Path) -> None:
    _write_atomic(out, lambda p: df.to_csv(p))


def _save_fingerprint(fp: dict[str, Any], out: Path) -> None:
    text = json.dumps(fp, indent=1, sort_keys=True)
    _write_atomic(_fingerprint_path(out), lambda p: p.write_text(text))


def _check_fingerprint(out: Path, fp: dict[str, Any]) -> dict[str, Any]:
    """The stored fingerprint of ``out`` merged with ``fp``; raises if a shared field differs."""
    path = _fingerprint_path(out)
    if not out.exists():
        return dict(fp)
    if not path.is_file():
        raise ValueError(
            f"{out} has no {path.name}: the settings of its cells are unknown, so it cannot be "
            "resumed; move it away or choose another out"
        )
    stored = json.loads(path.read_text())
    missing = "<absent>"
    for k in sorted(set(stored) | set(fp)):
        if k.startswith("model.") and (k not in stored or k not in fp):
            continue  # a model added to (or left out of) this run
        old, new = stored.get(k, missing), fp.get(k, missing)
        if old != new:
            raise ValueError(
                f"{out} was computed with {k}={old!r} but this sweep has {k}={new!r}; "
                "choose another out or delete it to start over"
            )
    return {**stored, **fp}


def _read_done(out: Path, names: Sequence[str], sizes: Sequence[int]) -> pd.DataFrame:
    cols = [str(s) for s in (0, *sizes)]
    df = pd.DataFrame(np.nan, index=pd.Index(list(names), name="config name"), columns=cols)
    df["size"], df["family"] = np.nan, ""
    if out.exists():
        old = pd.read_csv(out, index_col=0)
        for name in old.index.intersection(df.index):
            for c in old.columns.intersection(df.columns):
                df.loc[name, c] = old.loc[name, c]
    return df


def run_sweep(
    model_dirs: Sequence[str | Path],
    train_task: Examples | Task,
    eval_task: Examples | Task,
    config: SweepConfig,
    *,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    mesh: Mesh | None = None,
) -> LossTable:
    """Fine-tune every model on every subset size and write the loss table ``out``.

    For each model (a Hugging Face-style directory: ``config.json``, safetensors weights and a
    ``tokenizer.json``), the zero-shot test loss goes in column ``0`` and the test loss after
    LoRA fine-tuning on the nested subset of size D in column ``D``; ``size`` holds the
    parameter count and ``family`` the architecture. Losses are mean NLL per response token
    (nats). The CSV is rewritten (atomically) after every cell and cells already in it are
    skipped, so an interrupted sweep resumes where it stopped; the fingerprint file beside it
    (module docstring) makes a resume with other settings, data or model files an error. New
    models and sizes may be added to a finished sweep. `jaxlaw.select` ranks the result.

    Args:
        model_dirs: candidate model directories; their folder names label the rows.
        train_task: the fine-tuning pool (at least ``max(config.sizes)`` examples): a
            `jaxlaw.data.Examples` or a `jaxlaw.data.Task` read by `jaxlaw.data.load_task`.
        eval_task: the test set every cell is scored on.
        config: sizes, LoRA and optimisation settings.
        out: the CSV to write (and resume from).
        progress: progress bars for the fine-tunes.
        log: where one line per finished cell goes.
        mesh: a `jaxlaw.training.data_mesh` to run every fine-tune and evaluation
            data-parallel (batch sizes must divide over its devices).

    Returns:
        The table as written, as a `jaxlaw.data.LossTable`.

    Raises:
        ValueError: duplicate folder names, a directory without ``config.json``, an empty
            evaluation set, a size above the pool, or an existing ``out`` whose fingerprint
            differs from this sweep's (naming the first differing field) or that has none.
    """
    dirs = [Path(d) for d in model_dirs]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"model directories need distinct folder names: {names}")
    for d in dirs:
        if not (d / "config.json").is_file():
            raise ValueError(f"{d}: not a model directory (no config.json)")
    if len(eval_task.prompts) == 0:
        raise ValueError("the evaluation set is empty")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    subsets = nested_subsets(len(train_task.prompts), config.sizes, key=jr.key(config.seed))
    fp = sweep_fingerprint(config, train_task, eval_task)
    fp.update({f"model.{name}": _hash_model_dir(d) for d, name in zip(dirs, names)})
    fp = _check_fingerprint(out, fp)
    df = _read_done(out, names, config.sizes)
    _save_fingerprint(fp, out)  # before any cell, so the CSV never exists without it
    for d, name in zip(dirs, names):
        model, mconfig = load_pretrained(d)
        tokenizer = load_tokenizer(d)
        pool = tokenize_examples(
            tokenizer, train_task.prompts, train_task.responses, seq_len=config.seq_len
        )
        test = tokenize_examples(
            tokenizer, eval_task.prompts, eval_task.responses, seq_len=config.seq_len
        )
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        df.loc[name, "size"], df.loc[name, "family"] = n_params, mconfig.family
        if np.isnan(df.loc[name, "0"]):
            df.loc[name, "0"] = mean_loss(
                evaluate(model, test, batch_size=config.eval_batch, mesh=mesh)
            )
            _save_csv(df, out)
        log(f"{name}: {n_params:,} params, zero-shot loss {df.loc[name, '0']:.4f}")
        for size, idx in zip(config.sizes, subsets):
            if not np.isnan(df.loc[name, str(size)]):
                continue
            t0 = time.perf_counter()
            tuned = nnx.clone(model)
            apply_lora(tuned, config.lora, rngs=nnx.Rngs(params=config.seed, dropout=config.seed))
            steps = cell_steps(size, config)
            tconf = replace(config.train, steps=steps, seed=config.seed)
            train(
                tuned,
                take(pool, idx),
                tconf,
                mesh=mesh,
                progress=progress,
                description=f"{name} D={size}",
            )
            loss = mean_loss(evaluate(tuned, test, batch_size=config.eval_batch, mesh=mesh))
            df.loc[name, str(size)] = loss
            _save_csv(df, out)
            log(
                f"{name}: D={size:>6} {steps:>4} steps  test loss {loss:.4f}  "
                f"({time.perf_counter() - t0:.1f} s)"
            )
    return load_table(out)
