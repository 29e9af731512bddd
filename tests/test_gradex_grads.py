"""GradEx gradients, projection and storage: the log-odds output against numpy, vmapped
per-sample grads against a loop, the blockwise projection against a dense matrix built here from
its documented keys, JL and expectation checks, determinism, chunk and device invariance,
stores (round trip, resume, wrong model) and bad input."""

import json
import math
import os
import subprocess
import sys
import textwrap

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from jaxlaw.data import TokenizedSet
from jaxlaw.data_selection.gradex import (
    ProjectedGrads,
    Projection,
    check_model,
    example_grads,
    grads_meta,
    load_grads,
    output_logodds,
    projected_grads,
    sample_outputs,
    save_grads,
)
from jaxlaw.data_selection.gradex import _grads as grads_module
from jaxlaw.data_selection.gradex._store import GradStore
from jaxlaw.lora import LoraConfig, apply_lora, linear_paths, split_lora
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import Batch

VOCAB, SEQ = 16, 12
TARGETS = r"attn\.qkv$|mlp\.down_proj$"


# ------------------------------------------------------------------------------------ fixtures
def tiny_model(
    seed: int = 0, rank: int = 2, b_scale: float = 0.05, dropout: float = 0.1, tied: bool = True
):
    """2-layer GPT-2-like model, LoRA (dropout 0.1) on qkv and down_proj, random non-zero B."""
    config = ModelConfig.tiny(
        "gpt2",
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        max_positions=16,
        tie_word_embeddings=tied,
    )
    model = init_model(config, key=jr.key(seed))
    apply_lora(model, LoraConfig(targets=TARGETS, rank=rank, dropout=dropout), rngs=nnx.Rngs(seed))
    for i, linear in enumerate(m for m in linear_paths(model).values() if m.lora is not None):
        b = linear.lora.b
        b[...] = b_scale * jr.normal(jr.key(100 + i), b[...].shape, jnp.float32)
    return model


