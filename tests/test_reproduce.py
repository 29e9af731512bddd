"""The paper reproductions as library calls: `reproduce_rectified` and `reproduce_obscaling`.

Reference numbers are the papers' (rectified spec §5.2, obscaling spec §4), written here
independently of the copies the library checks against. Each reproduction runs once per
module with its smoke settings.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from jaxlaw.observational import (
    ObscalingConfig,
    obscaling_markdown,
    reproduce_obscaling,
    write_obscaling,
)
from jaxlaw.selection import (
    RectifiedConfig,
    rectified_markdown,
    reproduce_rectified,
    write_rectified,
)

CHECK_COLUMNS = ["check", "measured", "reference", "tolerance", "kind", "passed"]


@pytest.fixture(scope="module")
def rectified(data_root):
    lines = []
    res = reproduce_rectified(RectifiedConfig.smoke(data=str(data_root)), log=lines.append)
    return res, lines


@pytest.fixture(scope="module")
def obscaling(data_root):
    lines = []
    res = reproduce_obscaling(ObscalingConfig.smoke(data=str(data_root)), log=lines.append)
    return res, lines


@pytest.mark.slow
def test_rectified_tables_and_key_numbers(rectified):
    res, lines = rectified
    assert len(lines) == 6 and lines[0].startswith("loaded flan (30 models)")
    assert list(res.rmsd.columns) == ["dataset", "model", "law", "rmsd_log"]
    assert len(res.rmsd) == 3 * 30 * 4  # datasets x models x laws
    sel = res.selection
    assert set(sel.method) == {"AtS", "OurFit", "VanillaFit", "ZeroShot", "SubTuning", "ModelSize"}
    assert set(sel.ratio) == {8, 512} and set(sel.dataset) == {"FLAN", "WMT19", "GIGAWORD"}
    assert len(res.selection_multistart) == len(sel) == 3 * 2 * 6 * 2
    # Table 2, FLAN AtS PearCorr at 1/8 and 1/512: AtS is deterministic, 4 decimals exact.
    ats = sel[(sel.dataset == "FLAN") & (sel.method == "AtS") & (sel.metric == "PearCorr")]
    assert ats.sort_values("ratio").value.tolist() == [0.9087, 0.4556]
    # Spec §5.3: the rectified law fits better than the vanilla law on every dataset.
    means = res.rmsd_means
    assert (means.rectified < means.vanilla).all()
    assert means.loc["FLAN", "rectified"] <= 0.00648


@pytest.mark.slow
def test_rectified_checks_all_pass(rectified):
    checks = rectified[0].checks
    assert list(checks.columns) == CHECK_COLUMNS
    # smoke budgets: (AtS + 3 baselines) x 2 metrics x 3 datasets x 2 ratios, 3 RMSD x 3
    assert len(checks) == 4 * 2 * 3 * 2 + 9
    assert checks.passed.all(), checks[~checks.passed].to_string()


@pytest.mark.slow
def test_rectified_off_paper_settings_skip_table_checks(data_root):
    """With a size cap the paper's selection numbers do not apply: only RMSD is checked."""
    cfg = RectifiedConfig(
        data=str(data_root), datasets=("gigaword",), budgets=(204800,), max_size=1e9
    )
    res = reproduce_rectified(cfg)
    assert res.checks.check.str.startswith("RMSD").all() and len(res.checks) == 3
    assert set(res.selection.dataset) == {"GIGAWORD"}


@pytest.mark.slow
def test_write_rectified(rectified, tmp_path):
    res = rectified[0]
    paths = write_rectified(res, tmp_path / "rect")
    assert all(p.stat().st_size > 0 for p in paths)
    names = {p.name for p in paths}
    assert {"rmsd.csv", "selection.csv", "selection_multistart.csv", "checks.csv"} <= names
    assert {"fits_flan.png", "rmsd.png", "selection.png", "tables.md", "config.json"} <= names
    back = pd.read_csv(tmp_path / "rect" / "selection.csv")
    pd.testing.assert_frame_equal(back, res.selection.reset_index(drop=True), check_dtype=False)
    meta = json.loads((tmp_path / "rect" / "config.json").read_text())
    assert meta["config"]["budgets"] == [204800, 3200] and meta["devices"]
    assert meta["checks_passed"] == f"{len(res.checks)}/{len(res.checks)}"
    assert "Checks against the paper" in rectified_markdown(res)


