"""LoRA surgery: identity at init, merge equivalence, what trains, regex targets, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlaw.lora import LoraConfig, apply_lora, linear_paths, lora_paths, merge_lora, split_lora
from jaxlaw.models import ModelConfig, init_model

FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "mistral", "phi3", "gemma2", "opt", "bloom")


def _tokens(cfg, n=3, seq=12, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (n, seq)), jnp.int32)


def _randomise_b(model, seed=1):
    """Give every adapter a non-zero ``b`` so merges and gradients are not trivially zero."""
    rng = np.random.default_rng(seed)
    for path in lora_paths(model):
        ad = linear_paths(model)[path].lora
        ad.b[...] = jnp.asarray(rng.normal(0, 0.05, ad.b.shape), ad.b.dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_at_init(family):
    cfg = ModelConfig.tiny(family)
    model = init_model(cfg, key=jax.random.key(0))
    x = _tokens(cfg)
    before = np.asarray(model(x))
    paths = apply_lora(model, LoraConfig(targets=r".*", rank=4), rngs=nnx.Rngs(0))
    assert len(paths) == len(linear_paths(model)) >= 2 * cfg.n_layers
    # b = 0 makes the update exactly zero, so the logits are bit-identical.
    np.testing.assert_array_equal(np.asarray(model(x)), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_equals_unmerged(family):
    cfg = ModelConfig.tiny(family)
    model = init_model(cfg, key=jax.random.key(0))
    apply_lora(
        model,
        LoraConfig(targets=r"(qkv|q_proj|v_proj|down_proj)$", rank=4, alpha=8.0),
        rngs=nnx.Rngs(0),
    )
    _randomise_b(model)
    x = _tokens(cfg)
    unmerged = np.asarray(model(x))
    merged_model = merge_lora(model)
    assert lora_paths(merged_model) == () and lora_paths(model) != ()
    base = init_model(cfg, key=jax.random.key(0))
    assert np.abs(unmerged - np.asarray(base(x))).max() > 1e-3  # the adapters do something
    # f32 composite (two matmul orders): rtol 1e-5 / atol 1e-5 per the house tolerance table.
    np.testing.assert_allclose(np.asarray(merged_model(x)), unmerged, rtol=1e-5, atol=1e-5)


def test_split_holds_only_adapters():
    cfg = ModelConfig.tiny("gpt2")
    model = init_model(cfg, key=jax.random.key(0))
    n_base = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    apply_lora(model, LoraConfig(rank=4), rngs=nnx.Rngs(0))
    _, lora, frozen = split_lora(model)
    h = cfg.hidden_size
    qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    assert sum(x.size for x in jax.tree.leaves(lora)) == cfg.n_layers * 4 * (h + qkv_out)
    assert sum(x.size for x in jax.tree.leaves(frozen)) == n_base


def test_targets_regex_and_errors():
    cfg = ModelConfig.tiny("llama")
    model = init_model(cfg, key=jax.random.key(0))
    paths = apply_lora(model, LoraConfig(), rngs=nnx.Rngs(0))
    assert paths == (
        "blocks.0.attn.q_proj",
        "blocks.0.attn.v_proj",
        "blocks.1.attn.q_proj",
        "blocks.1.attn.v_proj",
    )
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, LoraConfig(), rngs=nnx.Rngs(0))
    fresh = init_model(cfg, key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"match no projection; projections are: .*blocks\.N\.attn\.q_proj"
    ):
        apply_lora(fresh, LoraConfig(targets="c_attn"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraConfig(rank=0)
    with pytest.raises(ValueError, match="dropout"):
        LoraConfig(dropout=1.0)
    with pytest.raises(ValueError, match="not a valid regex"):
        LoraConfig(targets="(")


@pytest.mark.parametrize("family", FAMILIES)
def test_default_targets_hit_query_and_value(family):
    """The default adapts q/v, or the fused qkv projection (GPT-2, GPT-NeoX, Phi-3, BLOOM)."""
    model = init_model(ModelConfig.tiny(family), key=jax.random.key(0))
    paths = apply_lora(model, LoraConfig(), rngs=nnx.Rngs(0))
    fused = family in ("gpt2", "gpt_neox", "phi3", "bloom")
    names = ("qkv",) if fused else ("q_proj", "v_proj")
    assert paths == tuple(f"blocks.{i}.attn.{n}" for i in range(2) for n in names)


def test_dropout_only_in_train_mode():
    cfg = ModelConfig.tiny("gpt2")
    model = init_model(cfg, key=jax.random.key(0))
    apply_lora(model, LoraConfig(rank=4, dropout=0.5), rngs=nnx.Rngs(params=0, dropout=1))
    _randomise_b(model)
    x = _tokens(cfg)
    model.eval()
    a, b = np.asarray(model(x)), np.asarray(model(x))
    np.testing.assert_array_equal(a, b)
    model.train()
    c = np.asarray(model(x))
    assert np.abs(c - a).max() > 1e-4


def test_save_refuses_adapters_and_saves_merged(tmp_path):
    from jaxlaw.models import load_pretrained, save_pretrained

    cfg = ModelConfig.tiny("qwen2")
    model = init_model(cfg, key=jax.random.key(0))
    apply_lora(model, LoraConfig(rank=2), rngs=nnx.Rngs(0))
    _randomise_b(model)
    with pytest.raises(ValueError, match="save merge_lora"):
        save_pretrained(model, cfg, tmp_path)
    save_pretrained(merge_lora(model), cfg, tmp_path)
    loaded, _ = load_pretrained(tmp_path)
    x = _tokens(cfg)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_adapters_take_the_kernel_dtype_under_x64(param_dtype):
    """Guards review.md: with x64 on (the CLI enabled it for fits) adapters became float64."""
    from dataclasses import replace

    cfg = replace(ModelConfig.tiny("gpt2"), param_dtype=param_dtype)
    with jax.enable_x64(True):
        model = init_model(cfg, key=jax.random.key(0))
        apply_lora(model, LoraConfig(targets=r".*", rank=4), rngs=nnx.Rngs(0))
        _, lora, _ = split_lora(model)
        leaves = jax.tree.leaves(lora)
        assert leaves
        assert {leaf.dtype for leaf in leaves} == {jnp.dtype(param_dtype)}
        a_x64 = np.asarray(linear_paths(model)["blocks.0.attn.qkv"].lora.a[...], np.float32)
    with jax.enable_x64(False):
        model = init_model(cfg, key=jax.random.key(0))
        apply_lora(model, LoraConfig(targets=r".*", rank=4), rngs=nnx.Rngs(0))
        a_x32 = np.asarray(linear_paths(model)["blocks.0.attn.qkv"].lora.a[...], np.float32)
    # Same init numbers with x64 on or off (drawn in float32 either way).
    np.testing.assert_array_equal(a_x64, a_x32)
