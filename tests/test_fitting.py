"""Multi-start fits: recovery, masks, batching, tracing, and the paper's RMSD study."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SIZES, rmsd_curves
from hypothesis import given, settings
from hypothesis import strategies as st
from paper_rmsd import DATASETS, RMSD_MEAN_RECTIFIED, RMSD_MEAN_VANILLA, RMSD_PER_MODEL

from jaxlaw.fitting import (
    fit_curve,
    fit_curves,
    predict,
)
from jaxlaw.laws import POWER, RECTIFIED, VANILLA, RectifiedPaper, from_paper, rectified

X = jnp.log(jnp.asarray(SIZES))
LOG_T = float(np.log(1638400.0))


def _law_curve(B, D_l, beta, E):
    p = from_paper(RectifiedPaper(*(jnp.asarray(v, jnp.float64) for v in (B, D_l, beta, E))))
    return p, rectified(p, X)


def test_noiseless_recovery(key):
    # Knee at D^beta = D_l, i.e. D = 100^(1/0.5) = 1e4: both phases are on the grid, so the
    # four parameters are identified and must come back to 1e-6.
    p_true, y = _law_curve(B=250.0, D_l=100.0, beta=0.5, E=0.8)
    fit = fit_curve(RECTIFIED, X, y, key=key)
    assert bool(fit.ok) and float(fit.loss) < 1e-12
    for a, b in zip(fit.params, p_true):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    beta=st.floats(0.2, 0.9),
    knee=st.floats(np.log(2e3), np.log(2e5)),
    e=st.floats(0.3, 2.0),
    gap=st.floats(0.5, 3.0),
    seed=st.integers(0, 2**16),
)
def test_noisy_recovery_predicts_target(beta, knee, e, gap, seed):
    """Spec §6.2-5: N(0, 1e-3) noise in ln L on the 14-point grid -> L(T) within 1 %,
    RMSD <= 1.5e-3.

    The noise sd is 1e-3, so the in-sample RMSD of a 4-parameter fit is ~1e-3 * sqrt(10/14).
    """
    d_l = np.exp(beta * knee)
    _, y = _law_curve(B=gap * e * d_l, D_l=d_l, beta=beta, E=e)
    noise = 1e-3 * jr.normal(jr.key(seed), y.shape, y.dtype)
    fit = fit_curves(RECTIFIED, X, (y + noise)[None], key=jr.key(0))
    pred = np.exp(predict(RECTIFIED, fit.params, jnp.asarray(LOG_T)))[0]
    truth = np.exp(float(y[-1]))
    assert abs(pred / truth - 1) < 0.01
    assert float(fit.rmsd[0]) <= 1.5e-3


def test_missing_points_equal_masked_points(key):
    _, y = _law_curve(B=250.0, D_l=100.0, beta=0.5, E=0.8)
    noisy = y + 1e-3 * jr.normal(jr.key(3), y.shape, y.dtype)
    holes = noisy.at[jnp.array([2, 7, 11])].set(jnp.nan)
    mask = jnp.isfinite(holes)
    a = fit_curves(RECTIFIED, X, holes[None], key=key)
    b = fit_curves(RECTIFIED, X, noisy[None], mask[None], key=key)
    for u, v in zip(a.params, b.params):
        np.testing.assert_array_equal(u, v)
    assert np.isfinite(a.loss).all()
    np.testing.assert_allclose(np.exp(predict(RECTIFIED, a.params, X)[0]), np.exp(y), rtol=0.01)


def test_vmapped_equals_looped():
    ys = jnp.stack([_law_curve(150.0 * k, 50.0 * k, 0.3 + 0.1 * k, 0.5 * k)[1] for k in (1, 2, 3)])
    ys = ys + 1e-3 * jr.normal(jr.key(1), ys.shape, ys.dtype)
    key = jr.key(7)
    batched = fit_curves(RECTIFIED, X, ys, key=key)
    keys = jr.split(key, 3)
    for i in range(3):
        one = fit_curve(RECTIFIED, X, ys[i], key=keys[i])
        row = jax.tree.map(lambda a: a[i], batched.params)
        # Vectorised and scalar XLA code differ in the last bits; LM stops at a relative step of
        # 1e-10, so the two runs end ~4e-10 apart (measured): predictions get 1e-8, and so do
        # the parameters, which sit in a flat valley.
        np.testing.assert_allclose(
            RECTIFIED.predict(row, X), RECTIFIED.predict(one.params, X), rtol=1e-8
        )
        np.testing.assert_allclose(batched.loss[i], one.loss, rtol=1e-8)
        for u, v in zip(row, one.params):
            np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-8)


def test_same_key_same_result_and_traces_once_per_shape():
    ys = jnp.stack([_law_curve(250.0, 100.0, 0.5, 0.8)[1], _law_curve(90.0, 30.0, 0.4, 1.1)[1]])
    kw = dict(key=jr.key(5), n_inits=70)  # beyond the grid: random jittered starts too
    first = fit_curves(POWER, X, ys, **kw)
    size = fit_curves._cache_size()
    again = fit_curves(POWER, X, ys, **kw)
    other = fit_curves(POWER, X, ys * 1.01, **kw)
    assert fit_curves._cache_size() == size  # new values, same shapes: no retrace
    for u, v in zip(first.params, again.params):
        np.testing.assert_array_equal(u, v)
    assert np.isfinite(other.loss).all()


def test_huber_loss_fits_clean_curve(key):
    _, y = _law_curve(B=250.0, D_l=100.0, beta=0.5, E=0.8)
    fit = fit_curve(RECTIFIED, X, y, key=key, loss="huber", delta=1e-3)
    assert bool(fit.ok)
    assert float(fit.rmsd) < 1e-4


def test_vanilla_law_recovery(key):
    y = 1.2 * jnp.log(30.0 * jnp.exp(-0.35 * X) + 0.9)
    fit = fit_curve(VANILLA, X, y, key=key)
    assert float(fit.rmsd) < 1e-6


@pytest.mark.parametrize("dataset", DATASETS)
def test_multistart_rmsd_beats_paper(data_root, dataset):
    """Issue acceptance 3: mean RMSD <= the paper's, and every curve <= paper + 1e-4.

    Measured here: FLAN 0.00640, WMT19 0.01159, Gigaword 0.00507 (spec §5.6 says the same).
    Every curve gets a finite fit, but only some meet the tolerance (``ok``: FLAN 16, WMT19 25,
    Gigaword 23 of 30); the rest are degenerate (D_l -> 0) fits stopped by the step cap.
    """
    models, y = rmsd_curves(data_root, dataset)
    fit = fit_curves(RECTIFIED, X, jnp.asarray(y), key=jr.key(0))
    rmsd = np.asarray(fit.rmsd)
    assert np.isfinite(np.asarray(fit.loss)).all() and np.asarray(fit.ok).sum() >= 15
    assert rmsd.mean() <= RMSD_MEAN_RECTIFIED[dataset]
    j = DATASETS.index(dataset)
    paper = np.array([RMSD_PER_MODEL[m][j][0] for m in models])
    worst = np.argmax(rmsd - paper)
    assert (rmsd <= paper + 1e-4).all(), (models[worst], rmsd[worst], paper[worst])
    np.testing.assert_allclose(
        rmsd.mean(), {"flan": 0.00640, "wmt19": 0.01159, "gigaword": 0.00507}[dataset], atol=5e-5
    )
    vanilla = fit_curves(VANILLA, X, jnp.asarray(y), key=jr.key(0))
    assert np.asarray(vanilla.rmsd).mean() <= RMSD_MEAN_VANILLA[dataset]
    assert rmsd.mean() < np.asarray(vanilla.rmsd).mean()


@pytest.mark.parametrize("dataset", DATASETS)
def test_reference_mode_rmsd_close_to_paper(data_root, dataset):
    """The reference's own two-stage fit, with exact gradients instead of finite differences.

    It lands in another local optimum on a few curves (FLAN LaMini-GPT-1.5B: 0.0265 vs the
    paper's 0.0055; the paper's own fitter moves between scipy versions, spec §5.6), so the
    means are checked to 12 % and 85 of 90 curves to 6e-4. Measured: 0.00713 / 0.01210 / 0.00517.
    """
    models, y = rmsd_curves(data_root, dataset)
    fit = fit_curves(RECTIFIED, X, jnp.asarray(y), key=jr.key(0), faithful=True)
    rmsd = np.asarray(fit.rmsd)
    assert np.asarray(fit.ok).all()
    np.testing.assert_allclose(rmsd.mean(), RMSD_MEAN_RECTIFIED[dataset], rtol=0.12)
    j = DATASETS.index(dataset)
    paper = np.array([RMSD_PER_MODEL[m][j][0] for m in models])
    assert (np.abs(rmsd - paper) <= 6e-4).sum() >= 28


def test_vanilla_reference_mode_is_seeded(data_root):
    _, y = rmsd_curves(data_root, "gigaword")
    a = fit_curves(VANILLA, X, jnp.asarray(y[:4]), key=jr.key(1), faithful=True)
    b = fit_curves(VANILLA, X, jnp.asarray(y[:4]), key=jr.key(1), faithful=True)
    np.testing.assert_array_equal(a.rmsd, b.rmsd)
    assert np.isfinite(a.rmsd).all() and np.asarray(a.ok).all()
    assert a.init_loss.shape == (4, 10)  # the reference's 10 uniform starts per curve


def test_faithful_only_for_the_reference_laws(key):
    with pytest.raises(ValueError, match="faithful mode exists for the rectified and vanilla"):
        fit_curves(POWER, X, X[None], key=key, faithful=True)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        fit_curves(POWER, X, X[None], key=key, loss="l1")


def test_masked_zero_size_does_not_poison_laws_that_diverge_there(key):
    # Regression: ln D = -inf at a masked point gave NaN gradients through `where`.
    y = 1.2 * jnp.log(30.0 * jnp.exp(-0.35 * X) + 0.9)
    x0 = jnp.concatenate([jnp.array([-jnp.inf]), X])
    y0 = jnp.concatenate([jnp.array([jnp.log(9.0)]), y])
    m0 = jnp.ones(15, bool).at[0].set(False)
    with_zero = fit_curve(VANILLA, x0, y0, m0, key=key)
    without = fit_curve(VANILLA, X, y, key=key)
    np.testing.assert_allclose(with_zero.rmsd, without.rmsd, atol=1e-9)
    assert float(with_zero.rmsd) < 1e-6


@pytest.mark.parametrize(
    "kw",
    [dict(n_inits=0), dict(screen_steps=0), dict(schedule=((0, 10),)), dict(schedule=((2, 0),))],
)
def test_bad_schedule_is_a_clear_error(key, kw):
    with pytest.raises(ValueError, match="must be >= 1"):
        fit_curves(POWER, X, X[None], key=key, **kw)


@pytest.mark.parametrize("k", [2, 4, 5])
def test_unrolled_cholesky_solve_matches_numpy(k):
    from jaxlaw.fitting._lm import _solve_spd

    rng = np.random.default_rng(k)
    m = rng.normal(size=(k, k))
    a = m @ m.T + 0.1 * np.eye(k)  # SPD, condition number ~1e2-1e3
    b = rng.normal(size=k)
    # Both solves are backward stable; at this conditioning they agree to ~1e-13 (measured).
    np.testing.assert_allclose(
        _solve_spd(jnp.asarray(a), jnp.asarray(b)), np.linalg.solve(a, b), rtol=1e-10
    )


def test_chunked_mse_halving_equals_stagewise_halving(key):
    """`_halving_mse` (one loop; the screen in chunks of max(keep) starts) picks the same
    best start and loss as `_halving` (one vmapped solve per stage) run on the MSE."""
    from jaxlaw.fitting._fit import _halving, _halving_mse

    _, y = _law_curve(B=250.0, D_l=100.0, beta=0.5, E=0.8)
    y = y + 2e-3 * jr.normal(jr.key(3), y.shape, y.dtype)
    mask = jnp.ones_like(y, bool)
    n, schedule = RECTIFIED.n_grid, ((4, 100), (1, 400))  # 60 starts: 15 chunks of 4
    starts = RECTIFIED.sample_init(key, X, y, mask, n)
    data = (X, y, mask)
    with jax.enable_x64(True):
        a = _halving_mse(RECTIFIED, starts, data, n, 30, schedule, 1e-10, 1e-12)
        b = _halving(RECTIFIED, "mse", 0.0, starts, data, n, 30, schedule, 1e-10, 1e-12)
    # Same arithmetic per lane; only the lanes' grouping into vectors differs (last bits).
    np.testing.assert_allclose(a[4], b[4], rtol=1e-10)  # every start after the screen
    np.testing.assert_allclose(jnp.min(a[1]), jnp.min(b[1]), rtol=1e-10)


def test_fit_curves_inside_jit_equals_top_level(key):
    """Inside a caller's trace `fit_curves` compiles without its CPU compiler options (jit
    refuses them on a nested jit); the numbers are the same."""
    ys = jnp.stack([_law_curve(150.0 * k, 50.0 * k, 0.3 + 0.1 * k, 0.5 * k)[1] for k in (1, 2)])
    top = fit_curves(RECTIFIED, X, ys, key=key)
    nested = jax.jit(lambda y: fit_curves(RECTIFIED, X, y, key=key))(ys)
    # Two compilations of one program: the emitters may fuse differently (last bits).
    np.testing.assert_allclose(nested.loss, top.loss, rtol=1e-8)
    np.testing.assert_allclose(nested.rmsd, top.rmsd, rtol=1e-8)


def test_executable_cache_stores_then_loads_without_compiling(tmp_path, monkeypatch):
    from jaxlaw.fitting import _aot, cached_fit_curves, use_executable_cache

    ys = np.stack([np.asarray(_law_curve(250.0, 100.0, 0.5, 0.8)[1])] * 2)
    mask = np.ones(ys.shape, bool)
    use_executable_cache(tmp_path)
    try:
        with jax.enable_x64(True):
            first = cached_fit_curves(RECTIFIED, X, ys, mask, seed=3)
            (entry,) = tmp_path.iterdir()

            def no_compile(*_):
                raise AssertionError("a stored executable was compiled again")

            monkeypatch.setattr(_aot, "_store", no_compile)
            again = cached_fit_curves(RECTIFIED, X, ys, mask, seed=3)
            monkeypatch.undo()
            entry.write_bytes(b"truncated")  # a broken entry is compiled and replaced
            fixed = cached_fit_curves(RECTIFIED, X, ys, mask, seed=3)
        direct = fit_curves(RECTIFIED, X, ys, mask, key=jr.key(3))
    finally:
        use_executable_cache(None)
    for u, v in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(u, v)
    for u, v in zip(jax.tree.leaves(first), jax.tree.leaves(fixed)):
        np.testing.assert_array_equal(u, v)
    assert entry.stat().st_size > 1000
    np.testing.assert_allclose(first.loss, direct.loss, rtol=1e-8)  # the same fit, compiled apart
