"""`Decoder`: the decoder-only transformer behind every supported family, as a Flax NNX module.

One module tree for GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral, Phi-3 and Gemma-2, switched
by `ModelConfig`::

    Decoder
      embed            nnx.Embed [vocab, hidden]
      embed_norm       Norm                                (embed_norm only)
      pos_embed        nnx.Embed [max_positions, hidden]   (learned positions only)
      blocks[i]        nnx.List of Block
        attn_norm      Norm
        attn           Attention: qkv | q_proj, k_proj, v_proj; o_proj
        attn_post_norm Norm                                (post_norms only)
        mlp_norm       Norm
        mlp            MLP: up_proj, gate_proj (gated) | gate_up_proj (fused); down_proj
        mlp_post_norm  Norm                                (post_norms only)
      final_norm       Norm                                (norm_before only)
      lm_head          Linear [hidden, vocab]              (untied only)

Every projection is a `Linear`, so `jaxlaw.lora` can target them by path (``attn\\.qkv``,
``mlp\\.down_proj``, ...). There is no dropout anywhere. The entry points are `Decoder` and
`init_model`; `Decoder.init_cache` / `Decoder.extend` are the key/value-cache path that
`jaxlaw.models.generate` decodes with, sharing every block's code with the training forward.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from .._types import Array, Bool, Float, Int, Key
from ._attention import Attention
from ._cache import KVCache, LayerCache
from ._config import ModelConfig
from ._linear import Linear


def _last_axis(v: Array, like: Array) -> Array:
    """``v`` of shape [d] reshaped to broadcast over ``like``'s leading axes explicitly."""
    return jnp.expand_dims(v, tuple(range(like.ndim - 1)))


