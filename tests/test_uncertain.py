"""select_uncertain and `jaxlaw select --uncertainty [--json]` on small synthetic tables whose
curves follow known vanilla laws (written here), with noise."""

import json

import numpy as np
import pandas as pd
import pytest

from jaxlaw.cli import main
from jaxlaw.data import table_from_frame
from jaxlaw.selection import select_uncertain

SIZES = [0, 200, 400, 800, 1600, 3200, 6400, 12800]


def _table(e_values, seed=0, noise=0.003):
    """One model per E: L(D) = 3 D^-0.3 + E with log-normal noise; the zero-shot cell 4.0."""
    rng = np.random.default_rng(seed)
    d = np.array(SIZES[1:], float)
    rows = {
        f"m{i}": [4.0, *(3 * d**-0.3 + e) * np.exp(noise * rng.standard_normal(d.size))]
        for i, e in enumerate(e_values)
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[str(s) for s in SIZES])
    return table_from_frame(frame, name="synthetic")


@pytest.fixture(scope="module")
def result():
    return select_uncertain(_table([1.0, 1.3, 1.31]), 1600, 12800, law="vanilla", n_boot=32)


def test_p_best_regret_and_bands(result):
    u = result
    assert u.models == ("m0", "m1", "m2") and u.chosen == 0
    assert u.p_best.sum() == pytest.approx(1.0) and u.p_best[0] > 0.95
    assert u.regret >= 0.0 and u.regret < 0.01
    ok = np.isfinite(u.lo)
    assert ok.all() and (u.lo <= u.hi).all()
    assert ((u.kept + u.dropped) == 32).all()
    # the close pair: neither is a sure second, and m0's band sits below both
    assert u.hi[0] < min(u.lo[1], u.lo[2])


def test_bad_input_is_one_line():
    t = _table([1.0, 1.3])
    with pytest.raises(ValueError, match="target 1600 must exceed the budget 1600"):
        select_uncertain(t, 1600, 1600)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        select_uncertain(t, 1600, 12800, level=0.0)


def test_cli_json_and_table(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    t = _table([1.0, 1.3])
    frame = pd.DataFrame(t.loss, index=pd.Index(t.models, name="model"), columns=SIZES)
    frame.to_csv(csv)
    argv = ["select", str(csv), "--budget", "1600", "--method", "vanillafit", "--n-boot", "16"]
    assert main([*argv, "--uncertainty", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in out["models"]] == ["m0", "m1"]
    assert set(out["models"][0]) == {"model", "pred", "lo", "hi", "p_best"}
    assert out["chosen"] == "m0" and out["target"] == 12800 and out["law"] == "vanilla"
    assert main([*argv, "--uncertainty"]) == 0
    text = capsys.readouterr().out
    assert "P(best)" in text and "chosen: m0" in text
    assert main(["select", str(csv), "--budget", "1600", "--uncertainty"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--uncertainty needs a law-based method" in err[0]
