"""experiments/gsm8k_scaling without the model: the steps rule, grid checks, and the report
(table in the paper format, fits, held-out errors, figure) from cells whose losses follow a
known rectified law L(D) = B / (D_l + D^beta) + E, written here in numpy."""

import json
from dataclasses import replace

import numpy as np
import pytest

from experiments.gsm8k_scaling import run
from experiments.gsm8k_scaling.config import CPU, FULL, ScalingConfig
from jaxlaw.data import load_table


def test_steps_rule():
    assert [CPU.steps(s) for s in CPU.sizes] == [0, 2, 2, 4, 8, 16, 32, 64, 128]
    assert [CPU.batch(s) for s in (2, 4, 256)] == [2, 4, 4]
    assert CPU.fit_sizes == (0, 2, 4, 8, 16, 32) and CPU.em_sizes == (0, 256)
    assert FULL.fit_sizes[-1] == 512 and FULL.steps(4096) == 512


@pytest.mark.parametrize(
    "sizes, match",
    [
        ((2, 4, 8), "start at 0"),
        ((0, 8, 4), "increase strictly"),
        ((0, 2, 4, 64), "needs at least 4"),
    ],
)
def test_bad_grid_is_one_line(sizes, match):
    with pytest.raises(ValueError, match=match):
        ScalingConfig(sizes=sizes)


def test_report_recovers_a_known_law(tmp_path, capsys):
    cfg = replace(CPU, sizes=(0, 2, 4, 8, 16, 32, 64, 128, 256))
    b, d_l, beta, e = 0.9, 1.5, 0.6, 0.9
    law = lambda d: b / (d_l + d**beta) + e  # noqa: E731
    cells = {
        s: dict(size=s, loss=float(law(s)), steps=cfg.steps(s), batch=cfg.batch(s) if s else 0,
                seconds=1.0, train_seconds=0.5)
        for s in cfg.sizes
    }  # fmt: skip
    summary = run.report(cfg, tmp_path, cells, 134_515_008, False)
    rect, van = summary["laws"]["rectified"], summary["laws"]["vanilla"]
    assert [p["size"] for p in rect["predictions"]] == [64, 128, 256]
    for p in rect["predictions"]:
        assert p["predicted"] == pytest.approx(law(p["size"]), rel=1e-4)
    assert rect["heldout_rmsd_log"] < 1e-4 < van["heldout_rmsd_log"]
    table = load_table(tmp_path / "smollm2_gsm8k.csv", name="smollm2_gsm8k")
    np.testing.assert_allclose(table.loss[0], [law(s) for s in cfg.sizes], rtol=1e-8)
    assert table.sizes.tolist() == list(cfg.sizes) and table.n_params[0] == 134_515_008
    assert json.loads((tmp_path / "summary.json").read_text())["cost"]["total_seconds"] == 9.0
    assert (tmp_path / "fits.png").stat().st_size > 20_000
    assert "rectified: held-out RMSD under log 0.0000" in capsys.readouterr().out
