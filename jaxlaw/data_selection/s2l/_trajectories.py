"""Loss trajectories: each pool example's mean response-token loss at T checkpoints of a proxy.

Entry points: `record_trajectories` (train the proxy with `jaxlaw.training.train` and sweep the
pool inline at the checkpoint steps), `trajectories_from_checkpoints` (sweep the orbax checkpoints
a `train` run left, one at a time or all T stacked in one vmapped pass), `save_trajectories` /
`load_trajectories` (npz + JSON). The result is a `Trajectories`: summed NLL and target-token
count per (example, checkpoint), so means over any token set can be formed exactly later, with
the example ids, source ids and checkpoint steps that make each row and column traceable::

    rec = record_trajectories(proxy, pool, TrainConfig(steps=900, lr=2e-5), checkpoints=12)
    x = rec.trajectories.features()          # [examples, 12] float32, never NaN
    save_trajectories("traj/", rec.trajectories, {"proxy": "pythia-70m"})

Spec: ``shared/specs/s2l.md`` §1.3-1.4, §1.8, §4.2. Deviations from the reference, named: the
checkpoints are evenly spaced over the *whole* run (the reference kept only the last 12, §6.4);
columns are in step order (the reference used glob order, §6.3); examples without a target
token get an explicit ``fill`` (the reference's NaN -> 0, §6.5) or can be dropped.
"""

import dataclasses
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from jaxtyping import Bool, Float, Int

from ...checkpoint import TrainCheckpointer
from ...lora import split_lora
from ...training import (
    Batch,
    ExampleLoss,
    TrainConfig,
    TrainResult,
    evaluate,
    example_losses,
    host_batch,
    make_optimizer,
    replicate,
    shard_batch,
    train,
)

TRANSFORMS = ("raw", "log", "zscore")
_LOG_FLOOR = 1e-6  # nats: keeps log() finite for fully learned examples (and the fill 0)


