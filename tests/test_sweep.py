"""The fine-tuning sweep: nested subsets, step arithmetic, the table it writes, resume, CLI."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from experiments.demo.corpus import doctest_task
from jaxlaw.cli import main
from jaxlaw.data import load_table, save_tokenizer, train_tokenizer
from jaxlaw.lora import LoraConfig
from jaxlaw.models import ModelConfig, init_model, save_pretrained
from jaxlaw.selection import select
from jaxlaw.sweep import SweepConfig, cell_steps, nested_subsets, run_sweep
from jaxlaw.training import TrainConfig


def test_nested_subsets_are_nested_and_seeded():
    subs = nested_subsets(100, (10, 20, 50), key=jax.random.key(0))
    assert [len(s) for s in subs] == [10, 20, 50]
    assert set(subs[0]) <= set(subs[1]) <= set(subs[2])
    again = nested_subsets(100, (10, 20, 50), key=jax.random.key(0))
    for a, b in zip(subs, again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="exceeds the training pool of 100"):
        nested_subsets(100, (10, 200), key=jax.random.key(0))


def test_cell_steps_and_config_checks():
    c = SweepConfig(
        sizes=(8, 100, 5000),
        train=TrainConfig(batch_size=16),
        epochs=2.0,
        min_steps=5,
        max_steps=300,
    )
    assert [cell_steps(s, c) for s in c.sizes] == [5, 13, 300]  # ceil(2 * 100 / 16) = 13
    for bad in ((), (0, 10), (20, 10), (10, 10)):
        with pytest.raises(ValueError, match="sizes"):
            SweepConfig(sizes=bad)
    with pytest.raises(ValueError, match="min_steps"):
        SweepConfig(sizes=(1,), min_steps=10, max_steps=5)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """Two tiny random models sharing a BPE tokenizer trained on the task's text."""
    root = tmp_path_factory.mktemp("models")
    task = doctest_task(96, key=jax.random.key(0))
    tok = train_tokenizer(task.prompts + task.responses, vocab_size=300)
    dirs = []
    for i, family in enumerate(("gpt2", "llama")):
        cfg = ModelConfig.tiny(
            family,
            vocab_size=tok.vocab_size,
            hidden_size=32,
            n_heads=2,
            n_kv_heads=2,
            intermediate_size=64,
        )
        path = root / f"{family}-tiny"
        save_pretrained(init_model(cfg, key=jax.random.key(i)), cfg, path)
        save_tokenizer(tok, path)
        dirs.append(path)
    return dirs, task


def _config():
    return SweepConfig(
        sizes=(8, 16, 32, 64),
        lora=LoraConfig(rank=2),
        train=TrainConfig(batch_size=8, lr=5e-3, warmup_steps=1),
        min_steps=2,
        max_steps=6,
        seq_len=48,
    )


def test_sweep_writes_a_selectable_table_and_resumes(candidates, tmp_path):
    dirs, task = candidates
    pool = type(task)(task.prompts[:64], task.responses[:64])
    test = type(task)(task.prompts[64:], task.responses[64:])
    out = tmp_path / "sweep.csv"
    lines = []
    table = run_sweep(dirs, pool, test, _config(), out=out, progress=False, log=lines.append)
    header = out.read_text().splitlines()[0]
    assert header == "config name,0,8,16,32,64,size,family"  # the rectified table format
    assert table.models == ("gpt2-tiny", "llama-tiny")
    assert table.families == ("gpt2", "llama")
    assert np.isfinite(table.loss).all() and (table.loss > 0).all()
    assert (table.n_params > 1000).all()
    assert select(table, "ats", 32, target=64).rank.shape == (2,)
    assert sum("D=" in s for s in lines) == 8

    # Resume: drop two cells; only those are recomputed, and to the same values (seeded).
    df = pd.read_csv(out, index_col=0)
    df.loc["llama-tiny", ["32", "64"]] = np.nan
    df.to_csv(out)
    lines.clear()
    again = run_sweep(dirs, pool, test, _config(), out=out, progress=False, log=lines.append)
    assert [s.split()[1] for s in lines if "D=" in s] == ["D=", "D="]
    assert sum("llama-tiny: D=" in s for s in lines) == 2
    np.testing.assert_array_equal(again.loss, table.loss)

    # Guards review.md: a resume took any cell by (model, size) whatever the settings. Now a
    # changed lr, seed or data set is refused before any training, naming the field.
    from dataclasses import replace

    before = out.read_text()
    c = _config()
    changed = [
        (replace(c, train=replace(c.train, lr=1e-2)), pool, "config.train.lr=0.005"),
        (replace(c, seed=3), pool, "config.seed=0"),
        (c, type(task)(task.prompts[1:65], task.responses[1:65]), "data.train="),
    ]
    for config, train_set, field in changed:
        with pytest.raises(ValueError, match=field) as err:
            run_sweep(dirs, train_set, test, config, out=out, progress=False, log=lines.append)
        assert "\n" not in str(err.value)
    assert out.read_text() == before
    # A new size is a new column, not a different setting: it is computed, the rest kept.
    lines.clear()
    wider = run_sweep(
        dirs, pool, test, replace(c, sizes=(8, 16, 32, 48, 64)), out=out, progress=False,
        log=lines.append,
    )  # fmt: skip
    assert sum("D=" in s for s in lines) == 2
    np.testing.assert_array_equal(wider.loss[:, [0, 1, 2, 3, 5]], table.loss)


