"""jaxlaw.selection: AtS, the baselines, the method registry and the paper's Tables 1-2."""

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxlaw.data import DATASETS, LossTable, TableError, load_dataset, take_models
from jaxlaw.selection import (
    BUDGETS,
    METHODS,
    ats,
    ats_curves,
    ats_table,
    budget_mask,
    examples_used,
    model_size,
    pearson,
    per_budget,
    rank_models,
    rel_acc,
    select,
    selection_grid,
    subtuning,
)

LOG_T = math.log(1638400)
GRID8 = np.array([200 * 2**j for j in range(11)])  # the gamma = 8 budget grid, 200 .. 204800

# ------------------------------------------------------------------ the paper's numbers
# Spec §5.1 (Table 1), printed x100 with 1 decimal -> fractions; columns gamma = 8 .. 512.
TABLE1 = {
    "PearCorr": {
        ("FLAN", "AtS"): [0.909, 0.731, 0.655, 0.611, 0.522, 0.505, 0.456],
        ("FLAN", "ZeroShot"): [-0.107] * 7,
        ("FLAN", "SubTuning"): [0.609, 0.465, 0.364, 0.290, 0.246, 0.209, 0.164],
        ("FLAN", "ModelSize"): [-0.209] * 7,
        ("WMT19", "AtS"): [0.989, 0.970, 0.977, 0.860, 0.780, 0.734, 0.615],
        ("WMT19", "ZeroShot"): [0.071] * 7,
        ("WMT19", "SubTuning"): [0.935, 0.871, 0.777, 0.645, 0.517, 0.416, 0.345],
        ("WMT19", "ModelSize"): [0.360] * 7,
        ("GIGAWORD", "AtS"): [0.989, 0.976, 0.969, 0.920, 0.911, 0.891, 0.910],
        ("GIGAWORD", "ZeroShot"): [-0.492] * 7,
        ("GIGAWORD", "SubTuning"): [0.932, 0.893, 0.854, 0.809, 0.762, 0.699, 0.648],
        ("GIGAWORD", "ModelSize"): [-0.244] * 7,
    },
    "RelAcc": {
        ("FLAN", "AtS"): [0.936, 0.932, 0.932, 0.932, 0.853, 0.932, 0.932],
        ("FLAN", "ZeroShot"): [0.853] * 7,
        ("FLAN", "SubTuning"): [0.932, 0.932, 0.932, 0.932, 0.596, 0.596, 0.596],
        ("FLAN", "ModelSize"): [0.596] * 7,
        ("WMT19", "AtS"): [0.991, 0.991, 0.996, 0.991, 0.991, 0.991, 0.991],
        ("WMT19", "ZeroShot"): [0.844] * 7,
        ("WMT19", "SubTuning"): [0.991] * 7,
        ("WMT19", "ModelSize"): [0.225] * 7,
        ("GIGAWORD", "AtS"): [1.0, 0.914, 0.943, 1.0, 0.943, 0.943, 0.914],
        ("GIGAWORD", "ZeroShot"): [0.713] * 7,
        ("GIGAWORD", "SubTuning"): [0.876, 0.876, 0.876, 0.713, 0.713, 0.713, 0.713],
        ("GIGAWORD", "ModelSize"): [0.713] * 7,
    },
}
# Spec §5.2 (Table 2) AtS rows, 4-decimal values.
TABLE2_ATS = {
    "PearCorr": {
        "FLAN": [0.9087, 0.7312, 0.6553, 0.6113, 0.5218, 0.5054, 0.4556],
        "WMT19": [0.9891, 0.9705, 0.9768, 0.8596, 0.7802, 0.7339, 0.6145],
        "GIGAWORD": [0.9892, 0.9759, 0.9691, 0.9204, 0.9112, 0.8912, 0.9103],
    },
    "RelAcc": {
        "FLAN": [0.9360, 0.9318, 0.9318, 0.9318, 0.8534, 0.9318, 0.9318],
        "WMT19": [0.9909, 0.9909, 0.9962, 0.9909, 0.9909, 0.9909, 0.9909],
        "GIGAWORD": [1.0, 0.9139, 0.9433, 1.0, 0.9433, 0.9433, 0.9139],
    },
}


@pytest.fixture(scope="module")
def tables(data_root):
    return {name: load_dataset(name, data_root) for name in DATASETS}


@pytest.fixture(scope="module")
def grid(tables):
    return selection_grid(tables, ["AtS", "ZeroShot", "SubTuning", "ModelSize"])


