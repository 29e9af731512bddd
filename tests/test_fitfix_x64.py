"""Fitting entry points run in float64 for a user who never enables x64 (review.md).

conftest.py enables x64 globally, so each check runs the entry point once as the suite does
and once inside ``jax.enable_x64(False)`` (a user with the default flag). Before the fix the
second run was float32 (PCA, imputation, link and law fits); both must now agree to 1e-10
and come back as float64.
"""

import jax
import jax.random as jr
import numpy as np
import pandas as pd

from jaxlaw.fitting import fit_curves
from jaxlaw.laws import RECTIFIED
from jaxlaw.observational import (
    PRESETS,
    fit_links,
    load_benchmarks,
    observe_fit,
    observe_grid,
    observe_select,
    pca_em_impute,
    pca_fit,
    pca_transform,
    v_optimal,
)
from jaxlaw.observational._links import SIGMOID_FLOOR
from jaxlaw.selection import ats_curves, fit_table, select

RNG = np.random.default_rng(0)


def _both(fn):
    """(result with x64 as the suite has it, result with x64 off as a default user has it)."""
    on = fn()
    with jax.enable_x64(False):
        off = fn()
    return on, off


def _assert_same64(on, off, rtol=1e-10):
    for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)):
        a, b = np.asarray(a), np.asarray(b)
        if np.issubdtype(a.dtype, np.floating):
            assert b.dtype == np.float64, b.dtype
            np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-12)
        else:
            np.testing.assert_array_equal(b, a)


def test_fit_curves_float64_without_flag():
    x = np.log(200.0 * 2.0 ** np.arange(14))
    y = np.log(0.8 + 250.0 / (100.0 + np.exp(0.5 * x)))[None].astype(np.float32)
    on, off = _both(lambda: fit_curves(RECTIFIED, x, y, key=jr.key(0)))
    _assert_same64(on, off)
    size = fit_curves._cache_size()
    with jax.enable_x64(False):
        fit_curves(RECTIFIED, x, y * 1.01, key=jr.key(0))
    assert fit_curves._cache_size() == size  # scoped x64 hits the same executable


def test_pca_impute_and_links_float64_without_flag():
    X = RNG.uniform(0.1, 0.9, (30, 6))
    X[3, 2] = X[7, 4] = np.nan
    train = np.arange(30) < 25

    def run():
        filled = pca_em_impute(X, train).filled
        pca = pca_fit(filled, train, 3)
        scores = pca_transform(pca, filled)
        # np.asarray: outside x64, jax ops on the returned float64 arrays would run float32.
        y = 0.9 / (1 + np.exp(-(np.asarray(scores) @ np.array([3.0, 1.0, -1.0])))) + 0.1
        return filled, pca, scores, fit_links(SIGMOID_FLOOR, scores, y, train * 1.0, key=jr.key(0))

    _assert_same64(*_both(run))


def test_observational_pipeline_float64_without_flag(data_root):
    base = load_benchmarks("base", root=data_root)
    preset = PRESETS["readme"]
    on, off = _both(lambda: observe_fit(base, "GSM8K", "pc:3", preset))
    for k in ("pred", "y", "x", "evr"):
        assert getattr(off, k).dtype == np.float64
        np.testing.assert_allclose(getattr(off, k), getattr(on, k), rtol=1e-10, atol=1e-12)
    jobs = [("GSM8K", preset)]
    on, off = _both(lambda: observe_grid(base, jobs, ("pc:3",)))
    pd.testing.assert_frame_equal(off.table, on.table, rtol=1e-10)
    _assert_same64(on.params, off.params)
    on, off = _both(lambda: observe_select(base, (4, 8), max_families=3))
    pd.testing.assert_frame_equal(off.table, on.table, rtol=1e-10)
    P = RNG.normal(size=(20, 3))
    ids = np.arange(20) % 6
    on, off = _both(lambda: v_optimal(P, ids, 6, [6, 9], max_families=3))
    _assert_same64(on, off)


def test_selection_float64_without_flag(data_root):
    from jaxlaw.data import load_dataset

    flan = load_dataset("flan", root=data_root)
    on, off = _both(lambda: fit_table(flan, "rectified"))
    _assert_same64(on.params, off.params)
    assert np.asarray(off.rmsd).dtype == np.float64
    on, off = _both(lambda: select(flan, "ourfit", 3200))
    _assert_same64(on.feature, off.feature)
    pos = flan.sizes > 0
    x, y = np.log(flan.sizes[pos]), np.log(flan.loss[:, pos])
    on, off = _both(lambda: ats_curves(x, y))
    _assert_same64(on, off)
