"""`ModelConfig`: one frozen, hashable description of every decoder family jaxlaw runs.

GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral, Phi-3, Gemma-2, OPT and BLOOM differ only by
switches (norm and its placement, positions, residual layout, biases, activation, head tying,
fused projections, sliding windows, LongRoPE, ALiBi, soft-capping, sandwich norms), so one
`Decoder` serves all nine (`FAMILIES`). The entry
points are `ModelConfig.from_hf` / `ModelConfig.to_hf` (Hugging Face ``config.json`` dicts) and
`ModelConfig.tiny` (random test models).
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp

Family = Literal["gpt2", "gpt_neox", "llama", "qwen2", "mistral", "phi3", "gemma2", "opt", "bloom"]

FAMILIES: tuple[str, ...] = (
    "gpt2",
    "gpt_neox",
    "llama",
    "qwen2",
    "mistral",
    "phi3",
    "gemma2",
    "opt",
    "bloom",
)
_DTYPES = ("float32", "bfloat16", "float16", "float64")
_ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "opt": "OPTForCausalLM",
    "bloom": "BloomForCausalLM",
}
# HF spells the tanh-approximate GELU two ways; both are the same formula.
_HF_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}
_HF_ACTIVATIONS |= {"silu": "silu", "swish": "silu", "relu": "relu"}
_ACTIVATIONS = ("gelu_new", "gelu", "silu", "relu")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer, by switches over the supported families.

    All fields are Python scalars or strings, so the config is hashable and can be a static
    argument of a jitted function. Construct it with `ModelConfig.from_hf`, `ModelConfig.tiny`
    or directly; inconsistent values raise ValueError.

    Attributes:
        family: checkpoint family, one of ``gpt2``, ``gpt_neox``, ``llama``, ``qwen2``,
            ``mistral``, ``phi3``, ``gemma2``, ``opt``, ``bloom``; it picks the Hugging Face
            tensor names in `jaxlaw.models.load_pretrained`.
        vocab_size: number of token ids.
        hidden_size: residual-stream width.
        n_layers: number of transformer blocks.
        n_heads: number of query heads.
        n_kv_heads: number of key/value heads (grouped-query attention); divides ``n_heads``.
            ``None`` means ``n_heads`` (multi-head attention).
        head_dim: width of one head; ``None`` means ``hidden_size // n_heads``.
        intermediate_size: MLP hidden width.
        max_positions: longest sequence; the size of the learned position table.
        norm: ``"layernorm"`` (scale and bias) or ``"rmsnorm"`` (scale only).
        norm_eps: epsilon added to the variance inside every norm.
        positions: ``"learned"`` (absolute table, GPT-2), ``"rotary"`` (RoPE) or ``"alibi"``
            (BLOOM: head ``h`` adds ``slope_h * key_position`` to its scores, the slopes of
            `jaxlaw.models.alibi_slopes`).
        rotary_pct: fraction of each head's dims that rotary rotates (Pythia uses 0.25); the
            first ``int(head_dim * rotary_pct)`` dims are rotated.
        rope_theta: RoPE base wavelength.
        parallel_residual: ``x + attn(ln1(x)) + mlp(ln2(x))`` (GPT-NeoX) instead of the
            sequential ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``.
        qkv_bias: bias on the query/key/value projections.
        attn_out_bias: bias on the attention output projection.
        mlp_bias: bias on the MLP projections.
        activation: ``"gelu_new"`` (tanh approximation, GPT-2), ``"gelu"`` (exact erf form,
            GPT-NeoX), ``"silu"`` (Llama/Qwen2) or ``"relu"`` (OPT).
        gated_mlp: ``down(act(gate(x)) * up(x))`` instead of ``down(act(up(x)))``.
        tie_word_embeddings: the LM head reuses the token embedding (no ``lm_head`` module).
        fused_qkv: one ``attn.qkv`` projection with output ``[q | k | v]`` (mirrors GPT-2's
            ``c_attn``, NeoX's ``query_key_value`` and Phi-3's ``qkv_proj``) instead of
            ``q_proj``/``k_proj``/``v_proj``.
        fused_gate_up: one ``mlp.gate_up_proj`` projection with output ``[gate | up]`` (Phi-3)
            instead of ``gate_proj``/``up_proj``; needs ``gated_mlp``.
        sliding_window: when set, a query at position ``p`` attends only to keys at positions
            ``p - sliding_window < p' <= p`` (Mistral, Phi-3, Gemma-2's local layers), in the
            training forward and the cache path alike; ``None`` attends to the whole prefix.
        full_attention_layers: indices of the blocks that ignore ``sliding_window`` (Gemma-2's
            global layers, the odd ones); sorted, and empty unless ``sliding_window`` is set.
        rope_short_factor: LongRoPE (Phi-3 ``rope_type="longrope"``/``"su"``): per-frequency
            divisors of the inverse frequencies, ``rotary_ndims // 2`` of them, used while the
            longest position of a call is below ``rope_original_max_positions``. ``None``
            (with ``rope_long_factor``) is plain RoPE.
        rope_long_factor: LongRoPE divisors used once ``max(position) + 1`` exceeds
            ``rope_original_max_positions``, chosen per call for the whole batch, as
            transformers does.
        rope_original_max_positions: LongRoPE's pre-training context length (0 without it).
        rope_attention_factor: LongRoPE's multiplier of the rotary cos and sin (1 without it).
        norm_plus_one: RMSNorm multiplies by ``1 + scale`` (Gemma), so a zero scale is the identity.
        post_norms: a norm after attention and after the MLP, before each residual add
            (Gemma-2's ``post_attention_layernorm`` / ``post_feedforward_layernorm``).
        scale_embeddings: token embeddings are multiplied by ``sqrt(hidden_size)`` (Gemma).
        query_pre_attn_scalar: attention scores are scaled by ``query_pre_attn_scalar**-0.5``
            (Gemma-2); ``None`` means ``head_dim``.
        attn_softcap: when set, attention scores become ``cap * tanh(scores / cap)`` before
            masking (Gemma-2's ``attn_logit_softcapping``).
        final_softcap: when set, logits become ``cap * tanh(logits / cap)`` (Gemma-2's
            ``final_logit_softcapping``).
        position_offset: learned position ``p`` reads row ``p + position_offset`` of a table of
            ``max_positions + position_offset`` rows (OPT's offset of 2).
        norm_before: pre-norm blocks (``x + f(norm(x))``) and a final norm; False gives
            post-norm blocks (``norm(x + f(x))``) and no final norm (OPT's
            ``do_layer_norm_before=False``).
        embed_norm: a norm right after the token embedding (BLOOM's
            ``word_embeddings_layernorm``).
        dtype: compute dtype name (``"float32"`` or ``"bfloat16"``; also ``"float16"``,
            ``"float64"``). Norms and softmax run in float32 regardless; logits are float32.
        param_dtype: storage dtype name of every parameter.
    """

    family: Family
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int = 0
    max_positions: int = 2048
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    positions: Literal["learned", "rotary", "alibi"] = "rotary"
    rotary_pct: float = 1.0
    rope_theta: float = 10000.0
    parallel_residual: bool = False
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    activation: Literal["gelu_new", "gelu", "silu", "relu"] = "silu"
    gated_mlp: bool = False
    tie_word_embeddings: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    sliding_window: int | None = None
    full_attention_layers: tuple[int, ...] = ()
    rope_short_factor: tuple[float, ...] | None = None
    rope_long_factor: tuple[float, ...] | None = None
    rope_original_max_positions: int = 0
    rope_attention_factor: float = 1.0
    norm_plus_one: bool = False
    post_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: int | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    position_offset: int = 0
    norm_before: bool = True
    embed_norm: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        def fail(msg: str):
            raise ValueError(f"ModelConfig: {msg}")

        if self.family not in FAMILIES:
            fail(f"unknown family {self.family!r}; supported: {', '.join(FAMILIES)}")
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                fail(f"{name} must be positive, got {getattr(self, name)}")
        if self.head_dim is None:
            if self.hidden_size % self.n_heads:
                fail(f"hidden_size {self.hidden_size} not divisible by n_heads {self.n_heads}")
            # Frozen dataclass: resolve the defaults once so every reader sees plain ints.
            object.__setattr__(self, "head_dim", self.hidden_size // self.n_heads)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_heads % self.n_kv_heads:
            fail(f"n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")
        if self.norm not in ("layernorm", "rmsnorm"):
            fail(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.positions not in ("learned", "rotary", "alibi"):
            fail(f"positions must be 'learned', 'rotary' or 'alibi', got {self.positions!r}")
        if self.activation not in _ACTIVATIONS:
            fail(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        if self.positions == "rotary" and (self.rotary_ndims < 2 or self.rotary_ndims % 2):
            fail(f"rotary dims int({self.head_dim} * {self.rotary_pct}) must be even and >= 2")
        if self.position_offset < 0:
            fail(f"position_offset must be >= 0, got {self.position_offset}")
        if self.fused_gate_up and not self.gated_mlp:
            fail("fused_gate_up needs gated_mlp")
        if self.sliding_window is not None and self.sliding_window < 1:
            fail(f"sliding_window must be >= 1 or None, got {self.sliding_window}")
        layers = self.full_attention_layers
        if layers and (self.sliding_window is None or list(layers) != sorted(set(layers))):
            fail(f"full_attention_layers {layers} must be sorted, unique, with a sliding_window")
        if any(not 0 <= i < self.n_layers for i in layers):
            fail(f"full_attention_layers {layers} outside [0, {self.n_layers})")
        factors = (self.rope_short_factor, self.rope_long_factor)
        if (factors[0] is None) != (factors[1] is None):
            fail("rope_short_factor and rope_long_factor must be set together")
        if factors[0] is not None:
            half = self.rotary_ndims // 2
            if any(len(f) != half for f in factors):
                fail(f"LongRoPE factors need rotary_ndims // 2 = {half} entries each")
            if self.rope_original_max_positions < 1:
                fail("LongRoPE needs rope_original_max_positions >= 1")
        for name in ("query_pre_attn_scalar", "attn_softcap", "final_softcap"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                fail(f"{name} must be positive or None, got {getattr(self, name)}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                fail(f"{name} must be one of {', '.join(_DTYPES)}, got {getattr(self, name)!r}")

    @property
    def rotary_ndims(self) -> int:
        """Leading dims of each head that rotary embeddings rotate (HF's ``rotary_ndims``)."""
        return int(self.head_dim * self.rotary_pct)

    def is_sliding(self, layer: int) -> bool:
        """Whether block ``layer`` attends within ``sliding_window`` only."""
        return self.sliding_window is not None and layer not in self.full_attention_layers

    @property
    def compute_dtype(self) -> jnp.dtype:
        """`dtype` as a numpy dtype object."""
        return jnp.dtype(self.dtype)

    @property
    def storage_dtype(self) -> jnp.dtype:
        """`param_dtype` as a numpy dtype object."""
        return jnp.dtype(self.param_dtype)

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> "ModelConfig":
        """Translate a Hugging Face ``config.json`` dict, dispatching on its ``model_type``.

        Both the transformers 4 spellings (``rope_theta``, ``rotary_pct``, ``rotary_emb_base``,
        ``torch_dtype``) and the transformers 5 ones (``rope_parameters``, ``dtype``) are read.
        ``dtype`` and ``param_dtype`` take the checkpoint's recorded dtype when it is one jaxlaw
        supports, else float32.

        Args:
            config: the parsed ``config.json``.

        Returns:
            The equivalent `ModelConfig`.

        Raises:
            ValueError: unknown ``model_type``, or a feature the `Decoder` does not implement
                (rope scaling other than Phi-3's LongRoPE, Qwen2's sliding windows,
                cross-attention, ...).
        """
        model_type = config.get("model_type")
        if model_type not in FAMILIES:
            raise ValueError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(FAMILIES)}"
            )
        dtype = config.get("dtype", config.get("torch_dtype")) or "float32"
        dtype = dtype if dtype in _DTYPES else "float32"
        common: dict[str, Any] = dict(family=model_type, dtype=dtype, param_dtype=dtype)
        if model_type == "opt":
            hidden = config["hidden_size"]
            if config.get("word_embed_proj_dim", hidden) != hidden:
                raise ValueError(
                    f"opt with word_embed_proj_dim={config['word_embed_proj_dim']} != "
                    f"hidden_size={hidden} (project_in/out) is not supported by jaxlaw"
                )
            _reject(config, model_type, layer_norm_elementwise_affine=False)
            _reject(config, model_type, _remove_final_layer_norm=True)
            before = config.get("do_layer_norm_before", True)
            bias = config.get("enable_bias", True)
            return cls(
                **common,
                vocab_size=config["vocab_size"],
                hidden_size=hidden,
                n_layers=config["num_hidden_layers"],
                n_heads=config["num_attention_heads"],
                intermediate_size=config["ffn_dim"],
                max_positions=config["max_position_embeddings"],
                norm="layernorm",
                positions="learned",
                qkv_bias=bias,
                attn_out_bias=bias,
                mlp_bias=bias,
                activation=_activation(config.get("activation_function", "relu")),
                tie_word_embeddings=config.get("tie_word_embeddings", True),
                position_offset=2,
                norm_before=before,
            )
        if model_type == "bloom":
            _reject(config, model_type, apply_residual_connection_post_layernorm=True)
            _reject(config, model_type, slow_but_exact=True)
            hidden = config.get("hidden_size") or config["n_embed"]
            return cls(
                **common,
                vocab_size=config["vocab_size"],
                hidden_size=hidden,
                n_layers=config.get("n_layer") or config["num_hidden_layers"],
                n_heads=config.get("n_head") or config["num_attention_heads"],
                intermediate_size=4 * hidden,  # BloomMLP hard-codes 4 * hidden
                # ALiBi has no table; seq_length is the training context, when recorded.
                max_positions=config.get("seq_length", 2048),
                norm="layernorm",
                norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                positions="alibi",
                qkv_bias=True,
                attn_out_bias=True,
                mlp_bias=True,
                activation="gelu_new",  # bloom_gelu_forward: the tanh approximation
                tie_word_embeddings=config.get("tie_word_embeddings", True),
                fused_qkv=True,
                embed_norm=True,
            )
        if model_type == "gpt2":
            _reject(config, model_type, scale_attn_by_inverse_layer_idx=True)
            _reject(config, model_type, add_cross_attention=True, scale_attn_weights=False)
            hidden = config["n_embd"]
            return cls(
                **common,
                vocab_size=config["vocab_size"],
                hidden_size=hidden,
                n_layers=config["n_layer"],
                n_heads=config["n_head"],
                intermediate_size=config.get("n_inner") or 4 * hidden,
                max_positions=config["n_positions"],
                norm="layernorm",
                norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                positions="learned",
                qkv_bias=True,
                attn_out_bias=True,
                mlp_bias=True,
                activation=_activation(config.get("activation_function", "gelu_new")),
                tie_word_embeddings=config.get("tie_word_embeddings", True),
                fused_qkv=True,
            )
        rope = _rope(config, model_type)
        if model_type == "gpt_neox":
            bias = config.get("attention_bias", True)
            return cls(
                **common,
                vocab_size=config["vocab_size"],
                hidden_size=config["hidden_size"],
                n_layers=config["num_hidden_layers"],
                n_heads=config["num_attention_heads"],
                intermediate_size=config["intermediate_size"],
                max_positions=config["max_position_embeddings"],
                norm="layernorm",
                norm_eps=float(config.get("layer_norm_eps", 1e-5)),
                positions="rotary",
                rotary_pct=float(rope.get("partial_rotary_factor", config.get("rotary_pct", 0.25))),
                rope_theta=float(rope.get("rope_theta", config.get("rotary_emb_base", 10000.0))),
                parallel_residual=config.get("use_parallel_residual", True),
                qkv_bias=bias,
                attn_out_bias=bias,
                # HF's GPTNeoXMLP always has biases (plain nn.Linear).
                mlp_bias=True,
                activation=_activation(config.get("hidden_act", "gelu")),
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                fused_qkv=True,
            )
        _reject(config, model_type, use_sliding_window=True)
        heads = config["num_attention_heads"]
        extra: dict[str, Any] = {}
        if model_type == "llama":
            extra |= dict(
                qkv_bias=config.get("attention_bias", False),
                attn_out_bias=config.get("attention_bias", False),
                mlp_bias=config.get("mlp_bias", False),
            )
        elif model_type == "qwen2":  # Qwen2 hard-codes bias on q/k/v only.
            extra |= dict(qkv_bias=True, attn_out_bias=False, mlp_bias=False)
        elif model_type == "mistral":
            extra |= dict(sliding_window=config.get("sliding_window"))
        elif model_type == "phi3":
            extra |= dict(fused_qkv=True, fused_gate_up=True)
            extra |= dict(sliding_window=config.get("sliding_window"))
            if rope.get("rope_type", rope.get("type")) in ("longrope", "su"):
                extra |= _longrope(config, rope)
        else:  # gemma2
            window = config.get("sliding_window")
            types = config.get("layer_types") or [
                "sliding_attention" if (i + 1) % 2 else "full_attention"
                for i in range(config["num_hidden_layers"])
            ]
            full = tuple(i for i, t in enumerate(types) if t != "sliding_attention")
            bias = config.get("attention_bias", False)
            extra |= dict(qkv_bias=bias, attn_out_bias=bias, norm_plus_one=True, post_norms=True)
            extra |= dict(
                sliding_window=window,
                full_attention_layers=full if window is not None else (),
                scale_embeddings=True,
                query_pre_attn_scalar=int(config.get("query_pre_attn_scalar", 256)),
                attn_softcap=_float_or_none(config.get("attn_logit_softcapping", 50.0)),
                final_softcap=_float_or_none(config.get("final_logit_softcapping", 30.0)),
            )
        act = config.get("hidden_activation") or config.get("hidden_act", "silu")
        return cls(
            **common,
            **extra,
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=heads,
            n_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate_size=config["intermediate_size"],
            max_positions=config["max_position_embeddings"],
            norm="rmsnorm",
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            positions="rotary",
            rotary_pct=float(rope.get("partial_rotary_factor", 1.0)),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
            activation=_activation(act),
            gated_mlp=True,
            tie_word_embeddings=config.get("tie_word_embeddings", model_type == "gemma2"),
        )

    def to_hf(self) -> dict[str, Any]:
        """A ``config.json`` dict that transformers loads back as the same architecture.

        Written in the transformers 5 spelling (``rope_parameters``, ``dtype``) with the
        ``architectures`` field set to the family's causal-LM class.

        Returns:
            A JSON-serialisable dict.

        Raises:
            ValueError: the config uses a switch the family's HF class cannot express (e.g. a
                GPT-2 with rotary positions).
        """
        self._check_expressible()
        out: dict[str, Any] = {
            "architectures": [_ARCHITECTURES[self.family]],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.param_dtype,
            "use_cache": True,
            # Special token ids belong to the tokenizer, not the architecture; HF's GPT-2
            # default 50256 would lie outside a small test vocabulary.
            "bos_token_id": None,
            "eos_token_id": None,
        }
        hf_act = self.activation
        if self.family == "bloom":
            return out | {
                "hidden_size": self.hidden_size,
                "n_layer": self.n_layers,
                "n_head": self.n_heads,
                "seq_length": self.max_positions,
                "layer_norm_epsilon": self.norm_eps,
                "hidden_dropout": 0.0,
                "attention_dropout": 0.0,
            }
        if self.family == "opt":
            return out | {
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.n_layers,
                "num_attention_heads": self.n_heads,
                "ffn_dim": self.intermediate_size,
                "max_position_embeddings": self.max_positions,
                "word_embed_proj_dim": self.hidden_size,
                "do_layer_norm_before": self.norm_before,
                "activation_function": hf_act,
                "enable_bias": self.qkv_bias,
                # OPT's default pad id (1) would embed as a zero row at init; it has no other use.
                "pad_token_id": None,
                "dropout": 0.0,
                "attention_dropout": 0.0,
                "activation_dropout": 0.0,
                "layerdrop": 0.0,
            }
        if self.family == "gpt2":
            return out | {
                "n_embd": self.hidden_size,
                "n_layer": self.n_layers,
                "n_head": self.n_heads,
                "n_inner": self.intermediate_size,
                "n_positions": self.max_positions,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": hf_act,
                # The base model has no dropout (LoRA dropout is the only one), so HF gets none.
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
            }
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        common = {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_positions,
            "hidden_act": hf_act,
            "attention_dropout": 0.0,
        }
        if self.family == "gpt_neox":
            rope["partial_rotary_factor"] = self.rotary_pct
            return (
                out
                | common
                | {
                    "layer_norm_eps": self.norm_eps,
                    "use_parallel_residual": self.parallel_residual,
                    "attention_bias": self.qkv_bias,
                    "hidden_dropout": 0.0,
                    "rope_parameters": rope,
                }
            )
        out = (
            out
            | common
            | {
                "num_key_value_heads": self.n_kv_heads,
                "head_dim": self.head_dim,
                "rms_norm_eps": self.norm_eps,
                "rope_parameters": rope,
            }
        )
        if self.family == "llama":
            out |= {"attention_bias": self.qkv_bias, "mlp_bias": self.mlp_bias}
        elif self.family == "qwen2":
            out |= {"use_sliding_window": False}
        else:
            # Phi-3's default pad id (32000) would lie outside a small test vocabulary.
            out |= {"sliding_window": self.sliding_window, "pad_token_id": None}
        if self.family == "phi3":
            rope["partial_rotary_factor"] = self.rotary_pct
            out |= {"resid_pdrop": 0.0, "embd_pdrop": 0.0}
            if self.rope_long_factor is not None:
                rope |= {
                    "rope_type": "longrope",
                    "short_factor": list(self.rope_short_factor),
                    "long_factor": list(self.rope_long_factor),
                    "original_max_position_embeddings": self.rope_original_max_positions,
                    "attention_factor": self.rope_attention_factor,
                }
                out["original_max_position_embeddings"] = self.rope_original_max_positions
        elif self.family == "gemma2":
            del out["hidden_act"]
            out |= {
                "hidden_activation": {"gelu_new": "gelu_pytorch_tanh"}.get(hf_act, hf_act),
                "attention_bias": self.qkv_bias,
                "layer_types": [
                    "sliding_attention" if self.is_sliding(i) else "full_attention"
                    for i in range(self.n_layers)
                ],
                "query_pre_attn_scalar": self.query_pre_attn_scalar or self.head_dim,
                "attn_logit_softcapping": self.attn_softcap,
                "final_logit_softcapping": self.final_softcap,
            }
        return out

    def _check_expressible(self):
        """Raise unless the family's HF class has the same switches as this config."""
        gemma = self.family == "gemma2"
        want: dict[str, Any] = {"fused_qkv": self.family in ("gpt2", "gpt_neox", "phi3")}
        want |= dict(fused_gate_up=self.family == "phi3", norm_plus_one=gemma, post_norms=gemma)
        want |= dict(scale_embeddings=gemma)
        if not gemma:
            want |= dict(query_pre_attn_scalar=None, attn_softcap=None, final_softcap=None)
            want |= dict(full_attention_layers=())
        if self.family not in ("mistral", "phi3", "gemma2"):
            want |= dict(sliding_window=None)
        if self.family != "phi3":
            want |= dict(rope_long_factor=None)
        opt, bloom = self.family == "opt", self.family == "bloom"
        want |= dict(position_offset=2 if opt else 0, embed_norm=bloom)
        if not opt:
            want |= dict(norm_before=True)
        if opt:
            want |= dict(positions="learned", norm="layernorm", gated_mlp=False)
            want |= dict(attn_out_bias=self.qkv_bias, mlp_bias=self.qkv_bias)
            want |= dict(parallel_residual=False, n_kv_heads=self.n_heads)
            want |= dict(head_dim=self.hidden_size // self.n_heads)
        elif bloom:
            want |= dict(fused_qkv=True, positions="alibi", norm="layernorm", gated_mlp=False)
            want |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True, activation="gelu_new")
            want |= dict(parallel_residual=False, n_kv_heads=self.n_heads)
            want |= dict(head_dim=self.hidden_size // self.n_heads)
            want |= dict(intermediate_size=4 * self.hidden_size)
        elif self.family == "gpt2":
            want |= dict(positions="learned", norm="layernorm", gated_mlp=False)
            want |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True)
            want |= dict(parallel_residual=False, n_kv_heads=self.n_heads)
        elif self.family == "gpt_neox":
            want |= dict(positions="rotary", norm="layernorm", gated_mlp=False, mlp_bias=True)
            want |= dict(attn_out_bias=self.qkv_bias, n_kv_heads=self.n_heads)
        else:
            want |= dict(positions="rotary", norm="rmsnorm", gated_mlp=True)
            want |= dict(parallel_residual=False, activation="silu")
            if self.family == "llama":
                want |= dict(attn_out_bias=self.qkv_bias)
            elif self.family == "qwen2":
                want |= dict(qkv_bias=True, attn_out_bias=False, mlp_bias=False)
            elif gemma:
                want |= dict(attn_out_bias=self.qkv_bias, mlp_bias=False)
                want |= dict(activation=self.activation)
            else:  # mistral, phi3: no biases anywhere
                want |= dict(qkv_bias=False, attn_out_bias=False, mlp_bias=False)
        if self.family in ("gpt2", "gpt_neox") and self.head_dim * self.n_heads != self.hidden_size:
            want["head_dim"] = self.hidden_size // self.n_heads
        bad = {k: v for k, v in want.items() if getattr(self, k) != v}
        if bad:
            raise ValueError(f"family {self.family!r} requires {bad}")

    @classmethod
    def tiny(cls, family: str, **overrides: Any) -> "ModelConfig":
        """A 2-layer random-init config of ``family`` for tests and demos (runs in ms on CPU).

        Defaults: vocab 100, hidden 64, 4 heads of 16, MLP 128, 64 positions, float32. GPT-2 is
        tied with learned positions; GPT-NeoX has rotary on a quarter of each head (4 dims) and
        a parallel residual; Llama has 2 KV heads (grouped-query) and an untied head; Qwen2 has
        2 KV heads, q/k/v biases and a tied head. Mistral is the Llama config with a sliding
        window of 4 (shorter than the test sequences, so the window bites). Phi-3 fuses q/k/v and
        gate/up and uses LongRoPE with a pre-training length of 12, so a 16-token generation
        crosses from the short to the long factors. Gemma-2 has layer 0 local (window 4) and
        layer 1 global, a query scalar of 24 (not ``head_dim``), soft-caps of 5 (low enough to
        bite on random weights) and an untied head: tied, random weights just echo the last
        token, whose ``sqrt(hidden)``-scaled embedding dominates the residual stream. OPT is
        pre-norm with ReLU, biases, a tied head and learned positions offset by 2. BLOOM has
        ALiBi, an embedding norm, head-interleaved fused q/k/v, a tied head and an MLP of
        ``4 * hidden`` (256), as BloomMLP hard-codes.

        Args:
            family: one of `FAMILIES`.
            **overrides: any `ModelConfig` field.

        Returns:
            The config.

        Raises:
            ValueError: unknown family or an inconsistent override.
        """
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
        base: dict[str, Any] = dict(
            family=family,
            vocab_size=100,
            hidden_size=64,
            n_layers=2,
            n_heads=4,
            intermediate_size=128,
            max_positions=64,
        )
        if family == "bloom":
            base |= dict(norm="layernorm", positions="alibi", activation="gelu_new")
            base |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True, fused_qkv=True)
            base |= dict(tie_word_embeddings=True, embed_norm=True, intermediate_size=256)
        elif family == "opt":
            base |= dict(norm="layernorm", positions="learned", activation="relu")
            base |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True)
            base |= dict(tie_word_embeddings=True, position_offset=2)
        elif family == "gpt2":
            base |= dict(norm="layernorm", positions="learned", activation="gelu_new")
            base |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True)
            base |= dict(tie_word_embeddings=True, fused_qkv=True)
        elif family == "gpt_neox":
            base |= dict(norm="layernorm", positions="rotary", rotary_pct=0.25)
            base |= dict(parallel_residual=True, activation="gelu", fused_qkv=True)
            base |= dict(qkv_bias=True, attn_out_bias=True, mlp_bias=True)
        else:
            base |= dict(norm="rmsnorm", norm_eps=1e-6, n_kv_heads=2, gated_mlp=True)
        if family == "qwen2":
            base |= dict(qkv_bias=True, tie_word_embeddings=True, rope_theta=1e6)
        elif family == "mistral":
            base |= dict(sliding_window=4)
        elif family == "phi3":
            base |= dict(norm_eps=1e-5, fused_qkv=True, fused_gate_up=True)
            # Divisors of the 8 inverse frequencies of a 16-dim head (LongRoPE's per-dim rescale).
            base |= dict(rope_short_factor=(1.0, 1.0, 1.1, 1.2, 1.5, 2.0, 2.5, 3.0))
            base |= dict(rope_long_factor=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0))
            # factor 64 / 12 -> attention factor sqrt(1 + ln(64/12) / ln 12), transformers' rule.
            base |= dict(rope_original_max_positions=12)
            base |= dict(rope_attention_factor=math.sqrt(1 + math.log(64 / 12) / math.log(12)))
        elif family == "gemma2":
            base |= dict(activation="gelu_new", sliding_window=4)
            base |= dict(full_attention_layers=(1,), norm_plus_one=True, post_norms=True)
            base |= dict(scale_embeddings=True, query_pre_attn_scalar=24)
            base |= dict(attn_softcap=5.0, final_softcap=5.0)
        return cls(**(base | overrides))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _activation(name: str) -> str:
    if name not in _HF_ACTIVATIONS:
        raise ValueError(
            f"unsupported activation {name!r}; supported: {', '.join(_HF_ACTIVATIONS)}"
        )
    return _HF_ACTIVATIONS[name]


