"""Regression tests for the fitting-half bugs of review.md (each failed before its fix)."""

import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from jaxlaw.fitting import fit_curve, fit_curves
from jaxlaw.laws import RECTIFIED, RectifiedPaper, from_paper, rectified
from jaxlaw.observational import PRESETS, load_benchmarks, merge_tables, observe_fit, observe_grid
from jaxlaw.observational import _pipeline as pipeline
from jaxlaw.observational._links import SIGMOID, SIGMOID_FLOOR, LinkParams
from jaxlaw.observational._regression import fit_link, fit_links

RNG = np.random.default_rng(0)
X = RNG.normal(size=(50, 3))
TRUE = LinkParams(jnp.array(-1.0), jnp.array([2.0, -0.5, 0.7]), jnp.array(0.4))
SIZES = jnp.log(jnp.asarray([200.0 * 2**j for j in range(14)]))


def test_fit_links_passes_init_through(key):
    """Guards review.md: `fit_links` dropped ``init``, so ``init="reference"`` silently ran
    the linearised start. Two solver steps from each start leave the two far apart, so the
    batched fit must match the looped fit of the SAME start (1e-6: vmapped vs. looped)."""
    y = np.asarray(SIGMOID_FLOOR.predict(TRUE, X)) + RNG.normal(0, 0.01, (2, 50))
    keys = jr.split(key, 2)
    got = {}
    for init in ("linearised", "reference"):
        batched = fit_links(SIGMOID_FLOOR, X, y, np.ones(50), key=key, init=init, max_steps=2)
        for i in range(2):
            one = fit_link(SIGMOID_FLOOR, X, y[i], np.ones(50), key=keys[i], init=init, max_steps=2)
            np.testing.assert_allclose(batched.params.w[i], one.params.w, rtol=1e-6, atol=1e-9)
        got[init] = np.asarray(batched.params.w)
    assert np.abs(got["linearised"] - got["reference"]).max() > 1e-2
    with pytest.raises(ValueError, match="unknown init 'nope'"):
        fit_links(SIGMOID_FLOOR, X, y, np.ones(50), key=key, init="nope")


def test_step_cap_is_not_ok(key):
    """Guards review.md: `fit_curve` and `fit_link` counted optimistix's
    ``nonlinear_max_steps_reached`` as ``ok``; only ``successful`` is ok. A run capped at one
    step keeps its (finite) loss for ranking but says it did not converge."""
    p = from_paper(RectifiedPaper(*(jnp.asarray(v) for v in (250.0, 100.0, 0.5, 0.8))))
    y = rectified(p, SIZES)
    capped = fit_curve(RECTIFIED, SIZES, y, key=key, screen_steps=1, schedule=())
    assert np.isfinite(float(capped.loss))
    assert not bool(capped.ok) and not bool(capped.converged)
    full = fit_curves(RECTIFIED, SIZES, y[None], key=key)
    assert bool(full.ok[0]) and bool(full.converged[0])

    yl = np.asarray(SIGMOID.predict(TRUE, X)) + RNG.normal(0, 0.02, 50)
    short = fit_link(SIGMOID, X, yl, np.ones(50), key=key, init="reference", max_steps=1)
    assert np.isfinite(float(short.loss)) and not bool(short.ok)
    done = fit_link(SIGMOID, X, yl, np.ones(50), key=key)
    assert bool(done.ok) and bool(done.converged)


@pytest.fixture(scope="module")
def lbv2(data_root):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*known data error", category=UserWarning)
        base = load_benchmarks(
            "base", root=data_root, include_preregistered=True, eval_families_only=False
        )
    return merge_tables(base, load_benchmarks("leaderboard_v2", root=data_root))


def _break_replicates(monkeypatch, bad):
    """Make `fit_links` report replicates ``bad`` (last axis) as failed, with params that
    would widen any band that used them (and NaN in one, which poisons plain quantiles)."""
    real = pipeline.fit_links

    def broken(*args, **kw):
        fits = real(*args, **kw)
        sel = np.zeros(fits.ok.shape, bool)
        sel[..., bad] = True
        w0 = np.where(sel, 40.0, np.asarray(fits.params.w0))
        w0[..., bad[0]] = np.nan
        params = fits.params._replace(w0=jnp.asarray(w0))
        return fits._replace(params=params, ok=jnp.asarray(np.asarray(fits.ok) & ~sel))

    monkeypatch.setattr(pipeline, "fit_links", broken)


