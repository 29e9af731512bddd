"""Per-sample gradients of the sample output at theta*, projected chunk by chunk.

Entry points: `projected_grads` (the GradEx features of a whole data set, resumable, optionally
data-parallel) and `example_grads` (unprojected per-sample gradients of one batch, for small
models and checks). Both differentiate `output_logodds` with respect to the LoRA parameters only
(`nnx.LoRAParam`; base weights are constants), with dropout off, by
``jax.vmap(jax.grad(f_one))`` over the examples of a chunk, ``f_one`` running the model on one
example.
"""

import functools
import math
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..._types import Array, Float
from ...lora import split_lora
from ...training import DATA_AXIS, Batch, replicate, shard_batch
from ._output import _check_eps, output_logodds
from ._projection import BLOCKS_IN_MEMORY_BYTES, Projection, all_blocks, tree_paths
from ._store import GradStore, ProjectedGrads, grads_meta, load_grads, store_matches

DEFAULT_BUDGET = 256 * 2**20  # bytes per device for one chunk's per-sample grads + activations
MAX_CHUNK = 256  # examples per device and chunk
# On CPU the step is bound by memory traffic: chunks whose widest activation (e.g. the MLP's
# [chunk * seq, mlp] block) stays near the cache run ~1.5x faster per example than larger ones.
# On the spec's model (seq 37, mlp 512; 2-core Zen 5, 2 MiB L2 per core) examples/s rose from
# chunk 19 to 32-40 (+8%) and fell by a third at 48 and 64; this budget gives 32-34 there.
CPU_ACTIVATION_BYTES = 5 * 2**19
IN_FLIGHT = 3  # chunks dispatched ahead, so XLA can overlap them and the host work
# A projection whose p x d matrix takes at most this many bytes has its blocks generated once per
# call and passed to the chunk step (same numbers): regenerating them in every chunk costs ~10%
# of a small model's step and most of its compile time. Larger ones are regenerated per chunk.
P_CACHE_BYTES = BLOCKS_IN_MEMORY_BYTES
# XLA:CPU (jaxlib 0.10) hands row reductions to YNNPACK by default; in the per-sample backward
# pass those (LayerNorm's sum(x_hat * dy) over the hidden axis, [chunk, seq, hidden] -> [chunk,
# seq]) took ~0.4 ms each for 150k elements in a profile of the spec's model, ~15% of the chunk
# step. Keeping YNNPACK for dots only made the step 1.10-1.15x faster (2-core CPU, chunk 16-32);
# it did not help the batched train and eval steps, so only this step uses it. The option is per
# compilation (jax.jit's compiler_options): nothing else in the process changes.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


def _example_output(graphdef, eps: float):
    """``f_one(lora, frozen, tokens[seq], attention[seq], loss[seq]) -> scalar`` output."""

    def f_one(lora, frozen, tokens, attention_mask, loss_mask):
        model = nnx.merge(graphdef, lora, frozen)
        model.eval()  # dropout off: the output is a deterministic function of theta
        logits = model(tokens[None], attention_mask[None])
        return output_logodds(logits, tokens[None], loss_mask[None], eps)[0]

    return f_one


@functools.lru_cache(maxsize=16)
def _grads_fn(graphdef, eps: float):
    f_one = _example_output(graphdef, eps)
    vg = jax.vmap(jax.value_and_grad(f_one), in_axes=(None, None, 0, 0, 0))

    def grads(lora, frozen, batch: Batch):
        out, g = vg(lora, frozen, batch.tokens, batch.attention_mask, batch.loss_mask)
        return out, nnx.to_pure_dict(g)

    return jax.jit(grads)


@functools.lru_cache(maxsize=16)
def _chunk_fn(graphdef, projections: tuple[Projection, ...], eps: float):
    """The jitted chunk step: per-sample grads, their finiteness and projections, no B x p out."""
    f_one = _example_output(graphdef, eps)
    vg = jax.vmap(jax.value_and_grad(f_one), in_axes=(None, None, 0, 0, 0))

    def chunk(lora, frozen, batch: Batch, blocks: tuple):
        out, g = vg(lora, frozen, batch.tokens, batch.attention_mask, batch.loss_mask)
        g = nnx.to_pure_dict(g)
        finite = jnp.isfinite(out)
        for leaf in jax.tree.leaves(g):
            finite &= jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
        projected = jnp.stack(
            [jax.vmap(lambda t, p=p, b=b: p.project(t, b))(g) for p, b in zip(projections, blocks)]
        )
        return projected, out, finite

    return jax.jit(chunk, compiler_options=_compiler_options())


