"""jaxlaw.observational data layer: tables, PCA-EM imputation, PCA, splits, compute axis.

Reference numbers are spec §4.1 (obscaling.md), reproduced there by the reference code; the
imputation+PCA for them is fitted on all rows of the table (no test rows).
"""

import tempfile
import warnings
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxlaw.data import TableError
from jaxlaw.observational._compute import family_r2, fit_equiv_flops, from_equiv, to_equiv
from jaxlaw.observational._constants import (
    ALL8,
    BBH_RANDOM,
    EVAL_BASE_MODEL_FAMILIES,
    EVAL_BASE_MODEL_WITH_FLOPS_FAMILIES,
    FAMILY,
    FLOPS,
    INSTRUCT7,
    MODEL,
    NONGSM7,
    PREREGISTERED_MODELS,
    SIZE,
)
from jaxlaw.observational._constants import DATA as DATA_SIZE
from jaxlaw.observational._impute import pca_em_impute
from jaxlaw.observational._pca import (
    pca_fit,
    pca_inverse_transform,
    pca_transform,
    sign_normalise,
)
from jaxlaw.observational._split import (
    apply_heldout,
    cutoff_split,
    n_test_rows,
    random_split,
    rank_split,
)
from jaxlaw.observational._tables import (
    benchmark_matrix,
    data_root,
    family_codes,
    load_benchmarks,
    merge_tables,
    read_table,
    select_base_models,
    validate_table,
)

# The BTLM-3B data error that the unfiltered tables report (tested in test_btlm_error_reported_or_fixed).
KNOWN_ERROR = r".*known data error"

DATA = data_root()  # $JAXLAW_DATA, else <repo>/../shared/data
OBS = DATA / "obscaling"
BTLM = "cerebras/btlm-3b-8k-base"

# Spec §1: family sizes of the default 77-model table.
FAMILY_SIZES = {
    "Pythia": 8, "OPT": 8, "Qwen1.5": 7, "BLOOM": 5, "GPT-Neo/J": 5, "Llama": 4, "Falcon": 4,
    "XGLM": 4, "CodeLlama": 4, "StarCoder": 4, "Llama-2": 3, "Qwen": 3, "StarCoder2": 3,
    "DeepSeek-Coder": 3, "Llama-3": 2, "Yi": 2, "Gemma": 2, "Phi": 2, "MPT": 2, "Mistral": 1,
    "Mixtral": 1,
}  # fmt: skip
# Spec §4.1 (77 x ALL8, rank-1 imputation, PCA K=5).
EVR_77 = [0.8016, 0.1190, 0.0463, 0.0136, 0.0113]
EV_77 = [0.15070, 0.02238, 0.00871, 0.00255, 0.00212]
LOADINGS_77 = [
    [0.448, 0.344, 0.379, 0.242, 0.085, 0.552, 0.214, 0.347],
    [-0.120, 0.301, 0.615, 0.303, -0.194, -0.433, 0.187, -0.405],
    [-0.317, 0.041, 0.101, -0.000, -0.267, -0.353, 0.094, 0.826],
]
MEANS_77 = [0.4154, 0.4404, 0.6482, 0.6643, 0.4132, 0.1934, 0.6738, 0.1989]
IMPUTED_77 = {
    ("meta-llama/Meta-Llama-3-70B", "ARC-C"): 0.7272,
    ("meta-llama/Meta-Llama-3-8B", "ARC-C"): 0.6147,
    ("tiiuae/falcon-180B", "HumanEval"): 0.4182,
    ("tiiuae/falcon-40b", "HumanEval"): 0.3306,
    ("tiiuae/falcon-7b", "HumanEval"): 0.1964,
    ("tiiuae/falcon-rw-1b", "HumanEval"): 0.0935,
}
R2_77 = {
    "BLOOM": 0.981, "CodeLlama": 0.959, "DeepSeek-Coder": 0.959, "Falcon": 0.940,
    "GPT-Neo/J": 0.945, "Llama": 0.981, "Llama-2": 1.000, "OPT": 0.984, "Pythia": 0.985,
    "Qwen": 0.964, "Qwen1.5": 0.972, "StarCoder": 0.974, "StarCoder2": 0.899, "XGLM": 0.988,
}  # fmt: skip


