"""S2L loss trajectories and toy tasks: the pilot's formula, inline vs offline vs stacked sweeps,
the fast path vs `train`, sums/counts/fill, save/load, statistics helpers and bad input."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from scipy.special import log_softmax

from experiments.s2l.toy import (
    SkillMLP,
    SkillToyConfig,
    cluster_purity,
    example_accuracy,
    make_skill_toy,
    paired_interval,
    prompt_embeddings,
    select_arms,
    source_means,
)
from jaxlaw.data import TokenizedSet, take
from jaxlaw.data_selection.s2l import (
    Trajectories,
    checkpoint_steps,
    load_trajectories,
    record_trajectories,
    save_trajectories,
    stacked_losses,
    trajectories_from_checkpoints,
)
from jaxlaw.lora import LoraConfig, apply_lora, split_lora
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import (
    TrainConfig,
    batch_indices,
    evaluate,
    host_batch,
    make_optimizer,
    make_train_step,
    train,
    train_stack,
)

G, V = 8, 32
TOY = SkillToyConfig(n_pool=240, vocab=V, test_per_skill=6, test_iid=40)


def constant_adam(steps, batch=16, **kw):
    """The pilot's optimiser (constant rate, no clipping): a run cut at step s equals the first
    s steps of a longer run."""
    kw = dict(warmup_steps=0, end_lr_ratio=1.0, clip_norm=None, lr=3e-3, log_every=1000) | kw
    return TrainConfig(steps=steps, batch_size=batch, **kw)


def mlp(seed=0, e=4, h=16):
    return SkillMLP(G, V, e, h, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def toy():
    return make_skill_toy(TOY, key=jr.key(0))


def pilot_ex_loss(p, t, x, y):
    """s2l_pilot.py's per-example loss, in numpy float64."""
    et, ex = p["Et"][t], p["Ex"][x]  # (n, e), (n, L, e)
    h = np.concatenate([np.broadcast_to(et[:, None], ex.shape), ex], -1)
    logits = np.maximum(h @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    lp = log_softmax(logits, axis=-1)
    return -np.take_along_axis(lp, y[..., None], -1)[..., 0].mean(1)


def test_skill_mlp_reproduces_pilot_loss(toy):
    m = mlp(3)
    p = {
        k: np.asarray(getattr(m, a)[...], np.float64)
        for k, a in dict(
            Et="skill_embed", Ex="token_embed", W1="w1", b1="b1", W2="w2", b2="b2"
        ).items()
    }
    tok = toy.pool.tokens
    want = pilot_ex_loss(p, tok[:, 0], tok[:, 1::2], tok[:, 2::2])
    got = evaluate(m, toy.pool, batch_size=64)
    np.testing.assert_array_equal(got.count, TOY.length)  # the L answer tokens, no others
    # float32 model against a float64 reference of the same formula.
    np.testing.assert_allclose(got.mean, want, rtol=1e-5, atol=1e-6)
    # Accuracy: argmax of the pilot's logits at each answer.
    h = np.concatenate(
        [
            np.broadcast_to(p["Et"][tok[:, 0]][:, None], (len(tok), TOY.length, 4)),
            p["Ex"][tok[:, 1::2]],
        ],
        -1,
    )
    logits = np.maximum(h @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    acc = (logits.argmax(-1) == tok[:, 2::2]).mean(1)
    np.testing.assert_array_equal(example_accuracy(m, toy.pool, batch_size=100), acc)
    emb = prompt_embeddings(m, toy.pool, batch_size=100)
    np.testing.assert_allclose(emb[:, :4], p["Et"][tok[:, 0]], rtol=1e-6)
    np.testing.assert_allclose(emb[:, 4:], p["Ex"][tok[:, 1::2]].mean(1), rtol=1e-5, atol=1e-7)


def test_skill_toy_structure():
    cfg = SkillToyConfig(n_pool=4000, vocab=V, noises=(0.0,) * 6 + (0.5, 0.5), dup=5)
    t = make_skill_toy(cfg, key=jr.key(1))
    tok = t.pool.tokens
    skill, x, y = tok[:, 0], tok[:, 1::2], tok[:, 2::2]
    assert [sorted(r) for r in t.world] == [list(range(V))] * G  # permutations
    np.testing.assert_array_equal(t.pool.source_id, skill)
    assert t.pool.loss_mask[:, 2::2].all() and not t.pool.loss_mask[:, 1::2].any()
    # Zipf(1.5) frequencies, within 4 binomial standard errors.
    freq = np.bincount(skill, minlength=G) / len(skill)
    se = np.sqrt(cfg.frequencies * (1 - cfg.frequencies) / len(skill))
    assert np.all(np.abs(freq - cfg.frequencies) < 4 * se)
    clean = y == t.world[skill[:, None], x]
    assert clean[skill < 6].all()
    # Noise 0.5 replaces a token by a uniform one: it stays right with prob 1/V.
    rate = 1 - clean[skill >= 6].mean()
    assert abs(rate - 0.5 * (1 - 1 / V)) < 0.06
    for g in (0, 1):  # redundancy: at most `dup` distinct prompts
        assert len({r.tobytes() for r in x[skill == g]}) <= 5
    assert len({r.tobytes() for r in x[skill == 2]}) > 50
    for test in (t.test, t.test_iid):  # clean test sets
        tt = test.tokens
        np.testing.assert_array_equal(tt[:, 2::2], t.world[tt[:, :1], tt[:, 1::2]])
    # The pilot draws the balanced test's skills uniformly (G * 300 rows): 4 binomial sd.
    counts = np.bincount(t.test.source_id, minlength=G)
    assert counts.sum() == 300 * G and np.all(np.abs(counts - 300) < 4 * np.sqrt(300 * 7 / 8))


def test_checkpoint_steps():
    np.testing.assert_array_equal(checkpoint_steps(1248, 16), 78 * np.arange(1, 17))  # pilot
    np.testing.assert_array_equal(checkpoint_steps(10, 3), [3, 7, 10])
    np.testing.assert_array_equal(checkpoint_steps(10, [5, 0, 5, 10]), [0, 5, 10])
    for bad in (0, 11):
        with pytest.raises(ValueError, match="checkpoints in a run of 10"):
            checkpoint_steps(10, bad)
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\]"):
        checkpoint_steps(10, [3, 11])


@pytest.mark.parametrize("kind", ["mlp", "lora"])
def test_inline_equals_offline_and_stacked(toy, tmp_path, kind):
    if kind == "mlp":
        make, trainable, pool = (lambda: mlp(1)), nnx.Param, toy.pool
    else:  # a LoRA decoder: the offline sweep must take the frozen base from the model given
        cfg = ModelConfig.tiny("gpt2", vocab_size=V, max_positions=32, n_layers=1)

        def make():
            m = init_model(cfg, key=jr.key(0))
            apply_lora(m, LoraConfig(targets=r".*", rank=2), rngs=nnx.Rngs(0))
            return m

        trainable, pool = nnx.LoRAParam, take(toy.pool, np.arange(50))
    config = constant_adam(12, checkpoint_every=4, keep_checkpoints=4)
    rec = record_trajectories(
        make(),
        pool,
        config,
        checkpoints=3,
        trainable=trainable,
        batch_size=50,
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
    )
    inline = rec.trajectories
    np.testing.assert_array_equal(inline.steps, [4, 8, 12])
    np.testing.assert_array_equal(inline.example_id, pool.example_id)
    np.testing.assert_array_equal(inline.source_id, pool.source_id)
    assert rec.sweep_seconds > 0 and rec.train.step == 12
    offline = trajectories_from_checkpoints(
        make(), tmp_path / "ckpt", pool, trainable=trainable, batch_size=50, progress=False
    )
    # Same weights, same jitted eval step: identical.
    np.testing.assert_array_equal(offline.total, inline.total)
    np.testing.assert_array_equal(offline.count, inline.count)
    stacked = trajectories_from_checkpoints(
        make(),
        tmp_path / "ckpt",
        pool,
        steps=[4, 12],
        stacked=True,
        trainable=trainable,
        batch_size=50,
    )
    np.testing.assert_array_equal(stacked.steps, [4, 12])
    # vmapped over checkpoints vs one at a time: float32, reassociation only.
    np.testing.assert_allclose(stacked.total, inline.total[:, [0, 2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(stacked.count, inline.count[:, [0, 2]])
    if kind == "lora":
        return
    # The inline sweep at step 4 saw the state of a separate 4-step run (constant schedule).
    short = make()
    train(short, pool, constant_adam(4), trainable=trainable, progress=False)
    np.testing.assert_allclose(
        evaluate(short, pool, batch_size=50).total, inline.total[:, 0], rtol=1e-5, atol=1e-5
    )


def test_sums_counts_and_fill(toy):
    pool = take(toy.pool, np.arange(40))
    lm = pool.loss_mask.copy()
    lm[3] = False  # no target: count 0
    lm[5, 4:] = False  # one target only (position 2)
    pool = pool._replace(loss_mask=lm)
    rec = record_trajectories(mlp(), pool, constant_adam(6), checkpoints=[0, 6], progress=False)
    tr = rec.trajectories
    np.testing.assert_array_equal(tr.count[:, 0], lm[:, 1:].sum(1))
    assert tr.total[3].tolist() == [0.0, 0.0]
    mean = tr.mean()
    assert np.isfinite(mean).all() and mean[3].tolist() == [0.0, 0.0]
    assert tr.mean(fill=7.0)[3].tolist() == [7.0, 7.0]
    np.testing.assert_allclose(mean[5], tr.total[5])  # one token: mean = sum
    # Step 0 is the untrained proxy: its losses are those of a fresh model.
    np.testing.assert_allclose(tr.total[:, 0], evaluate(mlp(), pool).total, rtol=1e-6)
    kept = tr.drop_empty()
    assert kept.n_rows == 39 and 3 not in kept.example_id.tolist()
    x = tr.mean()
    np.testing.assert_allclose(tr.features("log"), np.log(np.maximum(x, 1e-6)), rtol=1e-6)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(tr.features("zscore"), z, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown transform 'sqrt'"):
        tr.features("sqrt")


def plain_train(model, data, config, *, sweep=None, at=()):
    """The loop `train` and `train_arms` used to run, written plainly: the bare jitted step on
    the rows of `batch_indices` at every step, dropout key ``fold_in(dropout_key, step)``, and
    an `evaluate` sweep of ``sweep`` after the steps in ``at`` (0: before training)."""
    graphdef, params, frozen = split_lora(model, nnx.Param)
    tx = make_optimizer(config)
    step = make_train_step(graphdef, tx)
    params = jax.tree.map(jnp.copy, params)
    opt = tx.init(params)
    data_key, dropout_key = jr.split(jr.key(config.seed))
    sweeps = {0: evaluate(model, sweep)} if 0 in at else {}
    for s in range(config.steps):
        idx = batch_indices(data.n_examples, config.batch_size, s, key=data_key)
        batch = host_batch(data, idx, config.accum_steps)
        params, opt, _ = step(params, opt, frozen, batch, jr.fold_in(dropout_key, s))
        if s + 1 in at:
            sweeps[s + 1] = evaluate(nnx.merge(graphdef, params, frozen), sweep)
    return nnx.merge(graphdef, params, frozen), sweeps


def test_train_paths_equal_the_plain_step_loop(toy):
    """What the deleted `train_arms` fast path gave, now through the one loop: the proxy run
    (`record_trajectories`, i.e. `train` with inline sweeps) and several arms at once
    (`train_stack`) equal a plain loop of the jitted step. Guards that `train`'s staged
    segments keep the old data order, steps and sweep points."""
    config = constant_adam(9, batch=12, seed=3)
    rec = record_trajectories(mlp(2), toy.pool, config, checkpoints=3, progress=False)
    steps = [int(s) for s in rec.trajectories.steps]
    _, ref = plain_train(mlp(2), toy.pool, config, sweep=toy.pool, at=steps)
    want = np.stack([ref[s].total for s in steps], axis=1)
    # A fori_loop of the step vs the step alone: float32 reassociation only.
    np.testing.assert_allclose(rec.trajectories.total, want, rtol=1e-5, atol=1e-5)
    # Two arms at once equal one `train` call per arm (same seed: same batch positions).
    rows = [np.arange(0, 50), np.arange(50, 100)]
    masks = np.zeros((2, toy.pool.n_examples), bool)
    for r, idx in enumerate(rows):
        masks[r, idx] = True
    run = train_stack(mlp(4), toy.pool, masks, config, trainable=nnx.Param, progress=False)
    assert run.losses.shape == (2, 9)
    graphdef, _, frozen = split_lora(mlp(4), nnx.Param)
    for r, idx in enumerate(rows):
        got = nnx.merge(graphdef, jax.tree.map(lambda x, r=r: x[r], run.states), frozen)
        one = mlp(4)
        res = train(one, take(toy.pool, idx), config, trainable=nnx.Param, progress=False)
        ref_model, _ = plain_train(mlp(4), take(toy.pool, idx), config)
        np.testing.assert_allclose(run.losses[r], res.losses, rtol=1e-5, atol=1e-6)
        want = evaluate(ref_model, toy.test).total
        for m in (got, one):
            np.testing.assert_allclose(evaluate(m, toy.test).total, want, rtol=1e-5, atol=1e-5)
    masks[1] = False
    with pytest.raises(ValueError, match="member 1 has no rows"):
        train_stack(mlp(), toy.pool, masks, config, trainable=nnx.Param, progress=False)


def test_stacked_losses_match_separate(toy):
    models = [mlp(s) for s in range(3)]
    states = [nnx.state(m, nnx.Param) for m in models]
    out = stacked_losses(mlp(), states, toy.test, batch_size=20)
    for t, m in enumerate(models):
        ref = evaluate(m, toy.test, batch_size=20)
        np.testing.assert_allclose(out.total[t], ref.total, rtol=1e-5, atol=1e-6)


def traj(n=5, t=3, seed=0):
    rng = np.random.default_rng(seed)
    return Trajectories(
        total=rng.random((n, t)).astype(np.float32) * 4,
        count=np.full((n, t), 4.0, np.float32),
        example_id=np.arange(100, 100 + n),
        source_id=np.arange(n) % 2,
        sources=("a", "b"),
        steps=np.arange(1, t + 1) * 10,
    )


def test_save_load_round_trip(tmp_path):
    tr = traj()
    save_trajectories(tmp_path / "t", tr, {"proxy": "mlp", "n": 3})
    back, meta = load_trajectories(tmp_path / "t")
    assert meta == {"proxy": "mlp", "n": 3}
    assert back.sources == ("a", "b")
    for f in ("total", "count", "example_id", "source_id", "steps"):
        np.testing.assert_array_equal(getattr(back, f), getattr(tr, f))
    info = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert info["steps"] == [10, 20, 30] and info["n_examples"] == 5


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(total=np.full((5, 3), np.nan, np.float32)), "non-finite loss sums"),
        (dict(example_id=np.zeros(5, np.int64)), "example ids must be unique"),
        (dict(example_id=np.arange(4)), r"example_id has shape \(4,\)"),
        (dict(steps=np.array([1, 2])), r"steps has shape \(2,\)"),
        (dict(steps=np.array([3, 2, 1])), "strictly increasing"),
        (dict(source_id=np.arange(5)), "2 source names"),
        (dict(count=np.ones((5, 2), np.float32)), "equal-shaped"),
        (
            dict(
                total=np.zeros((0, 3), np.float32),
                count=np.zeros((0, 3), np.float32),
                example_id=np.arange(0),
                source_id=np.arange(0),
            ),
            "no rows",
        ),
    ],
)
def test_bad_trajectories(tmp_path, change, match):
    bad = traj()._replace(**change)
    with pytest.raises(ValueError, match=match):
        bad.check()
    with pytest.raises(ValueError, match=match):
        save_trajectories(tmp_path, bad)


def test_bad_inputs(toy, tmp_path):
    empty = take(toy.pool, np.arange(0))
    with pytest.raises(ValueError, match="pool is empty"):
        record_trajectories(mlp(), empty, constant_adam(3), checkpoints=1, progress=False)
    with pytest.raises(ValueError, match="checkpoints in a run of 3"):
        record_trajectories(mlp(), toy.pool, constant_adam(3), checkpoints=4, progress=False)
    dup = toy.pool._replace(example_id=np.zeros(toy.pool.n_examples, np.int32))
    with pytest.raises(ValueError, match="not unique"):
        record_trajectories(mlp(), dup, constant_adam(3), checkpoints=1, progress=False)
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        trajectories_from_checkpoints(mlp(), tmp_path / "none", toy.pool)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints found"):
        trajectories_from_checkpoints(mlp(), tmp_path / "emptydir", toy.pool)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_trajectories(tmp_path / "none")
    # A run that kept 2 of 3 checkpoints: missing step, and a warning about the lost start.
    config = constant_adam(6, checkpoint_every=2, keep_checkpoints=2)
    train(
        mlp(), toy.pool, config, trainable=nnx.Param, checkpoint_dir=tmp_path / "c", progress=False
    )
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[2\]; available: \[4, 6\]"):
        trajectories_from_checkpoints(mlp(), tmp_path / "c", toy.pool, steps=[2, 6])
    with pytest.warns(UserWarning, match="misses the start of training"):
        tr = trajectories_from_checkpoints(mlp(), tmp_path / "c", toy.pool, progress=False)
    np.testing.assert_array_equal(tr.steps, [4, 6])
    with pytest.raises(ValueError, match="already holds checkpoints"):
        record_trajectories(
            mlp(), toy.pool, config, checkpoints=3, checkpoint_dir=tmp_path / "c", progress=False
        )
    other = SkillMLP(G, V, 8, 16, rngs=nnx.Rngs(0))  # another architecture
    with pytest.raises(ValueError, match="does not fit this run"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trajectories_from_checkpoints(other, tmp_path / "c", toy.pool, progress=False)


def test_select_arms_and_statistics(toy):
    tr = Trajectories(
        total=np.asarray(jr.uniform(jr.key(0), (toy.pool.n_examples, 4)), np.float32),
        count=np.ones((toy.pool.n_examples, 4), np.float32),
        example_id=toy.pool.example_id,
        source_id=toy.pool.source_id,
        sources=toy.pool.sources,
        steps=np.arange(1, 5),
    )
    emb = np.asarray(jr.normal(jr.key(1), (toy.pool.n_examples, 3)), np.float32)
    sels = select_arms(
        ("random", "s2l", "s2l_final", "embed_kmeans", "stratified", "s2l_stratified"),
        tr,
        40,
        key=jr.key(2),
        k=5,
        embeddings=emb,
    )
    for name, s in sels.items():
        assert len(np.unique(s.indices)) == 40, name
        assert (s.labels is None) == (name in ("random", "stratified"))
    # The stratified arms water-fill over skills: the rare ones are taken whole or evenly.
    sizes = np.bincount(toy.pool.source_id, minlength=G)
    alloc = np.bincount(toy.pool.source_id[sels["stratified"].indices], minlength=G)
    level = 40 // G
    np.testing.assert_array_equal(alloc[sizes <= level], sizes[sizes <= level])
    again = select_arms(("s2l",), tr, 40, key=jr.key(2), k=5)  # independent of other arms
    np.testing.assert_array_equal(again["s2l"].indices, sels["s2l"].indices)
    with pytest.raises(ValueError, match="unknown arm"):
        select_arms(("best",), tr, 40, key=jr.key(2))
    with pytest.raises(ValueError, match="needs embeddings"):
        select_arms(("embed_kmeans",), tr, 40, key=jr.key(2))

    labels, classes = np.array([0, 0, 0, 1, 1, 2]), np.array([5, 5, 6, 6, 6, 7])
    assert cluster_purity(labels, classes) == 5 / 6
    np.testing.assert_allclose(
        source_means(np.array([1.0, 2.0, 4.0]), np.array([0, 0, 2]), 3), [1.5, np.nan, 4.0]
    )
    d = np.random.default_rng(0).normal(0.1, 0.2, 10)
    pd = paired_interval(d)
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    # Bisection of the t CDF: far below any reported digit.
    np.testing.assert_allclose([pd.lo, pd.hi], [d.mean() - half, d.mean() + half], rtol=1e-9)
    assert paired_interval(np.array([0.3])).lo == -math.inf


def test_train_callback_steps():
    """jaxlaw.training.train's on_step/on_step_at: called after the listed steps only, with the
    model holding that step's state (the S2L inline recording relies on it)."""
    cfg = SkillToyConfig(n_pool=64, vocab=V, test_per_skill=1, test_iid=1)
    pool = make_skill_toy(cfg, key=jr.key(5)).pool
    seen = []

    def cb(step, model):
        seen.append((step, float(jnp.sum(model.b2[...]))))

    m = mlp()
    train(
        m,
        pool,
        constant_adam(5),
        trainable=nnx.Param,
        progress=False,
        on_step=cb,
        on_step_at={2, 5},
    )
    assert [s for s, _ in seen] == [2, 5]
    assert seen[1][1] == float(jnp.sum(m.b2[...]))
    every = []
    train(
        mlp(),
        pool,
        constant_adam(3),
        trainable=nnx.Param,
        progress=False,
        on_step=lambda s, _: every.append(s),
    )
    assert every == [1, 2, 3]
    assert isinstance(pool, TokenizedSet)


def test_text_mixture(text_root):
    from experiments.s2l.toy import MIXTURE_SOURCES, TextMixConfig, make_text_mixture

    if not (text_root / "text" / "gsm8k" / "train.jsonl").exists():
        pytest.skip("text data not found")
    cfg = TextMixConfig(n_pool=400, test_per_source=20)
    mix = make_text_mixture(cfg, root=text_root, key=jr.key(0))
    assert mix.pool.sources == MIXTURE_SOURCES == mix.test.sources
    np.testing.assert_array_equal(np.bincount(mix.pool.source_id), [320, 60, 20])  # 80/15/5 %
    np.testing.assert_array_equal(np.bincount(mix.test.source_id), [20, 20, 20])
    np.testing.assert_array_equal(mix.pool.example_id, np.arange(400))
    assert mix.pool.attention_mask.sum(1).max() <= cfg.seq_len  # bytes cut, nothing truncated
    tok = mix.tokenizer
    for ts in (mix.pool, mix.test):
        for i in np.flatnonzero(ts.source_id == 2)[:5]:  # arithmetic: "a+b=" -> the value
            row = ts.tokens[i][ts.attention_mask[i]]
            prompt = tok.decode(row[1:][~ts.loss_mask[i][ts.attention_mask[i]][1:]].tolist())
            answer = tok.decode(row[ts.loss_mask[i][ts.attention_mask[i]]][:-1].tolist())  # no eos
            assert str(eval(prompt.rstrip("="))) == answer
    again = make_text_mixture(cfg, root=text_root, key=jr.key(0))
    np.testing.assert_array_equal(again.pool.tokens, mix.pool.tokens)
    # Pool and test rows are different draws (the test set is held out).
    pool_rows = {r.tobytes() for r in mix.pool.tokens}
    assert sum(r.tobytes() in pool_rows for r in mix.test.tokens) <= 2
