"""GradEx end to end: the addition task, the pipeline's small copy (spec §4.5) and the CLI.

The pipeline test runs `GradexConfig.smoke()` once (K = 8 sources of which 3 noisy, N = 12
subsets of 4, 20-step real fine-tunes) and asserts spec §4.5 item 1 and the orderings of item 3
with bars that chance cannot clear (the p-values under "no signal" are in each assertion's
comment), plus Pearson r >= 0.5 (spec). The full bars are checked by experiments/gradex/run.py.
"""

import json

import jax.random as jr
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.gradex.addition import (
    addition_examples,
    addition_task,
    addition_tokenizer,
    scratchpad,
)
from experiments.gradex.pipeline import GradexConfig, run_gradex
from jaxlaw.cli import main
from jaxlaw.data import save_tokenizer
from jaxlaw.data_selection.gradex import compare_estimates, finetune_subsets, subset_losses
from jaxlaw.lora import LoraConfig, apply_lora
from jaxlaw.models import ModelConfig, init_model, save_pretrained
from jaxlaw.training import TrainConfig, evaluate, mean_loss, train

# ------------------------------------------------------------------------- the task


def test_scratchpad_spec_example():
    # Spec §4.3, written without spaces (§4.4).
    assert scratchpad(97990, 53728) == ("97990+53728\n", "08\n118\n1718\n11718\n151718")


@given(st.integers(10000, 99999), st.integers(10000, 99999))
@settings(max_examples=200, deadline=None)
def test_scratchpad_matches_closed_form(a, b):
    # Independent reference: step k shows carry = [a_k + b_k >= 10^(k+1)] and the k+1 low
    # digits of a_k + b_k, where x_k = x mod 10^(k+1).
    prompt, response = scratchpad(a, b)
    lines = response.split("\n")
    assert prompt == f"{a}+{b}\n" and len(lines) == 5 and lines[-1] == str(a + b)
    for k in range(4):
        m = 10 ** (k + 1)
        s = a % m + b % m
        assert lines[k] == f"{int(s >= m)}{s % m:0{k + 1}d}"


def test_scratchpad_rejects_other_numbers():
    with pytest.raises(ValueError, match="5-digit"):
        scratchpad(9999, 12345)


def test_noisy_keeps_layout(key):
    clean = addition_examples(300, key=key)
    noisy = addition_examples(300, key=key, noisy=True)
    assert noisy.prompts == clean.prompts
    same = total = 0
    for c, n in zip(clean.responses, noisy.responses):
        assert len(c) == len(n)
        assert [i for i, ch in enumerate(c) if ch == "\n"] == [
            i for i, ch in enumerate(n) if ch == "\n"
        ]
        assert all(ch.isdigit() for ch in n.replace("\n", ""))
        same += sum(x == y for x, y in zip(c, n) if x != "\n")
        total += sum(x != "\n" for x in c)
    # Uniform random digits agree with the clean digit 10% of the time: with ~7,000 digits
    # the share lies in 0.10 +- 0.011 (3 sd), far from a corruption that kept digits.
    assert abs(same / total - 0.1) < 0.02


def test_tokenizer_one_symbol_per_character():
    tok = addition_tokenizer()
    assert tok.vocab_size == 14 and tok.bos_id is None
    text = "97990+53728\n08\n118"
    ids = tok.encode(text)
    assert ids == [9, 7, 9, 9, 0, 10, 5, 3, 7, 2, 8, 11, 0, 8, 11, 1, 1, 8]
    assert tok.decode(ids) == text