def test_sweep_refuses_a_table_without_fingerprint(candidates, tmp_path):
    dirs, task = candidates
    out = tmp_path / "old.csv"
    out.write_text("config name,0,8,size,family\ngpt2-tiny,5.0,4.0,100,gpt2\n")
    with pytest.raises(ValueError, match="has no old.csv.fingerprint.json"):
        run_sweep(dirs, task, task, _config(), out=out, progress=False)


def test_interrupted_write_leaves_the_old_table(tmp_path, monkeypatch):
    """Guards review.md: the CSV was rewritten in place, so a kill mid-write lost every cell."""
    from jaxlaw.sweep import _sweep

    out = tmp_path / "sweep.csv"
    old = pd.DataFrame({"0": [1.0], "8": [0.5]}, index=pd.Index(["m"], name="config name"))
    _sweep._save_csv(old, out)
    before = out.read_text()

    def killed(self, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("config name,0,")  # half a header, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", killed)
    with pytest.raises(KeyboardInterrupt):
        _sweep._save_csv(old.assign(**{"16": [0.25]}), out)
    assert out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]  # no temporary left


def test_sweep_cli_and_bad_input(candidates, tmp_path, capsys):
    dirs, task = candidates
    for name, lo, hi in (("train", 0, 64), ("eval", 64, 96)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for p, r in zip(task.prompts[lo:hi], task.responses[lo:hi]):
                f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    out = tmp_path / "t.csv"
    common = [
        "--train",
        str(tmp_path / "train.jsonl"),
        "--eval",
        str(tmp_path / "eval.jsonl"),
        "--lora-rank",
        "2",
        "--batch-size",
        "8",
        "--min-steps",
        "2",
        "--max-steps",
        "3",
        "--seq-len",
        "48",
        "--quiet",
    ]
    argv = ["sweep", "--models", *map(str, dirs), "--sizes", "16,32,64", "--out", str(out)]
    assert main(argv + common) == 0
    printed = capsys.readouterr().out
    assert "jaxlaw select" in printed and "llama-tiny" in printed
    assert load_table(out).sizes.tolist() == [0, 16, 32, 64]

    bad = [
        (["--models", str(tmp_path), "--sizes", "16", "--out", str(out)], "no config.json"),
        (
            ["--models", str(dirs[0]), "--sizes", "16,500", "--out", str(out)],
            "exceeds the training pool",
        ),
    ]
    for args, message in bad:
        assert main(["sweep", *args, *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("jaxlaw: error:")
    with pytest.raises(SystemExit):
        main(["sweep", "--models", str(dirs[0]), "--sizes", "a,b", "--out", str(out), *common])


def test_sweep_cli_on_the_newer_families_writes_a_selectable_table(candidates, tmp_path, capsys):
    """Issue 17: `jaxlaw sweep` over tiny Phi-3, Gemma-2 and BLOOM checkpoints (fused
    projections, soft-caps and local layers, ALiBi) writes a table `jaxlaw select` ranks."""
    _, task = candidates
    tok = train_tokenizer(task.prompts + task.responses, vocab_size=300)
    dirs = []
    for i, family in enumerate(("phi3", "gemma2", "bloom")):
        cfg = ModelConfig.tiny(family, vocab_size=tok.vocab_size)
        path = tmp_path / f"{family}-tiny"
        save_pretrained(init_model(cfg, key=jax.random.key(i)), cfg, path)
        save_tokenizer(tok, path)
        dirs.append(path)
    for name, lo, hi in (("train", 0, 64), ("eval", 64, 96)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for p, r in zip(task.prompts[lo:hi], task.responses[lo:hi]):
                f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    out = tmp_path / "t.csv"
    argv = ["sweep", "--models", *map(str, dirs), "--sizes", "16,32,64", "--out", str(out)]
    argv += ["--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl")]
    argv += ["--lora-rank", "2", "--batch-size", "8", "--min-steps", "2", "--max-steps", "3"]
    assert main([*argv, "--seq-len", "48", "--quiet"]) == 0
    table = load_table(out)
    assert table.families == ("phi3", "gemma2", "bloom") and np.isfinite(table.loss).all()
    capsys.readouterr()
    assert main(["select", str(out), "--budget", "32", "--method", "subtuning"]) == 0
    assert "chosen: " in capsys.readouterr().out
