"""Optimizer factory: AdamW with linear warmup and cosine decay, optional global-norm clipping.

The schedule's numbers (peak rate, warmup, total steps, final rate) live in the optimizer
*state* as arrays rather than in the compiled step, so runs that differ only in length or
learning rate (every cell of a `jaxlaw.sweep`) share one compiled train step.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._config import TrainConfig


class ScheduleState(NamedTuple):
    count: jnp.ndarray
    peak: jnp.ndarray
    warmup: jnp.ndarray
    total: jnp.ndarray
    end: jnp.ndarray


def warmup_cosine(count, peak, warmup, total, end, xp=jnp):
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``end`` at
    ``total``; constant ``end`` afterwards. ``xp=numpy`` evaluates it on the host."""
    warm = peak * count / xp.maximum(warmup, 1.0)
    frac = xp.clip((count - warmup) / xp.maximum(total - warmup, 1.0), 0.0, 1.0)
    decay = end + 0.5 * (peak - end) * (1.0 + xp.cos(xp.pi * frac))
    return xp.where(count < warmup, warm, decay)


def _scale_by_schedule(config: TrainConfig) -> optax.GradientTransformation:
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))

    def init(params):
        del params
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        return ScheduleState(
            jnp.zeros((), jnp.int32),
            f(config.lr),
            f(warmup),
            f(config.steps),
            f(config.lr * config.end_lr_ratio),
        )

    def update(updates, state: ScheduleState, params=None):
        del params
        lr = warmup_cosine(state.count.astype(jnp.float32), *state[1:])
        updates = optax.tree.scale(-lr, updates)
        return updates, state._replace(count=state.count + 1)

    return optax.GradientTransformation(init, update)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW over the trainable state with the learning-rate schedule of ``config``.

    ``clip_by_global_norm(clip_norm)`` (unless None), Adam moments, decoupled weight decay and
    the warmup + cosine rate (`learning_rate`), in optax's ``adamw`` order.
    """
    parts = [
        optax.scale_by_adam(b1=config.b1, b2=config.b2),
        optax.add_decayed_weights(config.weight_decay),
        _scale_by_schedule(config),
    ]
    if config.clip_norm is not None:
        parts.insert(0, optax.clip_by_global_norm(config.clip_norm))
    return optax.chain(*parts)


def schedule_numbers(config: TrainConfig) -> np.ndarray:
    """``[peak, warmup, total, end]`` of ``config``'s schedule, float32 (`with_schedule`)."""
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    return np.asarray(
        [config.lr, warmup, config.steps, config.lr * config.end_lr_ratio], np.float32
    )


def with_schedule(opt_state, numbers):
    """``opt_state`` with its schedule's numbers replaced by ``numbers`` (`schedule_numbers`),
    so one compiled ``init`` serves runs of every length and rate."""

    def put(s):
        if isinstance(s, ScheduleState):
            return s._replace(peak=numbers[0], warmup=numbers[1], total=numbers[2], end=numbers[3])
        return s

    return jax.tree.map(put, opt_state, is_leaf=lambda s: isinstance(s, ScheduleState))


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate ``make_optimizer(config)`` applies at ``step`` (0-based)."""
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    end = config.lr * config.end_lr_ratio
    return float(warmup_cosine(float(step), config.lr, warmup, config.steps, end, xp=np))


# Fields that reach the optimizer only through its state (the schedule's numbers) or not at all
# (the loop's own settings; batch shapes retrace by themselves).
_NOT_COMPILED = dict(
    steps=1,
    batch_size=1,
    accum_steps=1,
    lr=1.0,
    warmup_steps=0,
    end_lr_ratio=1.0,
    seed=0,
    log_every=1,
    group_by_length=False,
    checkpoint_every=0,
    keep_checkpoints=1,
)


def compile_key(config: TrainConfig) -> TrainConfig:
    """``config`` with every field that a compiled train step does not bake in reset.

    Everything else (today ``b1``, ``b2``, ``weight_decay``, ``clip_norm``, and any field added
    later) stays in the key, so a cached step never applies another configuration's optimizer.
    `make_optimizer` of the key gives the right ``update`` but not the right ``init``: initialise
    the state from the run's own config.
    """
    return dataclasses.replace(config, **_NOT_COMPILED)