def test_bootstrap_bands_drop_failed_replicates(lbv2, monkeypatch):
    """Guards review.md: bootstrap bands included replicates that did not converge (one NaN
    made a band NaN). Bands must equal numpy quantiles over the converged replicates only,
    and the result counts the dropped ones."""
    kw = dict(bootstrap=40, seed=2)
    target, preset = "leaderboard_bbh", PRESETS["lbv2_bbh"]
    clean = observe_fit(lbv2, target, "pc:3", preset, **kw)
    assert clean.n_boot_failed == 0
    bad = [3, 7, 11]  # replicate indices among the 40 (0 is the main fit)
    _break_replicates(monkeypatch, [b + 1 for b in bad])
    fit = observe_fit(lbv2, target, "pc:3", preset, **kw)
    assert fit.n_boot_failed == len(bad)
    np.testing.assert_array_equal(fit.pred, clean.pred)
    # The same replicates refit without the broken ones: recompute the band from scratch.
    keep = np.setdiff1d(np.arange(40), bad)
    monkeypatch.undo()
    boot = _replicate_predictions(lbv2, target, preset, kw)
    lo, hi = np.quantile(boot[keep], (0.05, 0.95), axis=0)
    s = fit.train | fit.test
    np.testing.assert_allclose(fit.pred_lo[s], lo[s], rtol=1e-12)
    np.testing.assert_allclose(fit.pred_hi[s], hi[s], rtol=1e-12)
    assert np.isfinite(fit.curve[2]).all() and np.isfinite(fit.curve[3]).all()


def _replicate_predictions(df, target, preset, kw):
    """Each replicate's predictions, captured from the pipeline's own fit (shape (B, models))."""
    captured = {}
    real = pipeline.fit_links

    def spy(link, x, *args, **k):
        fits = real(link, x, *args, **k)
        captured["pred"] = np.asarray(jax.vmap(link.predict, in_axes=(0, None))(fits.params, x))
        return fits

    pipeline.fit_links = spy
    try:
        observe_fit(df, target, "pc:3", preset, **kw)
    finally:
        pipeline.fit_links = real
    return captured["pred"][1:]


def test_grid_bands_drop_failed_replicates(lbv2, monkeypatch):
    """Guards review.md (``observe_grid``): a NaN replicate made mse_test_lo/hi NaN. The band
    must be the numpy quantiles of the converged replicates' test MSE."""
    jobs = [("leaderboard_bbh", PRESETS["lbv2_bbh"])]
    seen = {}
    real_predict = pipeline._predict_grid

    def spy(link, params, x):
        seen["pred"] = np.asarray(real_predict(link, params, x))
        return seen["pred"]

    monkeypatch.setattr(pipeline, "_predict_grid", spy)
    clean = observe_grid(lbv2, jobs, ("pc:3",), bootstrap=20, seed=1)
    assert clean.table.iloc[0].n_boot_failed == 0
    prep = pipeline.prepare(lbv2, *jobs[0])
    y, te = np.nan_to_num(prep.y), prep.test
    boot = ((seen["pred"][0, 0, 1:] - y) ** 2)[:, te].mean(1)
    _break_replicates(monkeypatch, [5, 9])
    grid = observe_grid(lbv2, jobs, ("pc:3",), bootstrap=20, seed=1)
    row = grid.table.iloc[0]
    assert row.n_boot_failed == 2
    lo, hi = np.quantile(np.delete(boot, [4, 8]), (0.05, 0.95))
    np.testing.assert_allclose([row.mse_test_lo, row.mse_test_hi], [lo, hi], rtol=1e-10)


def test_floor_at_its_bound_is_converged(data_root):
    """Guards the step-cap rule above against the floored sigmoid: b = width sigmoid(u) only
    reaches b = 0 as u -> -inf (~600 LM steps), so with only ``successful`` counted, 197 of
    200 GSM8K bootstrap refits of the README preset were dropped from the bands (measured).
    A capped fit with b at its bound and a vanishing (w0, w) gradient is the bounded optimum."""
    base = load_benchmarks("base", root=data_root)
    fit = observe_fit(base, "GSM8K", "pc:3", PRESETS["readme"], bootstrap=50)
    assert fit.ok and fit.params["b"] < 1e-6
    assert fit.n_boot_failed <= 2
    short = fit_link(SIGMOID_FLOOR, X, np.full(50, 0.5), np.ones(50), key=jr.key(0), max_steps=1)
    assert not bool(short.ok)  # one step: neither converged nor stationary