class Trajectories(NamedTuple):
    """Per-example response-token loss of a pool at T checkpoints of a proxy's training.

    Attributes:
        total: summed target-token NLL (nats) of each example at each checkpoint,
            ``[rows, ckpts]`` float32.
        count: target tokens of each example, ``[rows, ckpts]`` float32 (the same in every
            column: it depends on the data, not on the weights).
        example_id: the pool's `jaxlaw.data.TokenizedSet.example_id` of each row ``[rows]``.
        source_id: index into ``sources`` of each row ``[rows]``.
        sources: source names.
        steps: optimizer steps of the checkpoints, ascending ``[ckpts]``.
    """

    total: Float[np.ndarray, "rows ckpts"]
    count: Float[np.ndarray, "rows ckpts"]
    example_id: Int[np.ndarray, " rows"]
    source_id: Int[np.ndarray, " rows"]
    sources: tuple[str, ...]
    steps: Int[np.ndarray, " ckpts"]

    @property
    def n_rows(self) -> int:
        return int(self.total.shape[0])

    @property
    def n_ckpts(self) -> int:
        return int(self.total.shape[1])

    def empty_rows(self) -> Bool[np.ndarray, " rows"]:
        """Rows with no target token (e.g. a prompt that fills the whole window)."""
        return np.asarray(self.count).min(axis=1) <= 0

    def mean(self, fill: float = 0.0) -> Float[np.ndarray, "rows ckpts"]:
        """Mean NLL per target token; ``fill`` where an example has no target (never NaN).

        ``fill=0.0`` is the reference's NaN -> 0 (such rows then sit at the origin and form a
        spurious "perfectly learned" cluster, spec §6.5); `drop_empty` removes them instead.
        """
        total, count = np.asarray(self.total), np.asarray(self.count)
        out = total / np.maximum(count, 1.0)
        return np.where(count > 0, out, np.float32(fill)).astype(np.float32)

    def drop_empty(self) -> "Trajectories":
        """The rows that have at least one target token."""
        return self.take(np.flatnonzero(~self.empty_rows()))

    def take(self, idx) -> "Trajectories":
        """Rows ``idx`` (anything numpy indexes axis 0 with), ids kept."""
        idx = np.asarray(idx)
        return self._replace(
            total=np.asarray(self.total)[idx],
            count=np.asarray(self.count)[idx],
            example_id=np.asarray(self.example_id)[idx],
            source_id=np.asarray(self.source_id)[idx],
        )

    def features(
        self, transform: str = "raw", *, fill: float = 0.0
    ) -> Float[np.ndarray, "rows ckpts"]:
        """The ``[rows, ckpts]`` float32 matrix k-means clusters.

        Args:
            transform: ``"raw"`` (the reference: mean losses, no scaling), ``"log"``
                (natural log of the mean loss, floored at 1e-6 nats), or ``"zscore"``
                (each column centred and divided by its standard deviation; a constant column
                becomes 0).
            fill: the mean loss given to rows without a target token.

        Raises:
            ValueError: unknown transform.
        """
        x = self.mean(fill)
        if transform == "raw":
            return x
        if transform == "log":
            return np.log(np.maximum(x, _LOG_FLOOR)).astype(np.float32)
        if transform == "zscore":
            x64 = x.astype(np.float64)
            sd = x64.std(axis=0)
            z = (x64 - x64.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
            return z.astype(np.float32)
        raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")

    def check(self) -> "Trajectories":
        """Validate shapes, ids and values; return self.

        Raises:
            ValueError: mismatched lengths, duplicate example ids, source ids outside
                ``sources``, unsorted or duplicate steps, negative counts, or NaN/inf sums.
        """
        total, count = np.asarray(self.total), np.asarray(self.count)
        if total.ndim != 2 or total.shape != count.shape:
            raise ValueError(
                f"trajectory sums {total.shape} and counts {count.shape} must be equal-shaped "
                "[examples, checkpoints] arrays"
            )
        n, t = total.shape
        if n == 0:
            raise ValueError("the trajectories have no rows (empty pool)")
        if t == 0:
            raise ValueError("the trajectories have no checkpoints")
        for name, arr, want in (
            ("example_id", self.example_id, n),
            ("source_id", self.source_id, n),
            ("steps", self.steps, t),
        ):
            if np.shape(arr) != (want,):
                raise ValueError(
                    f"{name} has shape {np.shape(arr)}, expected ({want},) to match the "
                    f"[{n} examples, {t} checkpoints] trajectory matrix"
                )
        ids = np.asarray(self.example_id)
        if np.unique(ids).size != n:
            dup = ids[np.flatnonzero(np.bincount(np.unique(ids, return_inverse=True)[1]) > 1)[0]]
            raise ValueError(f"example ids must be unique; id {dup} appears more than once")
        src = np.asarray(self.source_id)
        if src.min() < 0 or src.max() >= len(self.sources):
            raise ValueError(
                f"source ids run from {src.min()} to {src.max()} but there are "
                f"{len(self.sources)} source names"
            )
        steps = np.asarray(self.steps)
        if np.any(np.diff(steps) <= 0):
            raise ValueError(f"checkpoint steps must be strictly increasing, got {steps.tolist()}")
        bad = ~np.isfinite(total)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"trajectories hold {int(bad.sum())} non-finite loss sums (first: example id "
                f"{ids[i]} at step {steps[j]}: {total[i, j]}); a diverged proxy, or "
                "-inf logits on a target token"
            )
        if not np.all(np.isfinite(count)) or count.min() < 0:
            raise ValueError("target-token counts must be finite and >= 0")
        return self


class Recording(NamedTuple):
    """What `record_trajectories` returns.

    Attributes:
        train: the proxy run's `jaxlaw.training.TrainResult` (its ``seconds`` include the
            sweeps).
        trajectories: the pool's `Trajectories`.
        sweep_seconds: wall time spent sweeping the pool (all checkpoints together), to set
            against ``train.seconds`` (the spec's cost estimate: about T / (3 * epochs) of
            the training FLOPs).
    """

    train: TrainResult
    trajectories: Trajectories
    sweep_seconds: float


def checkpoint_steps(total_steps: int, checkpoints: int | Any) -> Int[np.ndarray, " ckpts"]:
    """The checkpoint steps of a run of ``total_steps`` optimizer steps.

    Args:
        total_steps: length of the run.
        checkpoints: an int T, for T steps evenly spaced over the whole run and ending at its
            last step (``round(total * (i + 1) / T)``; spec §1.8), or an explicit sequence of
            steps in ``[0, total_steps]`` (0 is the untrained proxy), sorted and deduplicated.

    Raises:
        ValueError: T < 1 or T > total_steps, or a step outside the run.
    """
    if isinstance(checkpoints, (int, np.integer)):
        t = int(checkpoints)
        if not 1 <= t <= total_steps:
            raise ValueError(
                f"cannot place {t} checkpoints in a run of {total_steps} steps "
                "(need 1 <= T <= steps)"
            )
        return np.round(total_steps * np.arange(1, t + 1) / t).astype(np.int64)
    steps = np.unique(np.asarray(list(checkpoints), np.int64))
    if steps.size == 0:
        raise ValueError("no checkpoint steps given")
    if steps[0] < 0 or steps[-1] > total_steps:
        raise ValueError(
            f"checkpoint steps {steps.tolist()} must lie in [0, {total_steps}] (the run's steps)"
        )
    return steps


