"""The per-sample output GradEx linearises: the mean log-odds of the gold target tokens.

Entry points: `output_logodds` (from logits) and `sample_outputs` (from a model and a batch).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ..._types import Array, Bool, Float, Int
from ...training import Batch


def output_logodds(
    logits: Float[Array, "examples seq vocab"],
    tokens: Int[Array, "examples seq"],
    loss_mask: Bool[Array, "examples seq"],
    eps: float = 1e-3,
) -> Float[Array, " examples"]:
    """Mean log-odds of the gold target tokens of each example (GradEx's sample output f).

    Position t is scored by the logits at t-1 (the shift of `jaxlaw.training.token_nll`):
    ``p_t = softmax(logits[t-1])[tokens[t]]`` and the token's log-odds is
    ``m_t = log(p_t / (1 - p_t))``. Because ``sigmoid(m_t) = p_t``, the token's cross-entropy
    ``-log p_t`` is exactly the logistic loss ``softplus(-m_t)`` of its margin, which is why
    GradEx fits a logistic model on the gradients of ``f = mean_t m_t``.

    Math:
        ``logp_t = clip(log_softmax(logits[t-1])[tokens[t]], log(eps), log1p(-eps))``;
        ``m_t = logp_t - log(-expm1(logp_t))``; ``f = sum_t mask_t m_t / max(sum_t mask_t, 1)``.

    The reference code computes ``log((p - 1e-3) / (1 - p))``, which is NaN for ``p < 1e-3``;
    here ``log p`` comes from a log-softmax (no underflow) and is clipped so that
    ``1 - p >= eps``: the result is finite for every input and lies in
    ``[logit(eps), logit(1 - eps)]`` (+-6.907 for the default). A clipped token contributes no
    gradient (the clip is flat there).

    Args:
        logits: next-token logits, float (computed in float32).
        tokens: token ids.
        loss_mask: True on target (gold response) tokens; position 0 is never scored.
        eps: probability guard, ``0 < eps < 0.5``.

    Returns:
        Float32 ``[examples]``: the mean log-odds (nats) over each example's target tokens;
        0 for an example without any target token.

    Raises:
        ValueError: ``eps`` outside ``(0, 0.5)``.
    """
    _check_eps(eps)
    logp_all = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    logp = jnp.take_along_axis(logp_all, tokens[:, 1:, None], axis=-1)[..., 0]
    logp = jnp.clip(logp, math.log(eps), math.log1p(-eps))
    margin = logp - jnp.log(-jnp.expm1(logp))
    mask = loss_mask[:, 1:]
    # where() rather than a product: a masked position may hold -inf logits (NaN margins).
    total = jnp.sum(jnp.where(mask, margin, 0.0), axis=-1)
    count = jnp.sum(mask.astype(jnp.float32), axis=-1)
    return total / jnp.maximum(count, 1.0)


def sample_outputs(model: nnx.Module, batch: Batch, eps: float = 1e-3) -> Float[Array, " examples"]:
    """`output_logodds` of ``model`` on one ``[examples, seq]`` batch.

    The model runs as given: call ``model.eval()`` first if it has dropout (GradEx evaluates
    with dropout off; `jaxlaw.data_selection.gradex.projected_grads` does this itself).

    Args:
        model: a `jaxlaw.models` decoder, with or without LoRA adapters.
        batch: tokens and masks, each ``[examples, seq]``.
        eps: probability guard of `output_logodds`.

    Returns:
        Float32 ``[examples]`` sample outputs (0 for an example without target tokens).
    """
    logits = model(batch.tokens, batch.attention_mask)
    return output_logodds(logits, batch.tokens, batch.loss_mask, eps)


def _check_eps(eps: float) -> None:
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
