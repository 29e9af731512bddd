"""Intervals on scaling-law predictions: `predict_interval` (Laplace / delta method, bootstrap).

A fit's point prediction says nothing about how sure it is; these put a band around it::

    fit = fit_curves(RECTIFIED, log_d, log_l, mask, key=key)
    band = predict_interval(RECTIFIED, fit, jnp.log(1638400.0), log_d=log_d, log_l=log_l,
                            mask=mask, method="bootstrap", key=key)
    band.lower, band.median, band.upper     # losses, (curves, targets)

Both methods treat the fit's log residuals as noise around the true curve and give an interval
for the *curve* at the target (not for one more noisy measurement). ``laplace`` linearises the
law at the optimum: ``Cov = s^2 (J^T J)^+`` with ``s^2 = SSR / (n - k)`` and ``J`` the Jacobian
of the residuals in the law's unconstrained coordinates, then the delta method with a Student-t
quantile on ``n - k`` degrees of freedom; exact for a law linear in its parameters
(``loglinear``), one jitted call for every curve and cheap. ``bootstrap`` refits resampled data,
every replicate x curve x start in one `fit_curves` call: ``"residual"`` adds the curve's own
residuals, drawn with replacement, to its fitted values; ``"case"`` draws the observed points
themselves with replacement. Replicates whose refit is not ok are dropped and counted.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

from .._types import Array, ArrayLike, Bool, Float, Int, Key
from ..laws import Law
from ..laws._law import masked_quantiles
from ._fit import fit_curves, predict, residuals
from ._result import FitResult
from ._x64 import in_float64

METHODS = ("laplace", "bootstrap")
RESAMPLING = ("residual", "case")


class Interval(NamedTuple):
    """A two-sided interval on the predicted loss at each target size (loss units, not log).

    Attributes:
        lower, median, upper: ``(*curves, targets)``; ``median`` is the point prediction for
            ``laplace`` and the replicates' median for ``bootstrap``. NaN where no interval
            exists (``laplace`` with no residual degrees of freedom, ``bootstrap`` with fewer
            than 2 usable replicates, or a curve whose fit failed: infinite ``fit.loss``).
        kept: ``(*curves,)`` replicates that entered the quantiles (``laplace``: 0).
        dropped: ``(*curves,)`` replicates whose refit did not converge (``ok`` False) or
            predicts a non-finite loss (``laplace``: 0).
    """

    lower: Float[Array, "*curves targets"]
    median: Float[Array, "*curves targets"]
    upper: Float[Array, "*curves targets"]
    kept: Int[Array, "*curves"]
    dropped: Int[Array, "*curves"]


def _laplace_one(law: Law, params, log_d, log_l, mask, at):
    """(log prediction at ``at``, its delta-method standard error, residual dof) for one curve."""
    flat, unravel = ravel_pytree(params)
    r = residuals(law, params, log_d, log_l, mask)
    jac = jax.jacfwd(lambda x: residuals(law, unravel(x), log_d, log_l, mask))(flat)
    dof = mask.sum() - flat.size
    s2 = (r**2).sum() / jnp.maximum(dof, 1)
    cov = s2 * jnp.linalg.pinv(jac.T @ jac)
    pred, grad = jax.vmap(jax.value_and_grad(lambda x, a: law.predict(unravel(x), a)), (None, 0))(
        flat, at
    )
    se = jnp.sqrt(jnp.maximum(jnp.einsum("ti,ij,tj->t", grad, cov, grad), 0.0))
    return pred, se, dof


@functools.partial(jax.jit, static_argnums=0)
def _laplace(law: Law, params, log_d, log_l, mask, at):
    return jax.vmap(lambda p, d, l_, m: _laplace_one(law, p, d, l_, m, at))(
        params, log_d, log_l, mask
    )


def _resample(kind: str, key, log_d, log_l, mask, fitted, n_boot: int):
    """(log_d, log_l, mask) of ``n_boot`` resampled copies of one curve, leading replicate axis.

    Every slot draws one of the curve's observed points uniformly; slots of unobserved points
    stay masked. ``residual`` keeps the sizes and adds the drawn point's residual to this
    slot's fitted value; ``case`` takes the drawn point (size and loss) whole.
    """
    n = log_l.shape[-1]
    idx = jr.categorical(key, jnp.where(mask, 0.0, -jnp.inf), shape=(n_boot, n))
    keep = jnp.broadcast_to(mask, (n_boot, n))
    if kind == "residual":
        r = jnp.where(mask, log_l - fitted, 0.0)
        boot = jnp.broadcast_to(fitted, (n_boot, n)) + r[idx]
        return jnp.broadcast_to(log_d, (n_boot, n)), jnp.where(keep, boot, 0.0), keep
    return log_d[idx], log_l[idx], keep


class _Flat(NamedTuple):
    """Curves flattened to one leading axis, plus what undoes it."""

    log_d: Array
    log_l: Array
    mask: Array
    params: object
    ok: Array  # the fit has a curve (finite objective)
    at: Array
    batch: tuple[int, ...]


def _flatten(law: Law, fit: FitResult, at, log_d, log_l, mask) -> _Flat:
    at = jnp.asarray(at, jnp.float64)
    if at.ndim > 1:
        raise ValueError(f"at must be a scalar or a 1-D array of log sizes, got shape {at.shape}")
    log_l = jnp.asarray(log_l)
    if mask is None:
        mask = jnp.isfinite(log_l)
    batch, n = log_l.shape[:-1], log_l.shape[-1]
    flat_d = jnp.broadcast_to(jnp.asarray(log_d, log_l.dtype), log_l.shape).reshape(-1, n)
    flat_m = jnp.broadcast_to(jnp.asarray(mask, bool), log_l.shape).reshape(-1, n)
    flat_l = jnp.where(flat_m, log_l.reshape(-1, n), 0.0)
    params = jax.tree.map(lambda a: jnp.reshape(a, (-1,)), fit.params)
    # A band needs a fitted curve, not a converged one: degenerate fits (ok False, finite
    # loss) still have a curve; their bootstrap replicates are judged one by one.
    ok = jnp.reshape(jnp.isfinite(fit.loss), (-1,))
    return _Flat(flat_d, flat_l, flat_m, params, ok, jnp.atleast_1d(at), batch)


def _bootstrap(law: Law, f: _Flat, n_boot: int, resampling: str, n_inits, key):
    """(log predictions ``(curves, n_boot, targets)``, usable ``(curves, n_boot)``)."""
    if resampling not in RESAMPLING:
        raise ValueError(
            f"unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING)}"
        )
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if key is None:
        raise ValueError("the bootstrap needs a PRNG key: pass key=jax.random.key(...)")
    k_res, k_fit = jr.split(key)
    boot_d, boot_l, boot_m = jax.vmap(
        lambda k, d, l_, m, fv: _resample(resampling, k, d, l_, m, fv, n_boot)
    )(jr.split(k_res, f.log_l.shape[0]), f.log_d, f.log_l, f.mask, predict(law, f.params, f.log_d))
    refit = fit_curves(law, boot_d, boot_l, boot_m, key=k_fit, n_inits=n_inits)
    preds = jax.vmap(jax.vmap(law.predict, (0, None)), (0, None))(refit.params, f.at)
    usable = refit.ok & jnp.all(jnp.isfinite(preds), axis=-1) & f.ok[:, None]
    return preds, usable


@in_float64
def bootstrap_predictions(
    law: Law,
    fit: FitResult,
    at: Float[ArrayLike, "*targets"],
    *,
    log_d: Float[ArrayLike, "*#curves points"],
    log_l: Float[ArrayLike, "*curves points"],
    mask: Bool[ArrayLike, "*#curves points"] | None = None,
    n_boot: int = 200,
    resampling: str = "residual",
    n_inits: int | None = None,
    key: Key | None = None,
) -> tuple[Float[Array, "*curves boot targets"], Bool[Array, "*curves boot"]]:
    """The bootstrap replicates behind `predict_interval` (for joint questions such as P(best)).

    Same arguments as `predict_interval`'s bootstrap.

    Returns:
        ``(log_pred, usable)``: every replicate's natural-log prediction at ``at``, and whether
        the replicate converged with finite predictions (and the curve's own fit exists).
    """
    f = _flatten(law, fit, at, log_d, log_l, mask)
    preds, usable = _bootstrap(law, f, n_boot, resampling, n_inits, key)
    return (
        preds.reshape(f.batch + preds.shape[1:]),
        usable.reshape(f.batch + usable.shape[1:]),
    )


@in_float64
def predict_interval(
    law: Law,
    fit: FitResult,
    at: Float[ArrayLike, "*targets"],
    *,
    log_d: Float[ArrayLike, "*#curves points"],
    log_l: Float[ArrayLike, "*curves points"],
    mask: Bool[ArrayLike, "*#curves points"] | None = None,
    level: float = 0.9,
    method: str = "laplace",
    resampling: str = "residual",
    n_boot: int = 200,
    n_inits: int | None = None,
    key: Key | None = None,
) -> Interval:
    """A ``level`` interval on the loss each fitted curve predicts at natural-log sizes ``at``.

    Args:
        law: the law ``fit`` was fitted with (multi-start fits: unconstrained parameters).
        fit: `fit_curves` (or `fit_curve`) result for the curves of ``log_l``.
        at: natural-log target sizes, shape (targets,) (a scalar is one target).
        log_d, log_l, mask: the data ``fit`` was fitted to, as given to `fit_curves`.
        level: two-sided coverage, in (0, 1).
        method: ``"laplace"`` or ``"bootstrap"`` (see the module docstring).
        resampling: bootstrap only, ``"residual"`` or ``"case"``.
        n_boot: bootstrap replicates per curve.
        n_inits: starts per bootstrap refit (default the law's grid, as `fit_curves`).
        key: PRNG key, required for the bootstrap.

    Returns:
        `Interval` with leading axes those of ``log_l`` without its points axis.

    Raises:
        ValueError: unknown method or resampling, ``level`` outside (0, 1), ``n_boot < 2``,
            no key for the bootstrap, or ``at`` not 0- or 1-dimensional.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    f = _flatten(law, fit, at, log_d, log_l, mask)
    shape = f.batch + f.at.shape

    def out(lower, median, upper, kept, dropped) -> Interval:
        lower, median, upper = (
            jnp.where(f.ok[:, None], v, jnp.nan).reshape(shape) for v in (lower, median, upper)
        )
        return Interval(lower, median, upper, kept.reshape(f.batch), dropped.reshape(f.batch))

    if method == "laplace":
        import scipy.stats  # here, not at import: it would cost every CLI fit ~0.3 s

        pred, se, dof = _laplace(law, f.params, f.log_d, f.log_l, f.mask, f.at)
        dof = np.asarray(dof)
        q = np.where(dof > 0, scipy.stats.t.ppf(0.5 + level / 2, np.maximum(dof, 1)), np.nan)
        half = jnp.asarray(q)[:, None] * se
        zero = jnp.zeros(f.ok.shape, jnp.int32)
        return out(jnp.exp(pred - half), jnp.exp(pred), jnp.exp(pred + half), zero, zero)

    preds, usable = _bootstrap(law, f, n_boot, resampling, n_inits, key)
    alpha = (1 - level) / 2
    qs = jax.vmap(
        jax.vmap(lambda x, m: masked_quantiles(x, m, (alpha, 0.5, 1 - alpha)), (1, None), 1), (0, 0)
    )(preds, usable)  # (curves, 3, targets)
    kept = usable.sum(-1)
    qs = jnp.where((kept >= 2)[:, None, None], jnp.exp(qs), jnp.nan)
    return out(qs[:, 0], qs[:, 1], qs[:, 2], kept, n_boot - kept)