def _pool_ids(pool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    n = int(pool.tokens.shape[0])
    if n == 0:
        raise ValueError("the pool is empty: no examples to record trajectories for")
    ids = np.asarray(getattr(pool, "example_id", np.arange(n)))
    src = np.asarray(getattr(pool, "source_id", np.zeros(n, np.int32)))
    sources = tuple(getattr(pool, "sources", ("all",)))
    if ids.shape != (n,) or src.shape != (n,):
        raise ValueError(
            f"the pool has {n} rows but {ids.shape[0]} example ids and {src.shape[0]} source ids"
        )
    if np.unique(ids).size != n:
        raise ValueError("the pool's example ids are not unique, so rows could not be traced")
    return ids, src, sources


def _stack(losses: list[ExampleLoss], pool, steps) -> Trajectories:
    ids, src, sources = _pool_ids(pool)
    total = np.stack([np.asarray(x.total, np.float32) for x in losses], axis=1)
    count = np.stack([np.asarray(x.count, np.float32) for x in losses], axis=1)
    return Trajectories(total, count, ids, src, sources, np.asarray(steps, np.int64)).check()


def record_trajectories(
    model: nnx.Module,
    pool,
    config: TrainConfig,
    *,
    checkpoints: int | Any = 12,
    trainable=nnx.Param,
    batch_size: int = 256,
    mesh: Mesh | None = None,
    checkpoint_dir: str | Path | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> Recording:
    """Train the proxy on the whole pool and record every example's loss at T checkpoints.

    The proxy is trained in place by `jaxlaw.training.train`; after each checkpoint step its
    ``on_step`` callback sweeps the pool with the jitted eval step of `jaxlaw.training.evaluate`
    (no dropout, fixed batch shape: one compilation), so no checkpoint files are needed. The
    signal at checkpoint t is ``ℓ_i(t)`` = mean over example i's response tokens of the
    next-token cross-entropy (spec §1.3), kept as sum and count.

    Args:
        model: the proxy (NNX; `jaxlaw.models` decoder or any module with the same call);
            trained in place.
        pool: a `jaxlaw.data.TokenizedSet`; the proxy trains on it and every row is swept.
        config: the proxy's optimisation (spec §1.8 default: 3 epochs, lr 2e-5, cosine,
            3 % warmup, wd 0).
        checkpoints: T evenly spaced steps (int) or explicit steps (0: before training); see
            `checkpoint_steps`.
        trainable: NNX filter of what trains (`nnx.Param`: full fine-tuning, as the reference;
            `nnx.LoRAParam` after `jaxlaw.lora.apply_lora`).
        batch_size: examples per sweep batch.
        mesh: a `jaxlaw.training.data_mesh` for data parallelism (training and sweeps).
        checkpoint_dir: also let `train` write orbax checkpoints here (must not hold any yet:
            a resumed run would miss the earlier sweeps).
        log_path: JSONL metrics of the proxy run.
        progress: progress bar.

    Returns:
        `Recording` (train result, trajectories, sweep seconds).

    Raises:
        ValueError: empty pool, bad checkpoint steps, or a checkpoint_dir that already holds
            checkpoints.
    """
    _pool_ids(pool)
    steps = checkpoint_steps(config.steps, checkpoints)
    if checkpoint_dir is not None and any(
        p.name.isdigit() for p in Path(checkpoint_dir).glob("*") if p.is_dir()
    ):
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints: train() would resume and the inline "
            "sweeps before the resume step would be missing (use trajectories_from_checkpoints, "
            "or an empty directory)"
        )
    losses: dict[int, ExampleLoss] = {}
    sweep = [0.0]

    def sweep_pool(step: int, m: nnx.Module) -> None:
        t0 = time.perf_counter()
        losses[step] = evaluate(m, pool, batch_size=batch_size, mesh=mesh)
        sweep[0] += time.perf_counter() - t0

    if steps[0] == 0:
        sweep_pool(0, model)
    result = train(
        model,
        pool,
        config,
        trainable=trainable,
        checkpoint_dir=checkpoint_dir,
        log_path=log_path,
        mesh=mesh,
        progress=progress,
        description="proxy",
        on_step=sweep_pool,
        on_step_at=frozenset(int(s) for s in steps),
    )
    traj = _stack([losses[int(s)] for s in steps], pool, steps)
    return Recording(result, traj, sweep[0])


def _checkpoint_meta(directory: Path) -> tuple[list[int], dict]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    manager = ocp.CheckpointManager(directory.absolute(), options=options)
    try:
        available = sorted(int(s) for s in manager.all_steps())
        if not available:
            raise FileNotFoundError(
                f"{directory}: no checkpoints found (train with checkpoint_dir)"
            )
        meta = manager.restore(available[-1], args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]
    finally:
        manager.close()
    return available, meta


# The step closes over the graphdef only (its state comes in as arguments), so the graphdef is
# the whole key; a handful of models per process is the use, and the bound keeps a long-lived
# process that sweeps many architectures from holding every compiled step forever.
@functools.lru_cache(maxsize=8)
def _stacked_eval_step(graphdef):
    """Jitted ``(stacked trainable [T, ...], frozen, batch) -> ExampleLoss [T, examples]``."""

    def one(trainable, frozen, batch: Batch) -> ExampleLoss:
        model = nnx.merge(graphdef, trainable, frozen)
        model.eval()
        return example_losses(model, batch)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def stacked_losses(
    model: nnx.Module,
    states: Any,
    pool,
    *,
    trainable=nnx.Param,
    batch_size: int = 256,
    mesh: Mesh | None = None,
) -> ExampleLoss:
    """Per-example losses of the pool under T trainable states in one pass over the pool.

    The T states are stacked on a leading axis and the eval step is vmapped over it, so each
    pool batch is read (and sharded) once for all checkpoints; memory grows by T times the
    trainable state.

    Args:
        model: supplies the graph and the frozen (non-trainable) variables.
        states: a list of T trainable states, each shaped like ``nnx.state(model, trainable)``,
            or one state whose leaves already carry a leading ``[T]`` axis.
        pool: a `jaxlaw.data.TokenizedSet`.
        trainable: the filter the states were split with.
        batch_size: examples per batch (the last is padded with masked rows).
        mesh: data mesh (batches split, states replicated).

    Returns:
        `ExampleLoss` of numpy ``[T, examples]`` arrays.
    """
    n = int(pool.tokens.shape[0])
    if n == 0:
        raise ValueError("the pool is empty")
    if isinstance(states, (list, tuple)):
        if not states:
            raise ValueError("no checkpoint states to evaluate")
        states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    graphdef, _, frozen = split_lora(model, trainable)
    stacked, frozen = replicate((states, frozen), mesh)
    step = _stacked_eval_step(graphdef)
    totals, counts = [], []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)
        valid = idx < n
        b = host_batch(pool, np.where(valid, idx, 0), accum_steps=0)
        b = Batch(b.tokens, b.attention_mask & valid[:, None], b.loss_mask & valid[:, None])
        out = jax.device_get(step(stacked, frozen, shard_batch(b, mesh)))
        totals.append(out.total[:, valid])
        counts.append(out.count[:, valid])
    return ExampleLoss(np.concatenate(totals, axis=1), np.concatenate(counts, axis=1))


