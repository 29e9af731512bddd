"""Tests for `jaxlaw.models`: PyTorch parity per family, checkpoint I/O, masking invariants.

Parity tests build tiny random transformers models (eager attention, perturbed so biases and
norm scales are non-trivial), save them, load them with jaxlaw and compare float32 logits at
the non-padded positions. They skip only when torch is absent.
"""

import json
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxlaw.models import (
    CheckpointError,
    Decoder,
    ModelConfig,
    alibi_slopes,
    init_model,
    load_pretrained,
    save_pretrained,
)

FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "mistral", "phi3", "gemma2", "opt", "bloom")
VOCAB, SEQ = 100, 10
LENGTHS = (10, 7, 4)  # right padding: row i holds LENGTHS[i] real tokens


def _batch() -> tuple[jax.Array, jax.Array]:
    tokens = jr.randint(jr.key(1), (len(LENGTHS), SEQ), 0, VOCAB, dtype=jnp.int32)
    mask = jnp.arange(SEQ)[None, :] < jnp.asarray(LENGTHS)[:, None]
    return tokens, mask


def _perturbed(config: ModelConfig, seed: int = 0, scale: float = 0.1) -> Decoder:
    """A random model whose biases and norm scales are not at their zero/one init.

    The noise is drawn with numpy so that the tests do not compile a sampler per leaf shape.
    """
    graphdef, state = nnx.split(init_model(config, key=jr.key(seed)))
    rng = np.random.default_rng(seed)
    noise = lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype)  # noqa: E731
    return nnx.merge(graphdef, jax.tree.map(noise, state))


def _leaves(model: Decoder) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


# --------------------------------------------------------------------------- transformers side


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch")
    transformers = pytest.importorskip("transformers")
    # One thread: torch's 2-thread pool spin-waits on this shared 2-core machine (15x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch, transformers
    torch.set_num_threads(threads)


def _hf_model(hf, family: str):
    """A tiny random transformers causal LM, built from transformers' own config classes."""
    torch, transformers = hf
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        use_cache=False,
    )
    if family == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=64
        )
        config.use_cache = False
        config.bos_token_id = config.eos_token_id = 0
    elif family == "gpt_neox":  # Pythia layout: partial rotary, parallel residual, untied
        config = transformers.GPTNeoXConfig(
            **common, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False
        )
    elif family == "llama":  # grouped-query attention, untied head
        config = transformers.LlamaConfig(**common, num_key_value_heads=2)
    elif family == "qwen2":  # q/k/v biases, tied head
        config = transformers.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True)
    elif family == "mistral":  # a window of 4 < SEQ, so it bites
        config = transformers.MistralConfig(**common, num_key_value_heads=2, sliding_window=4)
    elif family == "phi3":  # fused qkv / gate_up; LongRoPE past an original length of 8 < SEQ
        rope = dict(
            rope_type="longrope",
            rope_theta=10000.0,
            short_factor=[1.0 + 0.1 * i for i in range(8)],
            long_factor=[1.0 + 0.7 * i for i in range(8)],
            original_max_position_embeddings=8,
        )
        config = transformers.Phi3Config(
            **common,
            num_key_value_heads=2,
            rope_parameters=rope,
            original_max_position_embeddings=8,
            pad_token_id=None,
        )
    elif family == "bloom":  # ALiBi, embedding norm, head-interleaved fused qkv, tied head
        config = transformers.BloomConfig(
            vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4, use_cache=False
        )
    elif family == "opt":  # learned positions offset by 2, ReLU, tied head
        config = transformers.OPTConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=128,
            max_position_embeddings=64,
            word_embed_proj_dim=64,
            pad_token_id=None,
            use_cache=False,
        )
    else:  # local/global layers, soft-caps low enough to bite, query scalar != head_dim
        config = transformers.Gemma2Config(
            **common,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=4,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=5.0,
        )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():  # make biases and norm scales non-trivial
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _hf_logits(hf, model, tokens, mask) -> np.ndarray:
    torch, _ = hf
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(np.asarray(tokens, np.int64)),
            attention_mask=torch.from_numpy(np.asarray(mask, np.int64)),
        )
    return out.logits.float().numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_with_transformers(hf, family, tmp_path):
    """HF checkpoint -> jaxlaw gives the same logits at real tokens (f32, atol 1e-4)."""
    torch_model = _hf_model(hf, family)
    torch_model.save_pretrained(tmp_path)
    model, config = load_pretrained(tmp_path, dtype="float32")
    assert config.family == family
    tokens, mask = _batch()
    ours = np.asarray(model(tokens, mask))
    theirs = _hf_logits(hf, torch_model, tokens, mask)
    assert ours.dtype == np.float32
    # Composite f32 forward through two layers: levanter's 1e-4 rule, absolute on O(1) logits.
    np.testing.assert_allclose(ours[np.asarray(mask)], theirs[np.asarray(mask)], atol=1e-4, rtol=0)