def tiny_data(n: int = 11, seed: int = 0, sources: int = 3) -> TokenizedSet:
    """Right-padded rows of different lengths; targets are the last 2..5 real tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB - 1, (n, SEQ)).astype(np.int32)
    length = rng.integers(7, SEQ + 1, n)
    am = np.arange(SEQ)[None] < length[:, None]
    start = length - rng.integers(2, 6, n)
    lm = am & (np.arange(SEQ)[None] >= start[:, None])
    tokens = np.where(am, tokens, 0).astype(np.int32)
    names = tuple(f"s{k}" for k in range(sources))
    src = (np.arange(n) % sources).astype(np.int32)
    return TokenizedSet(tokens, am, lm, np.arange(100, 100 + n, dtype=np.int32), src, names)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def projs(model):
    """Two projections shared by the tests (one compiled chunk function per chunk size); blocks
    of 70 rows cut every LoRA leaf into full blocks plus a partial one."""
    _, lora, _ = split_lora(model)
    return (
        Projection.for_tree(lora, dim=16, seed=0, block_rows=70),
        Projection.for_tree(lora, dim=16, seed=1, kind="gaussian", block_rows=70),
    )


def as_batch(data: TokenizedSet) -> Batch:
    return Batch(
        jnp.asarray(data.tokens), jnp.asarray(data.attention_mask), jnp.asarray(data.loss_mask)
    )


def dense_p(proj: Projection) -> np.ndarray:
    """``P`` (p x d, float64) rebuilt in numpy from the documented per-block keys."""
    d, rows_per_block = proj.dim, proj.block_rows
    parts = []
    for leaf, (_, shape) in enumerate(proj.layout):
        size = math.prod(shape)
        for b, lo in enumerate(range(0, size, rows_per_block)):
            rows = min(rows_per_block, size - lo)
            key = jr.fold_in(jr.fold_in(jr.key(proj.seed), leaf), b)
            if proj.kind == "rademacher":
                words = np.asarray(jr.bits(key, (rows, -(-d // 32)), jnp.uint32))
                # Little-endian bytes, little bit order: column j is bit j % 32 of word j // 32.
                bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :d]
                parts.append(np.where(bits == 1, 1.0, -1.0) / np.sqrt(d))
            else:
                parts.append(
                    np.asarray(jr.normal(key, (rows, d), jnp.float32), np.float64) / np.sqrt(d)
                )
    return np.concatenate(parts)


def grad_matrix(grads: dict) -> np.ndarray:
    """``[examples, p]`` from a pure-dict gradient tree with a leading examples axis."""
    leaves = jax.tree.leaves(grads)
    return np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in leaves], 1)


# -------------------------------------------------------------------------------------- output
def reference_logodds(logits, tokens, mask, eps):
    logp = np.take_along_axis(
        log_softmax(logits[:, :-1].astype(np.float64), -1), tokens[:, 1:, None], -1
    )[..., 0]
    p = np.clip(np.exp(logp), eps, 1 - eps)
    m = np.log(p) - np.log1p(-p)
    w = mask[:, 1:].astype(np.float64)
    return (m * w).sum(1) / np.maximum(w.sum(1), 1)


def test_output_logodds_matches_numpy_including_extreme_probabilities():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6, 9, 7)).astype(np.float32)
    tokens = rng.integers(0, 7, (6, 9)).astype(np.int32)
    # Example 1: gold token almost certain (p -> 1); example 2: almost impossible (p -> 0).
    logits[1, :-1] = -60.0
    logits[1, np.arange(8), tokens[1, 1:]] = 60.0
    logits[2, np.arange(8), tokens[2, 1:]] = -80.0
    mask = rng.random((6, 9)) < 0.6
    mask[:, 0] = False
    mask[3] = False  # no target: output 0
    mask[3, 0] = True  # position 0 is never scored
    got = np.asarray(output_logodds(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask)))
    want = reference_logodds(logits, tokens, mask, 1e-3)
    assert np.all(np.isfinite(got)) and got[3] == 0.0
    lim = math.log(1e-3) - math.log1p(-1e-3)
    np.testing.assert_allclose(got[1], -lim, rtol=1e-6)  # clipped at logit(1 - eps)
    np.testing.assert_allclose(got[2], lim, rtol=1e-6)  # clipped at logit(eps)
    # float32 log-softmax against float64 numpy: relative 1e-5 with an absolute floor near 0.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Output and gradient stay finite at the clip and with -inf logits: a gold token at -inf on a
    # masked position, a non-gold one at -inf on a scored position.
    logits_inf = logits.copy()
    mask4 = mask.copy()
    mask4[4, 6], mask4[0, 3] = False, True
    logits_inf[4, 5, tokens[4, 6]] = -np.inf
    logits_inf[0, 2, (tokens[0, 3] + 1) % 7] = -np.inf
    assert np.all(
        np.isfinite(
            np.asarray(
                output_logodds(jnp.asarray(logits_inf), jnp.asarray(tokens), jnp.asarray(mask4))
            )
        )
    )
    f = lambda x: jnp.sum(output_logodds(x, jnp.asarray(tokens), jnp.asarray(mask4)))  # noqa: E731
    g = jax.grad(f)(jnp.asarray(logits_inf))
    assert np.all(np.isfinite(np.asarray(g)))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32, (2, 5, 4), elements=st.floats(allow_nan=False, allow_infinity=False, width=32)
    )
)
def test_output_logodds_is_finite_and_bounded_for_any_logits(logits):
    tokens = jnp.asarray(np.arange(10).reshape(2, 5) % 4, jnp.int32)
    mask = jnp.asarray(np.arange(5)[None].repeat(2, 0) > 0)
    out = np.asarray(output_logodds(jnp.asarray(logits), tokens, mask))
    lim = math.log(1e-3) - math.log1p(-1e-3)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= -lim * (1 + 1e-6))


def test_sample_outputs_is_the_model_output(model, data):
    m = nnx.clone(model)
    m.eval()
    logits = np.asarray(nnx.jit(lambda m, t, a: m(t, a))(m, *as_batch(data)[:2]))
    want = reference_logodds(logits, data.tokens, data.loss_mask, 1e-3)
    got = nnx.jit(sample_outputs)(m, as_batch(data))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- per-sample grads
def test_vmapped_grads_equal_a_per_example_loop(model, data):
    outputs, grads = example_grads(model, as_batch(data))
    graphdef, lora, frozen = split_lora(model)

    def f(lora, tokens, attention_mask, loss_mask):  # one example, batch axis of 1
        m = nnx.merge(graphdef, lora, frozen)
        m.eval()
        return output_logodds(m(tokens, attention_mask), tokens, loss_mask)[0]

    one = jax.jit(jax.value_and_grad(f))  # compiled once, looped over examples in Python
    rows = [tuple(jnp.asarray(x[i : i + 1]) for x in data[:3]) for i in range(data.n_examples)]
    loop = [one(lora, *r) for r in rows]
    want = np.stack(
        [grad_matrix(jax.tree.map(lambda x: x[None], nnx.to_pure_dict(g)))[0] for _, g in loop]
    )
    got = grad_matrix(grads)
    assert got.shape == (data.n_examples, sum(x.size for x in jax.tree.leaves(lora)))
    # Same float32 ops batched vs one by one: vmapped-vs-looped tolerance of the style guide.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs), [float(v) for v, _ in loop], rtol=1e-5)
    # Only LoRA leaves are differentiated, and both A and B get signal (B is non-zero).
    paths = [
        ".".join(str(k.key) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]
    ]
    assert all(p.endswith(("lora.a", "lora.b")) for p in paths)
    for path, leaf in zip(paths, jax.tree.leaves(grads)):
        assert np.abs(np.asarray(leaf)).max() > 1e-6, path


def test_dropout_is_off_and_model_is_not_changed(model, data):
    """Same LoRA values in a copy built without adapter dropout: identical gradients (with the
    0.1 dropout active they would differ)."""
    before = [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    no_dropout = tiny_model(dropout=0.0)
    nnx.update(no_dropout, split_lora(model)[1])
    a = example_grads(model, as_batch(data))[1]
    b = example_grads(no_dropout, as_batch(data))[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(before, jax.tree.leaves(nnx.state(model, nnx.Param))):
        np.testing.assert_array_equal(x, np.asarray(y))


# ---------------------------------------------------------------------------------- projection
def test_projection_blocks_follow_the_documented_keys(model):
    _, lora, _ = split_lora(model)
    for kind in ("rademacher", "gaussian"):
        # block_rows 50 cuts every leaf into several blocks plus a partial one.
        proj = Projection.for_tree(lora, dim=40, seed=3, kind=kind, block_rows=50)
        want = dense_p(proj)
        cols = jax.jit(jax.vmap(proj.lift))(jnp.eye(40, dtype=jnp.float32))  # P e_j, as trees
        got = grad_matrix(cols).T  # (p, d)
        assert got.shape == (proj.n_params, 40)
        if kind == "rademacher":
            np.testing.assert_array_equal(np.abs(got), np.float32(1 / np.sqrt(40)))
            np.testing.assert_allclose(got, want, rtol=1e-7)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6)  # f32 product vs f64 division


def test_projected_grads_equal_dense_projection(model, data, projs):
    res = projected_grads(model, data, projs, chunk_size=4, progress=False)
    g = grad_matrix(example_grads(model, as_batch(data))[1])
    for k, proj in enumerate(projs):
        want = g @ dense_p(proj)
        # float32 blockwise accumulation of ~900 terms vs float64: 1e-5 relative to the scale.
        np.testing.assert_allclose(res.grads[k], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert res.grads.dtype == np.float32 and res.grads.shape == (2, data.n_examples, 16)
    np.testing.assert_array_equal(res.n_targets, data.loss_mask[:, 1:].sum(1))
    np.testing.assert_array_equal(res.example_id, data.example_id)
    np.testing.assert_array_equal(res.source_id, data.source_id)
    assert res.sources == data.sources


def test_cpu_compiler_options_are_used_and_fall_back_when_rejected(monkeypatch):
    """The chunk step's XLA options (YNNPACK for dots only) are what this XLA accepts on CPU;
    an option it rejects (a renamed flag in another jaxlib) means defaults, not a crash. The
    numbers under the options are checked against unoptimised references by the tests above."""
    fn = grads_module._compiler_options
    assert fn() == (grads_module.CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None)
    bogus = {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_FUSION_TYPE"}
    monkeypatch.setattr(grads_module, "CPU_COMPILER_OPTIONS", bogus)
    fn.cache_clear()
    try:
        assert fn() is None
    finally:
        monkeypatch.undo()
        fn.cache_clear()


def test_gram_and_the_expectations_of_pp_t_and_p_t_p():
    p, d = 24, 16
    tree = {"w": jnp.zeros((4, 6), jnp.float32)}
    proj = Projection.for_tree(tree, dim=d, seed=0, block_rows=7)
    P = dense_p(proj)
    np.testing.assert_allclose(np.asarray(proj.gram()), P.T @ P, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.diag(np.asarray(proj.gram())), p / d, rtol=1e-6
    )  # exact: sum of 1/d
    # Over S seeds, mean(P P^T) -> I_p and mean(P^T P) -> (p/d) I_d; off-diagonal entries are
    # sums of d (resp. p) independent +-1/d terms: sd 1/sqrt(d S) (resp. sqrt(p)/(d sqrt(S))).
    # Bounds: 5 sd.
    S = 300
    pp_t, p_tp = np.zeros((p, p)), np.zeros((d, d))
    for s in range(S):
        P = dense_p(Projection.for_tree(tree, dim=d, seed=s))
        pp_t += P @ P.T / S
        p_tp += P.T @ P / S
    np.testing.assert_allclose(np.diag(pp_t), 1.0, rtol=1e-12)
    assert np.abs(pp_t - np.eye(p)).max() < 5 / np.sqrt(d * S)
    assert np.abs(p_tp - p / d * np.eye(d)).max() < 5 * np.sqrt(p) / (d * np.sqrt(S))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_projected_inner_products_obey_the_jl_bound(kind):
    """<P^T a, P^T b> - <a, b> has sd <= sqrt(2/d) ||a|| ||b||; bound: 3 sd (style guide), fixed
    key, 400 pairs of random vectors in R^3000 (two leaves, several blocks)."""
    p, d, n = 3000, 256, 400
    tree = {"x": jnp.zeros((1000, 2), jnp.float32), "y": jnp.zeros((1000,), jnp.float32)}
    proj = Projection.for_tree(tree, dim=d, seed=11, kind=kind, block_rows=700)
    v = np.random.default_rng(0).normal(size=(2 * n, p)).astype(np.float32)
    trees = {"x": jnp.asarray(v[:, :2000].reshape(-1, 1000, 2)), "y": jnp.asarray(v[:, 2000:])}
    z = np.asarray(jax.jit(jax.vmap(proj.project))(trees), np.float64)
    a, b, za, zb = v[:n].astype(np.float64), v[n:].astype(np.float64), z[:n], z[n:]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    err = ((za * zb).sum(1) - (a * b).sum(1)) / norms
    assert np.abs(err).max() <= 3 * np.sqrt(2 / d)
    # Not vacuous: for nearly orthogonal pairs the sd is ~1/sqrt(d) (a wrong scale fails here).
    assert 0.8 / np.sqrt(d) < err.std() < 1.2 / np.sqrt(d)
    ratio = (za**2).sum(1) / (a**2).sum(1)  # norms are kept in expectation
    assert abs(ratio.mean() - 1) < 3 * np.sqrt(2 / d / n)


def test_same_key_same_projection_bit_for_bit(model, data):
    _, lora, _ = split_lora(model)
    g = example_grads(model, as_batch(data))[1]
    a = Projection.for_tree(lora, dim=32, seed=7, block_rows=100)
    b = Projection.from_dict(json.loads(json.dumps(a.to_dict())))
    assert a == b and hash(a) == hash(b) and a is not b
    # Projection as a static jit argument: b hits a's compiled function.
    project = jax.jit(lambda proj, g: jax.vmap(proj.project)(g), static_argnums=0)
    pa = np.asarray(project(a, g))
    np.testing.assert_array_equal(pa, np.asarray(project(b, g)))
    assert project._cache_size() == 1
    np.testing.assert_array_equal(pa, np.asarray(jax.vmap(a.project)(g)))  # same, not jitted
    other = Projection.for_tree(lora, dim=32, seed=8, block_rows=100)
    assert np.abs(pa - np.asarray(project(other, g))).max() > 1e-3
    w = jnp.asarray(np.random.default_rng(0).normal(size=32), jnp.float32)
    lift = jax.jit(lambda proj, w: proj.lift(w), static_argnums=0)
    for x, y in zip(jax.tree.leaves(lift(a, w)), jax.tree.leaves(lift(b, w))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_lift_is_the_adjoint_and_feeds_back_into_the_lora_state(model):
    graphdef, lora, frozen = split_lora(model)
    proj = Projection.for_tree(lora, dim=16, seed=2, block_rows=100)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=16), jnp.float32)
    delta = jax.jit(proj.lift)(w)
    assert jax.tree.structure(delta) == jax.tree.structure(nnx.to_pure_dict(lora))
    g = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), nnx.to_pure_dict(lora)
    )
    lhs = float(jnp.dot(jax.jit(proj.project)(g), w))  # <P^T g, w> = <g, P w>
    rhs = sum(float(jnp.sum(x * y)) for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(delta)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
    # ||P w||^2 = w^T (P^T P) w
    sq = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(delta))
    np.testing.assert_allclose(sq, float(w @ jax.jit(proj.gram)() @ w), rtol=1e-5)
    new = nnx.State(lora)
    nnx.replace_by_pure_dict(new, jax.tree.map(jnp.add, nnx.to_pure_dict(lora), delta))
    moved = nnx.merge(graphdef, new, frozen)
    a0 = np.asarray(model.blocks[1].mlp.down_proj.lora.a[...])
    a1 = np.asarray(moved.blocks[1].mlp.down_proj.lora.a[...])
    np.testing.assert_allclose(
        a1 - a0,
        np.asarray(delta["blocks"][1]["mlp"]["down_proj"]["lora"]["a"]),
        rtol=1e-6,
        atol=1e-7,
    )


# ------------------------------------------------------------------- chunks, traces, devices
def test_chunk_size_does_not_change_results(model, data, projs):
    step = grads_module._chunk_fn(split_lora(model)[0], projs, 1e-3)
    runs = [projected_grads(model, data, projs, chunk_size=4, progress=False)]
    traces = step._cache_size()
    runs.append(projected_grads(model, data, projs, chunk_size=3, progress=False))
    # chunk 3 over 11 examples: 4 calls, the last one padded, one new trace.
    assert step._cache_size() == traces + 1
    runs.append(projected_grads(model, data, projs, progress=False))  # auto: one chunk of 11
    # Four more columns of padding in every row: dropped before the step, same numbers exactly.
    wide = data._replace(
        tokens=np.pad(data.tokens, ((0, 0), (0, 4))),
        attention_mask=np.pad(data.attention_mask, ((0, 0), (0, 4))),
        loss_mask=np.pad(data.loss_mask, ((0, 0), (0, 4))),
    )
    padded = projected_grads(model, wide, projs, chunk_size=4, progress=False)
    np.testing.assert_array_equal(padded.grads, runs[0].grads)
    scale = np.abs(runs[0].grads).max()
    for r in runs[1:]:
        # Per-example math is identical; XLA may block the batched matmuls differently per
        # chunk shape, so float32 rounding (~1e-7 relative to the largest entry) may differ.
        np.testing.assert_allclose(r.grads, runs[0].grads, rtol=1e-6, atol=1e-6 * scale)
        np.testing.assert_allclose(r.outputs, runs[0].outputs, rtol=1e-6)


def test_cached_and_regenerated_blocks_give_the_same_projections(model, data, projs, monkeypatch):
    cached = projected_grads(model, data, projs, chunk_size=4, progress=False)
    monkeypatch.setattr(grads_module, "P_CACHE_BYTES", 0)  # regenerate P in every chunk
    fresh = projected_grads(model, data, projs, chunk_size=4, progress=False)
    # Same blocks, same accumulation order; only XLA's fusion of the generator may differ.
    np.testing.assert_allclose(fresh.grads, cached.grads, rtol=1e-6, atol=1e-7)


def test_lift_and_gram_from_blocks_in_memory_equal_the_regenerated_ones(monkeypatch):
    """lift(w, blocks) and gram() from the in-memory blocks (two block sizes: full blocks and a
    last partial one) give what regenerating every block from its key gives."""
    from jaxlaw.data_selection.gradex import _projection

    tree = {"a": jnp.zeros((5, 6), jnp.float32), "b": jnp.zeros((3,), jnp.float32)}
    proj = Projection.for_tree(tree, dim=8, seed=3, block_rows=4)
    w = jr.normal(jr.key(1), (8,))
    blocks = _projection.all_blocks(proj)
    with_blocks, fresh = proj.lift(w, blocks), proj.lift(w)
    for x, y in zip(jax.tree.leaves(with_blocks), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(fresh)]), dense_p(proj) @ w, rtol=1e-5
    )
    in_memory = np.asarray(proj.gram())
    monkeypatch.setattr(_projection, "BLOCKS_IN_MEMORY_BYTES", 0)  # the scan over keys
    np.testing.assert_allclose(in_memory, np.asarray(proj.gram()), rtol=1e-6, atol=1e-6)


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from test_gradex_grads import tiny_model, tiny_data
    from jaxlaw.data_selection.gradex import Projection, projected_grads
    from jaxlaw.lora import split_lora
    from jaxlaw.training import data_mesh
    assert jax.device_count() == 8, jax.devices()
    model, data = tiny_model(), tiny_data(n=21)
    projs = [Projection.for_tree(split_lora(model)[1], dim=16, seed=s) for s in (0, 1)]
    out = {{}}
    runs = (("single", None, 8), ("mesh", data_mesh(8), 16))
    for name, mesh, chunk in runs:
        r = projected_grads(model, data, projs, chunk_size=chunk, mesh=mesh, progress=False)
        out[name] = dict(grads=r.grads.tolist(), outputs=r.outputs.tolist())
    try:
        projected_grads(model, data, projs, chunk_size=12, mesh=data_mesh(8), progress=False)
    except ValueError as e:
        out["error"] = str(e)
    print(json.dumps(out))
    """
)


