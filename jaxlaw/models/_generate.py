"""Autoregressive decoding with a key/value cache: `generate` and its result, `Generation`.

The prompt batch runs through `Decoder.extend` once (prefill), then a ``lax.while_loop`` feeds
one token per example per step until every example has hit a stop token or ``max_new_tokens``
is reached. Everything inside is one jitted program with static shapes, compiled once per
``(examples, prompt bucket, max_new_tokens)`` and decoding mode (greedy or sampled)::

    out = generate(model, tokens, mask, max_new_tokens=64, stop_tokens=(tok.eos_id,))
    texts = [tok.decode(row[:n]) for row, n in zip(out.tokens, out.lengths)]
"""

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx

from .._types import Array, ArrayLike, Bool, Float, Int, Key
from ._decoder import Decoder


class Generation(NamedTuple):
    """What `generate` returns.

    Attributes:
        tokens: ``[examples, max_new_tokens]`` int32 new token ids; after an example's stop
            token (and beyond an early exit) the row holds ``pad_id``.
        lengths: ``[examples]`` int32, new tokens up to and including the stop token (all
            ``max_new_tokens`` for an example that never stopped).
        finished: ``[examples]`` bool, True where the example emitted a stop token.
    """

    tokens: Int[Array, "examples new"]
    lengths: Int[Array, " examples"]
    finished: Bool[Array, " examples"]


