"""Response-token cross-entropy per example: the one loss that training, S2L and GradEx share."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .._types import Array, Bool, Float, Int


class Batch(NamedTuple):
    """Padded token batch on device (from `jaxlaw.data.TokenizedSet`).

    Attributes:
        tokens: token ids, ``[..., examples, seq]`` int32, right-padded.
        attention_mask: True on real tokens.
        loss_mask: True on target tokens (position t is predicted from positions < t).
    """

    tokens: Int[Array, "... examples seq"]
    attention_mask: Bool[Array, "... examples seq"]
    loss_mask: Bool[Array, "... examples seq"]


class ExampleLoss(NamedTuple):
    """Summed target-token negative log-likelihood (nats) and target-token count per example.

    Sums and counts rather than means, so that means over any set of examples or tokens can be
    formed exactly later; `mean` is the per-example mean, 0 for an example with no targets.
    """

    total: Float[Array, "... examples"]
    count: Float[Array, "... examples"]

    @property
    def mean(self) -> Float[Array, "... examples"]:
        return self.total / jnp.maximum(self.count, 1.0)


def token_nll(
    logits: Float[Array, "examples seq vocab"],
    tokens: Int[Array, "examples seq"],
    loss_mask: Bool[Array, "examples seq"],
) -> ExampleLoss:
    """Next-token NLL of the masked targets: logits at t-1 score token t."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    w = loss_mask[:, 1:].astype(nll.dtype)
    # where() rather than a product: a masked position with -inf logits must not give NaN.
    total = jnp.sum(jnp.where(loss_mask[:, 1:], nll, 0.0), axis=-1)
    return ExampleLoss(total, jnp.sum(w, axis=-1))


def example_losses(model: nnx.Module, batch: Batch) -> ExampleLoss:
    """Per-example response-token loss of ``model`` on one ``[examples, seq]`` batch.

    Args:
        model: a `jaxlaw.models` decoder (with or without LoRA adapters).
        batch: tokens and masks, each ``[examples, seq]``.

    Returns:
        `ExampleLoss` with ``[examples]`` sums and counts.
    """
    logits = model(batch.tokens, batch.attention_mask)
    return token_nll(logits, batch.tokens, batch.loss_mask)
