"""Hugging Face checkpoint I/O: `load_pretrained` and `save_pretrained` for every family.

A checkpoint directory is transformers' layout: ``config.json`` plus ``model.safetensors``, or
``model.safetensors.index.json`` plus ``model-0000i-of-0000n.safetensors`` shards. Tensors are
read with ``safetensors.numpy`` (no torch) and written straight into the `Decoder`'s NNX state
through one explicit name map per family (`_tensor_map`), so loading and saving are inverses by
construction and a round trip is bit-exact. A ``.gguf`` file goes through the same filling
(`model_from_tensors`) after `read_gguf` has renamed and dequantized its tensors.

Layout conversions (HF -> jaxlaw):

- torch ``nn.Linear`` weights are ``[out, in]``; `Linear` kernels are ``[in, out]`` (transpose).
- GPT-2's ``Conv1D`` weights are already ``[in, out]`` (copied as is).
- GPT-NeoX's ``query_key_value`` output axis is laid out per head as ``(heads, 3, head_dim)``;
  jaxlaw's fused ``qkv`` is ``(3, heads, head_dim)``, i.e. ``[q | k | v]`` like GPT-2 (a pure
  permutation, undone exactly on save).
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from ._config import ModelConfig
from ._decoder import Decoder
from ._gguf import read_gguf
from ._linear import Linear

# Non-parameter buffers that older transformers versions serialised: the causal-mask constants
# of GPT-2 (``attn.bias``, ``attn.masked_bias``) and GPT-NeoX (``attention.bias``,
# ``attention.masked_bias``) and the rotary frequency tables (``rotary_emb.inv_freq``).
# They are recomputed by `Decoder`, so loading skips them.
IGNORED_BUFFERS: tuple[str, ...] = (
    r"(^|\.)attn\.bias$",
    r"(^|\.)attn\.masked_bias$",
    r"(^|\.)attention\.bias$",
    r"(^|\.)attention\.masked_bias$",
    r"(^|\.)rotary_emb\.inv_freq$",
)

_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# The base-model prefix each family's causal-LM class puts before every name but its head
# (``model.`` for the families not listed).
_PREFIX = {
    "gpt2": "transformer.",
    "gpt_neox": "gpt_neox.",
    "opt": "model.decoder.",
    "bloom": "transformer.",
}
_HEAD = {"gpt2": "lm_head.weight", "gpt_neox": "embed_out.weight"}


class CheckpointError(ValueError):
    """A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped names."""


@dataclass(frozen=True)
class _Tensor:
    """One HF tensor name, the NNX state path it fills, and how its layout differs."""

    name: str
    path: tuple[str | int, ...]
    layout: str = "same"  # "same" | "transpose" | "neox_qkv_kernel" | "neox_qkv_bias"


def _tensor_map(config: ModelConfig) -> list[_Tensor]:
    """Every parameter of a `Decoder` with ``config``, with its HF name (prefix included)."""
    c, family = config, config.family
    prefix = _prefix(config)
    out: list[_Tensor] = []

    def norm(name: str, path: tuple[str | int, ...]):
        out.append(_Tensor(prefix + name + ".weight", (*path, "scale")))
        if c.norm == "layernorm":
            out.append(_Tensor(prefix + name + ".bias", (*path, "bias")))

    def linear(name: str, path: tuple[str | int, ...], bias: bool, layout: str = "transpose"):
        out.append(_Tensor(prefix + name + ".weight", (*path, "kernel"), layout))
        if bias:
            bias_layout = "neox_qkv_bias" if layout == "neox_qkv_kernel" else "same"
            out.append(_Tensor(prefix + name + ".bias", (*path, "bias"), bias_layout))

    if family == "gpt2":
        out.append(_Tensor(prefix + "wte.weight", ("embed", "embedding")))
        out.append(_Tensor(prefix + "wpe.weight", ("pos_embed", "embedding")))
        for i in range(c.n_layers):
            h, b = f"h.{i}.", ("blocks", i)
            norm(h + "ln_1", (*b, "attn_norm"))
            linear(h + "attn.c_attn", (*b, "attn", "qkv"), True, "same")
            linear(h + "attn.c_proj", (*b, "attn", "o_proj"), True, "same")
            norm(h + "ln_2", (*b, "mlp_norm"))
            linear(h + "mlp.c_fc", (*b, "mlp", "up_proj"), True, "same")
            linear(h + "mlp.c_proj", (*b, "mlp", "down_proj"), True, "same")
        norm("ln_f", ("final_norm",))
    elif family == "bloom":
        out.append(_Tensor(prefix + "word_embeddings.weight", ("embed", "embedding")))
        norm("word_embeddings_layernorm", ("embed_norm",))
        for i in range(c.n_layers):
            h, b = f"h.{i}.", ("blocks", i)
            norm(h + "input_layernorm", (*b, "attn_norm"))
            # BLOOM interleaves q/k/v per head, as GPT-NeoX does.
            qkv = (*b, "attn", "qkv")
            linear(h + "self_attention.query_key_value", qkv, True, "neox_qkv_kernel")
            linear(h + "self_attention.dense", (*b, "attn", "o_proj"), True)
            norm(h + "post_attention_layernorm", (*b, "mlp_norm"))
            linear(h + "mlp.dense_h_to_4h", (*b, "mlp", "up_proj"), True)
            linear(h + "mlp.dense_4h_to_h", (*b, "mlp", "down_proj"), True)
        norm("ln_f", ("final_norm",))
    elif family == "opt":
        out.append(_Tensor(prefix + "embed_tokens.weight", ("embed", "embedding")))
        out.append(_Tensor(prefix + "embed_positions.weight", ("pos_embed", "embedding")))
        for i in range(c.n_layers):
            h, b = f"layers.{i}.", ("blocks", i)
            norm(h + "self_attn_layer_norm", (*b, "attn_norm"))
            for proj in ("q_proj", "k_proj", "v_proj"):
                linear(h + "self_attn." + proj, (*b, "attn", proj), c.qkv_bias)
            linear(h + "self_attn.out_proj", (*b, "attn", "o_proj"), c.attn_out_bias)
            norm(h + "final_layer_norm", (*b, "mlp_norm"))  # the block's MLP norm
            linear(h + "fc1", (*b, "mlp", "up_proj"), c.mlp_bias)
            linear(h + "fc2", (*b, "mlp", "down_proj"), c.mlp_bias)
        if c.norm_before:
            norm("final_layer_norm", ("final_norm",))
    elif family == "gpt_neox":
        out.append(_Tensor(prefix + "embed_in.weight", ("embed", "embedding")))
        for i in range(c.n_layers):
            h, b = f"layers.{i}.", ("blocks", i)
            norm(h + "input_layernorm", (*b, "attn_norm"))
            qkv = (*b, "attn", "qkv")
            linear(h + "attention.query_key_value", qkv, c.qkv_bias, "neox_qkv_kernel")
            linear(h + "attention.dense", (*b, "attn", "o_proj"), c.attn_out_bias)
            norm(h + "post_attention_layernorm", (*b, "mlp_norm"))
            linear(h + "mlp.dense_h_to_4h", (*b, "mlp", "up_proj"), c.mlp_bias)
            linear(h + "mlp.dense_4h_to_h", (*b, "mlp", "down_proj"), c.mlp_bias)
        norm("final_layer_norm", ("final_norm",))
    else:  # llama, qwen2, mistral, phi3, gemma2
        out.append(_Tensor(prefix + "embed_tokens.weight", ("embed", "embedding")))
        for i in range(c.n_layers):
            h, b = f"layers.{i}.", ("blocks", i)
            norm(h + "input_layernorm", (*b, "attn_norm"))
            if c.fused_qkv:  # Phi-3's qkv_proj: [q | k | v] rows, as jaxlaw's qkv
                linear(h + "self_attn.qkv_proj", (*b, "attn", "qkv"), c.qkv_bias)
            else:
                for proj in ("q_proj", "k_proj", "v_proj"):
                    linear(h + "self_attn." + proj, (*b, "attn", proj), c.qkv_bias)
            linear(h + "self_attn.o_proj", (*b, "attn", "o_proj"), c.attn_out_bias)
            if c.post_norms:  # Gemma-2's sandwich: post_attention_layernorm is not the MLP's
                norm(h + "post_attention_layernorm", (*b, "attn_post_norm"))
                norm(h + "pre_feedforward_layernorm", (*b, "mlp_norm"))
                norm(h + "post_feedforward_layernorm", (*b, "mlp_post_norm"))
            else:
                norm(h + "post_attention_layernorm", (*b, "mlp_norm"))
            mlp = ("gate_up_proj",) if c.fused_gate_up else ("gate_proj", "up_proj")
            for proj in (*mlp, "down_proj"):
                linear(h + "mlp." + proj, (*b, "mlp", proj), c.mlp_bias)
        norm("norm", ("final_norm",))
    if not c.tie_word_embeddings:
        out.append(_Tensor(_head_name(config), ("lm_head", "kernel"), "transpose"))
    return out


def _prefix(config: ModelConfig) -> str:
    return _PREFIX.get(config.family, "model.")


def _head_name(config: ModelConfig) -> str:
    return _HEAD.get(config.family, "lm_head.weight")


def _hf_shape(t: _Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF shape of a tensor whose jaxlaw shape is ``shape``."""
    return shape[::-1] if t.layout in ("transpose", "neox_qkv_kernel") else shape