def trajectories_from_checkpoints(
    model: nnx.Module,
    checkpoint_dir: str | Path,
    pool,
    *,
    steps: Any = None,
    stacked: bool = False,
    trainable=nnx.Param,
    batch_size: int = 256,
    mesh: Mesh | None = None,
    progress: bool = True,
) -> Trajectories:
    """Trajectories from the orbax checkpoints a `jaxlaw.training.train` run wrote (offline).

    Each checkpoint's trainable state is restored into a copy of ``model`` (the frozen weights
    come from ``model``, so pass the proxy as it was before training, e.g. the pretrained base
    for LoRA) and the pool is swept. `train` keeps only ``config.keep_checkpoints`` checkpoints:
    to keep T of them train with ``checkpoint_every = steps // T`` and
    ``keep_checkpoints >= T + 1`` (the reference's ``save_total_limit`` silently dropped the
    early ones, spec §6.4; a warning says when that happened here).

    Args:
        model: the proxy's architecture and frozen variables (not modified).
        checkpoint_dir: the ``checkpoint_dir`` of the run.
        pool: a `jaxlaw.data.TokenizedSet` to sweep.
        steps: which checkpoint steps (None: all found).
        stacked: evaluate all T states in one vmapped pass per batch (`stacked_losses`) instead
            of one pass per checkpoint.
        trainable: the filter the run trained with.
        batch_size: examples per sweep batch.
        mesh: data mesh.
        progress: a progress bar over checkpoints (per-checkpoint mode).

    Returns:
        `Trajectories` with ``steps`` the checkpoint steps.

    Raises:
        FileNotFoundError: no such directory, or no checkpoint in it.
        ValueError: a requested step has no checkpoint, the checkpoints do not fit ``model``,
            or the pool is empty.
    """
    from ...training._loop import _progress

    directory = Path(checkpoint_dir)
    available, meta = _checkpoint_meta(directory)
    _pool_ids(pool)
    if steps is None:
        steps = available
    steps = sorted({int(s) for s in steps})
    missing = [s for s in steps if s not in available]
    if missing:
        raise ValueError(f"{directory}: no checkpoint at step(s) {missing}; available: {available}")
    saved = meta.get("config", {})
    every = int(saved.get("checkpoint_every") or 0)
    if every and available[0] > every:
        warnings.warn(
            f"{directory}: the earliest checkpoint is step {available[0]} although the run saved "
            f"every {every} steps; older ones were deleted (keep_checkpoints="
            f"{saved.get('keep_checkpoints')}), so the trajectory misses the start of training",
            stacklevel=2,
        )
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    graphdef, params, frozen = split_lora(model, trainable)
    template = (params, make_optimizer(config).init(params))
    ckpt = TrainCheckpointer(directory, keep=max(len(available), 1) + 1)
    states = []
    try:
        for s in steps:
            restored = ckpt.restore(template, step=s)
            states.append(restored.state[0])
    finally:
        ckpt.close()
    if stacked:
        out = stacked_losses(
            model, states, pool, trainable=trainable, batch_size=batch_size, mesh=mesh
        )
        losses = [ExampleLoss(out.total[t], out.count[t]) for t in range(len(steps))]
    else:
        losses = []
        with _progress(progress) as bar:
            task = bar.add_task("sweep checkpoints", total=len(steps), loss="-", tps="-")
            for state in states:
                losses.append(
                    evaluate(
                        nnx.merge(graphdef, state, frozen), pool, batch_size=batch_size, mesh=mesh
                    )
                )
                bar.update(task, advance=1)
    return _stack(losses, pool, steps)