@pytest.fixture(scope="module")
def root() -> Path:
    if not (OBS / "base_llm_benchmark_eval.csv").exists():
        pytest.skip(f"observational-scaling data not found at {OBS} (set JAXLAW_DATA)")
    return DATA


@pytest.fixture(scope="module")
def base77(root):
    return load_benchmarks(root=root)


@pytest.fixture(scope="module")
def fit77(base77):
    """Rank-1 imputation of all 77 rows, PCA(5), and the scores (the reference setting)."""
    X = benchmark_matrix(base77, ALL8)
    train = np.ones(len(X), dtype=bool)
    imp = pca_em_impute(X, train)
    pca = pca_fit(imp.filled, train, 5)
    return X, imp, pca, pca_transform(pca, imp.filled)


def _all_rows_pca(df, metrics, k=5):
    X = benchmark_matrix(df, metrics)
    train = np.ones(len(X), dtype=bool)
    return pca_fit(pca_em_impute(X, train).filled, train, k)


# ---------------------------------------------------------------- loader (§5.1 item 1)


def test_default_loader(base77):
    assert len(base77) == 77 and base77[FAMILY].nunique() == 21
    assert Counter(base77[FAMILY]) == FAMILY_SIZES
    assert not base77[MODEL].isin(PREREGISTERED_MODELS).any()
    # Spec §1 NaN counts on the 77.
    nan = base77.isna().sum()
    assert (nan[DATA_SIZE], nan[FLOPS], nan["ARC-C"], nan["HumanEval"], nan["XWinograd"]) == (
        2, 2, 2, 4, 0,
    )  # fmt: skip
    assert set(base77[base77[FLOPS].isna()][FAMILY]) == {"Mistral", "Mixtral"}
    for c in ALL8:
        assert base77[c].dtype == np.float64


def test_loader_variants(root):
    with_prereg = load_benchmarks(root=root, include_preregistered=True)
    assert (len(with_prereg), with_prereg[FAMILY].nunique()) == (97, 28)
    assert set(with_prereg[FAMILY]) == set(EVAL_BASE_MODEL_FAMILIES)
    assert with_prereg[MODEL].isin(PREREGISTERED_MODELS).sum() == 20
    with pytest.warns(UserWarning, match="btlm-3b-8k-base"):
        full = load_benchmarks(root=root, eval_families_only=False, include_preregistered=True)
    assert len(full) == 148 and full[FAMILY].nunique() == 47
    # FLOPs (1E21) = 6 N[B] D[T] for every non-NaN row (the BTLM error keeps the identity).
    known = full[FLOPS].notna()
    assert known.sum() == 123
    np.testing.assert_allclose(
        full.loc[known, FLOPS], 6 * full.loc[known, SIZE] * full.loc[known, DATA_SIZE], rtol=1e-12
    )


def test_btlm_error_reported_or_fixed(root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_benchmarks(root=root)  # BTLM is a misc family: not loaded, not reported
        fixed = load_benchmarks(
            "sub10b", root=root, eval_families_only=False, fix_known_errors=True
        )
    row = fixed.set_index(MODEL).loc[BTLM]
    assert (row[DATA_SIZE], row[FLOPS]) == (0.627, 11.286)
    with pytest.warns(UserWarning, match=r"627.*0\.627"):
        raw = load_benchmarks("sub10b", root=root, eval_families_only=False)
    assert raw.set_index(MODEL).loc[BTLM, FLOPS] == 11286


def test_sub10b_is_a_row_subset(root):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=KNOWN_ERROR, category=UserWarning)
        full = load_benchmarks(root=root, eval_families_only=False, include_preregistered=True)
        sub = load_benchmarks(
            "sub10b", root=root, eval_families_only=False, include_preregistered=True
        )
    assert len(sub) == 92 and (sub[SIZE] <= 9).all()
    # Same values up to CSV float formatting (max difference ~1e-16).
    pd.testing.assert_frame_equal(
        full.set_index(MODEL).loc[sub[MODEL]], sub.set_index(MODEL), rtol=1e-12
    )