def _from_hf(t: _Tensor, x: np.ndarray, config: ModelConfig) -> np.ndarray:
    heads, head_dim = config.n_heads, config.head_dim
    if t.layout == "transpose":
        return x.T
    if t.layout == "neox_qkv_kernel":  # [heads*3*hd, in] -> [in, 3*heads*hd]
        x = x.reshape(heads, 3, head_dim, -1).transpose(1, 0, 2, 3)
        return x.reshape(3 * heads * head_dim, -1).T
    if t.layout == "neox_qkv_bias":
        return x.reshape(heads, 3, head_dim).transpose(1, 0, 2).reshape(-1)
    return x


def _to_hf(t: _Tensor, x: np.ndarray, config: ModelConfig) -> np.ndarray:
    heads, head_dim = config.n_heads, config.head_dim
    if t.layout == "transpose":
        return x.T
    if t.layout == "neox_qkv_kernel":  # [in, 3*heads*hd] -> [heads*3*hd, in]
        x = x.T.reshape(3, heads, head_dim, -1).transpose(1, 0, 2, 3)
        return x.reshape(3 * heads * head_dim, -1)
    if t.layout == "neox_qkv_bias":
        return x.reshape(3, heads, head_dim).transpose(1, 0, 2).reshape(-1)
    return x


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a single-file or sharded safetensors checkpoint directory."""
    if (path / _INDEX).exists():
        weight_map = json.loads((path / _INDEX).read_text())["weight_map"]
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors |= load_file(path / shard)
        return tensors
    if (path / _SINGLE).exists():
        return load_file(path / _SINGLE)
    raise FileNotFoundError(f"no {_SINGLE} or {_INDEX} in {path}")


def _fmt(name: str, shape: tuple[int, ...]) -> str:
    return f"{name} {list(shape)}"


def load_pretrained(
    path: str | os.PathLike, *, dtype: str | None = None
) -> tuple[Decoder, ModelConfig]:
    """Load a transformers checkpoint directory or a ``.gguf`` file into a `Decoder`.

    A directory: reads ``config.json`` (via `ModelConfig.from_hf`) and ``model.safetensors`` or
    the shards listed in ``model.safetensors.index.json``. A GGUF file (recognised by its magic
    bytes, whatever its suffix): the config comes from its metadata and every tensor is
    dequantized to float32 (`jaxlaw.models.read_gguf`). Both then fill the model the same way
    (`model_from_tensors`). The model is built abstractly (``nnx.eval_shape``), so no random
    init is spent.

    Args:
        path: checkpoint directory or ``.gguf`` file.
        dtype: compute and parameter dtype name (``"float32"``, ``"bfloat16"``, ...); ``None``
            keeps the dtype recorded in ``config.json`` (float32 if absent; always float32 for
            GGUF, whose quantised blocks dequantize to it).

    Returns:
        ``(model, config)``.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped tensors; the message lists each
            name with its shape.
        ValueError: the config's ``model_type`` or a feature of it is unsupported.
        GGUFError: (a ValueError) a ``.gguf`` that is truncated, not GGUF, or uses an
            unsupported architecture or tensor type.
        FileNotFoundError: no such path, no ``config.json`` or no safetensors weights.
    """
    path = Path(path)
    if path.is_file() or path.suffix == ".gguf":
        hf_config, tensors = read_gguf(path)
    else:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        hf_config = json.loads((path / "config.json").read_text())
        tensors = _read_tensors(path)
    config = ModelConfig.from_hf(hf_config)
    if dtype is not None:
        config = config.replace(dtype=dtype, param_dtype=dtype)
    return model_from_tensors(config, tensors, source=str(path)), config


def model_from_tensors(
    config: ModelConfig, tensors: dict[str, np.ndarray], *, source: str = "checkpoint"
) -> Decoder:
    """A `Decoder` with ``config`` whose parameters are ``tensors`` (HF names and layouts).

    Names may carry the causal-LM prefix (``transformer.``, ``gpt_neox.``, ``model.``) or not
    (base-model checkpoints such as the original ``gpt2``). Buffers matching `IGNORED_BUFFERS`
    are skipped; with tied embeddings an ``lm_head.weight`` / ``embed_out.weight`` is skipped
    too, as transformers does. Arrays are cast to ``config.param_dtype``.

    Args:
        config: the architecture.
        tensors: HF tensor name -> array, e.g. a safetensors file's contents.
        source: what the tensors came from, for the error message.

    Returns:
        The filled model.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped tensors; the message lists each
            name with its shape.
    """
    prefix, head = _prefix(config), _head_name(config)
    # Base-model checkpoints lack the prefix; keep the file's own name for error messages.
    canonical = {(n if n.startswith(prefix) or n == head else prefix + n): n for n in tensors}

    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    variables = dict(nnx.to_flat_state(state))
    expected = _tensor_map(config)
    missing, mismatched = [], []
    for t in expected:
        want = _hf_shape(t, variables[t.path].get_value().shape)
        if t.name not in canonical:
            missing.append(_fmt(t.name, want))
        elif tensors[canonical[t.name]].shape != want:
            got = tensors[canonical[t.name]].shape
            mismatched.append(f"{canonical[t.name]}: file {list(got)}, expected {list(want)}")
    known = {t.name for t in expected}
    skip = [re.compile(p) for p in IGNORED_BUFFERS]
    unexpected = [
        _fmt(orig, tensors[orig].shape)
        for name, orig in canonical.items()
        if name not in known
        and not any(p.search(name) for p in skip)
        and not (config.tie_word_embeddings and name == head)
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(items)}): " + ", ".join(items)
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if items
        ]
        raise CheckpointError(
            f"checkpoint {source} does not fit a {config.family} Decoder: " + "; ".join(parts)
        )

    filled = {}
    for t in expected:
        x = _from_hf(t, tensors[canonical[t.name]], config)
        filled[t.path] = variables[t.path].replace(jnp.asarray(x, dtype=config.storage_dtype))
    if filled.keys() != variables.keys():  # a name map out of sync with the module tree
        raise AssertionError(f"unmapped parameters: {sorted(variables.keys() - filled.keys())}")
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


def save_pretrained(
    model: Decoder,
    config: ModelConfig,
    path: str | os.PathLike,
    *,
    max_shard_bytes: int | None = None,
) -> None:
    """Write ``model`` as a transformers checkpoint that ``AutoModelForCausalLM`` loads.

    Writes ``config.json`` (`ModelConfig.to_hf`) and safetensors in HF's names and layouts, in
    the parameter dtype. With ``max_shard_bytes``, tensors are packed in order into shards of at
    most that size (a single tensor larger than it gets its own shard) named
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``; if everything
    fits in one shard, a plain ``model.safetensors`` is written, as transformers does. Stale
    ``model*.safetensors`` files and index from an earlier save in ``path`` are removed. Tied
    heads are not written (transformers re-ties them). A model with LoRA adapters is refused:
    fold them in with `jaxlaw.lora.merge_lora` first, so nothing trained is silently dropped.

    Args:
        model: the model to save.
        config: its config (must be the one the model was built with).
        path: output directory (created if needed).
        max_shard_bytes: shard size limit in bytes, or ``None`` for one file.

    Raises:
        ValueError: ``config`` differs from ``model.config``, cannot be expressed as the
            family's HF config, or the model carries LoRA adapters.
    """
    if config != model.config:
        raise ValueError("config does not match model.config")
    adapted = [
        ".".join(map(str, p))
        for p, m in nnx.iter_modules(model)
        if isinstance(m, Linear) and m.lora is not None
    ]
    if adapted:
        raise ValueError(
            f"model has LoRA adapters ({adapted[0]}, ...): save merge_lora(model) instead"
        )
    hf_config = config.to_hf()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    tensors = {
        t.name: np.ascontiguousarray(
            _to_hf(t, np.asarray(jax.device_get(variables[t.path].get_value())), config)
        )
        for t in _tensor_map(config)
    }

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, x in tensors.items():
        if max_shard_bytes is not None and shards[-1] and size + x.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = x
        size += x.nbytes

    for old in path.iterdir():
        if old.name in (_SINGLE, _INDEX) or _SHARD.match(old.name):
            old.unlink()
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    # The metadata transformers itself writes; its loaders check the "format" field.
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], path / _SINGLE, metadata=metadata)
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / filename, metadata=metadata)
        weight_map |= dict.fromkeys(shard, filename)
    index = {
        "metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
        "weight_map": weight_map,
    }
    (path / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
