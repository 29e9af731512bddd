"""The one training loop around the pure step: `train` (data order, staged multi-step segments,
progress, logs, checkpoints, resume) and `train_stack` (many `train` runs at once, vmapped)."""

import collections
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .._types import Array, ArrayLike, Bool, Key
from ..checkpoint import TrainCheckpointer
from ..data import row_lengths, trim_length
from ..lora import split_lora
from ._config import GROUP_WINDOW, TrainConfig
from ._loss import Batch, ExampleLoss
from ._optim import compile_key, learning_rate, make_optimizer, schedule_numbers, with_schedule
from ._sharding import replicate, shard_batch
from ._step import make_eval_step, train_step_fn


class TrainResult(NamedTuple):
    """Summary of a `train` call.

    Attributes:
        step: optimizer steps done in total (including those of a resumed run).
        resumed_from: the checkpoint step this call started from (None: from scratch).
        history: one dict per logged step (step, loss, lr, grad_norm, tokens_per_s, ...).
        seconds: wall time of this call.
        losses: the training loss (nats/token) of every step this call ran, ``[steps]``.
        padding: share of the batch tokens this call ran that were padding (0 to 1).
    """

    step: int
    resumed_from: int | None
    history: list[dict]
    seconds: float
    losses: np.ndarray
    padding: float


# Steps staged and run per dispatch: a fixed shape, so one compilation serves runs of any
# length, and the host's per-step work (gathering rows, dispatching) is paid once per segment.
SEGMENT = 16
# Segments dispatched ahead of the host: the device never waits for the host's bookkeeping, and
# at most this many staged segments sit in memory.
_IN_FLIGHT = 2


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sort_bits(key, epoch, rounds: int, length: int):
    """The uint32 sort keys ``[rounds, length]`` that ``jr.permutation(fold_in(key, epoch), n)``
    draws (one round per sort, as jax's ``_shuffle``). Threefry is partitionable, so the first
    n of ``length`` equal those drawn for shape (n,): one compilation per power-of-two bucket
    instead of one per n (GradEx's subsets have many sizes)."""
    k = jr.fold_in(key, epoch)
    out = []
    for _ in range(rounds):
        k, sub = jr.split(k)
        out.append(jr.bits(sub, (length,), jnp.uint32))
    return jnp.stack(out) if out else jnp.zeros((0, length), jnp.uint32)  # n = 1: no sort


class _Order:
    """The example order of one run, on the host: epoch ``e`` is
    ``jr.permutation(jr.fold_in(key, e), n)`` (jax's shuffle by sorting random bits, the sorts
    done by numpy), drawn once per epoch; the next epoch's bits are drawn ahead, so fetching
    them does not stall the device queue."""

    def __init__(self, n: int, batch_size: int, key, lengths: np.ndarray | None = None):
        self.n, self.batch_size, self.key = n, batch_size, key
        self.lengths = lengths  # group by length: sort windows of GROUP_WINDOW batches
        self.rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
        # Without partitionable threefry the bits of a longer draw are not a prefix-extension.
        bucket = 1 << max(n - 1, 1).bit_length()
        self.length = bucket if jax.config.jax_threefry_partitionable else n
        self._epochs: dict[int, Any] = {}

    def _draw(self, e: int):
        if e not in self._epochs:
            epoch = jax.device_put(np.uint32(e))
            self._epochs[e] = _sort_bits(self.key, epoch, self.rounds, self.length)
        return self._epochs[e]

    def _perm(self, e: int) -> np.ndarray:
        got = self._draw(e)
        if not isinstance(got, np.ndarray):
            bits = np.asarray(jax.device_get(got))[:, : self.n]
            got = np.arange(self.n)
            for r in range(self.rounds):  # lax.sort_key_val is stable, as numpy's "stable"
                got = got[np.argsort(bits[r], kind="stable")]
            if self.lengths is not None:
                window = GROUP_WINDOW * self.batch_size
                for lo in range(0, self.n, window):
                    part = got[lo : lo + window]
                    got[lo : lo + window] = part[np.argsort(-self.lengths[part], kind="stable")]
            self._epochs[e] = got
        return got

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Example indices of steps ``start .. stop - 1``, ``[steps, batch_size]``."""
        pos = np.arange(start * self.batch_size, stop * self.batch_size)
        epochs, offsets = np.divmod(pos, self.n)
        out = np.empty(pos.shape, np.int64)
        for e in range(int(epochs[0]), int(epochs[-1]) + 1):
            self._draw(e + 1)
            out[epochs == e] = self._perm(e)[offsets[epochs == e]]
        for e in [e for e in self._epochs if e < epochs[-1]]:
            del self._epochs[e]
        return out.reshape(stop - start, self.batch_size)


def batch_indices(
    n_examples: int, batch_size: int, step: int, *, key, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Example indices of step ``step``: consecutive slices of one permutation per epoch.

    Epoch ``e`` uses ``jr.permutation(jr.fold_in(key, e), n_examples)``, so the order is a pure
    function of (key, step): a resumed run reads exactly the batches the killed one would have.
    With ``lengths`` (the rows' `jaxlaw.data.row_lengths`) each window of `GROUP_WINDOW`
    batches of that permutation is sorted by length, longest first: the order of
    ``TrainConfig(group_by_length=True)``. `train` reads the same order (drawn once per epoch
    on the host).
    """
    return _Order(n_examples, batch_size, key, lengths).rows(step, step + 1)[0]