def test_merged_task_tables(root, base77):
    lb = load_benchmarks("leaderboard_v2", root=root)
    assert lb.shape == (72, 7)
    # The leaderboard notebook: 148-row table, then EVAL-with-FLOPs families -> 47 models.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=KNOWN_ERROR, category=UserWarning)
        full = load_benchmarks(root=root, eval_families_only=False, include_preregistered=True)
    merged = merge_tables(full, lb)
    merged = merged[merged[FAMILY].isin(EVAL_BASE_MODEL_WITH_FLOPS_FAMILIES)]
    assert len(merged) == 47
    assert set(merged.loc[merged[FLOPS].isna(), MODEL]) == {
        "Qwen/Qwen1.5-110B",
        "ai21labs/Jamba-v0.1",
    }
    assert len(merge_tables(base77, load_benchmarks("emergent", root=root))) == 65
    # Row order follows the base table; alignment is by name.
    shuffled = lb.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(merge_tables(full, lb), merge_tables(full, shuffled))


def test_constants():
    assert len(EVAL_BASE_MODEL_FAMILIES) == 28 and len(PREREGISTERED_MODELS) == 20
    assert NONGSM7 == tuple(m for m in ALL8 if m != "GSM8K") and len(INSTRUCT7) == 7
    assert len(BBH_RANDOM) == 27
    assert len(EVAL_BASE_MODEL_WITH_FLOPS_FAMILIES) == 25


# ---------------------------------------------------------------- PCA numbers (§5.1 item 2)


def test_pca_77_all8(fit77):
    _, _, pca, _ = fit77
    # Tolerances: the spec prints 4 d.p. (EVR, means) and 3 d.p. (loadings).
    np.testing.assert_allclose(pca.explained_variance_ratio, EVR_77, atol=2e-4)
    np.testing.assert_allclose(pca.explained_variance, EV_77, atol=1e-5)
    np.testing.assert_allclose(np.abs(pca.components[:3]), np.abs(LOADINGS_77), atol=2e-3)
    # With the sklearn >= 1.5 sign rule the signs match the reference too.
    np.testing.assert_allclose(pca.components[:3], LOADINGS_77, atol=2e-3)
    np.testing.assert_allclose(pca.mean, MEANS_77, atol=1e-4)
    assert abs(float(pca.explained_variance_ratio[:3].sum()) - 0.9670) < 2e-4


@pytest.mark.parametrize(
    "table, kwargs, metrics, evr",
    [
        ("base", {}, NONGSM7, [0.7928, 0.1275, 0.0516, 0.0157, 0.0070]),
        ("base", {"eval_families_only": False, "include_preregistered": True}, ALL8,
         [0.8528, 0.0934, 0.0274, 0.0115, 0.0070]),
        ("base", {"include_preregistered": True}, ALL8, [0.8572, 0.0869, 0.0308, 0.0103, 0.0075]),
        ("sub10b", {"eval_families_only": False, "include_preregistered": True}, ALL8,
         [0.7865, 0.1409, 0.0361, 0.0152, 0.0122]),
        ("instruct", {}, INSTRUCT7, [0.8928, 0.0665, 0.0259, 0.0096, 0.0026]),
    ],
)  # fmt: skip
def test_pca_other_tables(root, table, kwargs, metrics, evr):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=KNOWN_ERROR, category=UserWarning)
        df = load_benchmarks(table, root=root, **kwargs)
    pca = _all_rows_pca(df, metrics)
    np.testing.assert_allclose(pca.explained_variance_ratio, evr, atol=2e-4)  # 4 d.p. in spec