class Norm(nnx.Module):
    """LayerNorm (``scale``, ``bias``) or RMSNorm (``scale`` only), computed in float32.

    With ``config.norm_plus_one`` (Gemma) the output is multiplied by ``1 + scale`` and the
    scale starts at zero.

    Args:
        size: normalised width.
        config: supplies ``norm``, ``norm_eps``, ``norm_plus_one`` and the dtypes.
    """

    def __init__(self, size: int, config: ModelConfig):
        self.kind = config.norm
        self.eps = config.norm_eps
        self.dtype = config.compute_dtype
        self.plus_one = config.norm_plus_one
        init = jnp.zeros if self.plus_one else jnp.ones
        self.scale = nnx.Param(init((size,), config.storage_dtype))
        layernorm = config.norm == "layernorm"
        self.bias = nnx.Param(jnp.zeros((size,), config.storage_dtype)) if layernorm else None

    def __call__(self, x: Float[Array, "*batch embed"]) -> Float[Array, "*batch embed"]:
        x = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - x.mean(axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(jnp.square(x).mean(axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        y = y * _last_axis(1.0 + scale if self.plus_one else scale, y)
        if self.bias is not None:
            y = y + _last_axis(self.bias[...].astype(jnp.float32), y)
        return y.astype(self.dtype)


class MLP(nnx.Module):
    """``down_proj(act(up_proj(x)))``, or ``down_proj(act(gate_proj(x)) * up_proj(x))`` when gated.

    With ``fused_gate_up`` (Phi-3) one ``gate_up_proj`` computes ``[gate | up]`` instead of
    ``gate_proj`` and ``up_proj`` (both ``None`` then).

    Args:
        config: the architecture.
        rngs: random streams for the kernels.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        self.activation = c.activation
        kw = dict(use_bias=c.mlp_bias, dtype=c.compute_dtype, param_dtype=c.storage_dtype)
        h, m = c.hidden_size, c.intermediate_size
        self.gate_up_proj = Linear(h, 2 * m, **kw, rngs=rngs) if c.fused_gate_up else None
        self.up_proj = None if c.fused_gate_up else Linear(h, m, **kw, rngs=rngs)
        gated = c.gated_mlp and not c.fused_gate_up
        self.gate_proj = Linear(h, m, **kw, rngs=rngs) if gated else None
        self.down_proj = Linear(m, h, **kw, rngs=rngs)

    def __call__(self, x: Float[Array, "*batch embed"]) -> Float[Array, "*batch embed"]:
        if self.activation == "silu":
            act = jax.nn.silu
        elif self.activation == "relu":
            act = jax.nn.relu
        else:  # "gelu_new" is the tanh approximation, "gelu" the exact erf form.
            act = lambda h: jax.nn.gelu(h, approximate=self.activation == "gelu_new")  # noqa: E731
        if self.gate_up_proj is not None:
            gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)
            return self.down_proj(act(gate) * up)
        if self.gate_proj is None:
            return self.down_proj(act(self.up_proj(x)))
        return self.down_proj(act(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm transformer block; sequential or parallel (GPT-NeoX) residual.

    With ``norm_before=False`` (OPT-350m) it is post-norm instead: ``x = attn_norm(x + attn(x))``,
    then ``x = mlp_norm(x + mlp(x))``.

    With ``post_norms`` (Gemma-2) the attention and MLP outputs are normalised again
    (``attn_post_norm``, ``mlp_post_norm``) before their residual adds.

    Args:
        config: the architecture.
        rngs: random streams for the kernels.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.parallel_residual = config.parallel_residual
        self.norm_before = config.norm_before
        self.attn_norm = Norm(config.hidden_size, config)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = Norm(config.hidden_size, config)
        self.mlp = MLP(config, rngs=rngs)
        post = config.post_norms
        self.attn_post_norm = Norm(config.hidden_size, config) if post else None
        self.mlp_post_norm = Norm(config.hidden_size, config) if post else None

    def __call__(
        self, x: Float[Array, "examples seq embed"], mask: Bool[Array, "examples seq seq"]
    ) -> Float[Array, "examples seq embed"]:
        return self._residual(x, self.attn(self._attn_input(x), mask))

    def extend(
        self,
        x: Float[Array, "examples seq embed"],
        mask: Bool[Array, "examples seq slots"],
        positions: Int[Array, "examples seq"],
        cache: LayerCache,
        index: Int[Array, ""],
        slot_positions: Int[Array, "examples slots"],
    ) -> tuple[Float[Array, "examples seq embed"], LayerCache]:
        """The block on new tokens over a key/value cache (see `Attention.extend`)."""
        h = self._attn_input(x)
        attn, cache = self.attn.extend(h, mask, positions, cache, index, slot_positions)
        return self._residual(x, attn), cache

    def _attn_input(self, x):
        return self.attn_norm(x) if self.norm_before else x

    def _residual(self, x, attn):
        if not self.norm_before:
            x = self.attn_norm(x + attn)
            return self.mlp_norm(x + self.mlp(x))
        if self.parallel_residual:
            return x + attn + self.mlp(self.mlp_norm(x))
        if self.attn_post_norm is None:
            x = x + attn
            return x + self.mlp(self.mlp_norm(x))
        x = x + self.attn_post_norm(attn)
        return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x)))


class Decoder(nnx.Module):
    """Decoder-only transformer language model (every family of `ModelConfig`, by config).

    Initialisation follows transformers: normal(0.02) kernels and embeddings, zero biases,
    unit norm scales. Load real weights with `jaxlaw.models.load_pretrained`.

    Example:
        >>> model = Decoder(ModelConfig.tiny("llama"), rngs=nnx.Rngs(0))
        >>> logits = model(tokens, attention_mask)  # float32 [examples, seq, vocab]

    Args:
        config: the architecture.
        rngs: random streams; ``rngs.params`` draws every weight.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        emb = dict(
            dtype=c.compute_dtype,
            param_dtype=c.storage_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.embed = nnx.Embed(c.vocab_size, c.hidden_size, **emb)
        self.embed_norm = Norm(c.hidden_size, c) if c.embed_norm else None
        self.pos_embed = (
            nnx.Embed(c.max_positions + c.position_offset, c.hidden_size, **emb)
            if c.positions == "learned"
            else None
        )
        self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.n_layers)])
        self.final_norm = Norm(c.hidden_size, c) if c.norm_before else None
        self.lm_head = (
            None
            if c.tie_word_embeddings
            else Linear(
                c.hidden_size,
                c.vocab_size,
                use_bias=False,
                dtype=c.compute_dtype,
                param_dtype=c.storage_dtype,
                rngs=rngs,
            )
        )

    def hidden_states(
        self,
        tokens: Int[Array, "examples seq"],
        attention_mask: Bool[Array, "examples seq"] | None = None,
    ) -> Float[Array, "examples seq embed"]:
        """The final-norm hidden states (the LM head's input), in the compute dtype.

        Args:
            tokens: token ids, right-padded; positions are ``arange(seq)``.
            attention_mask: True at real tokens, False at padding; ``None`` means all real.
                Padding keys are hidden from every query, combined with the causal mask.

        Returns:
            Hidden states after ``final_norm`` (the last block's output without one).

        Raises:
            ValueError: ``seq`` exceeds ``max_positions`` with learned positions.
        """
        c = self.config
        seq = tokens.shape[1]
        if self.pos_embed is not None and seq > c.max_positions:
            raise ValueError(f"sequence length {seq} > max_positions {c.max_positions}")
        x = self._embed(tokens, None)
        valid = jnp.ones(tokens.shape, bool) if attention_mask is None else attention_mask
        causal = jnp.tril(jnp.ones((seq, seq), bool))
        mask = causal[None, :, :] & valid[:, None, :]  # (examples, query, key)
        local = None
        if c.sliding_window is not None:
            query = jnp.arange(seq)
            window = query[:, None] - query[None, :] < c.sliding_window  # (query, key)
            local = mask & window[None, :, :]
        for i, block in enumerate(self.blocks):
            x = block(x, local if c.is_sliding(i) else mask)
        return x if self.final_norm is None else self.final_norm(x)

    def _embed(self, tokens, positions):
        """Token embeddings (normed with ``embed_norm``) plus learned position embeddings
        (``arange(seq)`` when None), the table read ``position_offset`` rows on."""
        c = self.config
        x = self.embed(tokens).astype(c.compute_dtype)
        if c.scale_embeddings:  # Gemma: the scalar sqrt(hidden) rounded to the compute dtype
            x = x * jnp.asarray(c.hidden_size**0.5, c.compute_dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        if self.pos_embed is None:
            return x
        if positions is None:
            rows = jnp.arange(c.position_offset, c.position_offset + tokens.shape[1])
            return x + self.pos_embed(rows)[None].astype(c.compute_dtype)
        return x + self.pos_embed(positions + c.position_offset).astype(c.compute_dtype)

    def init_cache(self, examples: int, slots: int) -> KVCache:
        """An empty key/value cache for `extend`: ``slots`` zero slots per layer, none valid.

        Args:
            examples: batch size.
            slots: cache length, at least the total number of tokens `extend` will write
                (prompt width plus new tokens).

        Returns:
            The cache, in the compute dtype, with ``index`` 0.

        Raises:
            ValueError: ``examples`` or ``slots`` below 1.
        """
        if examples < 1 or slots < 1:
            raise ValueError(f"a cache needs examples >= 1 and slots >= 1, got {examples}, {slots}")
        c = self.config
        shape = (examples, slots, c.n_kv_heads, c.head_dim)
        zeros = jnp.zeros(shape, c.compute_dtype)
        layers = tuple(LayerCache(zeros, zeros) for _ in range(c.n_layers))
        empty = jnp.zeros((examples, slots), bool)
        return KVCache(layers, empty, jnp.zeros((), jnp.int32), jnp.zeros(empty.shape, jnp.int32))

    def extend(
        self,
        tokens: Int[Array, "examples seq"],
        attention_mask: Bool[Array, "examples seq"],
        cache: KVCache,
        positions: Int[Array, "examples seq"] | None = None,
    ) -> tuple[Float[Array, "examples seq vocab"], KVCache]:
        """Next-token logits of new tokens appended to a key/value cache, and the updated cache.

        The tokens go into slots ``cache.index .. cache.index + seq`` of every example. Token
        ``i`` attends to the cache slots before and at its own that hold real tokens, so a
        prompt run through `extend` in one call, or in pieces, gives the logits of
        ``__call__`` on the whole sequence (with the same positions). With LongRoPE, each call
        rotates its tokens with the factors its own longest position picks, so once a sequence
        outgrows ``rope_original_max_positions`` the earlier slots no longer match: the cache
        has to be rebuilt then, as transformers and `jaxlaw.models.generate` do.

        Args:
            tokens: new token ids (a padded prompt, or one token per example while decoding).
            attention_mask: True at real tokens; padding slots are never attended to.
            cache: from `init_cache` or a previous `extend`.
            positions: position of every new token; ``None`` counts real tokens only: the
                valid slots already in the cache plus the real tokens before in ``tokens``
                (so left padding gives the positions of the unpadded prompt). Padding tokens
                before any real token get position 0.

        Returns:
            Float32 logits ``[examples, seq, vocab]`` (meaningless at padding) and the cache
            with these tokens written and ``index`` advanced by ``seq``.

        Raises:
            ValueError: ``seq`` is longer than the cache.
        """
        hidden, cache = self.extend_hidden_states(tokens, attention_mask, cache, positions)
        return self.unembed(hidden), cache

    def extend_hidden_states(
        self,
        tokens: Int[Array, "examples seq"],
        attention_mask: Bool[Array, "examples seq"],
        cache: KVCache,
        positions: Int[Array, "examples seq"] | None = None,
    ) -> tuple[Float[Array, "examples seq embed"], KVCache]:
        """`extend` without the LM head: final-norm hidden states, and the updated cache.

        `jaxlaw.models.generate` prefills with it and unembeds only each prompt's last real
        token (a prompt's full logits are ``[examples, seq, vocab]``: 0.7 GB for 16 GSM8K
        prompts with SmolLM2's 49k vocabulary). Arguments and errors as for `extend`.
        """
        seq, slots = tokens.shape[1], cache.valid.shape[1]
        if seq > slots:
            raise ValueError(f"{seq} new tokens do not fit a cache of {slots} slots")
        if positions is None:
            before = jnp.sum(cache.valid, axis=-1, dtype=jnp.int32)[:, None]
            counted = jnp.cumsum(attention_mask, axis=-1, dtype=jnp.int32)
            positions = jnp.maximum(before + counted - 1, 0)
        start = (jnp.zeros_like(cache.index), cache.index)  # one index dtype, also under x64
        valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, start)
        slot_positions = cache.positions
        slot_positions = jax.lax.dynamic_update_slice(
            slot_positions, positions.astype(slot_positions.dtype), start
        )
        query_slot = cache.index + jnp.arange(seq, dtype=jnp.int32)
        causal = jnp.arange(slots, dtype=jnp.int32)[None, :] <= query_slot[:, None]
        mask = causal[None, :, :] & valid[:, None, :]  # (examples, query, slot)
        local = None
        c = self.config
        if c.sliding_window is not None:  # by position, so padding slots do not count
            distance = positions[:, :, None] - slot_positions[:, None, :]  # (examples, query, slot)
            local = mask & (distance < c.sliding_window)
        x = self._embed(tokens, positions)
        layers = []
        for i, (block, layer) in enumerate(zip(self.blocks, cache.layers, strict=True)):
            attend = local if c.is_sliding(i) else mask
            x, layer = block.extend(x, attend, positions, layer, cache.index, slot_positions)
            layers.append(layer)
        cache = KVCache(tuple(layers), valid, cache.index + seq, slot_positions)
        return (x if self.final_norm is None else self.final_norm(x)), cache

    def unembed(
        self, hidden: Float[Array, "examples seq embed"]
    ) -> Float[Array, "examples seq vocab"]:
        """Apply the LM head (``lm_head``, or the transposed embedding when tied); float32 out.

        With ``final_softcap`` the logits are ``cap * tanh(logits / cap)`` (Gemma-2).
        """
        if self.lm_head is None:
            logits = self.embed.attend(hidden).astype(jnp.float32)
        else:
            logits = self.lm_head(hidden).astype(jnp.float32)
        cap = self.config.final_softcap
        return logits if cap is None else jnp.tanh(logits / cap) * cap

    def __call__(
        self,
        tokens: Int[Array, "examples seq"],
        attention_mask: Bool[Array, "examples seq"] | None = None,
    ) -> Float[Array, "examples seq vocab"]:
        """Next-token logits at every position.

        Args:
            tokens: token ids, right-padded; positions are ``arange(seq)``.
            attention_mask: True at real tokens, False at padding; ``None`` means all real.
                A row with no real token gives finite (meaningless) logits.

        Returns:
            Float32 logits, whatever the compute dtype. Logits at padded positions are
            computed but meaningless; mask them in the loss.
        """
        return self.unembed(self.hidden_states(tokens, attention_mask))


def init_model(config: ModelConfig, *, key: Key) -> Decoder:
    """A randomly initialised `Decoder`; same key, same weights, bit for bit.

    Args:
        config: the architecture.
        key: PRNG key for the parameters.

    Returns:
        The model.
    """
    return Decoder(config, rngs=nnx.Rngs(params=key))