def host_batch(data, idx: np.ndarray, accum_steps: int = 1) -> Batch:
    """Rows ``idx`` of a `jaxlaw.data.TokenizedSet` as a numpy `Batch` ``[accum, micro, seq]``
    (``accum_steps=0``: no leading axis)."""
    parts = (data.tokens[idx], data.attention_mask[idx], data.loss_mask[idx])
    if accum_steps:
        parts = tuple(p.reshape(accum_steps, -1, p.shape[-1]) for p in parts)
    return Batch(*parts)


def _stage(data, idx: np.ndarray, accum_steps: int, seq: int | None = None) -> Batch:
    """Rows ``idx`` (``[..., steps, batch]``, padded to `SEGMENT` steps with row 0) as a numpy
    `Batch` ``[..., SEGMENT, accum, micro, seq]``, cut to the first ``seq`` columns if given."""
    steps = idx.shape[-2]
    if steps < SEGMENT:
        pad = np.zeros((*idx.shape[:-2], SEGMENT - steps, idx.shape[-1]), idx.dtype)
        idx = np.concatenate([idx, pad], axis=-2)
    cols = slice(None, seq)
    parts = (data.tokens[:, cols], data.attention_mask[:, cols], data.loss_mask[:, cols])
    return Batch(*(p[idx].reshape(*idx.shape[:-1], accum_steps, -1, p.shape[-1]) for p in parts))


def _runs(lengths: np.ndarray) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the maximal runs of equal values in ``lengths``."""
    cuts = [0, *(np.flatnonzero(np.diff(lengths)) + 1).tolist(), len(lengths)]
    return list(zip(cuts[:-1], cuts[1:]))


def length_batches(
    lengths: np.ndarray, batch_size: int, seq_len: int
) -> list[tuple[np.ndarray, int]]:
    """Evaluation batches of similar length: ``(rows, trimmed length)`` pairs covering every row
    once, rows sorted by length (longest first), each batch cut to `trim_length` of its longest
    row. The last batch may be short."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [
        (rows, trim_length(int(lengths[rows].max()), seq_len))
        for rows in np.split(order, range(batch_size, len(order), batch_size))
    ]


class _SegmentMetrics(NamedTuple):
    loss: Array  # (SEGMENT,), entries past the segment's length are 0
    grad_norm: Array
    tokens: Array