def test_addition_task_splits(key):
    task = addition_task(
        key=key, n_sources=6, n_noisy=2, per_source=5, n_pretrain=40, n_valid=16, n_test=16
    )
    tok = addition_tokenizer()
    assert task.train.sources == tuple(
        f"s{k:02d}_{'clean' if k < 4 else 'noisy'}" for k in range(6)
    )
    np.testing.assert_array_equal(task.noisy, [False] * 4 + [True] * 2)
    np.testing.assert_array_equal(task.train.source_id, np.repeat(np.arange(6), 5))
    assert task.train.tokens.shape == (30, 40)
    prompts = set()
    for split in (task.pretrain, task.train, task.valid, task.test):
        for row, att, loss in zip(split.tokens, split.attention_mask, split.loss_mask):
            text = tok.decode(row[att].tolist())
            prompt, response = text.split("\n", 1)
            prompts.add(prompt)
            # Loss on the output tokens (response and eos) only.
            assert tok.decode(row[loss].tolist()) == response
            assert response.endswith("<|endoftext|>") and att.sum() in (36, 37)
    assert len(prompts) == 40 + 30 + 16 + 16  # every split is disjoint from the others
    again = addition_task(
        key=key, n_sources=6, n_noisy=2, per_source=5, n_pretrain=40, n_valid=16, n_test=16
    )
    np.testing.assert_array_equal(again.train.tokens, task.train.tokens)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_noisy=7), "n_noisy"),
        (dict(per_source=0), "per_source"),
        (dict(seq_len=30), "seq_len"),
    ],
)
def test_addition_task_bad_input(key, kw, match):
    with pytest.raises(ValueError, match=match):
        addition_task(key=key, **(dict(n_sources=6, n_noisy=2) | kw))


# -------------------------------------------------------------------------- metrics


def test_compare_estimates_against_scipy(key):
    from scipy import stats

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 1.0, 20)
    est = truth + rng.normal(0, 0.05, 20)
    m = compare_estimates(est, truth, 0.75, key=key, n_bootstrap=500)
    np.testing.assert_allclose(m["pearson"], stats.pearsonr(est, truth)[0], rtol=1e-12)
    np.testing.assert_allclose(m["spearman"], stats.spearmanr(est, truth)[0], rtol=1e-12)
    np.testing.assert_allclose(m["msre"], np.mean(((est - truth) / truth) ** 2), rtol=1e-12)
    np.testing.assert_allclose(m["mse_constant"], np.mean((0.75 - truth) ** 2), rtol=1e-12)
    assert m["pearson_ci_low"] < m["pearson"] < m["pearson_ci_high"]


# -------------------------------------------------------------- real fine-tunes


def test_finetune_subsets_matches_train_loop(key):
    """Every subset's fine-tune through `train_stack` equals a plain `train` call on that
    subset's rows with the subset's key (the loop `_finetune_fn` used to duplicate is gone; this
    guards that the stacked path keeps `train`'s data order, optimizer and loss)."""
    import jax.random as jr_

    from jaxlaw.data import take

    cfg = ModelConfig.tiny(
        "gpt2", vocab_size=14, hidden_size=32, intermediate_size=64, max_positions=48
    )
    task = addition_task(
        key=key, n_sources=4, n_noisy=1, per_source=8, n_pretrain=8, n_valid=8, n_test=16
    )
    model = init_model(cfg, key=jr.key(1))
    apply_lora(model, LoraConfig(targets=r"attn\.qkv$", rank=2, alpha=4.0), rngs=nnx.Rngs(0))
    tc = TrainConfig(steps=6, batch_size=16, lr=1e-2, warmup_steps=0, clip_norm=None)
    members = np.isin(task.train.source_id, [0, 2])
    three = np.isin(task.train.source_id, [0, 1, 3])  # 24 rows: batches straddle epochs
    masks = np.stack([members, ~members, three])
    ft = finetune_subsets(model, task.train, masks, tc, key=key, subset_chunk=1, progress=False)
    ours = subset_losses(model, ft.lora, task.test)
    refs = []
    for j, m in enumerate(masks):
        ref = nnx.clone(model)
        train(ref, take(task.train, np.flatnonzero(m)), tc, key=jr_.fold_in(key, j), progress=False)
        refs.append(mean_loss(evaluate(ref, task.test)))
    # Same rows in the same order, same optimizer; a vmapped program vs a plain one (f32
    # reassociation, composite through 6 Adam steps: 1e-4).
    np.testing.assert_allclose(ours, refs, rtol=1e-4)
    assert len(set(ours.tolist())) == 3
    # The result does not depend on the chunking (f32 under another vmap width).
    again = finetune_subsets(model, task.train, masks, tc, key=key, subset_chunk=2, progress=False)
    np.testing.assert_allclose(subset_losses(model, again.lora, task.test), ours, rtol=1e-5)