def test_opt_post_norm_parity_and_project_in_rejected(hf, tmp_path):
    """OPT-350m's post-norm layout (do_layer_norm_before=False: no final norm) loads to the
    same logits; its project_in/out (word_embed_proj_dim != hidden) is a one-line error."""
    torch, transformers = hf
    kw = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    kw |= dict(ffn_dim=128, max_position_embeddings=64, pad_token_id=None, use_cache=False)
    config = transformers.OPTConfig(**kw, word_embed_proj_dim=64, do_layer_norm_before=False)
    torch.manual_seed(0)
    torch_model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch_model.eval().save_pretrained(tmp_path)
    model, ours = load_pretrained(tmp_path, dtype="float32")
    assert not ours.norm_before and model.final_norm is None
    tokens, mask = _batch()
    m = np.asarray(mask)
    theirs = _hf_logits(hf, torch_model, tokens, mask)
    # Same composite-f32 tolerance as the other parity tests.
    np.testing.assert_allclose(np.asarray(model(tokens, mask))[m], theirs[m], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"opt with word_embed_proj_dim=32 != hidden_size=64"):
        ModelConfig.from_hf(ours.to_hf() | {"word_embed_proj_dim": 32})


@pytest.mark.parametrize("n_heads", [1, 4, 6, 12, 16])
def test_alibi_slopes_match_bloom(hf, n_heads):
    """Powers of two and not (the interleaved extra slopes): exact, both are float32 powers."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    want = _get_alibi_slopes(n_heads, "cpu").numpy()
    np.testing.assert_array_equal(alibi_slopes(n_heads), want)


def test_load_sharded_transformers_checkpoint(hf, tmp_path):
    """transformers' own sharded layout (index.json + shards) loads to the same logits."""
    torch_model = _hf_model(hf, "llama")
    torch_model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    model, _ = load_pretrained(tmp_path, dtype="float32")
    tokens, mask = _batch()
    m = np.asarray(mask)
    theirs = _hf_logits(hf, torch_model, tokens, mask)
    # Same composite-f32 tolerance as the single-file parity test.
    np.testing.assert_allclose(np.asarray(model(tokens, mask))[m], theirs[m], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_checkpoint_loads_in_transformers(hf, family, tmp_path):
    """jaxlaw save -> transformers load: no missing/unexpected keys, same logits."""
    _, transformers = hf
    config = ModelConfig.tiny(family)
    model = _perturbed(config)
    save_pretrained(model, config, tmp_path, max_shard_bytes=60_000)
    torch_model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    tokens, mask = _batch()
    m = np.asarray(mask)
    theirs = _hf_logits(hf, torch_model.eval(), tokens, mask)
    # Same composite-f32 tolerance as the load-direction parity test.
    np.testing.assert_allclose(np.asarray(model(tokens, mask))[m], theirs[m], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- jaxlaw-only I/O


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shard", [None, 20_000])
def test_round_trip_is_exact(family, shard, tmp_path):
    config = ModelConfig.tiny(family)
    model = _perturbed(config)
    save_pretrained(model, config, tmp_path, max_shard_bytes=shard)
    assert (tmp_path / "model.safetensors.index.json").exists() == (shard is not None)
    loaded, loaded_config = load_pretrained(tmp_path)
    assert loaded_config == config
    want, got = _leaves(model), _leaves(loaded)
    assert want.keys() == got.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=str(path))


def test_round_trip_bfloat16_is_exact(tmp_path):
    config = ModelConfig.tiny("gpt_neox", dtype="bfloat16", param_dtype="bfloat16")
    model = _perturbed(config)
    save_pretrained(model, config, tmp_path)
    loaded, loaded_config = load_pretrained(tmp_path)
    assert loaded_config == config
    got = _leaves(loaded)
    for path, x in _leaves(model).items():
        assert got[path].dtype == jnp.bfloat16
        np.testing.assert_array_equal(got[path], x, err_msg=str(path))


def test_resave_replaces_old_shards(tmp_path):
    config = ModelConfig.tiny("gpt2")
    model = _perturbed(config)
    save_pretrained(model, config, tmp_path, max_shard_bytes=20_000)
    save_pretrained(model, config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_unprefixed_names_and_buffers_load(tmp_path):
    """Base-model names (original gpt2 files) and the documented buffers are accepted."""
    config = ModelConfig.tiny("gpt2")
    model = _perturbed(config)
    save_pretrained(model, config, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    tensors["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["lm_head.weight"] = tensors["wte.weight"]  # tied head written anyway
    save_file(tensors, tmp_path / "model.safetensors")
    got = _leaves(load_pretrained(tmp_path)[0])
    for path, x in _leaves(model).items():
        np.testing.assert_array_equal(got[path], x, err_msg=str(path))


def _corrupt(tmp_path, edit) -> str:
    config = ModelConfig.tiny("llama")
    save_pretrained(init_model(config, key=jr.key(0)), config, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    return str(err.value)


def test_missing_tensor_is_named(tmp_path):
    msg = _corrupt(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    assert "missing" in msg and "model.layers.1.mlp.up_proj.weight [128, 64]" in msg


def test_missing_untied_head_is_named(tmp_path):
    msg = _corrupt(tmp_path, lambda t: t.pop("lm_head.weight"))
    assert "lm_head.weight [100, 64]" in msg


def test_unexpected_tensor_is_named(tmp_path):
    def edit(t):
        t["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)

    msg = _corrupt(tmp_path, edit)
    assert "unexpected" in msg and "model.layers.0.self_attn.q_norm.weight [16]" in msg


def test_shape_mismatch_is_named(tmp_path):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)

    msg = _corrupt(tmp_path, edit)
    assert "shape mismatch" in msg
    assert "model.layers.0.self_attn.k_proj.weight: file [64, 64], expected [32, 64]" in msg


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("family", FAMILIES)
def test_config_hf_round_trip(family):
    config = ModelConfig.tiny(family)
    assert ModelConfig.from_hf(config.to_hf()) == config
    assert hash(config) == hash(ModelConfig.tiny(family))


def test_config_reads_transformers4_spelling():
    pythia = {
        "model_type": "gpt_neox",
        "vocab_size": 50304,
        "hidden_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "torch_dtype": "float16",
    }
    config = ModelConfig.from_hf(pythia)
    assert (config.rotary_ndims, config.rope_theta, config.dtype) == (16, 10000.0, "float16")
    assert config.parallel_residual and config.fused_qkv and not config.tie_word_embeddings


def test_config_reads_phi3_su_rope_scaling():
    """Phi-3-mini-128k's transformers 4 spelling: rope_scaling type "su" with the original
    context at top level; the attention factor is transformers' sqrt(1 + ln f / ln original)."""
    phi3 = ModelConfig.tiny("phi3").to_hf()
    del phi3["rope_parameters"], phi3["original_max_position_embeddings"]
    short, long = [1.0] * 8, [float(i + 1) for i in range(8)]
    phi3 |= {"rope_theta": 10000.0, "max_position_embeddings": 64}
    phi3 |= {"original_max_position_embeddings": 16}
    phi3["rope_scaling"] = {"type": "su", "short_factor": short, "long_factor": long}
    config = ModelConfig.from_hf(phi3)
    assert config.rope_short_factor == tuple(short) and config.rope_long_factor == tuple(long)
    assert config.rope_original_max_positions == 16
    # Python floats on both sides: the same expression, so exact.
    assert config.rope_attention_factor == math.sqrt(1 + math.log(4) / math.log(16))


def test_config_errors():
    match = "unsupported model_type 'mamba'; supported: gpt2, gpt_neox, llama, qwen2, mistral, "
    with pytest.raises(ValueError, match=match + "phi3, gemma2, opt, bloom$"):
        ModelConfig.from_hf({"model_type": "mamba"})
    with pytest.raises(ValueError, match="hidden_size 60 not divisible by n_heads 8"):
        ModelConfig.tiny("gpt2", hidden_size=60, n_heads=8)
    with pytest.raises(ValueError, match="n_heads 4 not divisible by n_kv_heads 3"):
        ModelConfig.tiny("llama", n_kv_heads=3)
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        cfg = ModelConfig.tiny("llama").to_hf()
        ModelConfig.from_hf(cfg | {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="phi3 with rope_type='yarn' is not supported"):
        cfg = ModelConfig.tiny("phi3").to_hf()
        ModelConfig.from_hf(cfg | {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="LongRoPE factors need rotary_ndims // 2 = 8 entries"):
        ModelConfig.tiny("phi3", rope_long_factor=(1.0,))
    with pytest.raises(ValueError, match=r"full_attention_layers \(2,\) outside \[0, 2\)"):
        ModelConfig.tiny("gemma2", full_attention_layers=(2,))
    with pytest.raises(ValueError, match="family 'mistral' requires"):
        ModelConfig.tiny("mistral", attn_softcap=5.0).to_hf()


# --------------------------------------------------------------------------- forward invariants


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_invariance(family):
    """Real-token logits ignore whatever sits under the pad mask (exact), and match the
    unpadded sequence (f32 simple tolerance: different shapes compile different kernels)."""
    model = _perturbed(ModelConfig.tiny(family))
    tokens, mask = _batch()
    other = jnp.where(mask, tokens, (tokens + 17) % VOCAB)
    a, b = np.asarray(model(tokens, mask)), np.asarray(model(other, mask))
    m = np.asarray(mask)
    np.testing.assert_array_equal(a[m], b[m])
    n = LENGTHS[2]
    alone = np.asarray(model(tokens[2:, :n]))
    np.testing.assert_allclose(a[2, :n], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_sliding_window_hides_tokens_beyond_it(family):
    """One local layer of window 4: token 0 reaches positions 0-3 and no further (exact)."""
    config = ModelConfig.tiny(family, n_layers=1, full_attention_layers=())
    model = _perturbed(config)
    tokens, _ = _batch()
    a = np.asarray(model(tokens))
    b = np.asarray(model(tokens.at[:, 0].set((tokens[:, 0] + 1) % VOCAB)))
    np.testing.assert_array_equal(a[:, 4:], b[:, 4:])
    assert np.abs(a[:, 3] - b[:, 3]).min() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_fully_padded_row_is_finite(family):
    model = _perturbed(ModelConfig.tiny(family))
    tokens, mask = _batch()
    mask = mask.at[1].set(False)
    logits = np.asarray(model(tokens, mask))
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_forward_close_to_float32(family, tmp_path):
    # Weights stored in bf16 and upcast exactly for the f32 model, so only compute differs.
    config = ModelConfig.tiny(family, param_dtype="bfloat16")
    save_pretrained(_perturbed(config), config, tmp_path)
    f32, _ = load_pretrained(tmp_path, dtype="float32")
    bf16, bf16_config = load_pretrained(tmp_path, dtype="bfloat16")
    assert bf16_config.param_dtype == "bfloat16"
    tokens, mask = _batch()
    m = np.asarray(mask)
    want, got = np.asarray(f32(tokens, mask))[m], np.asarray(bf16(tokens, mask))
    assert got.dtype == np.float32
    # bf16 paths: rtol 2e-2, measured on the whole logit vector since elementwise relative
    # error is meaningless for logits near zero.
    assert np.linalg.norm(got[m] - want) <= 2e-2 * np.linalg.norm(want)


def test_same_key_same_weights():
    config = ModelConfig.tiny("qwen2")
    a, b = _leaves(init_model(config, key=jr.key(3))), _leaves(init_model(config, key=jr.key(3)))
    for path in a:
        np.testing.assert_array_equal(a[path], b[path])


def test_module_names():
    model = init_model(ModelConfig.tiny("gpt2"), key=jr.key(0))
    assert model.lm_head is None and model.pos_embed is not None
    assert model.blocks[0].attn.qkv.kernel.shape == (64, 192)
    model = init_model(ModelConfig.tiny("llama"), key=jr.key(0))
    assert model.pos_embed is None and model.lm_head.kernel.shape == (64, 100)
    assert model.blocks[1].attn.k_proj.kernel.shape == (64, 32)
    assert model.blocks[1].mlp.gate_proj is not None


def test_config_json_is_hf_shaped(tmp_path):
    config = ModelConfig.tiny("qwen2")
    save_pretrained(init_model(config, key=jr.key(0)), config, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["Qwen2ForCausalLM"]
    assert written["num_key_value_heads"] == 2 and written["tie_word_embeddings"]


def test_softmax_matches_jax_nn_with_its_closed_form_derivative():
    """Values, first and second derivatives equal jax.nn.softmax's (which differentiates
    through exp/sum); rows filled with finfo.min (fully masked) stay uniform and finite."""
    from jaxlaw.models._attention import softmax

    x = jr.normal(jr.key(3), (4, 7), jnp.float32) * 3.0
    x = x.at[1, :3].set(jnp.finfo(jnp.float32).min).at[2].set(jnp.finfo(jnp.float32).min)
    np.testing.assert_allclose(softmax(x), jax.nn.softmax(x, axis=-1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(softmax(x)[2], np.full(7, 1 / 7), rtol=1e-6)
    w = jr.normal(jr.key(4), (4, 7))

    def f(fn):
        return lambda x: jnp.sum(w * fn(x) ** 2)

    ref = jax.grad(f(lambda x: jax.nn.softmax(x, axis=-1)))
    np.testing.assert_allclose(jax.grad(f(softmax))(x), ref(x), rtol=1e-5, atol=1e-7)
    y = x[0]
    hess = jax.hessian(lambda y: jnp.sum(w[0] * softmax(y) ** 2))(y)
    ref_hess = jax.hessian(lambda y: jnp.sum(w[0] * jax.nn.softmax(y) ** 2))(y)
    np.testing.assert_allclose(hess, ref_hess, rtol=1e-4, atol=1e-6)