def _cells(grid, metric, dataset, method):
    sel = grid[(grid.metric == metric) & (grid.dataset == dataset) & (grid.method == method)]
    return sel.sort_values("ratio").value.to_numpy()


def test_grid_layout(grid):
    assert list(grid.columns) == [
        "dataset",
        "ratio",
        "max_data_num",
        "predict_data_num",
        "metric",
        "method",
        "value",
    ]
    assert len(grid) == 3 * 7 * 4 * 2  # the 168 cells of Table 1
    assert sorted(grid.ratio.unique()) == [8, 16, 32, 64, 128, 256, 512]
    assert (grid.predict_data_num == 1638400).all()
    assert (grid.value == grid.value.round(4)).all()


@pytest.mark.parametrize("metric", ["PearCorr", "RelAcc"])
def test_table1_parity(grid, metric):
    # Printed to 0.1 percentage points: half a printed unit plus float32 slack.
    for (dataset, method), want in TABLE1[metric].items():
        got = _cells(grid, metric, dataset, method)
        np.testing.assert_allclose(got, want, rtol=0, atol=6e-4, err_msg=f"{dataset} {method}")


@pytest.mark.parametrize("metric", ["PearCorr", "RelAcc"])
def test_table2_ats_parity(grid, metric):
    # 4-decimal values; 1.5e-4 allows one unit of 4-dp rounding of a float32 correlation.
    for dataset, want in TABLE2_ATS[metric].items():
        got = _cells(grid, metric, dataset, "AtS")
        np.testing.assert_allclose(got, want, rtol=0, atol=1.5e-4, err_msg=dataset)


def test_fixed_ats_and_internals_match_spec(tables):
    # Spec §5.6 (printed to 3 decimals / 1 decimal): corrected-variant mean PearCorr, mean
    # accepted points per cell in 3.5 .. 5.3, and 4 .. 17 models per cell ending at t = 0.
    fixed = selection_grid(tables, ["AtS"], faithful=False)
    for dataset, want in {"FLAN": 0.620, "WMT19": 0.836, "GIGAWORD": 0.938}.items():
        got = fixed[(fixed.metric == "PearCorr") & (fixed.dataset == dataset)].value.mean()
        assert abs(got - want) <= 5e-4, (dataset, got)
    acc, t0 = [], []
    for table in tables.values():
        res = ats_table(table, BUDGETS)
        acc.append(res.n_accepted.mean(axis=1))
        t0.append((res.transition == 0).sum(axis=1))
    assert 3.45 <= np.min(acc) and np.max(acc) < 5.35
    assert np.min(t0) == 4 and np.max(t0) == 17


# ------------------------------------------------------------------ AtS against a numpy loop


def reference_ats(x, y, k=3, delta=5.0, faithful=True):
    """The reference AtS, written as its loop (x ascending ln D, y ln L); returns (pred, t)."""
    n = len(x)

    def line(xs, ys):
        if len(xs) == 1:  # sklearn's LinearRegression centres the data: slope 0
            return 0.0, ys[0]
        design = np.stack([xs, np.ones_like(xs)], axis=1)
        return np.linalg.lstsq(design, ys, rcond=None)[0]

    if n <= k:
        t = -1
    else:
        broke = False
        for p in range(k, n):
            b, a = line(x[-p:], y[-p:])
            s = (y[-p:] - (a + b * x[-p:])).std()
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.abs(y[-p - 1] - (a + b * x[-p - 1])) / s
            if r > delta:
                broke = True
                break
        t = n - p - 1 if (broke or faithful) else -1
    b, a = line(x[t + 1 :], y[t + 1 :])
    return math.exp(a + b * LOG_T), t


@pytest.mark.parametrize("faithful", [True, False])
def test_ats_matches_numpy_loop_on_real_curves(tables, faithful):
    for table in tables.values():
        res = ats_table(table, BUDGETS, faithful=faithful)
        for b, budget in enumerate(BUDGETS):
            m = budget_mask(table.sizes, budget)
            x = np.log(table.sizes[m].astype(float))
            for i in range(len(table.models)):
                pred, t = reference_ats(x, np.log(table.loss[i, m]), faithful=faithful)
                assert res.transition[b, i] == t, (table.name, budget, table.models[i])
                assert res.n_accepted[b, i] == m.sum() - 1 - t
                # f64 closed-form OLS vs lstsq: ~1e-14 apart; 1e-10 leaves room for the
                # extrapolation over up to 9 ln-units.
                np.testing.assert_allclose(res.pred[b, i], pred, rtol=1e-10)


