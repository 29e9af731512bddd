"""The Python driver around the pure steps: data order, progress, logs, checkpoints, resume."""

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..checkpoint import TrainCheckpointer
from ..lora import split_lora
from ._config import TrainConfig
from ._loss import Batch, ExampleLoss
from ._optim import compile_key, learning_rate, make_optimizer
from ._sharding import replicate, shard_batch
from ._step import make_eval_step, make_train_step


class TrainResult(NamedTuple):
    """Summary of a `train` call.

    Attributes:
        step: optimizer steps done in total (including those of a resumed run).
        resumed_from: the checkpoint step this call started from (None: from scratch).
        history: one dict per logged step (step, loss, lr, grad_norm, tokens_per_s, ...).
        seconds: wall time of this call.
    """

    step: int
    resumed_from: int | None
    history: list[dict]
    seconds: float


def batch_indices(n_examples: int, batch_size: int, step: int, *, key) -> np.ndarray:
    """Example indices of step ``step``: consecutive slices of one permutation per epoch.

    Epoch ``e`` uses ``jr.permutation(jr.fold_in(key, e), n_examples)``, so the order is a pure
    function of (key, step): a resumed run reads exactly the batches the killed one would have.
    """
    pos = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(pos, n_examples)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = jax.device_get(jr.permutation(_fold_in(key, int(e)), n_examples))
        out[epochs == e] = perm[offsets[epochs == e]]
    return out


def _fold_in(key, i: int):
    return jr.fold_in(key, jax.device_put(np.uint32(i)))


def host_batch(data, idx: np.ndarray, accum_steps: int = 1) -> Batch:
    """Rows ``idx`` of a `jaxlaw.data.TokenizedSet` as a numpy `Batch` ``[accum, micro, seq]``
    (``accum_steps=0``: no leading axis)."""
    parts = (data.tokens[idx], data.attention_mask[idx], data.loss_mask[idx])
    if accum_steps:
        parts = tuple(p.reshape(accum_steps, -1, p.shape[-1]) for p in parts)
    return Batch(*parts)


_TRAIN_STEPS: dict = {}


def _train_step(graphdef, config: TrainConfig):
    # Keyed on the compile-relevant fields only: the schedule's numbers live in the optimizer
    # state, so runs of other lengths or rates reuse the compiled step.
    key = (graphdef, compile_key(config))
    if key not in _TRAIN_STEPS:
        _TRAIN_STEPS[key] = make_train_step(graphdef, make_optimizer(config))
    return _TRAIN_STEPS[key]


@functools.lru_cache(maxsize=32)
def _eval_step(graphdef):
    return make_eval_step(graphdef)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays clean for results
        disable=not enabled,
        transient=True,
    )


