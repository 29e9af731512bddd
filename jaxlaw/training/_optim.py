"""Optimizer factory: AdamW with linear warmup and cosine decay, optional global-norm clipping.

The schedule's numbers (peak rate, warmup, total steps, final rate) live in the optimizer
*state* as arrays rather than in the compiled step, so runs that differ only in length or
learning rate (every cell of a `jaxlaw.sweep`) share one compiled train step.
"""

from typing import NamedTuple

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


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate ``make_optimizer(config)`` applies at ``step`` (0-based)."""
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    end = config.lr * config.end_lr_ratio
    return float(warmup_cosine(float(step), config.lr, warmup, config.steps, end, xp=np))


def compile_key(config: TrainConfig) -> tuple:
    """The fields of ``config`` baked into a compiled train step (the rest are arrays)."""
    return (config.b1, config.b2, config.weight_decay, config.clip_norm)
