"""Pure, jitted train and eval steps over ``(trainable, opt_state, frozen, batch)``."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .._types import Array, Float, Key
from ..lora import seed_dropout
from ._loss import Batch, ExampleLoss, example_losses


class StepMetrics(NamedTuple):
    """What one train step reports.

    Attributes:
        loss: mean NLL over every target token of the step's batch (nats/token).
        grad_norm: global norm of that mean loss's gradient (before clipping).
        tokens: target tokens in the batch.
        examples: `ExampleLoss` of each example, ``[accum_steps * micro_batch]``, from the
            parameters before the update.
    """

    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    tokens: Float[Array, ""]
    examples: ExampleLoss


def _model(graphdef, trainable, frozen, key: Key | None) -> nnx.Module:
    model = nnx.merge(graphdef, trainable, frozen)
    if key is None:
        model.eval()
    else:
        model.train()
        seed_dropout(model, key)
    return model


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
    """The jitted step ``(trainable, opt_state, frozen, batch, key) -> (trainable, opt_state,
    StepMetrics)``.

    ``batch`` leaves are ``[accum_steps, micro_batch, seq]``: the step scans over the
    micro-batches, sums the gradients of the summed token NLL and divides by the total
    target-token count, so it equals one step on the whole batch. ``key`` seeds the LoRA
    dropout (derive it from the step, ``jr.fold_in(key, step)``, to make runs resumable).
    ``trainable`` and ``opt_state`` are donated. On a mesh, pass ``batch`` sharded over its
    ``data`` axis (`jaxlaw.training.shard_batch`) and the states replicated: XLA then
    all-reduces the gradients.

    Args:
        graphdef: from `jaxlaw.lora.split_lora`.
        tx: e.g. `make_optimizer(config)`.
    """
    return jax.jit(train_step_fn(graphdef, tx), donate_argnums=(0, 1))


def train_step_fn(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
    """The pure (unjitted) step of `make_train_step`, for callers that put it inside their own
    compiled loop (`jaxlaw.training.train`'s segments)."""

    def summed_loss(trainable, frozen, micro: Batch, key):
        out = example_losses(_model(graphdef, trainable, frozen, key), micro)
        return jnp.sum(out.total), out

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)

    def step(trainable, opt_state, frozen, batch: Batch, key: Key):
        def body(acc, xs):
            micro, k = xs
            (_, out), g = grad_fn(trainable, frozen, micro, k)
            return jax.tree.map(jnp.add, acc, g), out

        keys = jax.random.split(key, batch.tokens.shape[0])
        zeros = jax.tree.map(jnp.zeros_like, trainable)
        grads, outs = jax.lax.scan(body, zeros, (batch, keys))
        n_tokens = jnp.sum(outs.count)
        grads = jax.tree.map(lambda g: g / jnp.maximum(n_tokens, 1.0), grads)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        flat = ExampleLoss(outs.total.reshape(-1), outs.count.reshape(-1))
        metrics = StepMetrics(
            loss=jnp.sum(outs.total) / jnp.maximum(n_tokens, 1.0),
            grad_norm=optax.tree.norm(grads),
            tokens=n_tokens,
            examples=flat,
        )
        return trainable, opt_state, metrics

    return step


def make_eval_step(graphdef: nnx.GraphDef):
    """The jitted ``(trainable, frozen, batch) -> ExampleLoss`` on an ``[examples, seq]`` batch
    (no dropout)."""

    def step(trainable, frozen, batch: Batch) -> ExampleLoss:
        return example_losses(_model(graphdef, trainable, frozen, None), batch)

    return jax.jit(step)