def generate(
    model: Decoder,
    tokens: Int[ArrayLike, "examples seq"],
    attention_mask: Bool[ArrayLike, "examples seq"] | None = None,
    *,
    max_new_tokens: int,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    key: Key | None = None,
    prompt_bucket: int = 32,
) -> Generation:
    """Continue every prompt of a batch by up to ``max_new_tokens`` tokens, KV-cached.

    Prompts may be left- or right-padded (``attention_mask`` says which tokens are real): each
    example's positions count its real tokens only, and its first new token is predicted
    after its last real one, so padding on either side gives the tokens of the unpadded
    prompt. The prompt width is padded (on the left) to a multiple of ``prompt_bucket`` so
    that batches of similar widths share one compiled program. With ``temperature == 0``
    decoding is greedy (argmax); otherwise each token is drawn from the softmax of
    ``logits / temperature`` restricted to the nucleus: the most likely tokens whose
    probabilities, summed in decreasing order before each one, stay below ``top_p`` (the rule
    of transformers' ``TopPLogitsWarper``). Step ``i`` draws with ``jr.fold_in(key, i)``: same
    key, same tokens. The loop exits early once every example has finished. With LongRoPE
    (Phi-3) the step whose longest position first passes ``rope_original_max_positions``
    recomputes the whole cache with the long factors, as transformers does; the factors are
    chosen for the whole batch, so a row's tokens can depend on its batch there. Runs the model
    in eval mode (no LoRA dropout); LoRA-adapted models decode through their adapters.

    Args:
        model: the language model (plain or LoRA-adapted).
        tokens: ``[examples, seq]`` prompt token ids, padded.
        attention_mask: ``[examples, seq]``, True at real prompt tokens; ``None``: all real.
        max_new_tokens: tokens to generate per example, at least 1.
        stop_tokens: ids that end an example (e.g. the tokenizer's eos); the stop token is
            emitted and counted in ``lengths``, then the example emits ``pad_id``.
        pad_id: id written after an example has stopped and into the bucket padding.
        temperature: 0 for greedy decoding, else the softmax temperature (> 0).
        top_p: nucleus mass, in (0, 1]; 1 samples from the whole distribution.
        key: PRNG key, required when ``temperature > 0``.
        prompt_bucket: the prompt width is rounded up to a multiple of this (>= 1).

    Returns:
        `Generation` of the new tokens, their lengths and which examples finished.

    Raises:
        ValueError: bad sizes or sampling settings, a mask shape unlike ``tokens``, an example
            with no real prompt token, no ``key`` for sampling, or (learned positions) a prompt
            width plus ``max_new_tokens`` beyond the model's ``max_positions``.
    """
    c = model.config
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be an int [examples, seq] array, got {tokens.dtype}{list(tokens.shape)}"
        )
    mask = np.ones(tokens.shape, bool) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != tokens.shape:
        raise ValueError(
            f"attention_mask shape {list(mask.shape)} != tokens shape {list(tokens.shape)}"
        )
    mask = mask.astype(bool)
    if not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(prompt_bucket, int | np.integer) or prompt_bucket < 1:
        raise ValueError(f"prompt_bucket must be an int >= 1, got {prompt_bucket!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature > 0 and key is None:
        raise ValueError(f"sampling (temperature={temperature}) needs a key")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(f"prompt {int(empty[0])} has no real token (attention_mask all False)")
    examples, width = tokens.shape
    if c.positions == "learned" and width + max_new_tokens > c.max_positions:
        raise ValueError(
            f"prompt width {width} + max_new_tokens {max_new_tokens} > max_positions "
            f"{c.max_positions}"
        )
    bad = [t for t in stop_tokens if not 0 <= t < c.vocab_size]
    if bad:
        raise ValueError(f"stop token {bad[0]} outside the vocabulary [0, {c.vocab_size})")
    # pad_id is fed to the model (bucket padding, finished examples): it must embed.
    if not 0 <= pad_id < c.vocab_size:
        raise ValueError(f"pad_id {pad_id} outside the vocabulary [0, {c.vocab_size})")
    # Left-pad to the bucket: masked slots, so the numbers do not change, only the shape.
    pad = -width % int(prompt_bucket)
    tokens = np.pad(tokens.astype(np.int32), ((0, 0), (pad, 0)), constant_values=pad_id)
    mask = np.pad(mask, ((0, 0), (pad, 0)))
    greedy = temperature == 0
    graphdef, state = nnx.split(model)
    return _generate_jit(
        graphdef,
        state,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jr.key(0) if greedy else key,
        jnp.float32(1.0 if greedy else temperature),
        jnp.float32(top_p),
        max_new_tokens=int(max_new_tokens),
        stop_tokens=tuple(int(t) for t in stop_tokens),
        pad_id=int(pad_id),
        greedy=greedy,
    )


@functools.partial(
    jax.jit, static_argnames=("graphdef", "max_new_tokens", "stop_tokens", "pad_id", "greedy")
)
def _generate_jit(
    graphdef,
    state,
    tokens,
    mask,
    key,
    temperature,
    top_p,
    *,
    max_new_tokens,
    stop_tokens,
    pad_id,
    greedy,
) -> Generation:
    model = nnx.merge(graphdef, state)
    model.eval()
    c = model.config
    examples, width = tokens.shape
    stops = jnp.asarray(stop_tokens, jnp.int32)

    def pick(logits, step):
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        masked = _nucleus_logits(logits, temperature, top_p)
        return jr.categorical(jr.fold_in(key, step), masked, axis=-1).astype(jnp.int32)

    def is_stop(tok):
        return jnp.any(tok[:, None] == stops[None, :], axis=-1)

    # The last new token is never fed back, so the cache needs one slot fewer.
    cache = model.init_cache(examples, width + max_new_tokens - 1)
    hidden, cache = model.extend_hidden_states(tokens, mask, cache)
    last = jnp.max(jnp.where(mask, jnp.arange(width, dtype=jnp.int32)[None, :], 0), axis=-1)
    # Only each prompt's last real token needs logits.
    hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)  # (examples, 1, embed)
    tok = pick(model.unembed(hidden)[:, 0], 0)
    out = jnp.full((examples, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok)
    finished = is_stop(tok)
    lengths = jnp.ones((examples,), jnp.int32)

    def cond(carry):
        step, _, _, finished, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(finished)

    def feed(tok, out, cache, step):
        return model.extend(tok[:, None], jnp.ones((examples, 1), bool), cache)

    def rebuild(tok, out, cache, step):
        """The cache of prompt + fed tokens, recomputed from scratch (LongRoPE's switch)."""
        fed = jnp.arange(max_new_tokens - 1, dtype=jnp.int32)[None, :] < step
        history = jnp.concatenate([tokens, out[:, : max_new_tokens - 1]], axis=1)
        fed = jnp.concatenate([mask, jnp.broadcast_to(fed, (examples, fed.shape[1]))], axis=1)
        fresh = model.init_cache(examples, cache.valid.shape[1])
        hidden, fresh = model.extend_hidden_states(history, fed, fresh)
        # Slots past the fed tokens hold masked padding; the loop overwrites them in order.
        fresh = fresh._replace(index=width + step)
        hidden = jax.lax.dynamic_slice_in_dim(hidden, width + step - 1, 1, axis=1)
        return model.unembed(hidden), fresh

    def body(carry):
        step, tok, out, finished, lengths, cache = carry
        if c.rope_long_factor is None:
            logits, cache = feed(tok, out, cache, step)
        else:
            # LongRoPE switches to its long factors once the sequence outgrows the original
            # context; transformers' Phi-3 then recomputes its whole cache, and so does this.
            position = jnp.max(jnp.sum(cache.valid, axis=-1, dtype=jnp.int32))
            crossing = position == c.rope_original_max_positions
            logits, cache = jax.lax.cond(crossing, rebuild, feed, tok, out, cache, step)
        tok = jnp.where(finished, pad_id, pick(logits[:, 0], step))
        out = jax.lax.dynamic_update_slice(out, tok[:, None], (jnp.zeros_like(step), step))
        lengths = lengths + (~finished).astype(jnp.int32)
        return step + 1, tok, out, finished | is_stop(tok), lengths, cache

    init = (jnp.ones((), jnp.int32), tok, out, finished, lengths, cache)
    _, _, out, finished, lengths, _ = jax.lax.while_loop(cond, body, init)
    return Generation(out, lengths, finished)


def _nucleus_logits(
    logits: Float[Array, "examples vocab"], temperature: Float[Array, ""], top_p: Float[Array, ""]
) -> Float[Array, "examples vocab"]:
    """``logits / temperature`` with every token outside the top-``top_p`` nucleus at -inf.

    A token stays when the probability of the tokens more likely than it sums to less than
    ``top_p``, so the most likely token always stays (ties at the cut stay together).
    """
    scaled = logits / temperature
    desc = -jnp.sort(-scaled, axis=-1)
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.sum(before < top_p, axis=-1)  # >= 1: before[0] == 0 < top_p
    cut = jnp.take_along_axis(desc, kept[:, None] - 1, axis=-1)  # (examples, 1)
    return jnp.where(scaled >= cut, scaled, -jnp.inf)
