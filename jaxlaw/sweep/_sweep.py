"""The fine-tuning sweep behind model selection: each candidate LoRA-fine-tuned on nested random
subsets of the training pool, its test loss recorded in the rectified loss-table format."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

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
    (nats). The CSV is rewritten after every cell and cells already in it are skipped, so an
    interrupted sweep resumes where it stopped. `jaxlaw.select` ranks the result.

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
    df = _read_done(out, names, config.sizes)
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
            df.to_csv(out)
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
            df.to_csv(out)
            log(
                f"{name}: D={size:>6} {steps:>4} steps  test loss {loss:.4f}  "
                f"({time.perf_counter() - t0:.1f} s)"
            )
    return load_table(out)