@pytest.mark.slow
def test_obscaling_tables_and_key_numbers(obscaling):
    res, lines = obscaling
    assert len(lines) == 3
    evr = res.pca[res.pca.table == "base77_all8"].evr.to_numpy()
    # spec §4.1, +-2e-4 (acceptance tolerance, §5.1 item 2)
    np.testing.assert_allclose(evr, [0.8016, 0.1190, 0.0463, 0.0136, 0.0113], atol=2e-4)
    assert res.rsq[res.rsq.family == "MEAN"].r2.iloc[0] == pytest.approx(0.966, abs=0.005)
    assert len(res.lbv2) == 9 and {"mse_test_lo", "mse_test_hi"} <= set(res.lbv2.columns)
    pc3 = res.lbv2[res.lbv2.predictor == "pc:3"].set_index("target").mse_test
    # spec §4.3 precise test MSE, within 3 % (§5.1 item 4)
    np.testing.assert_allclose(
        pc3[["leaderboard_gpqa", "leaderboard_math_hard", "leaderboard_bbh"]],
        [8.27e-4, 2.21e-3, 1.50e-3],
        rtol=0.03,
    )
    sel = res.selection.groupby("setting").n_combinations.first()
    assert sel.to_dict() == {"guide": 431909, "guide_7b": 89845}
    assert set(res.lbv2_fits) == {"lbv2_gpqa", "lbv2_math", "lbv2_bbh"}


@pytest.mark.slow
def test_obscaling_checks_all_pass(obscaling):
    checks = obscaling[0].checks
    assert list(checks.columns) == CHECK_COLUMNS
    assert len(checks) == 5 * 5 + 1 + 9 + 2 * (1 + 9)  # EVR, R², lbv2, selection
    assert checks.passed.all(), checks[~checks.passed].to_string()


@pytest.mark.slow
def test_write_obscaling(obscaling, tmp_path):
    res = obscaling[0]
    paths = write_obscaling(res, tmp_path / "obs")
    assert all(p.stat().st_size > 0 for p in paths)
    names = {p.name for p in paths}
    assert {"pca.csv", "rsq.csv", "lbv2.csv", "selection.csv", "checks.csv"} <= names
    assert {"lbv2_gpqa.png", "rsq.png", "selection.png", "summary.md", "config.json"} <= names
    back = pd.read_csv(tmp_path / "obs" / "lbv2.csv")
    assert back.target.tolist() == res.lbv2.target.tolist()
    assert json.loads((tmp_path / "obs" / "config.json").read_text())["config"]["bootstrap"] == 50
    assert "Checks against the reference" in obscaling_markdown(res)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RectifiedConfig(budgets=(2_000_000,)), "budgets [2000000]"),
        (lambda: RectifiedConfig(budgets=()), "budgets"),
        (lambda: RectifiedConfig(k=1), "k = 1"),
        (lambda: RectifiedConfig(delta=0.0), "delta = 0.0"),
        (lambda: ObscalingConfig(bootstrap=-1), "bootstrap = -1"),
        (lambda: ObscalingConfig(budgets=(0, 4)), "budgets = (0, 4)"),
    ],
)
def test_configs_reject_bad_settings(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_unknown_dataset_names_the_culprit(data_root):
    with pytest.raises(Exception, match="nope"):
        reproduce_rectified(RectifiedConfig(data=str(data_root), datasets=("nope",)))


@pytest.mark.parametrize("study", ["rectified", "obscaling"])
def test_experiment_scripts_help(study):
    """The experiments stay thin scripts with their flags (run from the repo root)."""
    r = subprocess.run(
        [sys.executable, "-m", f"experiments.{study}.run", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--out" in r.stdout and "--quick" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("study", ["rectified", "obscaling"])
def test_cli_reproduce_maps_flags_writes_and_reports(
    study, rectified, obscaling, tmp_path, monkeypatch, capsys, data_root
):
    """`jaxlaw reproduce STUDY --quick --data D --out O`: the flags become the smoke config the
    library gets, every output is written and the checks are printed. The reproduction itself
    is the module's (already computed above), so the CLI path adds no second run."""
    import jaxlaw.observational
    import jaxlaw.selection
    from jaxlaw.cli import main

    module, name, fixture, config = {
        "rectified": (jaxlaw.selection, "reproduce_rectified", rectified, RectifiedConfig),
        "obscaling": (jaxlaw.observational, "reproduce_obscaling", obscaling, ObscalingConfig),
    }[study]
    seen = []

    def fake(cfg, *, log=None):
        seen.append(cfg)
        return fixture[0]

    monkeypatch.setattr(module, name, fake)
    out = tmp_path / study
    assert main(["reproduce", study, "--quick", "--data", str(data_root), "--out", str(out)]) == 0
    assert seen == [config.smoke(data=str(data_root))]
    printed = capsys.readouterr().out
    n = len(fixture[0].checks)
    assert f"{n} of {n} checks against the paper pass" in printed
    assert (out / "checks.csv").stat().st_size > 0 and (out / "config.json").is_file()