# ------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def smoke():
    return run_gradex(GradexConfig.smoke(), progress=False)


def test_pipeline_taylor_check(smoke):
    # Spec §4.5 item 1, for random directions and for subset-fit directions.
    for kind in ("random", "subset_fit"):
        rows = sorted((r for r in smoke.taylor if r["direction"] == kind), key=lambda r: r["rho"])
        first = [r["first_order"] for r in rows]
        assert first == sorted(first), kind
        assert all(r["first_order"] <= 1e-2 for r in rows if r["rho"] <= 0.05)
        assert all(r["first_order"] < r["zeroth_order"] for r in rows)
    assert smoke.summary["taylor_ok"]


def test_pipeline_estimates_track_real_finetunes(smoke):
    s = smoke.summary
    # Spec bar for the small copy. Under no signal, r of 12 points exceeds 0.5 with p ~ 0.05;
    # the CI bound below makes a chance pass far less likely still.
    assert s["pearson"] >= 0.5
    assert s["pearson_ci_low"] > 0.0
    assert np.all(np.isfinite(smoke.estimate)) and smoke.estimate.shape == (12,)


def test_pipeline_known_answer_orderings(smoke):
    s = smoke.summary
    # More noisy sources -> higher estimated loss. Spearman of 12 points under no signal has
    # sd 1/sqrt(11) = 0.30, so rho >= 0.7 has p ~ 0.01.
    assert s["spearman_noisy"] >= 0.7
    # Random-ensemble scores rank the 3 noisy sources above the 5 clean ones: an AUROC >= 0.9
    # (at most 1 of 15 pairs wrong) happens by chance with p = 2/56 = 0.036; the means
    # must be ordered too.
    assert s["auroc"] >= 0.9
    assert smoke.scores[smoke.noisy].mean() > smoke.scores[~smoke.noisy].mean()
    # Fine-tuning on the selected sources beats fine-tuning on all of them (real runs).
    assert s["loss_selected"] < s["loss_all"]
    assert s["selected_noisy"] == 0