@functools.cache
def _compiler_options() -> dict | None:
    """`CPU_COMPILER_OPTIONS` on the CPU backend if this XLA accepts them, else None."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(1.0).compile()
    except Exception:  # an XLA that renamed the option: compile with its defaults
        return None
    return CPU_COMPILER_OPTIONS


def _lora_split(model: nnx.Module):
    graphdef, lora, frozen = split_lora(model)
    if not jax.tree.leaves(lora):
        raise ValueError(
            "the model has no LoRA adapters (no nnx.LoRAParam): GradEx differentiates w.r.t. "
            "the adapters of a meta-trained theta*; apply_lora and train it first"
        )
    return graphdef, lora, frozen


def _warn_untrained(lora) -> None:
    b = [leaf for path, leaf in tree_paths(lora) if path.split(".")[-1] == "b"]
    if b and not any(np.any(np.asarray(leaf)) for leaf in b):  # host: nothing to compile
        warnings.warn(
            "every LoRA B matrix is zero (an untrained adapter): the gradients w.r.t. every A "
            "vanish there, so GradEx only sees B; meta-train the adapters first (spec 5.6)",
            UserWarning,
            stacklevel=3,
        )


def example_grads(
    model: nnx.Module, batch: Batch, eps: float = 1e-3
) -> tuple[Float[Array, " examples"], dict]:
    """Unprojected per-sample gradients of `output_logodds` w.r.t. the LoRA parameters.

    For small models and checks: the result holds ``examples x p`` numbers. Dropout is off;
    base weights are constants.

    Args:
        model: a `jaxlaw.models` decoder with LoRA adapters (not modified).
        batch: tokens and masks, each ``[examples, seq]``.
        eps: probability guard of `output_logodds`.

    Returns:
        ``(outputs, grads)``: float32 ``[examples]`` sample outputs, and a nested pure dict
        shaped like ``nnx.to_pure_dict(split_lora(model)[1])`` whose leaves have a leading
        ``examples`` axis.

    Raises:
        ValueError: the model has no LoRA adapters, or ``eps`` is outside ``(0, 0.5)``.
    """
    _check_eps(eps)
    graphdef, lora, frozen = _lora_split(model)
    return _grads_fn(graphdef, float(eps))(lora, frozen, batch)


def auto_chunk_size(
    model: nnx.Module,
    seq_len: int,
    n_projections: int,
    dim: int,
    *,
    budget_bytes: int = DEFAULT_BUDGET,
    n_devices: int = 1,
) -> int:
    """Examples per chunk: what fits ``budget_bytes`` per device, and cache-sized on CPU.

    Sizes use the actual dtypes: ``g`` bytes per gradient entry (the LoRA leaves' itemsize,
    the largest if they differ) and ``a`` bytes per activation (the model config's compute
    dtype; ``g`` for a model without a jaxlaw config). Per example: the per-sample gradient
    (``g p`` bytes) and its float32 copy for the projection (``4 p``), the projections (4 d per
    projection) and the activations the backward pass keeps, estimated as
    ``a * seq * (layers * (16 hidden + 4 mlp + 3 heads seq) + 4 vocab)`` bytes. On the CPU
    backend the chunk is further capped so that its widest activation block,
    ``a * chunk * seq * max(mlp, 3 hidden, heads seq, vocab)`` bytes, stays within
    ``CPU_ACTIVATION_BYTES`` (cache-resident steps are faster per example). The result is a
    multiple of ``n_devices``, at most ``MAX_CHUNK`` per device.
    """
    _, lora, _ = split_lora(model)
    leaves = jax.tree.leaves(lora)
    p = sum(math.prod(np.shape(x)) for x in leaves)
    g_bytes = max((jnp.dtype(x.dtype).itemsize for x in leaves), default=4)
    c = getattr(model, "config", None)
    width = None
    if c is not None and hasattr(c, "hidden_size"):
        a_bytes = jnp.dtype(c.dtype).itemsize
        per_token = c.n_layers * (16 * c.hidden_size + 4 * c.intermediate_size)
        per_token += c.n_layers * 3 * c.n_heads * seq_len + 4 * c.vocab_size
        width = max(c.intermediate_size, 3 * c.hidden_size, c.n_heads * seq_len, c.vocab_size)
    else:  # not a jaxlaw Decoder: assume activations as large as a few copies of the grads
        a_bytes = g_bytes
        per_token = max(p // max(seq_len, 1), 1)
    per_example = (g_bytes + 4) * p + 4 * dim * n_projections + a_bytes * seq_len * per_token
    per_device = int(min(MAX_CHUNK, max(1, budget_bytes // per_example)))
    if width is not None and jax.default_backend() == "cpu":
        per_device = min(per_device, max(1, CPU_ACTIVATION_BYTES // (a_bytes * seq_len * width)))
    return per_device * n_devices


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} chunks"),
        TextColumn("{task.fields[eps]} ex/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _gather(tree):
    """Device arrays -> host numpy; a multi-process global array is gathered from every host."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree)
    return jax.device_get(tree)


