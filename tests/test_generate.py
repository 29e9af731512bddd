"""Tests for KV-cache decoding: `Decoder.init_cache` / `Decoder.extend` and `generate`.

References are independent: the full forward (`Decoder.__call__`, no cache) for the cached
logits, transformers' ``generate(do_sample=False)`` on the same weights (saved by jaxlaw and
loaded by transformers, eager attention) for greedy tokens, and transformers'
``TemperatureLogitsWarper`` + ``TopPLogitsWarper`` for the nucleus. transformers right-pads
wrongly for decoder-only models (its first new token comes from the logits at a pad), so the
right-padded batches are checked against transformers run on each prompt alone.
"""

import inspect
import json

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx

from jaxlaw.lora import LoraConfig, apply_lora, merge_lora
from jaxlaw.models import (
    Decoder,
    Generation,
    KVCache,
    LayerCache,
    ModelConfig,
    apply_rotary,
    generate,
    init_model,
    save_pretrained,
)
from jaxlaw.models._generate import _generate_jit, _nucleus_logits

FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "mistral", "phi3", "gemma2", "opt", "bloom")
LENGTHS = (9, 5, 3)  # real prompt tokens per row
NEW = 16


def _perturbed(config: ModelConfig, seed: int = 0, scale: float = 0.3) -> Decoder:
    """A random model far enough from init that greedy decoding does not just repeat a token."""
    graphdef, state = nnx.split(init_model(config, key=jr.key(seed)))
    rng = np.random.default_rng(seed)
    noise = lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype)  # noqa: E731
    return nnx.merge(graphdef, jax.tree.map(noise, state))


def _prompts(vocab: int = 100, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, n) for n in LENGTHS]