def test_sharded_over_8_devices_matches_one_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED.format(tests=os.path.dirname(__file__)))
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    single = np.asarray(out["single"]["grads"])
    assert single.shape == (2, 21, 16)
    for name in ("mesh",):
        # Per-example computations are not split across devices: f32 rounding only.
        np.testing.assert_allclose(
            np.asarray(out[name]["grads"]), single, rtol=1e-5, atol=1e-6 * np.abs(single).max()
        )
        np.testing.assert_allclose(out[name]["outputs"], out["single"]["outputs"], rtol=1e-5)
    assert "not a multiple of the mesh's 8 data devices" in out["error"]


# ------------------------------------------------------------------------------------- storage
def test_store_round_trip_and_wrong_model(model, data, projs, tmp_path):
    res = projected_grads(model, data, projs, chunk_size=4, progress=False)
    save_grads(tmp_path / "s", res, projs, grads_meta(model, data, projs, 1e-3))
    back, back_projs, meta = load_grads(tmp_path / "s")
    assert back_projs == projs and back.sources == res.sources
    for name in ("grads", "outputs", "n_targets", "example_id", "source_id"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    check_model(meta, model)  # same model: fine
    moved = nnx.clone(model)
    moved.blocks[0].attn.qkv.lora.b[...] += 1e-3
    with pytest.raises(ValueError, match="grads were computed for another model: same LoRA layout"):
        check_model(meta, moved)
    with pytest.raises(ValueError, match="grads were computed for another model: LoRA leaf 0"):
        check_model(meta, tiny_model(rank=3))
    with pytest.raises(FileNotFoundError, match="no gradient store"):
        load_grads(tmp_path / "nothing")


def test_store_resumes_after_interruption_and_reuses_a_finished_run(
    model, data, projs, tmp_path, monkeypatch
):
    full = projected_grads(model, data, projs, chunk_size=4, progress=False)
    store = tmp_path / "run"
    saved: list[int] = []
    original = GradStore.save_chunk

    def interrupted(self, start, stop, grads, outputs):
        if start >= 4:
            raise KeyboardInterrupt  # killed after the first chunk was written
        saved.append(start)
        original(self, start, stop, grads, outputs)

    monkeypatch.setattr(GradStore, "save_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        projected_grads(model, data, projs, chunk_size=4, progress=False, store=store)
    with pytest.raises(ValueError, match="unfinished"):
        load_grads(store)

    def recording(self, start, stop, grads, outputs):
        saved.append(start)
        original(self, start, stop, grads, outputs)

    monkeypatch.setattr(GradStore, "save_chunk", recording)
    resumed = projected_grads(model, data, projs, chunk_size=4, progress=False, store=store)
    assert saved == [0, 4, 8]  # the resumed call started after the saved rows
    np.testing.assert_array_equal(resumed.grads, full.grads)  # same chunks: bit for bit
    np.testing.assert_array_equal(resumed.outputs, full.outputs)
    assert not (store / "partial").exists()

    def fail(*args, **kwargs):
        raise AssertionError("a finished store must be loaded, not recomputed")

    monkeypatch.setattr(grads_module, "_chunk_fn", fail)
    again = projected_grads(model, data, projs, chunk_size=8, progress=False, store=store)
    np.testing.assert_array_equal(again.grads, full.grads)
    with pytest.raises(ValueError, match="written for another computation: the LoRA values"):
        moved = nnx.clone(model)
        moved.blocks[1].attn.qkv.lora.b[...] *= 2
        projected_grads(moved, data, projs, progress=False, store=store)


# ------------------------------------------------------------------------------------ bad input
def test_bad_projection_arguments(model):
    _, lora, _ = split_lora(model)
    for dim in (0, -3):
        with pytest.raises(ValueError, match="projection dim must be a positive int"):
            Projection.for_tree(lora, dim=dim)
    with pytest.raises(ValueError, match="unknown projection kind 'sparse'"):
        Projection.for_tree(lora, dim=8, kind="sparse")
    with pytest.raises(ValueError, match="template tree has no leaves"):
        Projection.for_tree({}, dim=8)
    with pytest.raises(ValueError, match="block_rows must be a positive int"):
        Projection.for_tree(lora, dim=8, block_rows=0)
    proj = Projection.for_tree(lora, dim=8)
    with pytest.raises(ValueError, match=r"lift expects a vector of shape \(8,\)"):
        proj.lift(jnp.zeros(9, jnp.float32))
    with pytest.raises(ValueError, match="does not match the projection's layout at leaf 0"):
        proj.project({"w": jnp.zeros(3, jnp.float32)})


def test_bad_gradient_inputs(model, data, projs):
    bare = init_model(model.config, key=jr.key(0))
    with pytest.raises(ValueError, match="no LoRA adapters"):
        projected_grads(bare, data, projs, progress=False)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        example_grads(bare, as_batch(data))
    no_targets = data._replace(loss_mask=data.loss_mask.copy())
    no_targets.loss_mask[[2, 5]] = False
    with pytest.raises(ValueError, match=r"2 example\(s\) have no target tokens \(rows \[2, 5\]"):
        projected_grads(model, no_targets, projs, progress=False)
    other = Projection.for_tree(split_lora(tiny_model(rank=3))[1], dim=16)
    with pytest.raises(ValueError, match="projection 0 was built for another model"):
        projected_grads(model, data, [other], progress=False)
    with pytest.raises(ValueError, match="non-empty sequence of Projection"):
        projected_grads(model, data, [], progress=False)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        projected_grads(model, data, projs, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match="eps must be in"):
        projected_grads(model, data, projs, eps=0.0, progress=False)


def test_non_finite_gradient_names_the_example(data, projs):
    bad = tiny_model(tied=False)  # untied head: a broken embedding row only reaches its readers
    tokens = data.tokens.copy()
    tokens[6, 3] = VOCAB - 1  # the only row that reads token 15
    bad.embed.embedding[VOCAB - 1] = jnp.nan
    with pytest.raises(
        ValueError, match=r"non-finite gradient or output for example 6 \(example_id 106\)"
    ):
        projected_grads(bad, data._replace(tokens=tokens), projs, chunk_size=4, progress=False)


def test_untrained_adapter_warns(data, projs):
    zero_b = tiny_model(b_scale=0.0)
    with pytest.warns(UserWarning, match="every LoRA B matrix is zero"):
        res = projected_grads(zero_b, data, projs, chunk_size=4, progress=False)
    assert isinstance(res, ProjectedGrads)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_chunk_size_uses_the_actual_itemsize(dtype):
    """Guards review.md: `auto_chunk_size` assumed 4-byte grads and activations whatever the
    model's dtype, so a bf16 model got half the chunk its budget allows."""
    from dataclasses import replace

    config = replace(
        ModelConfig.tiny("gpt2", vocab_size=VOCAB, hidden_size=32, intermediate_size=64),
        dtype=dtype,
        param_dtype=dtype,
    )
    model = init_model(config, key=jr.key(0))
    apply_lora(model, LoraConfig(targets=TARGETS, rank=2), rngs=nnx.Rngs(0))
    leaves = jax.tree.leaves(split_lora(model)[1])
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(dtype)}
    item = jnp.dtype(dtype).itemsize
    p = sum(leaf.size for leaf in leaves)
    seq, n_proj, dim = 12, 2, 8
    c = config
    per_token = c.n_layers * (16 * c.hidden_size + 4 * c.intermediate_size)
    per_token += c.n_layers * 3 * c.n_heads * seq + 4 * c.vocab_size
    per_example = (item + 4) * p + 4 * dim * n_proj + item * seq * per_token
    budget = 10 * per_example + per_example // 2  # 10 examples fit, not 11
    width = max(c.intermediate_size, 3 * c.hidden_size, c.n_heads * seq, c.vocab_size)
    cpu_cap = grads_module.CPU_ACTIVATION_BYTES // (item * seq * width)
    assert cpu_cap > 10  # the budget, not the cache cap, decides here
    got = grads_module.auto_chunk_size(model, seq, n_proj, dim, budget_bytes=budget)
    assert got == 10