def _reject(config: dict[str, Any], model_type: str, **unsupported: Any):
    """Raise when ``config`` sets a key to a value the `Decoder` does not implement."""
    for key, value in unsupported.items():
        if config.get(key) == value:
            raise ValueError(f"{model_type} with {key}={value!r} is not supported by jaxlaw")


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


def _longrope(config: dict[str, Any], rope: dict[str, Any]) -> dict[str, Any]:
    """`ModelConfig` LongRoPE fields, with transformers' default factor and attention factor."""
    original = rope.get("original_max_position_embeddings")
    original = original or config.get("original_max_position_embeddings", 4096)
    factor = rope.get("factor") or config["max_position_embeddings"] / original
    attention = rope.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    return dict(
        rope_short_factor=tuple(float(f) for f in rope["short_factor"]),
        rope_long_factor=tuple(float(f) for f in rope["long_factor"]),
        rope_original_max_positions=int(original),
        rope_attention_factor=float(attention),
    )


def _rope(config: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The rope parameters in either transformers spelling.

    Only unscaled RoPE is supported, and LongRoPE (``"longrope"``, or its old name ``"su"``)
    for Phi-3.
    """
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_theta" not in rope and "rope_theta" in config:
        rope["rope_theta"] = config["rope_theta"]
    if "partial_rotary_factor" not in rope and "partial_rotary_factor" in config:
        rope["partial_rotary_factor"] = config["partial_rotary_factor"]
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default" and not (model_type == "phi3" and kind in ("longrope", "su")):
        raise ValueError(f"{model_type} with rope_type={kind!r} is not supported by jaxlaw")
    return rope