_FORMAT = "jaxlaw.s2l.trajectories/1"


def save_trajectories(directory: str | Path, traj: Trajectories, meta: dict | None = None) -> Path:
    """Write ``trajectories.npz`` (sums, counts, ids, steps) and ``meta.json`` to ``directory``.

    Args:
        directory: created if missing; existing files are overwritten.
        traj: validated with `Trajectories.check` first.
        meta: anything JSON-able to keep beside the arrays (proxy, data, config ...).

    Returns:
        The directory.
    """
    traj.check()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    np.savez(
        d / "trajectories.npz",
        total=np.asarray(traj.total, np.float32),
        count=np.asarray(traj.count, np.float32),
        example_id=np.asarray(traj.example_id, np.int64),
        source_id=np.asarray(traj.source_id, np.int64),
        steps=np.asarray(traj.steps, np.int64),
    )
    info = {
        "format": _FORMAT,
        "n_examples": traj.n_rows,
        "steps": [int(s) for s in traj.steps],
        "sources": list(traj.sources),
        "meta": meta or {},
    }
    (d / "meta.json").write_text(json.dumps(info, indent=2, allow_nan=False))
    return d


def load_trajectories(directory: str | Path) -> tuple[Trajectories, dict]:
    """Read what `save_trajectories` wrote.

    Returns:
        ``(trajectories, meta)``, ``meta`` being the dict given to `save_trajectories`.

    Raises:
        FileNotFoundError: the files are missing.
        ValueError: the files are not S2L trajectories or fail `Trajectories.check`.
    """
    d = Path(directory)
    npz, js = d / "trajectories.npz", d / "meta.json"
    for f in (npz, js):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (write it with `jaxlaw s2l trajectories`)")
    info = json.loads(js.read_text())
    if info.get("format") != _FORMAT:
        raise ValueError(f"{js}: not a trajectories file (format {info.get('format')!r})")
    with np.load(npz) as z:
        missing = {"total", "count", "example_id", "source_id", "steps"} - set(z.files)
        if missing:
            raise ValueError(f"{npz}: missing arrays {sorted(missing)}")
        traj = Trajectories(
            total=z["total"],
            count=z["count"],
            example_id=z["example_id"],
            source_id=z["source_id"],
            sources=tuple(info.get("sources", ())),
            steps=z["steps"],
        )
    return traj.check(), info.get("meta", {})
