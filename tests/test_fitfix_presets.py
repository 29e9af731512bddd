"""Preset fidelity: the post-training and agent presets run the notebooks' configuration.

The real post-training and agent tables are not shipped, so each test writes a target file
with the notebook's column name, drawn from a known floored sigmoid of the preset's own PCs,
and checks the preset's column handling, normalisation, split and solver against an
independent scipy run of the notebook's procedure (spec obscaling.md §2.7).
"""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit, minimize

from jaxlaw.observational import (
    INSTRUCT7,
    NONGSM7,
    PRESETS,
    load_benchmarks,
    merge_tables,
    observe_fit,
    prepare,
)


def _floored(v, x):
    return (1 - v[-1]) / (1 + np.exp(-(v[0] + x @ v[1:-1]))) + v[-1]


def _target_file(tmp_path, base, column, preset, truth, scale=1.0, noise=0.0):
    probe = prepare(base.assign(_probe=0.5), "_probe", preset)
    y = _floored(truth, probe.scores[:, :3])
    y = y + np.random.default_rng(0).normal(0, noise, len(y))
    path = tmp_path / "task.csv"
    pd.DataFrame({"Model": probe.models, column: scale * y}).to_csv(path, index=False)
    return merge_tables(base, load_benchmarks(str(path)))


def test_post_training_preset_is_the_notebook_fit(data_root, tmp_path):
    """GSM8K 5-shot (flexible extract) under the post-training preset: NONGSM7 imputation and
    PCA with K = 3, FLOPs cutoff 84, floored sigmoid, and the notebook's L-BFGS-B on the summed
    Huber (delta = 1) from w0 = 0, slopes 0.03, b = 0. Guards the preset's solver: with LM the
    optimum differs from the notebook's (the fix this test came with). The independent scipy
    run must match to 2e-4 (see below)."""
    preset = PRESETS["post_training"]
    assert preset.metrics == NONGSM7 and preset.n_components == 3 and preset.loss == "huber"
    base = load_benchmarks("base", root=data_root)
    truth = np.array([-0.8, 2.5, 1.5, -1.0, 0.05])
    column = "gsm8k_5_exact_match,flexible-extract"
    df = _target_file(tmp_path, base, column, preset, truth, noise=0.01)
    fit = observe_fit(df, column, "pc", preset)
    prep = prepare(df, column, preset)
    assert prep.components.shape == (3, len(NONGSM7))
    flops = np.asarray(df.set_index("Model").loc[list(prep.models), "FLOPs (1E21)"])
    np.testing.assert_array_equal(fit.train, flops <= 84)  # NaN FLOPs go to test
    x, y, tr = prep.scores[:, :3], prep.y, fit.train

    a = np.concatenate([np.ones((tr.sum(), 1)), x[tr]], axis=1)  # the reference's design

    def objective(v):
        r = np.abs((1 - v[-1]) / (1 + np.exp(-np.dot(a, v[:-1]))) + v[-1] - y[tr])
        return np.where(r <= 1.0, 0.5 * r**2, r - 0.5).sum()

    p0 = np.array([0.0, 0.03, 0.03, 0.03, 0.0])
    bounds = [(-np.inf, np.inf)] * 4 + [(0.0, 0.2)]
    ref = minimize(objective, p0, method="L-BFGS-B", bounds=bounds).x
    got = np.r_[fit.params["w0"], fit.params["w"], fit.params["b"]]
    # An L-BFGS-B stopped by gtol with finite-difference gradients amplifies rounding-level
    # differences in the inputs: measured 6.4e-5 here (2e-9 on identical arrays); the LM
    # optimum the preset ran before this fix is 4.2e-4 away.
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)
    # Recovery within the noise (sd 0.01, 45 train rows): slopes to 0.15, floor to 0.02.
    np.testing.assert_allclose(got[1:4], truth[1:4], atol=0.15 * np.abs(truth[1:4]).max())
    assert abs(got[4] - truth[4]) < 0.02
    assert fit.ok and fit.mse_train < 2e-4  # noise variance 1e-4


@pytest.mark.parametrize(
    "preset_name, column, scale",
    [
        ("agent_bench", "ABench-OA", 10.0),
        ("agent_board", "ABoard-Avg_SR", 100.0),
    ],
)
def test_agent_presets_are_the_notebook_fit(data_root, tmp_path, preset_name, column, scale):
    """AgentBench (0..10) and AgentBoard success rate (%) on the instruct table: INSTRUCT7
    PCs (K = 5), min-max by the scale, top 10 % by score held out, floored sigmoid fitted by
    the notebook's curve_fit (TRF in the box) from its start. The fit equals an independent
    curve_fit to 1e-6 (TRF stops at ftol = xtol = 1e-8), and the noiseless target is
    recovered."""
    preset = PRESETS[preset_name]
    assert preset.metrics == INSTRUCT7 and preset.ref_family == "Llama-2-Chat"
    base = load_benchmarks("instruct", root=data_root)
    truth = np.array([-0.5, 6.0, 3.0, -2.0, 0.04])
    df = _target_file(tmp_path, base, column, preset, truth, scale=scale)
    fit = observe_fit(df, column, "pc:3", preset)
    prep = prepare(df, column, preset)
    n = int(np.isfinite(prep.y).sum())
    assert fit.n_test == int(0.1 * n) and fit.n_train == n - fit.n_test
    top = np.argsort(-np.where(np.isfinite(prep.y), prep.y, -np.inf))[: fit.n_test]
    assert fit.test[top].all()  # the best-scoring models are held out
    np.testing.assert_allclose(prep.y[fit.train | fit.test].max(), prep.y.max())
    assert np.nanmax(prep.y) <= 1.0  # normalised by the scale
    x, y, tr = prep.scores[:, :3], prep.y, fit.train
    ref, _ = curve_fit(
        lambda a, *p: _floored(np.asarray(p), a),
        x[tr],
        y[tr],
        p0=np.array([0.0, 0.03, 0.03, 0.03, 0.0]),
        bounds=([-np.inf] * 4 + [0.0], [np.inf] * 4 + [0.2]),
        maxfev=10000,
    )
    got = np.r_[fit.params["w0"], fit.params["w"], fit.params["b"]]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    # The probe's PCs were fitted on other train rows than the real split's, so the truth is
    # only nearly representable: measured train MSE 2.3e-5, params within 0.07.
    assert fit.mse_train < 1e-4 and fit.mse_test < 1e-4
    np.testing.assert_allclose(got, truth, atol=0.1 * np.abs(truth).max())