# ---------------------------------------------------------------- imputation (§5.1 item 3)


def test_imputed_cells(base77, fit77):
    X, imp, _, _ = fit77
    miss = np.isnan(X)
    assert miss.sum() == 6
    got = {
        (base77[MODEL].iloc[i], ALL8[j]): float(imp.filled[i, j]) for i, j in zip(*np.nonzero(miss))
    }
    assert got.keys() == IMPUTED_77.keys()
    for cell, want in IMPUTED_77.items():
        assert abs(got[cell] - want) < 1e-3, cell  # spec prints 4 d.p.
    filled = np.asarray(imp.filled)
    np.testing.assert_array_equal(filled[~miss], X[~miss])  # observed cells bit-for-bit
    assert np.isfinite(filled).all() and filled.min() >= 0 and filled.max() <= 1


def test_delta_rule_converges_to_reference(fit77):
    X, imp, _, _ = fit77
    train = np.ones(len(X), dtype=bool)
    ref = pca_em_impute(X, train, stop="reference")
    assert int(ref.n_iter) == 1000  # the reference's stop test never fires (spec §6.2)
    assert 1 <= int(imp.n_iter) <= 1000 // 20  # a real stopping rule: >= 20x fewer PCA fits
    # Both are the same fixed point; 1000 - 18 extra contractions move it by < 1e-10.
    np.testing.assert_allclose(imp.filled, ref.filled, rtol=0, atol=1e-8)


def test_reference_stop_fires_on_exact_low_rank():
    u = np.linspace(0.1, 0.9, 12)[:, None]
    X = u @ np.array([[1.0, 0.5, 0.8]]) + np.array([0.0, 0.1, 0.05])  # exactly rank 1 + shift
    X[3, 1] = np.nan
    imp = pca_em_impute(X, np.ones(12, dtype=bool), stop="reference", clip=None)
    assert int(imp.n_iter) < 1000
    want = u[3, 0] * 0.5 + 0.1
    assert abs(float(imp.filled[3, 1]) - want) < 1e-3  # the reference's atol is 1e-4 (std units)


def test_test_rows_use_frozen_train_state(fit77):
    X, _, _, _ = fit77
    train = np.ones(len(X), dtype=bool)
    train[::4] = False
    imp = pca_em_impute(X, train)
    # No leakage: changing the test rows leaves the train fill (and the state) unchanged.
    X2 = X.copy()
    X2[~train] = np.where(np.isnan(X2[~train]), np.nan, 1.0 - X2[~train])
    imp2 = pca_em_impute(X2, train)
    np.testing.assert_array_equal(imp.filled[train], imp2.filled[train])
    np.testing.assert_array_equal(imp.components, imp2.components)
    # Test cells equal the fixed point of the frozen projection: refilling changes nothing.
    z = (np.asarray(imp.filled) - np.asarray(imp.mean)) / np.asarray(imp.std)
    v, c = np.asarray(imp.components), np.asarray(imp.center)
    zhat = c + (z - c) @ v.T @ v
    test_miss = np.isnan(X) & ~train[:, None]
    assert test_miss.any()
    np.testing.assert_allclose(zhat[test_miss], z[test_miss], atol=1e-9)
    ref = pca_em_impute(X, train, stop="reference")
    np.testing.assert_allclose(imp.filled, ref.filled, rtol=0, atol=1e-8)


def test_clip_is_respected():
    rng = np.random.default_rng(0)
    X = np.clip(rng.uniform(0.5, 1.0, (20, 1)) + rng.normal(0, 0.01, (20, 4)), 0, 1)
    X[np.argmax(X[:, 0]), 3] = np.nan  # the strongest model: its reconstruction may exceed 1
    X[np.argmax(X[:, 1]), 2] = np.nan
    train = np.ones(20, dtype=bool)
    free = np.asarray(pca_em_impute(X, train, clip=None).filled)
    clipped = np.asarray(pca_em_impute(X, train, clip=(0.0, 0.98)).filled)
    miss = np.isnan(X)
    np.testing.assert_array_equal(clipped[miss], np.clip(free[miss], 0.0, 0.98))
    assert (free[miss] > 0.98).any()
    np.testing.assert_array_equal(clipped[~miss], X[~miss])


