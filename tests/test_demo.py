"""`make demo` (experiments/demo): its data generators, its config guard, and the smoke run."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jax.random as jr
import numpy as np
import pytest

from experiments.demo import corpus
from experiments.demo.config import CORPORA, Candidate, DemoConfig
from experiments.demo.corpus import DOCTEST_FAMILIES, doctest_task, stdlib_docs
from experiments.demo.run import _check_out
from jaxlaw.data import stdlib_corpus, train_tokenizer

REPO = Path(__file__).resolve().parents[1]


def test_doctest_task_is_deterministic_and_correct(key):
    prompts, responses = doctest_task(300, key=key)
    again = doctest_task(300, key=jr.key(0))
    assert (prompts, responses) == (again.prompts, again.responses)
    assert doctest_task(300, key=jr.key(1)).prompts != prompts
    for p, r in zip(prompts, responses):
        assert re.fullmatch(r">>> [^\n]+\n", p), p
        assert repr(eval(p[4:])) == r, p
    # Each family shows up, and a one-family task only draws from that family.
    assert len(set(prompts)) > 200
    arith = doctest_task(300, key=key, families=["arith"]).prompts
    assert all(re.fullmatch(r">>> [\d()+\-*/%divmod, ]+\n", p) for p in arith)
    with pytest.raises(ValueError, match="unknown doctest families"):
        doctest_task(3, key=key, families=["nope"])
    assert set(DOCTEST_FAMILIES) == {"arith", "str", "list", "builtin"}


def test_doctest_examples_are_short(key):
    tok = train_tokenizer(stdlib_corpus(max_chars=300_000), vocab_size=512)
    ex = doctest_task(300, key=key)
    lengths = [len(tok.encode(p)) + len(tok.encode(r)) + 2 for p, r in zip(*ex)]
    assert max(lengths) <= 64 and np.median(lengths) < 32


def test_stdlib_docs_holds_only_docstrings(tmp_path, monkeypatch):
    docs = stdlib_docs(10_000, scan_chars=200_000)
    assert docs and all(docs) and sum(map(len, docs)) == 10_000
    assert docs == stdlib_docs(10_000, scan_chars=200_000)

    (tmp_path / "a.py").write_text(
        '"""Module doc."""\n# a comment\nx = "not a docstring"\n\n'
        'class C:\n    """Class doc.\n\n    >>> C()\n    """\n\n'
        "    def f(self):\n        '''Method doc.'''\n        return 1\n"
    )
    (tmp_path / "b.py").write_text("def g(:\n")  # unparsable: skipped
    (tmp_path / "c.py").write_text("y = 2\n")  # no docstrings: no document
    real = corpus.stdlib_corpus
    monkeypatch.setattr(
        corpus, "stdlib_corpus", lambda max_chars: real(max_chars=max_chars, root=tmp_path)
    )
    assert stdlib_docs(1000) == ["Module doc.\n\nClass doc.\n\n>>> C()\n\nMethod doc."]
    assert stdlib_docs(8) == ["Module d"]


def test_candidates_and_config_guard(tmp_path):
    config = DemoConfig()
    assert {c.corpus for c in config.candidates} == set(CORPORA)
    assert len({c.name for c in config.candidates}) == len(config.candidates)
    assert {c.corpus for c in DemoConfig.smoke().candidates} == set(CORPORA)
    with pytest.raises(ValueError, match="x: unknown corpus 'web'"):
        Candidate("x", config.candidates[0].config, "web", 10)

    smoke = DemoConfig.smoke(out=str(tmp_path / "demo"))
    _check_out(smoke)
    _check_out(smoke)  # the same configuration: reuse is fine
    with pytest.raises(SystemExit, match="holds a demo run with another configuration"):
        _check_out(replace(smoke, budget=16))


@pytest.mark.slow
def test_demo_smoke_end_to_end(tmp_path):
    """`make demo` in miniature: pre-train, sweep, select, report, plot; no data or network.
    Checks the printed tables' structure (rows and columns), not their numbers."""
    out = tmp_path / "demo"
    env = {"JAXLAW_DATA": str(tmp_path / "absent"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "experiments.demo.run", "--smoke", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in text
    names = [c.name for c in DemoConfig.smoke().candidates]

    def section(title: str) -> list[str]:
        start = text.index(title)
        block = text[start:].split("\n\n")[0].splitlines()
        return [line.split() for line in block[1:]]

    ranks = section("Ranks (1 = lowest test loss)")
    assert ranks[0] == ["D", "="] + ["0", "8", "16", "32", "64"]
    assert [row[0] for row in ranks[2:]] == names
    assert all(len(row) == 6 for row in ranks[2:])

    picks = section("Picks under M = 32")
    assert picks[0] == ["pick", "L(64)", "of", "pick", "regret", "right"]
    assert [row[0] for row in picks[2:]] == ["ZeroShot", "SubTuning", "AtS", "OurFit"]
    for row in picks[2:]:
        assert row[1] in names and float(row[3]) >= 0 and row[4] in ("yes", "no")

    preds = section("Predicted vs measured L(64)")
    assert " ".join(preds[0]) == (
        "measured L(64) AtS predicted AtS error OurFit predicted OurFit error"
    )
    assert [row[0] for row in preds[2:]] == names and all(len(row) == 6 for row in preds[2:])

    results = json.loads((out / "results.json").read_text())
    assert results["models"] == names and set(results["picks"]) == {
        "ZeroShot",
        "SubTuning",
        "AtS",
        "OurFit",
    }
    header = (out / "sweep.csv").read_text().splitlines()[0]
    assert header == "config name,0,8,16,32,64,size,family"
    assert (out / "fits.png").stat().st_size > 10_000
    assert (out / "models" / "llama-docs" / "model.safetensors").is_file()