@functools.lru_cache(maxsize=16)
def _segment(graphdef, key: TrainConfig, stacked: bool = False):
    """Jitted ``(params, opt_state, frozen, batches, dropout_key, start, length) -> (params,
    opt_state, _SegmentMetrics)``: steps ``start .. start + length - 1`` of the library's train
    step on ``batches`` ``[SEGMENT, accum, micro, seq]`` (a ``fori_loop``: one compilation for
    any length), step s's dropout key ``fold_in(dropout_key, s)``. ``stacked``: vmapped over a
    leading axis of params, opt_state, batches and dropout_key. Keyed by `compile_key` (bounded:
    at most 16 graphs x optimizers x modes stay compiled)."""
    step = train_step_fn(graphdef, make_optimizer(key))

    def segment(params, opt_state, frozen, batches: Batch, dropout_key, start, length):
        def body(i, carry):
            p, o, m = carry
            b = jax.tree.map(lambda x: x[i], batches)
            k = jr.fold_in(dropout_key, (start + i).astype(jnp.uint32))
            p, o, out = step(p, o, frozen, b, k)
            m = _SegmentMetrics(*(a.at[i].set(v.astype(a.dtype)) for a, v in zip(m, out[:3])))
            return p, o, m

        zeros = _SegmentMetrics(*[jnp.zeros(SEGMENT, jnp.float32)] * 3)
        return jax.lax.fori_loop(0, length, body, (params, opt_state, zeros))

    if stacked:
        segment = jax.vmap(segment, in_axes=(0, 0, None, 0, 0, None, None))
    return jax.jit(segment, donate_argnums=(0, 1))


def _train_segment(graphdef, config: TrainConfig, stacked: bool = False):
    return _segment(graphdef, compile_key(config), stacked)


@functools.lru_cache(maxsize=32)
def _eval_step(graphdef):
    return make_eval_step(graphdef)