def test_impute_vmaps_over_train_masks(fit77):
    X, _, _, _ = fit77
    masks = np.ones((3, len(X)), dtype=bool)
    masks[1, :30] = False
    masks[2, 40:] = False
    batched = jax.vmap(lambda m: pca_em_impute(X, m).filled)(jnp.asarray(masks))
    for m, got in zip(masks, batched):
        np.testing.assert_allclose(got, pca_em_impute(X, m).filled, rtol=0, atol=1e-12)


def test_impute_traces_once_per_shape():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(9, 5))
    X[0, 0] = np.nan
    pca_em_impute(X, np.ones(9, dtype=bool))
    before = pca_em_impute._cache_size()
    X[1, 1] = np.nan
    pca_em_impute(X + 0.01, np.arange(9) % 2 == 0)
    assert pca_em_impute._cache_size() == before
    pca_fit(X + 0.5, np.ones(9, dtype=bool), 2)
    before = pca_fit._cache_size()
    pca_fit(X * 2.0, np.arange(9) > 2, 2)
    assert pca_fit._cache_size() == before


# ---------------------------------------------------------------- PCA mechanics


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6))
    train = rng.uniform(size=30) < 0.7
    pca = pca_fit(X, train, 4)
    xt = X[train]
    mean = xt.mean(axis=0)
    _, s, vt = np.linalg.svd(xt - mean, full_matrices=False)
    rows = np.arange(vt.shape[0])
    vt = vt * np.sign(vt[rows, np.argmax(np.abs(vt), axis=1)])[:, None]
    # Tolerance 1e-10: same f64 SVD problem, style guide's PCA-vs-numpy bound.
    np.testing.assert_allclose(pca.mean, mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pca.components, vt[:4], rtol=0, atol=1e-10)
    np.testing.assert_allclose(pca.explained_variance, s[:4] ** 2 / (train.sum() - 1), atol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio, s[:4] ** 2 / (s**2).sum(), atol=1e-10)
    np.testing.assert_allclose(pca_transform(pca, X), (X - mean) @ vt[:4].T, atol=1e-10)
    # The sign rule: every component's largest-|loading| entry is positive.
    comps = np.asarray(pca.components)
    assert (comps[np.arange(4), np.argmax(np.abs(comps), axis=1)] > 0).all()
    np.testing.assert_array_equal(sign_normalise(-pca.components), pca.components)


def test_pca_all_components_reconstruct():
    rng = np.random.default_rng(3)
    X = rng.uniform(size=(25, 7))
    train = np.arange(25) < 18
    pca = pca_fit(X, train, 7)
    # A complete orthonormal basis reconstructs every row, train or test (1e-12: f64 rounding).
    np.testing.assert_allclose(pca_inverse_transform(pca, pca_transform(pca, X)), X, atol=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(7), atol=1e-12)


def test_pca_rejects_too_many_components():
    with pytest.raises(ValueError, match="n_components"):
        pca_fit(np.ones((4, 3)), np.ones(4, dtype=bool), 4)
    with pytest.raises(ValueError, match="rank"):
        pca_em_impute(np.ones((4, 3)), np.ones(4, dtype=bool), rank=4)