def _resid_std(x, y):
    b, a = np.polyfit(x, y, 1)
    return (y - a - b * x).std()


curves = st.lists(st.floats(-0.2, 0.02), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    curves,
    st.integers(3, 5),
    st.sampled_from([1.0, 2.0, 5.0]),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_ats_padded_shuffled_matches_loop(steps, k, delta, faithful, rnd):
    # Random non-smooth curves, padded to 15 slots with junk and shuffled: masking and the
    # internal sort must make this the reference loop on the compacted, sorted points.
    n = len(steps)
    x = np.log(GRID8[:n].astype(float)) if n <= 11 else np.log(200.0 * 2.0 ** np.arange(n))
    y = 1.0 + np.cumsum(steps)
    # Exactly collinear windows leave residuals of ~1e-16, where r = tiny/tiny is arbitrary
    # (spec §6.2 item 3); only compare well-posed curves.
    assume(all(_resid_std(x[-p:], y[-p:]) > 1e-9 for p in range(3, n + 1)))
    want_pred, want_t = reference_ats(x, y, k=k, delta=delta, faithful=faithful)
    junk = 15 - n
    xs = np.concatenate([x, np.full(junk, -np.inf)])
    ys = np.concatenate([y, np.array([np.nan, 7.0, -3.0] * 5)[:junk]])
    mask = np.concatenate([np.ones(n, bool), np.array([True, False, False] * 5)[:junk]])
    perm = list(range(15))
    rnd.shuffle(perm)
    res = ats_curves(
        xs[perm], ys[perm][None], mask[perm][None], k=k, delta=delta, faithful=faithful
    )
    assert int(res.transition[0]) == want_t
    np.testing.assert_allclose(float(res.pred[0]), want_pred, rtol=1e-10)


# ------------------------------------------------------------------ AtS unit properties (§6.2)


def test_ats_alternating_noise_power_law():
    # A power law with +-1e-3 alternating log-noise: nothing is rejected, so the faithful
    # (reference) mode still drops D = 200 while the corrected mode keeps all 11 points.
    x = np.log(GRID8.astype(float))
    y = np.log(3.0) - 0.3 * x + 1e-3 * (-1.0) ** np.arange(11)
    faithful = ats(x, y, k=3, delta=5.0)
    fixed = ats(x, y, k=3, delta=5.0, faithful=False)
    assert int(faithful.transition) == 0 and int(faithful.n_accepted) == 10
    assert int(fixed.transition) == -1 and int(fixed.n_accepted) == 11


def test_ats_finds_the_rectified_knee():
    d_l = math.sqrt(12800.0)
    loss = 2 * d_l / (d_l + GRID8**0.5) + 0.5
    res = ats(np.log(GRID8.astype(float)), np.log(loss))
    assert int(res.transition) == 6 and GRID8[6] == 12800
    assert int(res.n_accepted) == 4


@pytest.mark.parametrize("n,k", [(3, 3), (2, 3), (5, 5)])
def test_ats_few_points_uses_all(n, k):
    x = np.log(GRID8[:n].astype(float))
    y = 1.0 - 0.2 * x + 0.05 * np.sin(np.arange(n) * 2.0)
    res = ats(x, y, k=k)
    assert int(res.transition) == -1 and int(res.n_accepted) == n
    b, a = np.polyfit(x, y, 1)
    np.testing.assert_allclose(float(res.pred), math.exp(a + b * LOG_T), rtol=1e-12)


@pytest.mark.parametrize("c", [0.37, 4.2])
def test_ats_scale_equivariant(tables, c):
    table = tables["flan"]
    m = budget_mask(table.sizes, 204800)
    x = np.log(table.sizes.astype(float).clip(1))
    y = np.log(table.loss)
    base = ats_curves(x, y, m)
    scaled = ats_curves(x, y + math.log(c), m)
    np.testing.assert_array_equal(scaled.transition, base.transition)
    # Shifting ln L only perturbs rounding (f64): rtol 1e-12.
    np.testing.assert_allclose(scaled.pred, c * np.asarray(base.pred), rtol=1e-12)


def test_ats_zero_residual_std_like_numpy():
    # Exactly flat top points (ln 1 = 0): s = 0. 0/0 = NaN is not a rejection, e/0 = inf is.
    x = np.log(GRID8[:6].astype(float))
    y = np.log(np.array([5.0, 2.0, 1.0, 1.0, 1.0, 1.0]))
    res = ats(x, y, k=3, delta=5.0)
    assert reference_ats(x, y)[1] == int(res.transition) == 1
    assert float(res.pred) == 1.0


def test_ats_curves_traces_once():
    x = jnp.log(jnp.asarray(GRID8, float))
    y = jnp.stack([1.0 - 0.1 * x, 2.0 - 0.2 * x])
    ats_curves(x, y, delta=1.0, log_target=LOG_T)
    before = ats_curves._cache_size()
    for delta in (2.0, 3.0, 5.0):
        ats_curves(x, y, delta=delta, log_target=10.0)
    assert ats_curves._cache_size() == before


# ------------------------------------------------------------------ budgets and costs


def test_budget_mask(tables):
    sizes = tables["flan"].sizes
    counts = [int(budget_mask(sizes, b).sum()) for b in BUDGETS]
    assert counts == [11, 10, 9, 8, 7, 6, 5]
    m = budget_mask(sizes, 3200, include_zero=True)
    np.testing.assert_array_equal(sizes[m], [0, 200, 400, 800, 1600, 3200])
    np.testing.assert_array_equal(sizes[budget_mask(sizes, 3200, smallest=800)], [800, 1600, 3200])
    with pytest.raises(TableError, match="budget 300 is not a subset size"):
        budget_mask(sizes, 300)
    with pytest.raises(TableError, match="grid sizes 400 are not columns"):
        budget_mask(np.array([0, 200, 800]), 800)


def test_examples_used(tables):
    sizes = tables["flan"].sizes
    assert examples_used("AtS", 204800, sizes) == 200 * (2**11 - 1) == 409400
    assert examples_used("ourfit", 3200, sizes) == examples_used("VanillaFit", 3200, sizes) == 6200
    assert examples_used("SubTuning", 3200, sizes) == 3200
    assert examples_used("zero_shot", 3200, sizes) == examples_used("ModelSize", 3200, sizes) == 0
    with pytest.raises(ValueError, match="unknown selection method 'magic'"):
        examples_used("magic", 3200, sizes)


# ------------------------------------------------------------------ select and the registry


def test_select_baselines(tables):
    flan = tables["flan"]
    size_ref = select(flan, "modelsize", 3200)
    size_loss = select(flan, "ModelSize", 3200, sign="loss")
    np.testing.assert_array_equal(size_ref.feature, np.log(flan.n_params))
    np.testing.assert_array_equal(size_loss.feature, -np.log(flan.n_params))
    np.testing.assert_array_equal(size_ref.rank, size_loss.rank)
    assert flan.models[size_ref.chosen] == "facebook/opt-6.7b"
    gold = select(flan, "golden", 3200)
    assert flan.models[gold.chosen] == "facebook/opt-1.3b" and gold.rank[gold.chosen] == 1.0
    sub = select(flan, "subtuning", 204800)
    np.testing.assert_array_equal(sub.feature, subtuning(flan, 204800))
    ats_sel = select(flan, "AtS", 204800, k=3, delta=5.0)
    np.testing.assert_array_equal(ats_sel.feature, ats_table(flan, [204800]).pred[0])
    with pytest.raises(ValueError, match="takes no option"):
        select(flan, "zeroshot", 3200, k=3)
    with pytest.raises(ValueError, match="sign"):
        model_size(flan, sign="up")
    with pytest.raises(TableError, match="budget 1000"):
        select(flan, "ats", 1000)


@pytest.mark.parametrize("method", ["ats", "zeroshot", "subtuning", "modelsize", "golden"])
def test_select_permutation_equivariant(tables, method):
    table = tables["wmt19"]
    perm = np.random.default_rng(1).permutation(len(table.models))
    shuffled = take_models(table, [table.models[i] for i in perm])
    a, b = select(table, method, 12800), select(shuffled, method, 12800)
    np.testing.assert_array_equal(b.feature, a.feature[perm])
    np.testing.assert_array_equal(b.rank, a.rank[perm])
    assert shuffled.models[b.chosen] == table.models[a.chosen]


def test_chosen_is_first_among_ties():
    t = LossTable(
        "toy",
        ("a", "b", "c"),
        np.array([0, 200, 400]),
        np.array([[3.0, 2.0, 1.5], [1.0, 2.0, 1.0], [1.0, 3.0, 1.0]]),
        np.array([5.0, 9.0, 9.0]),
        None,
    )
    assert select(t, "zeroshot", 200).chosen == 1
    np.testing.assert_array_equal(select(t, "zeroshot", 200).rank, [3.0, 1.5, 1.5])
    assert select(t, "modelsize", 200).chosen == 1


def test_rank_models_matches_pandas_and_is_equivariant():
    f = np.random.default_rng(0).integers(0, 6, size=(4, 30)).astype(float)
    want = np.stack([pd.Series(row).rank().to_numpy() for row in f])
    np.testing.assert_array_equal(rank_models(f), want)
    perm = np.random.default_rng(1).permutation(30)
    np.testing.assert_array_equal(rank_models(f[:, perm]), want[:, perm])


def test_metrics():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    np.testing.assert_allclose(pearson(x, y), np.corrcoef(x, y)[0, 1], rtol=1e-12)
    np.testing.assert_allclose(
        pearson(np.stack([x, y]), np.stack([y, y])), [np.corrcoef(x, y)[0, 1], 1.0], rtol=1e-12
    )
    truth = np.array([2.0, 1.0, 3.0, 1.5])
    np.testing.assert_allclose(rel_acc(1, truth), 1.0)
    np.testing.assert_allclose(rel_acc(2, truth), 0.0)
    np.testing.assert_allclose(rel_acc(np.array([0, 3]), np.stack([truth, truth])), [0.5, 0.75])


def test_register_a_method(tables, monkeypatch):
    def negated(table, budget, target, *, scale=1.0):
        return -scale * subtuning(table, budget)

    monkeypatch.setitem(METHODS, "negsub", per_budget(negated))
    flan = tables["flan"]
    sel = select(flan, "negsub", 3200, scale=2.0)
    np.testing.assert_array_equal(sel.feature, -2.0 * subtuning(flan, 3200))
    g = selection_grid({"flan": flan}, ["negsub", "SubTuning"], budgets=(3200,), scale=2.0)
    pc = g[g.metric == "PearCorr"].set_index("method").value
    assert pc["negsub"] == -pc["SubTuning"]
    with pytest.raises(ValueError, match="takes option"):
        selection_grid({"flan": flan}, ["SubTuning"], scale=2.0)

    monkeypatch.setitem(METHODS, "broken", lambda table, budgets, target: np.ones(3))
    with pytest.raises(ValueError, match="expected \\(budgets, models\\)"):
        select(flan, "broken", 3200)
    nan = per_budget(lambda table, budget, target: np.where(np.arange(30) == 4, np.nan, 1.0))
    monkeypatch.setitem(METHODS, "nanny", nan)
    with pytest.raises(ValueError, match="NaN features for .cerebras/Cerebras-GPT-256M."):
        select(flan, "nanny", 3200)


def test_grid_routes_options_and_filters_sizes(tables):
    flan = tables["flan"]
    g = selection_grid({"flan": flan}, ["AtS", "ZeroShot"], budgets=(6400,), k=4, delta=2.0)
    ats_pc = g[(g.metric == "PearCorr") & (g.method == "AtS")].value.item()
    feat = select(flan, "ats", 6400, k=4, delta=2.0).feature
    truth = flan.loss[:, -1]
    assert ats_pc == round(float(pearson(feat.astype(np.float32), truth.astype(np.float32))), 4)

    kept = [int((flan.n_params < c).sum()) for c in (7e9, 1.9e9, 1.4e9, 7e8)]
    assert kept == [30, 25, 21, 15]  # spec §4.4
    small = take_models(flan, [m for m, s in zip(flan.models, flan.n_params) if s < 7e8])
    a = selection_grid({"flan": flan}, ["ats", "modelsize"], max_size=7e8)
    b = selection_grid({"flan": small}, ["ats", "modelsize"])
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="unknown selection method 'best'"):
        selection_grid({"flan": flan}, ["best"])