def _bounds(start: int, end: int, stops: Collection[int]) -> list[tuple[int, int]]:
    """Segments ``(lo, hi)`` covering ``start .. end``, at most `SEGMENT` steps, cut at ``stops``
    (steps after which the host needs the state: logs, callbacks, checkpoints)."""
    cuts = sorted({s for s in stops if start < s < end} | {end})
    out, lo = [], start
    for c in cuts:
        while lo < c:
            hi = min(c, lo + SEGMENT)
            out.append((lo, hi))
            lo = hi
    return out


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
    key: Key | None = None,
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

    How it runs: the data order (`batch_indices`) is drawn on the host once per epoch; the
    batches of up to `SEGMENT` steps are gathered on the host and staged on the device at once;
    one compiled program (per model graph, optimizer and batch shape, kept in a bounded cache)
    runs those steps in a ``fori_loop``. Segments end at log, callback and checkpoint steps.
    Metrics are fetched one segment behind the dispatch, so the host never waits for a step
    except at callbacks, checkpoints and the end.

    Args:
        model: an NNX decoder; updated in place.
        data: a `jaxlaw.data.TokenizedSet` (host arrays).
        config: optimisation settings.
        trainable: NNX filter of what trains.
        key: the run's PRNG key (None: ``jr.key(config.seed)``); its two halves draw the data
            order and the dropout masks.
        checkpoint_dir: where to save/resume (None: no checkpoints).
        log_path: JSONL file that gets one metrics record per ``config.log_every`` steps.
        mesh: a `data_mesh` to run data-parallel (None: default device).
        stop_at_step: end this call after that many total steps (a time-sliced job, or a test
            of preemption); the next call with the same checkpoint_dir goes on.
        progress: show a progress bar with loss and tokens/s (updated once per segment).
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
    params, opt_state, key = _init_state(params, config, key)
    data_key, dropout_key = jr.split(key)
    key_meta = jax.device_get(jr.key_data(key)).tolist()
    start = 0
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = TrainCheckpointer(checkpoint_dir, keep=config.keep_checkpoints)
        restored = ckpt.restore((params, opt_state))
        if restored is not None:
            params, opt_state = restored.state
            start = int(restored.meta["step"])
            _check_resume(restored.meta, config, key_meta)
    resumed_from = start if start else None
    params, opt_state, frozen = replicate((params, opt_state, frozen), mesh)
    end = config.steps if stop_at_step is None else min(stop_at_step, config.steps)
    every = config.log_every
    calls = set(range(start + 1, end + 1)) if on_step_at is None else set(on_step_at)
    calls = calls if on_step is not None else set()
    every_ckpt = config.checkpoint_every
    saves = set(range(every_ckpt, end, every_ckpt)) | {end} if every_ckpt else {end}
    saves = saves if ckpt is not None else set()
    logs = set(range(every, end, every)) | {end}
    segment = _train_segment(graphdef, config)
    seq_len = int(data.tokens.shape[1])
    lengths = row_lengths(data.attention_mask) if config.group_by_length else None
    order = _Order(n, config.batch_size, data_key, lengths)
    history: list[dict] = []
    losses = np.zeros(max(end - start, 0), np.float32)
    log = open(log_path, "a") if log_path is not None else None
    clock = dict(tokens=0.0, since=time.perf_counter(), padded=0.0, real=0.0)
    pending: collections.deque = collections.deque()

    def finish(bar, task) -> None:
        """Fetch the oldest dispatched segment's metrics; log and advance the bar."""
        lo, hi, metrics, tokens = pending.popleft()
        m = jax.device_get(metrics)
        losses[lo - start : hi - start] = m.loss[: hi - lo]
        clock["tokens"] += tokens
        if hi in logs:
            now = time.perf_counter()
            record = {
                "step": hi,
                "loss": float(m.loss[hi - lo - 1]),
                "grad_norm": float(m.grad_norm[hi - lo - 1]),
                "lr": learning_rate(config, hi - 1),
                "target_tokens": float(m.tokens[hi - lo - 1]),
                "tokens_per_s": clock["tokens"] / max(now - clock["since"], 1e-9),
                "samples_seen": hi * config.batch_size,
                "seconds": now - t0,
            }
            clock.update(tokens=0.0, since=now)
            history.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            tps = f"{record['tokens_per_s']:,.0f}"
            bar.update(task, completed=hi, loss=f"{record['loss']:.4f}", tps=tps)
        else:
            bar.update(task, completed=hi)

    try:
        with _progress(progress) as bar:
            task = bar.add_task(description, total=config.steps, completed=start, loss="-", tps="-")
            for lo, hi in _bounds(start, end, calls | saves | logs):
                idx = order.rows(lo, hi)
                if lengths is None:
                    runs = [(lo, hi, seq_len)]
                else:  # one dispatch per run of steps with the same trimmed length
                    seqs = np.array([trim_length(int(lengths[r].max()), seq_len) for r in idx])
                    runs = [(lo + a, lo + b, int(seqs[a])) for a, b in _runs(seqs)]
                for a, b, seq in runs:
                    rows = idx[a - lo : b - lo]
                    staged = _stage(data, rows, config.accum_steps, seq)
                    batches = shard_batch(staged, mesh)
                    span = jax.device_put((np.uint32(a), np.int32(b - a)))
                    params, opt_state, metrics = segment(
                        params, opt_state, frozen, batches, dropout_key, *span
                    )
                    tokens = float(np.sum(data.attention_mask[rows]))
                    clock["padded"] += rows.size * seq
                    clock["real"] += tokens
                    pending.append((a, b, metrics, tokens))
                    host_needs_state = b == hi and (hi in calls or hi in saves)
                    while pending and (len(pending) >= _IN_FLIGHT or host_needs_state):
                        finish(bar, task)
                if hi in calls:
                    t_cb = time.perf_counter()
                    nnx.update(model, params)
                    on_step(hi, model)
                    clock["since"] += time.perf_counter() - t_cb  # keep tokens/s a training figure
                if hi in saves:
                    meta = {
                        "samples_seen": hi * config.batch_size,
                        "key": key_meta,
                        "config": dataclasses.asdict(config),
                    }
                    ckpt.save(hi, (params, opt_state), meta)
            while pending:
                finish(bar, task)
    finally:
        if log is not None:
            log.close()
        if ckpt is not None:
            ckpt.close()
    nnx.update(model, params)
    padding = 1.0 - clock["real"] / clock["padded"] if clock["padded"] else 0.0
    return TrainResult(end, resumed_from, history, time.perf_counter() - t0, losses, padding)


@functools.lru_cache(maxsize=16)
def _init_fn(key: TrainConfig):
    """Jitted ``(params, schedule numbers, seed) -> (params copy, opt_state, jr.key(seed))``,
    one per `compile_key`. Inside jit so that no Python scalar crosses to the device implicitly
    (the training tests run under ``jax.transfer_guard("disallow")``); the copies make the
    buffers the step donates private to the run."""
    tx = make_optimizer(key)

    def init(params, numbers, seed):
        opt_state = with_schedule(tx.init(params), numbers)
        return jax.tree.map(jnp.copy, params), opt_state, jr.key(seed)

    return jax.jit(init)