def test_row_permutation_invariance(root, base77, fit77):
    """Shuffling the CSV rows changes nothing once results are aligned by model name."""
    X, imp, pca, scores = fit77
    raw = pd.read_csv(OBS / "base_llm_benchmark_eval.csv")
    perm = np.random.default_rng(4).permutation(len(raw))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shuffled.csv"
        raw.iloc[perm].to_csv(path, index=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=KNOWN_ERROR, category=UserWarning)
            shuffled = select_base_models(read_table(path))
    assert sorted(shuffled[MODEL]) == sorted(base77[MODEL])
    Xs = benchmark_matrix(shuffled, ALL8)
    train = np.ones(len(Xs), dtype=bool)
    imp_s = pca_em_impute(Xs, train)
    pca_s = pca_fit(imp_s.filled, train, 5)
    order = pd.Index(shuffled[MODEL]).get_indexer(base77[MODEL])
    # 1e-10: only the floating-point summation order differs.
    np.testing.assert_allclose(np.asarray(imp_s.filled)[order], imp.filled, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pca_s.components, pca.components, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pca_s.explained_variance, pca.explained_variance, atol=1e-12)
    scores_s = np.asarray(pca_transform(pca_s, imp_s.filled))[order]
    np.testing.assert_allclose(scores_s, scores, rtol=0, atol=1e-10)
    # Splits are equivariant too.
    f, fs = base77[FLOPS].to_numpy(), shuffled[FLOPS].to_numpy()
    np.testing.assert_array_equal(
        np.asarray(cutoff_split(fs, 84).train)[order], cutoff_split(f, 84).train
    )
    np.testing.assert_array_equal(
        np.asarray(rank_split(fs, 10).test)[order], rank_split(f, 10).test
    )


# ---------------------------------------------------------------- compute axis (§5.1 item 7)


def test_family_r2(base77, fit77):
    *_, scores = fit77
    ids, names = family_codes(base77)
    res = family_r2(scores[:, 0], np.log10(base77[FLOPS].to_numpy()), ids)
    got = {n: float(r) for n, r, ok in zip(names, res.r2, res.valid) if ok}
    assert got.keys() == R2_77.keys()
    for fam, want in R2_77.items():
        assert abs(got[fam] - want) < 0.005, fam  # spec prints 3 d.p.
    assert abs(float(res.mean) - 0.966) < 0.005
    assert int(res.count[names.index("Mistral")]) == 0  # NaN FLOPs are skipped


def test_equiv_flops(base77, fit77):
    *_, scores = fit77
    logf = np.log10(base77[FLOPS].to_numpy())
    ref = (base77[FAMILY] == "Llama-2").to_numpy()
    g = 2.0 * np.nan_to_num(logf, nan=0.0) - 1.0  # exactly linear in log10 FLOPs
    a, b = fit_equiv_flops(g, logf, ref)
    np.testing.assert_allclose([a, b], [2.0, -1.0], rtol=1e-12)
    a, b = fit_equiv_flops(scores[:, 0], logf, ref)
    A = np.stack([logf[ref], np.ones(ref.sum())], axis=1)
    want = np.linalg.lstsq(A, np.asarray(scores[ref, 0]), rcond=None)[0]
    np.testing.assert_allclose([a, b], want, rtol=1e-10)
    x = np.linspace(-2, 4, 7)
    np.testing.assert_allclose(to_equiv(from_equiv(x, a, b), a, b), x, rtol=1e-12)
    two = ref & (base77[MODEL] != "meta-llama/Llama-2-70b-hf").to_numpy()
    with pytest.warns(UserWarning, match="only 2"):
        fit_equiv_flops(scores[:, 0], logf, two)
    with pytest.raises(ValueError, match="at least 2"):
        fit_equiv_flops(scores[:, 0], logf, (base77[FAMILY] == "Mistral").to_numpy())


# ---------------------------------------------------------------- splits