def test_ats_skips_missing_cells_and_names_short_models():
    sizes = np.array([0, 200, 400, 800, 1600, 3200])
    loss = np.array(
        [
            [9.0, 3.0, 2.8, np.nan, 2.5, 2.4],
            [9.0, 3.0, np.nan, np.nan, 2.5, 2.4],
            [9.0, 3.0, 2.9, 2.7, 2.5, 2.4],
        ]
    )
    t = LossTable("toy", ("a", "short", "c"), sizes, loss, None, None)
    res = ats_table(t, [3200])
    x = np.log(sizes.astype(float).clip(1))
    for i in range(3):
        keep = (sizes > 0) & np.isfinite(loss[i])
        pred, tr = reference_ats(x[keep], np.log(loss[i, keep]))
        assert res.transition[0, i] == tr
        np.testing.assert_allclose(res.pred[0, i], pred, rtol=1e-10)
    with pytest.raises(TableError) as err:
        ats_table(t, [800])
    assert "too few for: 'a' (2), 'short' (1)" in str(err.value)


# ------------------------------------------------------------------ OurFit / VanillaFit
# Spec §5.2 (Table 2) OurFit rows, PearCorr, 4-decimal values; gamma = 8 .. 512.
TABLE2_OURFIT = {
    "FLAN": [0.7786, 0.6740, 0.5439, 0.4761, 0.5494, 0.4109, 0.3679],
    "WMT19": [0.9498, 0.9362, 0.9108, 0.8392, 0.7889, 0.7286, 0.6147],
    "GIGAWORD": [0.9698, 0.9070, 0.8835, 0.8362, 0.8364, 0.8153, 0.7855],
}
# Spec §5.6: OurFit with the multi-start global fitter, zero-shot at D = 1e-10 (as the
# reference encodes it), gamma = 8 and 512 only (the full grid runs in `make bench`).
OURFIT_MULTISTART = {
    "PearCorr": {"FLAN": (0.7795, 0.3792), "WMT19": (0.9711, 0.5905), "GIGAWORD": (0.9772, 0.8083)},
    "RelAcc": {"FLAN": (1.0, 0.8534), "WMT19": (0.9962, 0.8494), "GIGAWORD": (1.0, 0.8721)},
}