def _init_state(params, config: TrainConfig, key):
    args = jax.device_put((schedule_numbers(config), np.uint32(config.seed)))
    params, opt_state, seed_key = _init_fn(compile_key(config))(params, *args)
    return params, opt_state, seed_key if key is None else key


class StackResult(NamedTuple):
    """Result of `train_stack`.

    Attributes:
        states: the trained trainable states stacked on a leading ``members`` axis (an
            `nnx.State` shaped like ``split_lora(model, trainable)[1]`` with one more axis).
        losses: the training loss (nats/token) of every member and step, ``[members, steps]``.
        seconds: wall time (compilation included).
    """

    states: Any
    losses: np.ndarray
    seconds: float


@functools.partial(jax.jit, static_argnums=1)
def _broadcast(tree, copies: int):
    # A jit output is a fresh buffer: the segment may donate it.
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (copies, *jnp.shape(x))), tree)


@jax.jit
def _member_keys(keys, ids):
    """``(data keys, dropout keys)`` of members ``ids``, each the halves of ``jr.split``."""
    halves = jax.vmap(jr.split)(keys[ids])
    return halves[:, 0], halves[:, 1]


def train_stack(
    model: nnx.Module,
    data,
    masks: Bool[ArrayLike, "subsets examples"],
    config: TrainConfig,
    *,
    keys: Array | None = None,
    trainable=nnx.LoRAParam,
    chunk: int = 2,
    progress: bool = True,
    description: str = "train_stack",
) -> StackResult:
    """Train copies of ``model``, member j on the rows ``masks[j]`` of ``data``, many at once.

    Member j's run is `train` of a copy of ``model`` on ``take(data, flatnonzero(masks[j]))``
    with ``config`` (and ``key=keys[j]``): the same data order, dropout keys, optimizer and
    steps, run by the same compiled segment vmapped over ``chunk`` members (equal to separate
    `train` calls up to float32 reassociation under vmap). Members are trained ``chunk`` at a
    time; the last chunk is padded, so any number of members compiles once per chunk.
    ``model`` is not modified.

    Args:
        model: the starting point of every member.
        data: the pool, a `jaxlaw.data.TokenizedSet` (host arrays).
        masks: ``[members, examples]`` bool, the rows each member trains on.
        config: optimisation settings of every member (no checkpoints, no logs).
        keys: ``[members]`` typed PRNG keys, member j's in place of `train`'s
            ``jr.key(config.seed)`` (None: that key for every member).
        trainable: NNX filter of what trains.
        chunk: members trained at once (memory grows with it).
        progress: progress bar over member-steps (stderr).
        description: label of the progress bar.

    Returns:
        `StackResult`, members in the order of ``masks``.

    Raises:
        ValueError: ``masks`` does not fit ``data``, a member has no rows or no target tokens,
            ``chunk`` is not a positive int, or nothing matches ``trainable``.
    """
    t0 = time.perf_counter()
    masks = np.asarray(masks)
    n = int(data.tokens.shape[0])
    if masks.ndim != 2 or masks.shape[1] != n or masks.dtype != np.bool_ or not masks.shape[0]:
        raise ValueError(f"masks must be bool [members >= 1, {n}], got {masks.dtype} {masks.shape}")
    targets = np.any(np.asarray(data.loss_mask)[:, 1:], axis=1)
    for j, m in enumerate(masks):
        if not m.any():
            raise ValueError(f"member {j} has no rows to train on")
        if not targets[m].any():
            raise ValueError(f"member {j}'s rows have no target tokens")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if config.group_by_length:
        raise ValueError(
            "train_stack runs every member on one batch shape: group_by_length is not supported"
        )
    graphdef, params, frozen = split_lora(model, trainable)
    if not jax.tree.leaves(params):
        raise ValueError(
            "nothing to train: the model has no variables matching the trainable filter "
            "(apply_lora first, or pass trainable=nnx.Param)"
        )
    params, opt_state, seed_key = _init_state(params, config, None)
    members = masks.shape[0]
    if keys is None:
        keys = _broadcast(seed_key, members)
    segment = _train_segment(graphdef, config, stacked=True)
    steps, width = config.steps, min(chunk, members)
    # Every member's whole order up front (pool rows, [members, steps, batch]): the epoch draws
    # then never wait behind queued training.
    data_keys, dropout_keys = _member_keys(keys, jax.device_put(np.arange(members, dtype=np.int32)))
    order = np.stack(
        [
            np.flatnonzero(m)[_Order(int(m.sum()), config.batch_size, k).rows(0, steps)]
            for m, k in zip(masks, _unstack(data_keys))
        ]
    )
    losses = np.zeros((members, steps), np.float32)
    parts = []
    with _progress(progress) as bar:
        task = bar.add_task(description, total=members * steps, loss="-", tps="-")
        for first in range(0, members, width):
            real = list(range(first, min(first + width, members)))
            ids = np.asarray(real + real[:1] * (width - len(real)), np.int32)
            chunk_keys = dropout_keys[jax.device_put(ids)]
            p, o = _broadcast((params, opt_state), width)
            metrics = []
            for lo, hi in _bounds(0, steps, ()):
                idx = order[ids, lo:hi]  # (width, hi - lo, batch)
                batches = jax.device_put(_stage(data, idx, config.accum_steps))
                span = jax.device_put((np.uint32(lo), np.int32(hi - lo)))
                p, o, m = segment(p, o, frozen, batches, chunk_keys, *span)
                metrics.append((lo, hi, m.loss))
                bar.update(task, advance=len(real) * (hi - lo))
            for lo, hi, loss in metrics:
                got = jax.device_get(loss)  # (width, SEGMENT)
                losses[first : first + len(real), lo:hi] = got[: len(real), : hi - lo]
            parts.append(jax.tree.map(lambda x, k=len(real): x[:k], p))
    stacked = parts[0] if len(parts) == 1 else jax.tree.map(lambda *x: jnp.concatenate(x), *parts)
    jax.block_until_ready(stacked)
    return StackResult(stacked, losses, time.perf_counter() - t0)