def test_cutoff_split_semantics(base77):
    f = base77[FLOPS].to_numpy()
    train, test = cutoff_split(f, 84)
    models = base77[MODEL]
    assert bool(train[(models == "meta-llama/Llama-2-7b-hf").to_numpy()].all())  # 84 <= 84
    assert bool(test[base77[FLOPS].isna().to_numpy()].all())  # NaN -> test
    np.testing.assert_array_equal(train, f <= 84)
    np.testing.assert_array_equal(test, ~np.asarray(train))
    v = np.array([0.0, 1.0, 5.0, np.nan, 10.0])
    np.testing.assert_array_equal(cutoff_split(v, "ratio_0.5").train, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(cutoff_split(v, "5").train, [1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="ratio_"):
        cutoff_split(v, "half")


def test_leaderboard_split_sizes(root):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=KNOWN_ERROR, category=UserWarning)
        full = load_benchmarks(root=root, eval_families_only=False, include_preregistered=True)
    lb = merge_tables(full, load_benchmarks("leaderboard_v2", root=root))
    lb = lb[lb[FAMILY].isin(EVAL_BASE_MODEL_WITH_FLOPS_FAMILIES)]
    f = lb[FLOPS].to_numpy()
    # Spec §4.3 train/test sizes: GPQA (168) 29/18, MATH-L5 (252) 32/15, BBH (84) 24/23.
    for t, (n_train, n_test) in {168: (29, 18), 252: (32, 15), 84: (24, 23)}.items():
        train, test = cutoff_split(f, t)
        assert (int(train.sum()), int(test.sum())) == (n_train, n_test)


def test_rank_split_semantics():
    v = np.array([3.0, np.nan, 9.0, 1.0, 9.0, 5.0])
    train, test = rank_split(v, 3)
    np.testing.assert_array_equal(test, [0, 1, 1, 0, 1, 0])  # NaN first, then 9, 9
    np.testing.assert_array_equal(train, ~np.asarray(test))
    np.testing.assert_array_equal(rank_split(v, 2).test, [0, 1, 1, 0, 0, 0])  # stable ties
    assert int(rank_split(v, 0).test.sum()) == 0
    assert n_test_rows(47, 0.1) == 4 and n_test_rows(47, 0.99) == 46  # floor(frac * n)
    assert n_test_rows(27, 0.1) == 2 and n_test_rows(9, 0.1) == 0
    assert int(rank_split(np.arange(47.0), 0.1).test.sum()) == 4
    for bad in (-1, 6, 2.5, float("nan")):
        with pytest.raises(ValueError, match="test_limit"):
            rank_split(v, bad)


def test_random_and_heldout(key):
    a = random_split(20, 0.25, key=key)
    b = random_split(20, 0.25, key=key)
    np.testing.assert_array_equal(a.test, b.test)
    assert int(a.test.sum()) == 5 and not bool((a.train & a.test).any())
    train = np.array([1, 1, 1, 0, 0], dtype=bool)
    held = np.array([0, 1, 0, 1, 0], dtype=bool)
    kept, removed = apply_heldout(train, held)
    np.testing.assert_array_equal(kept, [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(removed, [0, 1, 0, 0, 0])  # held-out test rows are ignored


def test_splits_trace_under_jit():
    v = jnp.array([3.0, jnp.nan, 9.0, 1.0])
    got = jax.jit(lambda x: (cutoff_split(x, "ratio_0.5").train, rank_split(x, 1).test))(v)
    np.testing.assert_array_equal(got[0], [1, 0, 0, 1])
    np.testing.assert_array_equal(got[1], [0, 1, 0, 0])


# ---------------------------------------------------------------- bad input (one clear line)


def _frame(n):
    models = [f"org/model-{i}" for i in range(n)]
    data = {MODEL: models, FAMILY: ["Fam"] * n, FLOPS: np.linspace(1, 9, n)}
    for j, c in enumerate(("MMLU", "ARC-C", "GSM8K")):
        data[c] = np.linspace(0.1, 0.9, n)[::-1] if j % 2 else np.linspace(0.1, 0.9, n)
    return pd.DataFrame(data)


CORRUPTIONS = st.sampled_from(
    ["text", "above_one", "negative", "inf", "dup_model", "no_model_col", "blank_model", "flops"]
)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), row=st.integers(0, 5), col=st.sampled_from(["MMLU", "ARC-C", "GSM8K"]),
       kind=CORRUPTIONS, via_csv=st.booleans())  # fmt: skip
def test_malformed_tables_name_the_culprit(n, row, col, kind, via_csv):
    df = _frame(n).astype(object)
    row = row % n
    model = df.at[row, MODEL]
    expect = [col, model]
    if kind == "text":
        df.at[row, col] = "n.a."
        expect.append("non-numeric")
    elif kind == "above_one":
        df.at[row, col] = 1.5
        expect.append("[0, 1]")
    elif kind == "negative":
        df.at[row, col] = -0.25
    elif kind == "inf":
        df.at[row, col] = np.inf
    elif kind == "dup_model":
        other = (row + 1) % n
        df.at[other, MODEL] = model
        expect = ["duplicate", model]
    elif kind == "no_model_col":
        df = df.drop(columns=[MODEL])
        expect = ["no 'Model' column"]
    elif kind == "blank_model":
        df.at[row, MODEL] = "  "
        expect = [f"row {row + 1}", "no model name"]
    elif kind == "flops":
        df.at[row, FLOPS] = 0.0
        expect = [FLOPS, model, "positive"]
    with pytest.raises(TableError) as err:
        if via_csv:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "bad.csv"
                df.to_csv(path, index=False)
                read_table(path)
        else:
            validate_table(df, name="bad")
    msg = str(err.value)
    assert "\n" not in msg
    for part in expect:
        assert part in msg, (part, msg)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=st.sampled_from('ab,"\n 01.-eNAM\\x'), max_size=60))