def test_ourfit_reference_mode_close_to_table2(tables):
    """Issue acceptance 2: reference-mode OurFit within 0.15 of every Table 2 PearCorr cell,
    mean |diff| <= 0.04. The reference's optimum moves with the optimizer (its own cached
    numbers are one draw, spec §5.6); measured here: max 0.131 (WMT19 1/64), mean 0.028."""
    grid = selection_grid(tables, ["OurFit"], mode="reference")
    diffs = np.concatenate(
        [
            _cells(grid, "PearCorr", ds, "OurFit") - np.array(vals)
            for ds, vals in TABLE2_OURFIT.items()
        ]
    )
    assert np.abs(diffs).max() <= 0.15
    assert np.abs(diffs).mean() <= 0.04


def test_ourfit_multistart_reproduces_spec(tables):
    """Within 0.005 of the spec's multi-start numbers (scipy LM and a JAX prototype agreed on
    them); RelAcc exact (a 5-point tolerance would hide a different chosen model)."""
    grid = selection_grid(tables, ["OurFit"], budgets=(204800, 3200), zero_as=1e-10)
    for metric, per_ds in OURFIT_MULTISTART.items():
        for ds, vals in per_ds.items():
            got = _cells(grid, metric, ds, "OurFit")  # sorted by ratio: 8, 512
            tol = 0.005 if metric == "PearCorr" else 1e-4
            np.testing.assert_allclose(got, vals, atol=tol, err_msg=f"{metric} {ds}")


