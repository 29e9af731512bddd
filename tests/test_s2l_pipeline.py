"""S2L end to end: the experiment's smoke config, and the CLI (trajectories -> select -> ids) on
tiny files, with its errors."""

import json

import jax
import numpy as np
import pytest

from experiments.s2l import run
from jaxlaw.cli import main
from jaxlaw.data import save_tokenizer, train_tokenizer
from jaxlaw.data_selection.s2l import load_trajectories, save_trajectories
from jaxlaw.models import ModelConfig, init_model, save_pretrained


def test_experiment_smoke(tmp_path, text_root):
    summary = run.main(["--out", str(tmp_path), "--smoke", "--data", str(text_root)])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["entries"] == json.loads(json.dumps(summary["entries"]))
    cfg = run.C.S2LConfig.smoke()
    want = {(s.name, a) for s in cfg.settings for a in s.arms}
    want |= {(f"{s.name}_iid", a) for s in cfg.settings for a in s.arms}
    want |= {("text", a) for a in cfg.text.arms}
    got = {(e["setting"], e["arm"]) for e in written["entries"]}
    assert got == want
    for e in written["entries"]:
        assert {"mean", "diff_vs_random", "ci_low", "ci_high", "purity"} <= set(e)
        assert e["ci_low"] <= e["diff_vs_random"] <= e["ci_high"]
        if e["arm"] == "random":
            assert e["diff_vs_random"] == 0.0
        # Every arm of a setting had the same budget.
        budget = cfg.text.budget if e["setting"] == "text" else cfg.settings[0].budget
        assert sum(e["allocation"]) == pytest.approx(budget)
        clusters = e["arm"] in ("s2l", "s2l_final", "embed_kmeans", "s2l_stratified")
        assert (e["purity"] is not None) == clusters
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    assert len(seeds["base"]) == cfg.settings[0].seeds
    # The random arm is the same subset in `base` and `kpp` (cached): identical scores.
    assert seeds["base"][0]["arms"]["random"] == seeds["kpp"][0]["arms"]["random"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny byte-level GPT-2 folder and a 3-source pool file with one empty response."""
    root = tmp_path_factory.mktemp("s2l_cli")
    tok = train_tokenizer(["byte"], vocab_size=257)
    cfg = ModelConfig.tiny(
        "gpt2",
        vocab_size=tok.vocab_size,
        hidden_size=16,
        n_heads=2,
        intermediate_size=32,
        n_layers=1,
        max_positions=32,
    )
    save_pretrained(init_model(cfg, key=jax.random.key(0)), cfg, root / "proxy")
    save_tokenizer(tok, root / "proxy")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        src = ("add", "echo", "rev")[i % 3]
        a, b = rng.integers(0, 50, 2)
        word = "".join(rng.choice(list("abcdef"), 4))
        prompt, resp = {
            "add": (f"{a}+{b}=", str(a + b)),
            "echo": (word, word),
            "rev": (word, word[::-1]),
        }[src]
        rows.append(dict(prompt=prompt, response=resp, source=src))
    path = root / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, path


def test_cli_trajectories_select_ids(files, tmp_path, capsys):
    root, pool = files
    traj_dir = tmp_path / "traj"
    args = [
        "s2l",
        "trajectories",
        "--model",
        str(root / "proxy"),
        "--data",
        str(pool),
        "--source-field",
        "source",
        "--checkpoints",
        "3",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--lr",
        "1e-2",
        "--seq-len",
        "24",
        "--out",
        str(traj_dir),
        "--quiet",
        "--save-checkpoints",
        str(tmp_path / "ckpt"),
    ]
    assert main(args) == 0
    traj, meta = load_trajectories(traj_dir)
    assert traj.n_rows == 60 and traj.steps.tolist() == [2, 4, 6]
    assert traj.sources == ("add", "echo", "rev") and meta["mode"] == "inline"
    assert "60 examples x 3 checkpoints" in capsys.readouterr().out
    # Offline, stacked, from the checkpoints the same run wrote: the same trajectories.
    off_dir = tmp_path / "off"
    off = [
        "s2l",
        "trajectories",
        "--model",
        str(root / "proxy"),
        "--data",
        str(pool),
        "--source-field",
        "source",
        "--seq-len",
        "24",
        "--out",
        str(off_dir),
        "--quiet",
        "--from-checkpoints",
        str(tmp_path / "ckpt"),
        "--stacked",
    ]
    assert main(off) == 0
    offline, _ = load_trajectories(off_dir)
    np.testing.assert_allclose(offline.total, traj.total, rtol=1e-5, atol=1e-5)

    ids, png = tmp_path / "ids.txt", tmp_path / "sel.png"
    sel = [
        "s2l",
        "select",
        "--trajectories",
        str(traj_dir),
        "--k",
        "4",
        "--budget",
        "12",
        "--out",
        str(ids),
        "--plot",
        str(png),
        "--subset-out",
        str(tmp_path / "sub.jsonl"),
    ]
    assert main(sel) == 0
    chosen = [int(v) for v in ids.read_text().split()]
    assert len(chosen) == len(set(chosen)) == 12 and set(chosen) <= set(range(60))
    assert png.stat().st_size > 5000
    sub = [json.loads(r) for r in (tmp_path / "sub.jsonl").read_text().splitlines()]
    rows = [json.loads(r) for r in pool.read_text().splitlines()]
    assert sub == [rows[i] for i in sorted(chosen)]
    out = capsys.readouterr().out
    assert "wrote" in out and "clusters of" in out
    # Stratified by source: 12 = 4 + 4 + 4.
    assert main(sel[:-4] + ["--stratify-by-source"]) == 0
    src = np.array([r["source"] for r in rows])[[int(v) for v in ids.read_text().split()]]
    assert sorted(np.unique(src, return_counts=True)[1].tolist()) == [4, 4, 4]
    for method in ("random", "stratified", "high-loss", "low-loss", "final-loss-clusters"):
        assert main(sel[:8] + ["--out", str(ids), "--method", method]) == 0
        assert len(set(ids.read_text().split())) == 12
    # high-loss: the 12 largest final losses.
    assert main(sel[:8] + ["--out", str(ids), "--method", "high-loss"]) == 0
    final = traj.mean()[:, -1]
    assert sorted(int(v) for v in ids.read_text().split()) == sorted(np.argsort(-final)[:12])


def test_cli_errors(files, tmp_path, capsys):
    root, pool = files
    traj = tmp_path / "t"
    from jaxlaw.data_selection.s2l import Trajectories

    good = Trajectories(
        np.ones((10, 2), np.float32),
        np.ones((10, 2), np.float32),
        np.arange(10),
        np.zeros(10, np.int64),
        ("all",),
        np.array([1, 2]),
    )
    save_trajectories(traj, good)
    sel = ["s2l", "select", "--trajectories", str(traj), "--out", str(tmp_path / "i.txt")]
    cases = [
        (sel + ["--budget", "11"], "--budget 11 must be in 0..10"),
        (sel + ["--budget", "5", "--k", "20"], "--k 20 must be in 1..10"),
        (
            [
                "s2l",
                "select",
                "--trajectories",
                str(tmp_path / "none"),
                "--budget",
                "1",
                "--out",
                "x",
            ],
            "not found",
        ),
        (
            ["s2l", "trajectories", "--model", str(tmp_path), "--data", str(pool), "--out", "x"],
            "not a model directory",
        ),
        (
            [
                "s2l",
                "trajectories",
                "--model",
                str(root / "proxy"),
                "--data",
                str(tmp_path / "no"),
                "--out",
                "x",
            ],
            "no such data file",
        ),
        (
            [
                "s2l",
                "trajectories",
                "--model",
                str(root / "proxy"),
                "--data",
                str(pool),
                "--steps",
                "2",
                "--checkpoints",
                "3",
                "--out",
                "x",
            ],
            "3 checkpoints in a run of 2",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("jaxlaw: error:") and message in err, err
    # NaN sums written around the checks: a clear error on load.
    np.savez(
        traj / "trajectories.npz",
        total=np.full((10, 2), np.nan, np.float32),
        count=good.count,
        example_id=good.example_id,
        source_id=good.source_id,
        steps=good.steps,
    )
    assert main(sel + ["--budget", "3"]) == 2
    assert "non-finite loss sums" in capsys.readouterr().err
    # Ids beyond the data file: trajectories and pool do not match.
    save_trajectories(traj, good._replace(example_id=np.arange(100, 110)))
    subset = ["--data", str(pool), "--subset-out", str(tmp_path / "s.jsonl")]
    assert main(sel + ["--budget", "3", "--method", "random"] + subset) == 2
    assert "do not match" in capsys.readouterr().err