def train(
    model: nnx.Module,
    data,
    config: TrainConfig,
    *,
    trainable=nnx.LoRAParam,
    checkpoint_dir: str | Path | None = None,
    log_path: str | Path | None = None,
    mesh: Mesh | None = None,
    stop_at_step: int | None = None,
    progress: bool = True,
    description: str = "train",
    on_step: Callable[[int, nnx.Module], None] | None = None,
    on_step_at: Collection[int] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``config.steps`` optimizer steps.

    Only the variables selected by ``trainable`` change (`nnx.LoRAParam` after
    `jaxlaw.lora.apply_lora`; `nnx.Param` to pre-train every weight of a model without
    adapters). With ``checkpoint_dir`` the run saves (trainable state, optimizer state, step, data
    position, key) every ``config.checkpoint_every`` steps and at the end, and an existing
    checkpoint there is resumed: the remaining steps see the same batches and dropout keys, so
    the result equals an uninterrupted run.

    Args:
        model: an NNX decoder; updated in place.
        data: a `jaxlaw.data.TokenizedSet` (host arrays).
        config: optimisation settings.
        trainable: NNX filter of what trains.
        checkpoint_dir: where to save/resume (None: no checkpoints).
        log_path: JSONL file that gets one metrics record per ``config.log_every`` steps.
        mesh: a `data_mesh` to run data-parallel (None: default device).
        stop_at_step: end this call after that many total steps (a time-sliced job, or a test
            of preemption); the next call with the same checkpoint_dir goes on.
        progress: show a progress bar with loss and tokens/s.
        description: label of the progress bar.
        on_step: called as ``on_step(step, model)`` after optimizer step ``step`` (1-based: the
            number of updates done), with ``model`` holding the trainable state of that moment
            (e.g. to evaluate the pool there, as S2L's inline trajectory recording does). The
            model's arrays are those the next step consumes (donates): read them inside the
            call, and copy whatever must outlive it. The call's time counts in the run's
            wall time but not in the tokens/s figure.
        on_step_at: the steps at which ``on_step`` is called (None: after every step). Steps
            outside ``(resume step, end]`` are never reached.

    Returns:
        `TrainResult`.
    """
    n = int(data.tokens.shape[0])
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if not np.any(data.loss_mask[:, 1:]):
        raise ValueError("the training set has no target tokens (empty loss mask)")
    t0 = time.perf_counter()
    graphdef, params, frozen = split_lora(model, trainable)
    if not jax.tree.leaves(params):
        raise ValueError(
            "nothing to train: the model has no variables matching the trainable filter "
            "(apply_lora first, or pass trainable=nnx.Param)"
        )
    # The step donates its inputs. `nnx.clone` and `split_lora` share (immutable) arrays between
    # models, so donating the model's own buffers would delete them in every clone (e.g. the
    # meta-trained LoRA that GradEx fine-tunes copies of): train on private copies instead.
    params = jax.tree.map(jnp.copy, params)
    tx = make_optimizer(config)
    step_fn = _train_step(graphdef, config)
    # Built inside jit so that no Python scalar crosses to the device implicitly (the training
    # tests run under jax.transfer_guard("disallow")).
    opt_state, key = jax.jit(lambda p: (tx.init(p), jr.key(config.seed)))(params)
    data_key, dropout_key = jr.split(key)
    start = 0
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = TrainCheckpointer(checkpoint_dir, keep=config.keep_checkpoints)
        restored = ckpt.restore((params, opt_state))
        if restored is not None:
            params, opt_state = restored.state
            start = int(restored.meta["step"])
            _check_resume(restored.meta, config, jax.device_get(jr.key_data(key)).tolist())
    resumed_from = start if start else None
    params, opt_state, frozen = replicate((params, opt_state, frozen), mesh)
    end = config.steps if stop_at_step is None else min(stop_at_step, config.steps)
    history: list[dict] = []
    log = open(log_path, "a") if log_path is not None else None
    tokens_since, t_since = 0.0, time.perf_counter()
    try:
        with _progress(progress) as bar:
            task = bar.add_task(description, total=config.steps, completed=start, loss="-", tps="-")
            for step in range(start, end):
                idx = batch_indices(n, config.batch_size, step, key=data_key)
                batch = shard_batch(host_batch(data, idx, config.accum_steps), mesh)
                tokens_since += float(np.sum(data.attention_mask[idx]))
                step_key = _fold_in(dropout_key, step)
                params, opt_state, metrics = step_fn(params, opt_state, frozen, batch, step_key)
                done = step + 1
                if done % config.log_every == 0 or done == end:
                    m = jax.device_get((metrics.loss, metrics.grad_norm, metrics.tokens))
                    loss, grad_norm, tokens = (float(v) for v in m)
                    now = time.perf_counter()
                    record = {
                        "step": done,
                        "loss": loss,
                        "grad_norm": grad_norm,
                        "lr": learning_rate(config, step),
                        "target_tokens": tokens,
                        "tokens_per_s": tokens_since / max(now - t_since, 1e-9),
                        "samples_seen": done * config.batch_size,
                        "seconds": now - t0,
                    }
                    tokens_since, t_since = 0.0, now
                    history.append(record)
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    bar.update(
                        task,
                        completed=done,
                        loss=f"{loss:.4f}",
                        tps=f"{record['tokens_per_s']:,.0f}",
                    )
                else:
                    bar.update(task, completed=done)
                if on_step is not None and (on_step_at is None or done in on_step_at):
                    t_cb = time.perf_counter()
                    nnx.update(model, params)
                    on_step(done, model)
                    t_since += time.perf_counter() - t_cb  # keep tokens/s a training figure
                if ckpt is not None and (
                    done == end or (config.checkpoint_every and done % config.checkpoint_every == 0)
                ):
                    meta = {
                        "samples_seen": done * config.batch_size,
                        "key": jax.device_get(jr.key_data(key)).tolist(),
                        "config": dataclasses.asdict(config),
                    }
                    ckpt.save(done, (params, opt_state), meta)
    finally:
        if log is not None:
            log.close()
        if ckpt is not None:
            ckpt.close()
    nnx.update(model, params)
    return TrainResult(end, resumed_from, history, time.perf_counter() - t0)


def _check_resume(meta: dict, config: TrainConfig, key: list) -> None:
    """A checkpoint only resumes exactly with the data order it was written with."""
    if meta["key"] != key or meta["samples_seen"] != meta["step"] * config.batch_size:
        saved = meta.get("config", {})
        raise ValueError(
            f"checkpoint at step {meta['step']} was written with seed {saved.get('seed')} and "
            f"batch_size {saved.get('batch_size')}; this run has seed {config.seed} and "
            f"batch_size {config.batch_size}, so its data order would differ"
        )


def evaluate(
    model: nnx.Module, data, *, batch_size: int = 32, mesh: Mesh | None = None
) -> ExampleLoss:
    """Per-example response-token loss of ``model`` on every example of ``data`` (no dropout).

    Batches have a fixed size (the last is padded with fully masked rows and the padding
    dropped), so a dataset costs one compilation per sequence length.

    Returns:
        `ExampleLoss` of numpy ``[examples]`` arrays, in the order of ``data``.
    """
    n = int(data.tokens.shape[0])
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    graphdef, state = nnx.split(model)
    step = _eval_step(graphdef)
    empty = nnx.State({})
    state = replicate(state, mesh)
    totals, counts = [], []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)
        valid = idx < n
        b = host_batch(data, np.where(valid, idx, 0), accum_steps=0)
        b = Batch(b.tokens, b.attention_mask & valid[:, None], b.loss_mask & valid[:, None])
        out = jax.device_get(step(empty, state, shard_batch(b, mesh)))
        totals.append(out.total[valid])
        counts.append(out.count[valid])
    return ExampleLoss(np.concatenate(totals), np.concatenate(counts))


def mean_loss(losses: ExampleLoss) -> float:
    """Token-weighted mean NLL (nats/token) of a set of examples."""
    return float(np.sum(losses.total) / max(float(np.sum(losses.count)), 1.0))