def _padded(prompts, side: str, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[examples, longest]`` ids and mask, each prompt at the ``side`` ("left"/"right") edge."""
    width = max(map(len, prompts))
    tokens = np.full((len(prompts), width), pad, np.int64)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        cols = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        tokens[i, cols], mask[i, cols] = p, True
    return tokens, mask


# --------------------------------------------------------------------------- cache and positions

# Jitted, as `generate` runs them (eagerly, every op of a new shape compiles on its own: slow).
_forward = nnx.jit(lambda model, tokens, mask: model(tokens, mask))
_extend = nnx.jit(lambda model, *args, **kw: model.extend(*args, **kw))


def test_rotary_default_positions_are_arange():
    x = jr.normal(jr.key(0), (2, 7, 3, 8), jnp.float32)
    arange = jnp.broadcast_to(jnp.arange(7), (2, 7))
    want = apply_rotary(x, ndims=8, theta=1e4)
    np.testing.assert_array_equal(apply_rotary(x, ndims=8, theta=1e4, positions=arange), want)


def test_rotary_scores_depend_on_relative_position_only():
    """<rot(q, p), rot(k, p')> is a function of p - p' (RoPE's defining property)."""
    q, k = jr.normal(jr.key(1), (2, 1, 1, 1, 8), jnp.float32)
    rot = lambda x, p: apply_rotary(x, ndims=8, theta=1e4, positions=jnp.array([[p]]))  # noqa: E731
    score = lambda p, s: jnp.sum(rot(q, p) * rot(k, s))  # noqa: E731
    # Positions up to ~40 give angles up to 40 rad; f32 rounding of those is ~1e-6 relative.
    np.testing.assert_allclose(score(3, 1), score(40, 38), rtol=1e-5, atol=1e-6)
    assert abs(float(score(3, 1) - score(3, 2))) > 1e-3  # and it does depend on it


def test_init_cache_shapes():
    config = ModelConfig.tiny("llama")
    cache = init_model(config, key=jr.key(0)).init_cache(3, 20)
    assert isinstance(cache, KVCache) and len(cache.layers) == config.n_layers
    assert isinstance(cache.layers[0], LayerCache)
    assert cache.layers[0].k.shape == (3, 20, config.n_kv_heads, config.head_dim)
    assert cache.layers[0].k.dtype == jnp.float32
    assert cache.valid.shape == (3, 20) and not cache.valid.any()
    assert int(cache.index) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_extend_in_pieces_equals_full_forward(family):
    """Right padding: a prompt fed 6 + 1 + 3 tokens at a time gives __call__'s logits (f32)."""
    model = _perturbed(ModelConfig.tiny(family))
    tokens, mask = _padded(_prompts(), "right")
    tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)
    full = np.asarray(_forward(model, tokens, mask))
    cache = model.init_cache(3, 16)
    pieces = []
    for lo, hi in ((0, 6), (6, 7), (7, 9)):
        logits, cache = _extend(model, tokens[:, lo:hi], mask[:, lo:hi], cache)
        pieces.append(np.asarray(logits))
    assert int(cache.index) == 9
    np.testing.assert_array_equal(np.asarray(cache.valid[:, :9]), np.asarray(mask))
    m = np.asarray(mask)
    # Same f32 ops, a longer (masked) key axis: summation order differs only. Simple: 1e-5.
    np.testing.assert_allclose(np.concatenate(pieces, 1)[m], full[m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_extend_left_padded_counts_real_tokens(family):
    """Left padding: default positions give each row the logits of its unpadded prompt, while
    explicit ``arange`` positions give __call__'s (which counts the pads)."""
    model = _perturbed(ModelConfig.tiny(family))
    prompts = _prompts()
    tokens, mask = _padded(prompts, "left")
    tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)
    logits, _ = _extend(model, tokens, mask, model.init_cache(3, 9))
    for i, p in enumerate(prompts):
        alone = np.asarray(_forward(model, jnp.asarray(p[None], jnp.int32), None))[0]
        # Same positions, extra masked keys: summation order differs only (simple, 1e-5).
        np.testing.assert_allclose(np.asarray(logits[i, 9 - len(p) :]), alone, rtol=1e-5, atol=1e-5)
    arange = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (3, 9))
    logits, _ = _extend(model, tokens, mask, model.init_cache(3, 9), positions=arange)
    m = np.asarray(mask)
    want = np.asarray(_forward(model, tokens, mask))
    np.testing.assert_allclose(np.asarray(logits)[m], want[m], rtol=1e-5, atol=1e-5)


def test_cache_size_errors():
    model = init_model(ModelConfig.tiny("llama"), key=jr.key(0))
    with pytest.raises(ValueError, match="a cache needs examples >= 1 and slots >= 1, got 2, 0"):
        model.init_cache(2, 0)
    tokens = jnp.zeros((1, 5), jnp.int32)
    with pytest.raises(ValueError, match="5 new tokens do not fit a cache of 4 slots"):
        model.extend(tokens, jnp.ones((1, 5), bool), model.init_cache(1, 4))


# --------------------------------------------------------------------------- transformers parity


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch", reason="generation parity needs torch")
    transformers = pytest.importorskip("transformers")
    # One thread: this suite shares 2 cores with other work, and torch's 2-thread pool then
    # spin-waits (measured 15x slower on the real model).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch, transformers
    torch.set_num_threads(threads)


def _hf_generate(hf, model, tokens, mask, new, **kw) -> np.ndarray:
    """transformers' greedy continuation, padded with ``pad_token_id`` to ``new`` tokens."""
    torch, _ = hf
    pad = kw.setdefault("pad_token_id", 0)
    with torch.no_grad():
        out = model.generate(
            torch.from_numpy(np.asarray(tokens, np.int64)),
            attention_mask=torch.from_numpy(np.asarray(mask, np.int64)),
            max_new_tokens=new,
            do_sample=False,
            **kw,
        )
    out = out[:, tokens.shape[1] :].numpy()
    return np.pad(out, ((0, 0), (0, new - out.shape[1])), constant_values=pad)


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, hf, tmp_path_factory):
    """A perturbed jaxlaw model of the family and the same weights in transformers."""
    _, transformers = hf
    config = ModelConfig.tiny(request.param)
    model = _perturbed(config)
    path = tmp_path_factory.mktemp(request.param)
    save_pretrained(model, config, path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    return model, ref.eval()


def test_greedy_left_padded_matches_transformers(hf, pair):
    model, ref = pair
    tokens, mask = _padded(_prompts(), "left")
    want = _hf_generate(hf, ref, tokens, mask, NEW)
    assert len(np.unique(want)) > 3  # the models say something, not one repeated token
    out = generate(model, tokens, mask, max_new_tokens=NEW)
    assert isinstance(out, Generation)
    np.testing.assert_array_equal(np.asarray(out.tokens), want)
    np.testing.assert_array_equal(np.asarray(out.lengths), [NEW] * 3)
    assert not np.asarray(out.finished).any()


def test_greedy_right_padded_matches_transformers_per_prompt(hf, pair):
    """LongRoPE (Phi-3) picks its factors for the whole batch, as transformers does, so there
    a right-padded batch is checked against the left-padded one (checked against transformers
    above) instead of against each prompt alone."""
    model, ref = pair
    prompts = _prompts()
    if model.config.rope_long_factor is None:
        want = [_hf_generate(hf, ref, p[None], np.ones((1, len(p))), NEW)[0] for p in prompts]
        want = np.stack(want)
    else:
        want = np.asarray(generate(model, *_padded(prompts, "left"), max_new_tokens=NEW).tokens)
    tokens, mask = _padded(prompts, "right")
    out = generate(model, tokens, mask, max_new_tokens=NEW, prompt_bucket=4)
    np.testing.assert_array_equal(np.asarray(out.tokens), want)


def test_stop_tokens_match_transformers_eos(hf, pair):
    """A stop token ends each row as transformers' eos does; stopped rows then emit pad_id."""
    model, ref = pair
    tokens, mask = _padded(_prompts(), "left")
    free = np.asarray(generate(model, tokens, mask, max_new_tokens=NEW).tokens)
    stop = int(free[0, 3])  # row 0 stops at step 3 or before
    pad = 99
    want = _hf_generate(hf, ref, tokens, mask, NEW, eos_token_id=stop, pad_token_id=pad)
    out = generate(model, tokens, mask, max_new_tokens=NEW, stop_tokens=(stop,), pad_id=pad)
    np.testing.assert_array_equal(np.asarray(out.tokens), want)
    for row, got, n, done in zip(free, np.asarray(out.tokens), out.lengths, out.finished):
        hits = np.flatnonzero(row == stop)
        length = int(hits[0]) + 1 if hits.size else NEW
        assert (int(n), bool(done)) == (length, bool(hits.size))
        np.testing.assert_array_equal(got[:length], row[:length])
        assert (got[length:] == pad).all()


def test_lora_model_generates_through_its_adapters(hf, tmp_path):
    """A LoRA-adapted model decodes like its merged copy (saved to transformers), and unlike
    its base model."""
    _, transformers = hf
    config = ModelConfig.tiny("llama")
    model = _perturbed(config)
    tokens, mask = _padded(_prompts(), "left")
    base = np.asarray(generate(model, tokens, mask, max_new_tokens=NEW).tokens)
    apply_lora(model, LoraConfig(rank=4, targets=r"attn\.(q_proj|v_proj)$|mlp"), rngs=nnx.Rngs(0))
    graphdef, lora, rest = nnx.split(model, nnx.LoRAParam, ...)
    rng = np.random.default_rng(2)
    lora = jax.tree.map(lambda x: x + jnp.asarray(rng.standard_normal(x.shape), x.dtype), lora)
    model = nnx.merge(graphdef, lora, rest)
    save_pretrained(merge_lora(model), config, tmp_path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    want = _hf_generate(hf, ref.eval(), tokens, mask, NEW)
    got = np.asarray(generate(model, tokens, mask, max_new_tokens=NEW).tokens)
    np.testing.assert_array_equal(got, want)
    assert (got != base).any()


# --------------------------------------------------------------------------- sampling


def test_nucleus_matches_transformers_warpers(hf):
    torch, transformers = hf
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    logits = np.asarray(jr.normal(jr.key(3), (4, 50), jnp.float32)) * 3
    for temperature, top_p in ((1.0, 0.9), (0.7, 0.5), (2.0, 0.05), (1.3, 1.0)):
        scores = torch.from_numpy(logits)
        scores = TemperatureLogitsWarper(temperature)(None, scores)
        want = TopPLogitsWarper(top_p)(None, scores).numpy()
        got = np.asarray(
            _nucleus_logits(jnp.asarray(logits), jnp.float32(temperature), jnp.float32(top_p))
        )
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        kept = ~np.isinf(want)
        # One f32 division on both sides.
        np.testing.assert_allclose(got[kept], want[kept], rtol=1e-6)


def test_sampling_draws_from_the_nucleus():
    """First-token frequencies over 4000 copies of one prompt follow softmax(logits / T) on
    the nucleus, each within 4.5 binomial standard errors (fixed key: deterministic)."""
    model = _perturbed(ModelConfig.tiny("qwen2"))
    prompt = jnp.asarray(_prompts()[0][None], jnp.int32)
    logits = model(prompt)[:, -1]
    temperature, top_p, n = 1.5, 0.8, 4000
    p = np.asarray(
        jax.nn.softmax(_nucleus_logits(logits, jnp.float32(temperature), jnp.float32(top_p)))
    )[0]
    assert 3 < (p > 0).sum() < 100  # the nucleus cuts, and keeps more than one token
    tokens = np.repeat(np.asarray(prompt), n, axis=0)
    out = generate(
        model, tokens, max_new_tokens=1, temperature=temperature, top_p=top_p, key=jr.key(4)
    )
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=p.size) / n
    assert (freq[p == 0] == 0).all()
    np.testing.assert_array_less(np.abs(freq - p), 4.5 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_sampling_same_key_same_tokens_and_top_p_to_zero_is_greedy():
    model = _perturbed(ModelConfig.tiny("gpt_neox"))
    tokens, mask = _padded(_prompts(), "left")
    kw = dict(max_new_tokens=NEW, temperature=1.0)
    a = generate(model, tokens, mask, key=jr.key(5), **kw)
    b = generate(model, tokens, mask, key=jr.key(5), **kw)
    c = generate(model, tokens, mask, key=jr.key(6), **kw)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()
    greedy = generate(model, tokens, mask, max_new_tokens=NEW)
    narrow = generate(model, tokens, mask, key=jr.key(5), top_p=1e-6, **kw)
    np.testing.assert_array_equal(np.asarray(narrow.tokens), np.asarray(greedy.tokens))


# --------------------------------------------------------------------------- compile and errors


def test_compiles_once_per_bucket_and_mode():
    model = _perturbed(ModelConfig.tiny("llama"))
    rng = np.random.default_rng(0)
    generate(model, rng.integers(0, 100, (2, 5)), max_new_tokens=4)  # warm: the shape is known
    size = _generate_jit._cache_size()
    generate(model, rng.integers(0, 100, (2, 20)), max_new_tokens=4)  # same bucket of 32
    assert _generate_jit._cache_size() == size
    for temperature in (0.5, 1.5):  # sampling compiles once, whatever the temperature
        generate(
            model,
            rng.integers(0, 100, (2, 9)),
            max_new_tokens=4,
            temperature=temperature,
            key=jr.key(0),
        )
    assert _generate_jit._cache_size() == size + 1
    generate(model, rng.integers(0, 100, (2, 33)), max_new_tokens=4)  # next bucket
    assert _generate_jit._cache_size() == size + 2


def test_early_exit_when_every_example_stops():
    model = _perturbed(ModelConfig.tiny("gpt2"))
    tokens, mask = _padded(_prompts(), "left")
    free = np.asarray(generate(model, tokens, mask, max_new_tokens=NEW).tokens)
    stops = tuple(int(t) for t in free[:, 0])  # every row stops at its first token
    out = generate(model, tokens, mask, max_new_tokens=NEW, stop_tokens=stops, pad_id=7)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), free[:, 0])
    assert (np.asarray(out.tokens[:, 1:]) == 7).all()
    np.testing.assert_array_equal(np.asarray(out.lengths), [1, 1, 1])
    assert np.asarray(out.finished).all()


BAD = {
    "new_tokens_0": (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1, got 0"),
    "new_tokens_float": (dict(max_new_tokens=2.5), "max_new_tokens must be an int >= 1, got 2.5"),
    "top_p_0": (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
    "top_p_above_1": (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    "temperature": (dict(temperature=-0.1), "temperature must be >= 0"),
    "no_key": (dict(temperature=0.5), r"sampling \(temperature=0.5\) needs a key"),
    "bucket": (dict(prompt_bucket=0), "prompt_bucket must be an int >= 1"),
    "stop": (dict(stop_tokens=(100,)), r"stop token 100 outside the vocabulary \[0, 100\)"),
    "pad": (dict(pad_id=-1), r"pad_id -1 outside the vocabulary \[0, 100\)"),
    "mask_shape": (
        dict(attention_mask=np.ones((3, 8), bool)),
        r"attention_mask shape \[3, 8\] != tokens shape \[3, 9\]",
    ),
    "empty_prompt": (dict(attention_mask=np.zeros((3, 9), bool)), "prompt 0 has no real token"),
    "tokens_1d": (dict(tokens=np.zeros(9, np.int64)), r"tokens must be an int \[examples, seq\]"),
    "tokens_float": (dict(tokens=np.zeros((3, 9), np.float32)), r"tokens must be an int \["),
    "positions": (
        dict(max_new_tokens=56),
        r"prompt width 9 \+ max_new_tokens 56 > max_positions 64",
    ),
}


@pytest.mark.parametrize("change, message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_value_error(change, message):
    """The library's own one-line ValueError; called unwrapped, because the test run's jaxtyping
    hook may reject a mismatched shape first (a TypeError)."""
    model = init_model(ModelConfig.tiny("gpt2"), key=jr.key(0))
    kw = dict(tokens=np.ones((3, 9), np.int64), attention_mask=None, max_new_tokens=4) | change
    with pytest.raises(ValueError, match=message) as err:
        inspect.unwrap(generate)(model, **kw)
    assert "\n" not in str(err.value)


def test_learned_positions_fit_exactly():
    model = init_model(ModelConfig.tiny("gpt2"), key=jr.key(0))
    out = generate(model, np.ones((1, 9), np.int64), max_new_tokens=55)  # 9 + 55 == 64
    assert out.tokens.shape == (1, 55)


# --------------------------------------------------------------------------- the real SmolLM2


def test_real_greedy_matches_transformers(hf, smollm2, text_root, tmp_path):
    """Two GSM8K test questions through the chat template, left-padded into one batch: 32
    greedy tokens equal transformers' on the same float32 weights. transformers reads them from
    jaxlaw's `save_pretrained` folder (4 s) rather than dequantizing the GGUF itself (15 s):
    tests/test_gguf.py already checks that both loaders agree, and here the same weights on
    both sides leave decoding as the only difference."""
    _, transformers = hf
    model, tok = smollm2
    with open(text_root / "text" / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        questions = [json.loads(next(f))["question"] for _ in range(2)]
    prompts = [
        np.array(tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])))
        for q in questions
    ]
    assert len(prompts[0]) != len(prompts[1])  # the batch really is padded
    tokens, mask = _padded(prompts, "left", pad=tok.pad_id)
    save_pretrained(model, model.config, tmp_path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=hf[0].float32)
    kw = dict(eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    want = _hf_generate(hf, ref.eval(), tokens, mask, 32, **kw)
    out = generate(
        model, tokens, mask, max_new_tokens=32, stop_tokens=(tok.eos_id,), pad_id=tok.pad_id
    )
    np.testing.assert_array_equal(np.asarray(out.tokens), want)
    assert "16" in tok.decode(np.asarray(out.tokens[0]).tolist())  # Janet's ducks lay 16 eggs