# ------------------------------------------------------------------------- the CLI


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(command: str, **paths) -> int:
    """``jaxlaw gradex ...`` with ``{name}`` placeholders filled from ``paths``."""
    return main(["gradex", *(w.format(**paths) for w in command.split())])


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A tiny HF-format model with the addition tokenizer, a pool of 4 sources (the last one
    noisy) and a target; theta* meta-trained and gradients stored through the CLI."""
    tmp = tmp_path_factory.mktemp("gradex_cli")
    key = jr.key(3)
    cfg = ModelConfig.tiny(
        "gpt2", vocab_size=14, hidden_size=32, intermediate_size=64, max_positions=48, n_layers=1
    )
    model = init_model(cfg, key=key)
    task = addition_task(
        key=key, n_sources=4, n_noisy=1, per_source=6, n_pretrain=200, n_valid=8, n_test=8
    )
    tc = TrainConfig(steps=30, batch_size=32, lr=3e-3)
    train(model, task.pretrain, tc, trainable=nnx.Param, progress=False)
    save_pretrained(model, cfg, tmp / "model")
    save_tokenizer(addition_tokenizer(), tmp / "model")
    clean = addition_examples(18, key=jr.key(4))
    noisy = addition_examples(6, key=jr.key(5), noisy=True)
    pairs = list(zip(clean.prompts + noisy.prompts, clean.responses + noisy.responses))
    pool = [{"prompt": p, "response": r, "task": f"src{i // 6}"} for i, (p, r) in enumerate(pairs)]
    target = addition_examples(8, key=jr.key(6))
    f = dict(
        tmp=tmp,
        model=tmp / "model",
        pool=_jsonl(tmp / "pool.jsonl", pool),
        target=_jsonl(
            tmp / "target.jsonl", [{"prompt": p, "response": r} for p, r in zip(*target)]
        ),
        empty=_jsonl(tmp / "empty.jsonl", [{"prompt": "1+2\n", "response": ""}] * 3),
    )
    common = "--model {model} --data {pool} --sources task --quiet"
    assert _cli(f"meta-train {common} --out {{tmp}}/theta --steps 8", **f) == 0
    assert (
        _cli(
            f"grads {common} --lora {{tmp}}/theta --out {{tmp}}/grads --dim 16 --projections 2", **f
        )
        == 0
    )
    return f


def test_cli_estimate_and_select(cli_files, capsys):
    q = "--grads {tmp}/grads --target {target} --quiet"
    rc = _cli(
        f"estimate {q} --subsets 4 --frac 0.5 --out {{tmp}}/est.csv --validate 3 "
        "--ft-steps 4 --calibrate 2 --scales 0.1,0.2 --plot {tmp}/est.png",
        **cli_files,
    )
    assert rc == 0
    tmp = cli_files["tmp"]
    df = pd.read_csv(tmp / "est.csv")
    assert list(df.columns) == ["subset", "n_sources", "sources", "estimate", "true_loss"]
    assert len(df) == 4 and (df.n_sources == 2).all() and df.true_loss.notna().sum() == 3
    assert (tmp / "est.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "validation on 3 real fine-tunes" in out and "linear estimates" in out  # the default
    rc = _cli(f"estimate {q} --subset src0,src1 --subset src3 --mode lifted", **cli_files)
    assert rc == 0
    out = capsys.readouterr().out
    assert "src0|src1" in out and "lifted estimates" in out
    rc = _cli(
        f"select {q} --subsets 6 --top-k 2 --out {{tmp}}/keep.txt --plot {{tmp}}/s.png", **cli_files
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "random-ensemble scores" in out and "selected 2 of 4 sources" in out
    kept = (tmp / "keep.txt").read_text().split()
    assert len(kept) == 2 and set(kept) <= {"src0", "src1", "src2", "src3"}
    assert _cli(f"select {q} --method forward --top-k 2", **cli_files) == 0
    assert "forward selection (stepwise" in capsys.readouterr().out


def _error(capsys, rc: int) -> str:
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxlaw: error: ")
    return err[0]


def test_cli_errors(cli_files, capsys):
    f = cli_files
    q = "estimate --grads {tmp}/grads --target {target} --quiet"
    assert "unknown source 'nope'" in _error(capsys, _cli(f"{q} --subset src0,nope", **f))
    assert "empty subset" in _error(
        capsys, main(["gradex", *q.format(**f).split(), "--subset", " , "])
    )
    assert "empty subsets" in _error(capsys, _cli(f"{q} --frac 0.05", **f))
    msg = _error(capsys, _cli("estimate --grads {tmp}/grads --target {empty} --quiet", **f))
    assert "no response tokens" in msg
    assert "no gradient store" in _error(
        capsys, _cli("estimate --grads {tmp} --target {target} --quiet", **f)
    )
    # Another theta*: same layout, other values.
    common = "--model {model} --data {pool} --sources task --quiet"
    assert _cli(f"meta-train {common} --out {{tmp}}/theta2 --steps 3 --seed 1", **f) == 0
    msg = _error(capsys, _cli(f"{q} --lora {{tmp}}/theta2", **f))
    assert "grads were computed for another model" in msg
    msg = _error(capsys, _cli(f"grads {common} --lora {{tmp}}/none --out {{tmp}}/g2", **f))
    assert "adapter.json not found" in msg
    msg = _error(
        capsys,
        _cli(
            "grads --model {model} --data {pool} --sources nope --lora "
            "{tmp}/theta --out {tmp}/g3 --quiet",
            **f,
        ),
    )
    assert "field 'nope'" in msg