def projected_grads(
    model: nnx.Module,
    data,
    projections: Sequence[Projection],
    *,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    eps: float = 1e-3,
    progress: bool = True,
    store: str | Path | None = None,
    budget_bytes: int = DEFAULT_BUDGET,
) -> ProjectedGrads:
    """Projected per-sample gradients ``P_k^T grad f(theta*; x_i)`` and outputs f*_i of a data set.

    ``f`` is `output_logodds` (mean log-odds of the target tokens, NaN-free), differentiated
    w.r.t. the LoRA parameters (`nnx.LoRAParam`) with the base weights frozen and dropout off, by
    ``jax.vmap(jax.grad(f_one))`` over the examples of a chunk. The jitted chunk function has the
    static shape ``(chunk_size, seq)`` (the last chunk is padded with empty rows, then dropped;
    trailing columns that are padding in every row are dropped first)
    and returns only the projections, so a ``chunk x p`` gradient block never leaves it; memory
    is O(chunk). The blocks of ``P`` are regenerated from their keys inside the chunk step, or,
    for a projection whose ``p x d`` matrix fits ``P_CACHE_BYTES`` (32 MiB), generated once per
    call by the same code and passed in (same numbers). Results do not depend on ``chunk_size``
    or the mesh (up to float32 rounding of the per-sample computation) and keep the data set's
    row order.

    An example without target tokens has an undefined output (a mean over no tokens), so it is
    an error rather than a silent zero row.

    Args:
        model: a `jaxlaw.models` decoder with LoRA adapters at theta* (meta-trained on all
            sources); not modified.
        data: a `jaxlaw.data.TokenizedSet` (host arrays).
        projections: one or more `Projection` built for this model's LoRA state
            (``Projection.for_tree(split_lora(model)[1], dim=..., seed=...)``); one slice of
            ``grads`` each.
        chunk_size: examples per jitted call (all devices together); None picks one from
            ``budget_bytes``, cache-sized on CPU (`auto_chunk_size`). With a mesh it must be a
            multiple of the ``data`` axis size.
        mesh: a `jaxlaw.training.data_mesh`: chunks are split over its ``data`` axis, the
            weights replicated. On several processes every process passes the same ``data`` and
            computes its share of each chunk; all get the full result.
        eps: probability guard of `output_logodds`.
        progress: show a progress bar over chunks (stderr).
        store: a folder to save progress in, chunk by chunk: an interrupted run called again
            with the same folder resumes after the last saved chunk, and a finished folder is
            loaded back without computing (after checking that model, data, projections and eps
            are those it was written for). Read it later with `load_grads`.
        budget_bytes: per-device memory budget for one chunk when ``chunk_size`` is None.

    Returns:
        `ProjectedGrads` (numpy arrays).

    Raises:
        ValueError: no projections; a projection built for another model (naming the first
            mismatching LoRA leaf); a model without LoRA adapters; an empty data set; examples
            without target tokens (their indices are named); a bad ``chunk_size``; a store
            written for another computation; a non-finite gradient or output (naming the row
            and ``example_id``).

    Warns:
        UserWarning: every LoRA B matrix is zero (untrained adapter: the A-gradients vanish).
    """
    projections = tuple(projections)
    if not projections or not all(isinstance(p, Projection) for p in projections):
        raise ValueError("projections must be a non-empty sequence of Projection")
    _check_eps(eps)
    eps = float(eps)
    n = int(data.tokens.shape[0])
    if n == 0:
        raise ValueError("cannot compute gradients of an empty data set")
    n_targets = np.asarray(data.loss_mask)[:, 1:].sum(axis=1).astype(np.int32)
    empty = np.flatnonzero(n_targets == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} example(s) have no target tokens (rows {empty[:8].tolist()}"
            f"{' ...' if empty.size > 8 else ''}): their output, a mean over target tokens, is "
            "undefined; drop them or fix the loss mask"
        )
    graphdef, lora, frozen = _lora_split(model)
    for k, proj in enumerate(projections):
        try:
            proj.check_tree(lora)
        except ValueError as e:
            raise ValueError(f"projection {k} was built for another model: {e}") from None
    _warn_untrained(lora)

    n_dev = 1 if mesh is None else int(mesh.shape[DATA_AXIS])
    if chunk_size is None:
        dim = max(p.dim for p in projections)
        seq = int(np.flatnonzero(np.asarray(data.attention_mask).any(axis=0)).max(initial=0)) + 1
        chunk_size = auto_chunk_size(
            model, seq, len(projections), dim, budget_bytes=budget_bytes, n_devices=n_dev
        )
        chunk_size = min(chunk_size, -(-n // n_dev) * n_dev)  # no chunk larger than the data
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if chunk_size % n_dev:
        raise ValueError(
            f"chunk_size {chunk_size} is not a multiple of the mesh's {n_dev} data devices"
        )

    gs = None
    if store is not None:
        meta = grads_meta(model, data, projections, eps)
        if store_matches(store, meta):
            return load_grads(store)[0]
        gs = GradStore(store, meta, write=jax.process_index() == 0)
    start, saved_grads, saved_outputs = gs.done() if gs is not None else (0, [], [])

    step = _chunk_fn(graphdef, projections, eps)
    blocks = tuple(
        all_blocks(p) if 4 * p.n_params * p.dim <= P_CACHE_BYTES else None for p in projections
    )
    lora_d, frozen_d, blocks_d = replicate((lora, frozen, blocks), mesh)
    if mesh is None:
        lora_d, frozen_d, blocks_d = jax.device_put((lora_d, frozen_d, blocks_d))
    tokens, am, lm = (np.asarray(x) for x in (data.tokens, data.attention_mask, data.loss_mask))
    # Columns that are padding in every row change nothing at earlier positions (causal
    # attention, masked keys): drop them, the step gets cheaper and the results stay the same.
    width = int(np.flatnonzero(am.any(axis=0)).max(initial=0)) + 1
    tokens, am, lm = tokens[:, :width], am[:, :width], lm[:, :width]
    rows_local = chunk_size // jax.process_count()
    pid = jax.process_index()

    def dispatch(lo: int):
        idx = np.arange(lo, lo + chunk_size)
        valid = idx < n
        idx = np.where(valid, idx, 0)
        batch = Batch(tokens[idx], am[idx] & valid[:, None], lm[idx] & valid[:, None])
        if jax.process_count() > 1:  # each process feeds its own rows of the global chunk
            batch = jax.tree.map(lambda x: x[pid * rows_local : (pid + 1) * rows_local], batch)
        return step(lora_d, frozen_d, shard_batch(batch, mesh), blocks_d)

    def collect(lo: int, pending) -> None:
        projected, out, finite = _gather(pending)
        hi = min(lo + chunk_size, n)
        rows = hi - lo
        projected, out, finite = projected[:, :rows], out[:rows], finite[:rows]
        if not finite.all():
            i = lo + int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"non-finite gradient or output for example {i} (example_id "
                f"{int(data.example_id[i])}); check the model weights and this example's tokens"
            )
        saved_grads.append(projected)
        saved_outputs.append(out)
        if gs is not None:
            gs.save_chunk(lo, hi, projected, out)

    starts = list(range(start, n, chunk_size))
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("gradex grads", total=len(starts), eps="-")
        # Up to IN_FLIGHT chunks dispatched ahead: the device (or XLA's CPU threads) works on
        # them while the host pads the next chunk and saves the finished one, in row order.
        pending: deque = deque()

        def finish_one():
            lo, out = pending.popleft()
            collect(lo, out)
            rate = (min(lo + chunk_size, n) - start) / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=1, eps=f"{rate:,.0f}")

        for lo in starts:
            pending.append((lo, dispatch(lo)))
            if len(pending) >= IN_FLIGHT:
                finish_one()
        while pending:
            finish_one()

    result = ProjectedGrads(
        grads=np.concatenate(saved_grads, axis=1).astype(np.float32),
        outputs=np.concatenate(saved_outputs).astype(np.float32),
        n_targets=n_targets,
        example_id=np.asarray(data.example_id),
        source_id=np.asarray(data.source_id),
        sources=tuple(data.sources),
    )
    if gs is not None:
        gs.finish(result, projections)
    return result
