"""Causal self-attention with grouped-query heads and (partial) rotary position embeddings.

`Attention` is the module a `Decoder` block holds as ``attn``: ``__call__`` attends within one
sequence (training), ``extend`` writes new keys/values into a `LayerCache` and attends over it
(decoding); both share the projection and attention code. `apply_rotary` is the rotary
embedding in Hugging Face's ``rotate_half`` convention (Llama, GPT-NeoX, Qwen2).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._types import Array, Bool, Float, Int
from ._cache import LayerCache
from ._config import ModelConfig
from ._linear import Linear


def apply_rotary(
    x: Float[Array, "examples seq heads head_dim"],
    *,
    ndims: int,
    theta: float,
    positions: Int[Array, "examples seq"] | None = None,
    factors: Float[Array, " half"] | None = None,
    attention_factor: float = 1.0,
) -> Float[Array, "examples seq heads head_dim"]:
    """Rotate the first ``ndims`` dims of every head by position, HF ``rotate_half`` style.

    Position ``p`` rotates the pair ``(x[i], x[i + ndims/2])`` by angle
    ``p * theta**(-2i/ndims) / factors[i]``; dims from ``ndims`` on pass through unchanged
    (Pythia's partial rotary). The angles, cos and sin are computed in float32 and cast to
    ``x.dtype``, as transformers does.

    Args:
        x: queries or keys, head-split.
        ndims: rotated dims per head (even, at most ``head_dim``).
        theta: RoPE base wavelength.
        positions: the position of every token, per example (e.g. counting real tokens only,
            so that left padding does not shift them). ``None`` means ``arange(seq)`` for every
            example, which is right for right-padded batches.
        factors: LongRoPE's ``ndims // 2`` frequency divisors; ``None`` means all 1.
        attention_factor: LongRoPE's multiplier of cos and sin.

    Returns:
        ``x`` with rotary embeddings applied, same dtype.
    """
    seq = x.shape[1]
    wavelength = theta ** (jnp.arange(0, ndims, 2, dtype=jnp.float32) / ndims)
    inv_freq = 1.0 / (wavelength if factors is None else factors * wavelength)
    # Without positions, the very program of the training forward (one angle table for all).
    if positions is None:
        angles = jnp.arange(seq, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # (seq, nd/2)
    else:
        angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    # (1 or examples, seq, 1, ndims): broadcast over heads.
    angles = angles[None, :, None, :] if positions is None else angles[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if attention_factor != 1.0:
        cos, sin = cos * attention_factor, sin * attention_factor
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    x_rot, x_pass = x[..., :ndims], x[..., ndims:]
    x1, x2 = x_rot[..., : ndims // 2], x_rot[..., ndims // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def alibi_slopes(n_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes, float32, as BLOOM computes them (Press et al. 2022).

    Math: for ``n`` a power of two, ``slope_h = 2**(-8 (h + 1) / n)``; otherwise the ``n'``
    (largest power of two below ``n``) slopes of ``n'``, then every other slope of ``2 n'``.

    Args:
        n_heads: number of attention heads.

    Returns:
        ``[n_heads]`` float32 slopes.
    """

    def powers(n: int, exponents: np.ndarray) -> np.ndarray:
        # A float32 base raised in float64, then rounded once: torch.pow's float32 result.
        base = np.float64(np.float32(2 ** (-(2 ** -(math.log2(n) - 3)))))
        return (base**exponents).astype(np.float32)

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = powers(closest, np.arange(1, 1 + closest))
    if closest != n_heads:
        remaining = min(closest, n_heads - closest)
        slopes = np.concatenate([slopes, powers(2 * closest, np.arange(1, 1 + 2 * remaining, 2))])
    return slopes


@jax.custom_jvp
def softmax(x: Float[Array, "... keys"]) -> Float[Array, "... keys"]:
    """Softmax over the last axis, differentiated by its closed form ``y * (t - sum(y * t))``.

    The same values as ``jax.nn.softmax(x, axis=-1)``. In jax 0.10 that function differentiates
    through ``exp / sum`` unless ``jax_softmax_custom_jvp`` is set globally, and its backward
    pass on CPU cost 5-10% of a GradEx per-sample-gradient step (spec's model, 2 cores); this
    rule is one multiply and one reduction.
    """
    unnormalized = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = softmax(x)
    return y, y * (t - jnp.sum(y * t, axis=-1, keepdims=True))


class Attention(nnx.Module):
    """Multi-head / grouped-query causal self-attention.

    Projections are `Linear` modules named after the checkpoints they mirror: either one fused
    ``qkv`` (GPT-2 ``c_attn``, NeoX ``query_key_value``) whose output is ``[q | k | v]`` with
    heads contiguous inside each part, or ``q_proj``/``k_proj``/``v_proj`` (Llama, Qwen2); the
    output projection is ``o_proj``. Query head ``h`` reads key/value head
    ``h // (n_heads // n_kv_heads)``, as transformers' ``repeat_kv`` does. Scores are scaled by
    ``head_dim**-0.5`` (``query_pre_attn_scalar**-0.5`` when set), soft-capped when
    ``attn_softcap`` is set, ALiBi's ``slope_h * key_position`` is added with
    ``positions="alibi"``, and the softmax runs in float32. Sliding windows live in the
    ``mask`` the `Decoder` passes in.

    Args:
        config: the architecture.
        rngs: random streams for the projection kernels.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        q_size, kv_size = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        kw = dict(dtype=c.compute_dtype, param_dtype=c.storage_dtype, rngs=rngs)
        if c.fused_qkv:
            self.qkv = Linear(c.hidden_size, q_size + 2 * kv_size, use_bias=c.qkv_bias, **kw)
        else:
            self.q_proj = Linear(c.hidden_size, q_size, use_bias=c.qkv_bias, **kw)
            self.k_proj = Linear(c.hidden_size, kv_size, use_bias=c.qkv_bias, **kw)
            self.v_proj = Linear(c.hidden_size, kv_size, use_bias=c.qkv_bias, **kw)
        self.o_proj = Linear(q_size, c.hidden_size, use_bias=c.attn_out_bias, **kw)

    def __call__(
        self,
        x: Float[Array, "examples seq embed"],
        mask: Bool[Array, "examples seq seq"],
    ) -> Float[Array, "examples seq embed"]:
        """Attend from every query position to the keys ``mask[b, query, key]`` allows.

        Positions are ``arange(seq)`` (see `apply_rotary`).

        Args:
            x: normalised residual stream.
            mask: True where the query may attend to the key (causal and not padding). A query
                row with no allowed key gets uniform weights instead of NaN.

        Returns:
            The attention output after ``o_proj``.
        """
        q, k, v = self._project(x, None)
        return self._attend(q, k, v, mask, None)

    def extend(
        self,
        x: Float[Array, "examples seq embed"],
        mask: Bool[Array, "examples seq slots"],
        positions: Int[Array, "examples seq"],
        cache: LayerCache,
        index: Int[Array, ""],
        slot_positions: Int[Array, "examples slots"],
    ) -> tuple[Float[Array, "examples seq embed"], LayerCache]:
        """Write the new tokens' keys/values at cache slots ``index ..`` and attend over the cache.

        Args:
            x: normalised residual stream of the new tokens.
            mask: True where a new token may attend to a cache slot (the slots written here
                included).
            positions: position of every new token (rotary embeddings).
            cache: this layer's keys and values so far.
            index: first slot to write; ``index + seq`` must not exceed ``slots``.
            slot_positions: the position of every cache slot, these tokens' included (ALiBi's
                key positions).

        Returns:
            The attention output after ``o_proj``, and the updated cache.
        """
        q, k, v = self._project(x, positions)
        zero = jnp.zeros_like(index)  # start indices must share one dtype, also under x64
        start = (zero, index, zero, zero)
        k = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start)
        v = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start)
        return self._attend(q, k, v, mask, slot_positions), LayerCache(k, v)

    def _project(self, x, positions):
        """Head-split queries, keys and values; rotary applied at ``positions``."""
        c = self.config
        examples, seq, _ = x.shape
        q_size, kv_size = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        if c.fused_qkv:
            qkv = self.qkv(x)
            q, k, v = jnp.split(qkv, [q_size, q_size + kv_size], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(examples, seq, c.n_heads, c.head_dim)
        k = k.reshape(examples, seq, c.n_kv_heads, c.head_dim)
        v = v.reshape(examples, seq, c.n_kv_heads, c.head_dim)
        if c.positions == "rotary":
            rope = dict(ndims=c.rotary_ndims, theta=c.rope_theta, positions=positions)
            if c.rope_long_factor is not None:
                rope |= self._longrope(seq, positions)
            q, k = apply_rotary(q, **rope), apply_rotary(k, **rope)
        return q, k, v

    def _longrope(self, seq, positions):
        """LongRoPE's factors for this call: long once ``max(position) + 1`` exceeds the original
        context (static in the training forward, where positions are ``arange(seq)``)."""
        c = self.config
        short = jnp.asarray(c.rope_short_factor, jnp.float32)
        long = jnp.asarray(c.rope_long_factor, jnp.float32)
        if positions is None:
            factors = long if seq > c.rope_original_max_positions else short
        else:
            factors = jnp.where(jnp.max(positions) + 1 > c.rope_original_max_positions, long, short)
        return dict(factors=factors, attention_factor=c.rope_attention_factor)

    def _attend(self, q, k, v, mask, key_positions):
        """Grouped-query attention of ``q`` [b, seq] over ``k``/``v`` [b, keys], then ``o_proj``;
        ``key_positions`` [b, keys] (``None``: ``arange(keys)``) feed ALiBi only."""
        c = self.config
        examples, seq = q.shape[:2]
        groups = c.n_heads // c.n_kv_heads
        q = q.reshape(examples, seq, c.n_kv_heads, groups, c.head_dim)
        # float32 scores even from bf16 inputs: the softmax is where low precision hurts most.
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32)
        scores = scores * (c.query_pre_attn_scalar or c.head_dim) ** -0.5
        if c.attn_softcap is not None:
            scores = jnp.tanh(scores / c.attn_softcap) * c.attn_softcap
        if c.positions == "alibi":
            slopes = jnp.asarray(alibi_slopes(c.n_heads)).reshape(c.n_kv_heads, groups)
            if key_positions is None:
                key_positions = jnp.arange(k.shape[1])[None, :]
            keys = key_positions.astype(jnp.float32)[:, None, None, None, :]
            scores = scores + slopes[None, :, :, None, None] * keys  # (b, kv, groups, 1, keys)
        # A finite fill (not -inf) keeps fully masked rows finite: softmax makes them uniform.
        scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
        probs = softmax(scores).astype(v.dtype)
        out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
        return self.o_proj(out.reshape(examples, seq, c.n_heads * c.head_dim))
