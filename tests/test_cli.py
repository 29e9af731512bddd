"""The command line and the reproduction script, run as a user would (the demo: test_demo.py)."""

import pandas as pd
import pytest

from jaxlaw.cli import main


def test_select_prints_ranking_and_metrics(data_root, capsys):
    assert main(["select", "flan", "--data", str(data_root), "--budget", "204800"]) == 0
    out = capsys.readouterr().out
    assert "chosen: microsoft/phi-1_5" in out
    assert "RelAcc 0.9360" in out and "PearCorr 0.9087" in out  # Table 1, FLAN AtS 1/8


def test_fit_writes_csv_and_plot(data_root, tmp_path, capsys):
    csv, png = tmp_path / "fit.csv", tmp_path / "fit.png"
    assert (
        main(["fit", "gigaword", "--data", str(data_root), "--out", str(csv), "--plot", str(png)])
        == 0
    )
    df = pd.read_csv(csv, index_col=0)
    assert len(df) == 30 and {"D_l", "D_l_examples", "beta", "E", "rmsd_log"} <= set(df.columns)
    assert df.rmsd_log.mean() == pytest.approx(0.00507, abs=5e-5)
    assert png.stat().st_size > 10_000
    assert "mean RMSD under log: 0.0050" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["select", "nope.csv", "--budget", "200"], "nope.csv: no such file"),
        (["select", "flan", "--budget", "5000"], "budget 5000 is not a subset size"),
        (["fit", "flan", "--law", "vanilla", "--zero-shot"], "diverges at D = 0"),
        (["fit", "flan", "--law", "power", "--faithful"], "faithful mode exists"),
    ],
)
def test_bad_input_gives_one_clear_line(data_root, capsys, argv, message):
    assert main([*argv[:2], "--data", str(data_root), *argv[2:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxlaw: error:") and message in err[0]


def test_bad_csv_names_the_culprit(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,0,200,400,800\na,3.0,2.5,2.0,oops\nb,3.0,2.4,2.1,1.9\n")
    assert main(["select", str(bad), "--budget", "800"]) == 2
    err = capsys.readouterr().err
    assert "800" in err and "'a'" in err and "Traceback" not in err


def test_measured_table_reads_like_a_paper_table(capsys):
    """smollm2_gsm8k (bundled; experiments/gsm8k_scaling) by name, as `flan` is."""
    assert main(["fit", "smollm2_gsm8k", "--zero-shot"]) == 0
    out = capsys.readouterr().out
    assert "rectified law, multi-start fit on smollm2_gsm8k (1 models)" in out
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in out
    assert main(["select", "smollm2_gsm8k", "--budget", "16", "--method", "ourfit"]) == 0
    assert "chosen: HuggingFaceTB/SmolLM2-135M-Instruct" in capsys.readouterr().out
