"""predict_interval: the Laplace interval against the closed-form OLS prediction interval for
a law linear in its parameters (numpy + scipy written here); the bootstrap's bookkeeping and
coverage on curves drawn from a known law; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxlaw.fitting import fit_curves, predict_interval
from jaxlaw.laws import LOGLINEAR, VANILLA

X = np.log(np.array([200, 400, 800, 1600, 3200, 6400.0]))
AT = np.log([1e5, 1e6])


def _ols_band(x, y, at, level):
    """Mean-response t interval of ordinary least squares on (1, x), exponentiated."""
    design = np.stack([np.ones_like(x), x], 1)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    r = y - design @ beta
    dof = len(x) - 2
    cov = (r @ r / dof) * np.linalg.inv(design.T @ design)
    x0 = np.stack([np.ones_like(at), at], 1)
    pred, se = x0 @ beta, np.sqrt(np.einsum("ti,ij,tj->t", x0, cov, x0))
    q = scipy.stats.t.ppf(0.5 + level / 2, dof)
    return np.exp(pred - q * se), np.exp(pred), np.exp(pred + q * se)


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_laplace_is_the_ols_interval_for_a_linear_law(level):
    rng = np.random.default_rng(0)
    y = 1.0 - 0.1 * X[None] + 0.02 * rng.standard_normal((4, 6))
    mask = np.ones_like(y, bool)
    mask[3, :2] = False  # a curve with missing points uses only the observed ones
    fit = fit_curves(LOGLINEAR, X, y, mask, key=jax.random.key(0))
    band = predict_interval(LOGLINEAR, fit, AT, log_d=X, log_l=y, mask=mask, level=level)
    assert band.lower.shape == (4, 2)
    for c in range(4):
        m = mask[c]
        want = _ols_band(X[m], y[c, m], AT, level)
        got = (band.lower[c], band.median[c], band.upper[c])
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9)
    assert (np.asarray(band.kept) == 0).all() and (np.asarray(band.dropped) == 0).all()


def test_laplace_without_residual_dof_is_nan():
    y = 1.0 - 0.1 * X[None, :2]
    fit = fit_curves(LOGLINEAR, X[:2], y, key=jax.random.key(0))
    band = predict_interval(LOGLINEAR, fit, AT, log_d=X[:2], log_l=y)
    assert np.isnan(np.asarray(band.lower)).all() and np.isnan(np.asarray(band.upper)).all()


@pytest.mark.parametrize("resampling", ["residual", "case"])
def test_bootstrap_covers_a_known_vanilla_law(resampling):
    """Curves L = 2 D^-0.3 + 1 with 1% log noise: the 90% band at D = 12800 (2x beyond the
    data) holds the true loss for most curves, and every replicate is kept or dropped."""
    rng = np.random.default_rng(1)
    x = np.log(200.0 * 2 ** np.arange(6))
    true = lambda d: np.log(2.0 * np.exp(d) ** -0.3 + 1.0)  # noqa: E731
    y = true(x)[None] + 0.01 * rng.standard_normal((16, 6))
    fit = fit_curves(VANILLA, x, y, key=jax.random.key(0))
    band = predict_interval(
        VANILLA, fit, np.log(12800.0), log_d=x, log_l=y, method="bootstrap",
        resampling=resampling, n_boot=48, key=jax.random.key(3),
    )  # fmt: skip
    kept, dropped = np.asarray(band.kept), np.asarray(band.dropped)
    assert ((kept + dropped) == 48).all()
    # Vanilla fits of noisy curves often stop at the step cap (ok False): those replicates are
    # dropped, and a curve keeps a band while 2 or more replicates converged.
    lo, mid, hi = (np.asarray(v)[:, 0] for v in band[:3])
    has = kept >= 2
    assert has.mean() >= 0.5 and (np.isnan(lo) == ~has).all()
    assert (lo[has] <= mid[has]).all() and (mid[has] <= hi[has]).all()
    truth = np.exp(true(np.log(12800.0)))
    assert ((lo[has] <= truth) & (truth <= hi[has])).mean() >= 0.6


def test_bootstrap_is_deterministic_per_key():
    y = (1.0 - 0.1 * X)[None] + np.array([[0.01, -0.01, 0.0, 0.02, -0.02, 0.0]])
    fit = fit_curves(LOGLINEAR, X, y, key=jax.random.key(0))
    kw = dict(log_d=X, log_l=y, method="bootstrap", n_boot=16)
    a = predict_interval(LOGLINEAR, fit, AT, key=jax.random.key(5), **kw)
    b = predict_interval(LOGLINEAR, fit, AT, key=jax.random.key(5), **kw)
    np.testing.assert_array_equal(np.asarray(a.upper), np.asarray(b.upper))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(method="jackknife"), "unknown interval method 'jackknife'"),
        (dict(level=1.0), r"level must be in \(0, 1\), got 1.0"),
        (dict(method="bootstrap"), "the bootstrap needs a PRNG key"),
        (dict(method="bootstrap", key=jax.random.key(0), n_boot=1), "n_boot must be >= 2"),
        (dict(method="bootstrap", key=jax.random.key(0), resampling="x"), "unknown resampling"),
        (dict(at=jnp.zeros((2, 2))), "at must be a scalar or a 1-D array"),
    ],
)
def test_bad_input_is_one_line(kw, message):
    y = (1.0 - 0.1 * X)[None]
    fit = fit_curves(LOGLINEAR, X, y, key=jax.random.key(0))
    at = kw.pop("at", AT)
    with pytest.raises(ValueError, match=message):
        predict_interval(LOGLINEAR, fit, at, log_d=X, log_l=y, **kw)
