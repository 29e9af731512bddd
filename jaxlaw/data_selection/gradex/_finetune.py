"""Real LoRA fine-tunes for GradEx: theta*, many subsets at once, and their target losses.

`meta_train` makes theta* (fresh adapters on a base model, trained on every source);
`finetune_subsets` fine-tunes copies of a model on many subsets of a pool (the ground truth that
GradEx's estimates are checked against) and `subset_losses` scores a stack of LoRA states on a
target set; `compare_estimates` gives the agreement metrics of spec §4.5 (Pearson with a
bootstrap interval, Spearman, MSRE against a constant predictor)::

    theta = meta_train(base, LoraConfig(rank=4), pool, TrainConfig(steps=200), key=key)
    ft = finetune_subsets(theta, pool, sample_mask(key, 32, pool_sources, 0.5), config, key=key)
    true = subset_losses(theta, ft.lora, target)
    compare_estimates(estimate, true, constant=mean_loss(evaluate(theta, target)), key=key)
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from scipy import stats

from ..._types import ArrayLike, Bool, Float, Key
from ...data import TokenizedSet
from ...lora import LoraConfig, apply_lora, split_lora
from ...training import Batch, TrainConfig, example_losses, train_stack
from ...training import train as train_model

# ----------------------------------------------------------------------------- progress


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _stacked_batches(data: TokenizedSet, batch_size: int) -> Batch:
    """All of ``data`` as ``[batches, batch_size, seq]``, the padding rows fully masked."""
    n, seq = data.tokens.shape
    nb = -(-n // batch_size)
    pad = nb * batch_size - n

    def stack(x, fill):
        x = np.asarray(x)
        if pad:
            x = np.concatenate([x, np.full((pad, seq), fill, x.dtype)])
        return jnp.asarray(x.reshape(nb, batch_size, seq))

    return Batch(
        stack(data.tokens, 0), stack(data.attention_mask, False), stack(data.loss_mask, False)
    )


def _check_target(data: TokenizedSet, what: str) -> None:
    if data.tokens.shape[0] == 0:
        raise ValueError(f"the {what} is empty")
    if not np.any(np.asarray(data.loss_mask)[:, 1:]):
        raise ValueError(f"the {what} has no response tokens (its loss_mask is empty)")


def _chunks(n: int, chunk: int):
    """``(start, rows)`` of fixed-size chunks; the caller pads the last one to ``chunk``."""
    return [(lo, min(chunk, n - lo)) for lo in range(0, n, chunk)]


def _pad_rows(x, rows: int, chunk: int):
    """Pad the leading axis of every leaf of ``x`` from ``rows`` to ``chunk`` (repeat row 0)."""
    if rows == chunk:
        return x
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], chunk - rows, axis=0)]), x)


# ------------------------------------------------------------------------ real fine-tunes


class FineTunes(NamedTuple):
    """Result of `finetune_subsets`.

    Attributes:
        lora: the fine-tuned LoRA states stacked on a leading ``subsets`` axis (an `nnx.State`
            shaped like ``split_lora(model)[1]`` with one more axis).
        seconds: wall time (compilation included).
    """

    lora: Any
    seconds: float


def finetune_subsets(
    model: nnx.Module,
    data: TokenizedSet,
    mask: Bool[ArrayLike, "subsets examples"],
    config: TrainConfig,
    *,
    key: Key,
    subset_chunk: int = 2,
    progress: bool = True,
) -> FineTunes:
    """Real LoRA fine-tunes of ``model`` on many subsets of ``data`` at once (ground truth).

    A thin call to `jaxlaw.training.train_stack`: subset j trains the model's LoRA parameters
    (`nnx.LoRAParam`; base weights frozen) exactly as ``train(clone, take(data, members_j),
    config, key=fold_in(key, j))`` would: ``config.steps`` AdamW steps
    (`jaxlaw.training.make_optimizer`) of ``config.batch_size`` member rows, each epoch a
    fresh permutation of the members, the token-weighted mean response CE. Row j's run
    depends only on (key, j, mask[j]), not on the other rows or on ``subset_chunk``.

    Args:
        model: the starting point (theta*, or a base model with fresh adapters); not modified.
        data: the pool, a `jaxlaw.data.TokenizedSet`.
        mask: ``[subsets, examples]`` bool, the members of each subset (`sample_mask`).
        config: steps, batch size, learning rate and schedule.
        key: PRNG key of the data orders (and of LoRA dropout, if the adapters have any).
        subset_chunk: subsets trained at once (memory grows with it); the last chunk is
            padded, so every call with the same chunk compiles once.
        progress: progress bar (stderr).

    Returns:
        `FineTunes` with the stacked LoRA states, in the order of ``mask``.

    Raises:
        ValueError: the model has no adapters, ``mask`` does not fit ``data``, or a subset is
            empty.
    """
    if not jax.tree.leaves(split_lora(model)[1]):
        raise ValueError("finetune_subsets trains LoRA adapters: apply_lora to the model first")
    mask = np.asarray(mask)
    n = data.tokens.shape[0]
    if mask.ndim != 2 or mask.shape[1] != n or mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool [subsets, {n}], got {mask.dtype} {mask.shape}")
    sizes = mask.sum(axis=1)
    if np.any(sizes == 0):
        raise ValueError(f"subset {int(np.flatnonzero(sizes == 0)[0])} has no example")
    if not isinstance(subset_chunk, int) or subset_chunk < 1:
        raise ValueError(f"subset_chunk must be a positive int, got {subset_chunk!r}")
    keys = _subset_keys(key, jax.device_put(np.arange(mask.shape[0], dtype=np.uint32)))
    out = train_stack(
        model,
        data,
        mask,
        config,
        keys=keys,
        chunk=subset_chunk,
        progress=progress,
        description="fine-tunes",
    )
    return FineTunes(out.states, out.seconds)


@jax.jit
def _subset_keys(key, ids):
    return jax.vmap(lambda j: jr.fold_in(key, j))(ids)


# --------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=16)
def _stack_loss_fn(graphdef):
    def fn(stack, frozen, batches: Batch):
        def one(lora):
            model = nnx.merge(graphdef, lora, frozen)
            model.eval()

            def body(acc, b):
                return acc + jnp.sum(example_losses(model, b).total), None

            total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), batches)
            return total

        return jax.vmap(one)(stack)

    return jax.jit(fn)


def subset_losses(
    model: nnx.Module,
    lora_stack: Any,
    target: TokenizedSet,
    *,
    batch_size: int = 32,
    subset_chunk: int = 2,
    progress: bool = False,
) -> Float[np.ndarray, " subsets"]:
    """Target loss of ``model`` with each of a stack of LoRA states (e.g. `FineTunes.lora`).

    Args:
        model: supplies the architecture and the frozen base weights.
        lora_stack: LoRA states shaped like ``split_lora(model)[1]`` with a leading axis.
        target: the evaluation set.
        batch_size: target rows per forward pass.
        subset_chunk: LoRA states evaluated at once.
        progress: progress bar.

    Returns:
        Float64 ``[subsets]``: token-weighted mean response CE (nats/token), as
        ``mean_loss(evaluate(...))``.

    Raises:
        ValueError: an empty target or one without response tokens.
    """
    _check_target(target, "target set")
    graphdef, _, frozen = split_lora(model)
    fn = _stack_loss_fn(graphdef)
    batches = _stacked_batches(target, batch_size)
    count = float(np.sum(np.asarray(target.loss_mask)[:, 1:]))
    m = jax.tree.leaves(lora_stack)[0].shape[0]
    chunk = subset_chunk
    out = []
    with _progress(progress) as bar:
        task = bar.add_task("target losses", total=m)
        for lo, rows in _chunks(m, chunk):
            part = _pad_rows(
                jax.tree.map(lambda a, lo=lo, rows=rows: a[lo : lo + rows], lora_stack), rows, chunk
            )
            out.append(np.asarray(fn(part, frozen, batches))[:rows])
            bar.update(task, advance=rows)
    return np.concatenate(out).astype(np.float64) / count


# ------------------------------------------------------------------------------ metrics


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row pair of two ``[rows, n]`` arrays (NaN where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.sum(a * b, axis=1) / den, np.nan)


def compare_estimates(
    estimate: Float[ArrayLike, " subsets"],
    truth: Float[ArrayLike, " subsets"],
    constant: float,
    *,
    key: Key,
    n_bootstrap: int = 2000,
) -> dict[str, float]:
    """How well estimated subset losses match the real ones (spec §4.5 item 2).

    Args:
        estimate: L^(S) per subset.
        truth: L_true(S) per subset (real fine-tunes), same order.
        constant: the constant predictor's value, L(theta*) on the same target.
        key: PRNG key of the bootstrap (subsets resampled with replacement).
        n_bootstrap: bootstrap resamples for the 95% percentile interval of Pearson r.

    Returns:
        A dict: ``pearson``, ``spearman``, ``pearson_ci_low``, ``pearson_ci_high``, ``msre``
        (mean squared relative error ``mean(((L^ - L)/L)^2)``), ``msre_constant``, ``mse``,
        ``mse_constant``.

    Raises:
        ValueError: mismatched shapes, fewer than 3 subsets, or non-finite values.
    """
    e = np.asarray(estimate, np.float64)
    t = np.asarray(truth, np.float64)
    if e.shape != t.shape or e.ndim != 1 or e.size < 3:
        raise ValueError(f"estimate {e.shape} and truth {t.shape} must be [subsets], >= 3")
    if not (np.isfinite(e).all() and np.isfinite(t).all()):
        raise ValueError("estimates and true losses must be finite")
    idx = np.asarray(jr.randint(key, (n_bootstrap, e.size), 0, e.size))
    boot = _pearson_rows(e[idx], t[idx])  # all resamples at once, (n_bootstrap,)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
    return {
        "pearson": float(stats.pearsonr(e, t).statistic),
        "spearman": float(stats.spearmanr(e, t).statistic),
        "pearson_ci_low": float(lo),
        "pearson_ci_high": float(hi),
        "msre": float(np.mean(((e - t) / t) ** 2)),
        "msre_constant": float(np.mean(((constant - t) / t) ** 2)),
        "mse": float(np.mean((e - t) ** 2)),
        "mse_constant": float(np.mean((constant - t) ** 2)),
    }


def meta_train(
    base: nnx.Module,
    lora: LoraConfig,
    data: TokenizedSet,
    config: TrainConfig,
    *,
    key: Key,
    progress: bool = True,
) -> nnx.Module:
    """Stage B: theta*, a copy of ``base`` with fresh adapters LoRA-trained on all of ``data``.

    Args:
        base: the pre-trained model (not modified).
        lora: adapter targets, rank and scaling.
        data: every source's samples.
        config: optimisation settings (the spec: AdamW 1e-3, about 10 epochs).
        key: PRNG key of the adapters' ``A`` initialisation.
        progress: progress bar.

    Returns:
        The meta-trained model (base weights shared by value with ``base``, adapters trained).
    """
    model = nnx.clone(base)
    apply_lora(model, lora, rngs=nnx.Rngs(params=key))
    train_model(model, data, config, progress=progress, description="stage B (theta*)")
    return model