def _unstack(keys) -> list:
    return [keys[i] for i in range(keys.shape[0])]


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
    model: nnx.Module,
    data,
    *,
    batch_size: int = 32,
    mesh: Mesh | None = None,
    group_by_length: bool = True,
) -> ExampleLoss:
    """Per-example response-token loss of ``model`` on every example of ``data`` (no dropout).

    Batches have a fixed size (the last is padded with fully masked rows and the padding
    dropped). With ``group_by_length`` (the default) rows are batched longest first
    (`length_batches`) and each batch is cut to `jaxlaw.data.trim_length` of its longest row,
    so padding stays small on mixed lengths; each trimmed length compiles once. Without it,
    batches keep ``data``'s order and full width (one compilation per dataset width).

    Returns:
        `ExampleLoss` of numpy ``[examples]`` arrays, in the order of ``data``.
    """
    n, seq_len = (int(d) for d in data.tokens.shape)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    graphdef, state = nnx.split(model)
    step = _eval_step(graphdef)
    empty = nnx.State({})
    state = replicate(state, mesh)
    if group_by_length:
        plan = length_batches(row_lengths(data.attention_mask), batch_size, seq_len)
    else:
        plan = [(np.arange(lo, min(lo + batch_size, n)), seq_len) for lo in range(0, n, batch_size)]
    total, count = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for rows, seq in plan:
        valid = np.arange(batch_size) < len(rows)
        idx = np.concatenate([rows, np.zeros(batch_size - len(rows), rows.dtype)])
        b = host_batch(data, idx, accum_steps=0)
        b = Batch(*(x[:, :seq] for x in b))
        b = Batch(b.tokens, b.attention_mask & valid[:, None], b.loss_mask & valid[:, None])
        out = jax.device_get(step(empty, state, shard_batch(b, mesh)))
        total[rows], count[rows] = out.total[valid], out.count[valid]
    return ExampleLoss(total, count)


def mean_loss(losses: ExampleLoss) -> float:
    """Token-weighted mean NLL (nats/token) of a set of examples."""
    return float(np.sum(losses.total) / max(float(np.sum(losses.count)), 1.0))