def test_arbitrary_csv_text_never_crashes(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "junk.csv"
        path.write_text(text)
        try:
            df = read_table(path)
        except TableError as e:
            assert "\n" not in str(e)
        else:
            assert MODEL in df.columns and df[MODEL].is_unique


def test_loader_and_merge_errors(root, base77):
    with pytest.raises(TableError, match="unknown benchmark table 'nope'"):
        load_benchmarks("nope", root=root)
    with pytest.raises(TableError, match="'agent'.*not found.*available: base"):
        load_benchmarks("agent", root=root)
    with pytest.raises(TableError, match="missing columns: 'MMLU-Pro'"):
        benchmark_matrix(base77, ["MMLU", "MMLU-Pro"])
    task = pd.DataFrame({"name": ["a"], "score": [0.5]})
    task.attrs["name"] = "my_task.csv"
    with pytest.raises(TableError, match="my_task.csv: no 'Model' column"):
        merge_tables(base77, task)
    with pytest.raises(TableError, match="no models in common between base"):
        merge_tables(base77, pd.DataFrame({MODEL: ["x/y"], "score": [0.5]}))
    dup = pd.DataFrame({MODEL: ["x/y", "x/y"], "score": [0.5, 0.6]})
    with pytest.raises(TableError, match="task table: duplicate models: 'x/y'"):
        merge_tables(base77, dup)
    clash = pd.DataFrame({MODEL: ["meta-llama/Llama-2-7b-hf"], FAMILY: ["Llama"], "s": [0.1]})
    with pytest.raises(TableError, match="disagree on 'Model Family'"):
        merge_tables(base77, clash)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dupcol.csv"
        path.write_text("Model,MMLU,MMLU\na,0.1,0.2\n")
        with pytest.raises(TableError, match="duplicate columns: 'MMLU'"):
            load_benchmarks(path)


def test_numerics_under_strict_dtypes(strict_dtypes, fit77, base77):
    X, imp, _, _ = fit77
    train = np.arange(len(X)) % 3 > 0
    pca = pca_fit(pca_em_impute(X, train).filled, train, 3)
    scores = pca_transform(pca, imp.filled)
    pca_inverse_transform(pca, scores)
    ids, _ = family_codes(base77)
    logf = np.log10(base77[FLOPS].to_numpy())
    family_r2(scores[:, 0], logf, ids)
    a, b = fit_equiv_flops(scores[:, 0], logf, (base77[FAMILY] == "Llama-2").to_numpy())
    to_equiv(scores[:, 0], a, b)
    cutoff_split(logf, "ratio_0.5")
    rank_split(logf, 0.1)