def test_vanillafit_seeded_and_sane(tables):
    """Reference-mode VanillaFit is seed noise (spec §5.6) but reproducible for a seed; the
    multi-start MSE fit is deterministic. Loose check: PearCorr > 0.8 on WMT19/Gigaword at 1/8."""
    small = {k: tables[k] for k in ("wmt19", "gigaword")}
    a = selection_grid(small, ["VanillaFit"], budgets=(204800,), mode="reference", seed=3)
    b = selection_grid(small, ["VanillaFit"], budgets=(204800,), mode="reference", seed=3)
    pd.testing.assert_frame_equal(a, b)
    for mode in ("reference", "multistart"):
        g = selection_grid(small, ["VanillaFit"], budgets=(204800,), mode=mode, seed=3)
        pc = g[g.metric == "PearCorr"].value.to_numpy()
        assert np.isfinite(pc).all() and (pc > 0.8).all(), (mode, pc)


def test_ourfit_without_zero_shot_and_bad_mode(tables):
    flan = tables["flan"]
    pred = select(flan, "ourfit", 204800, use_zero_shot=False).feature
    assert np.isfinite(pred).all() and (pred > 0).all()
    with pytest.raises(ValueError, match="unknown fit mode 'fast'"):
        select(flan, "ourfit", 204800, mode="fast")
