"""Power-law families: the vanilla fine-tuning law, a power law with offset, and a log-log line."""

from typing import NamedTuple

import jax.numpy as jnp

from .._types import Array, ArrayLike
from ._law import Law, finite_or, masked_min


def _first_point(log_d: Array, log_l: Array, mask: Array) -> tuple[Array, Array]:
    """(ln D, ln L) of the smallest observed positive subset size."""
    ok = mask & jnp.isfinite(log_d)
    i = jnp.argmin(jnp.where(ok, log_d, jnp.inf))
    return log_d[i], log_l[i]


class VanillaParams(NamedTuple):
    """Unconstrained vanilla-law parameters: ``alpha = exp(log_alpha)``, ``B = exp(log_b)``,
    ``E = exp(log_e)``, ``beta`` free (as in the reference)."""

    log_alpha: Array
    log_b: Array
    beta: Array
    log_e: Array


class VanillaCode(NamedTuple):
    """Reference-code parameters (alpha, Bv, beta, Ev): ``L = (D^-beta / Bv + |Ev|)^alpha``."""

    alpha: Array
    Bv: Array
    beta: Array
    Ev: Array


def vanilla(p: "VanillaParams | VanillaCode", log_d: ArrayLike) -> Array:
    """Log loss of the vanilla fine-tuning law.

    Math: L(D) = (B / D^beta + E)^alpha (Lin et al. 2024, project page; Hernandez et al. 2021),
    ln L = alpha * logaddexp(ln B - beta ln D, ln E).
    Code-form parameters (`VanillaCode`, from reference-mode fits) use the code's formula.
    """
    if isinstance(p, VanillaCode):
        return vanilla_code(p, log_d)
    return jnp.exp(p.log_alpha) * jnp.logaddexp(p.log_b - p.beta * log_d, p.log_e)


def vanilla_code(p: VanillaCode, log_d: ArrayLike) -> Array:
    """The reference code's formula ``alpha * ln(1 / (Bv * D^beta) + |Ev|)`` (NaN if Bv <= 0)."""
    return p.alpha * jnp.log(1.0 / (p.Bv * jnp.exp(log_d) ** p.beta) + jnp.abs(p.Ev))


def vanilla_to_code(p: VanillaParams) -> VanillaCode:
    return VanillaCode(
        alpha=jnp.exp(p.log_alpha), Bv=jnp.exp(-p.log_b), beta=p.beta, Ev=jnp.exp(p.log_e)
    )


def vanilla_from_code(c: VanillaCode) -> VanillaParams:
    """Inverse of `vanilla_to_code`; NaN where ``alpha <= 0`` or ``Bv <= 0`` (outside the law)."""
    return VanillaParams(
        log_alpha=jnp.log(c.alpha), log_b=-jnp.log(c.Bv), beta=c.beta, log_e=jnp.log(jnp.abs(c.Ev))
    )


def _vanilla_grid(log_d, log_l, mask) -> VanillaParams:
    """36 starts: alpha in {.5, 1, 2} x beta in {.05, .2, .5, 1} x E^alpha in {.5, .8, .95} min L;
    B puts the curve through the smallest-D point."""
    x0, y0 = _first_point(log_d, log_l, mask)
    y_min = masked_min(log_l, mask)
    dt = log_l.dtype
    alpha, beta, frac = jnp.meshgrid(
        jnp.asarray((0.5, 1.0, 2.0), dt),
        jnp.asarray((0.05, 0.2, 0.5, 1.0), dt),
        jnp.asarray((0.5, 0.8, 0.95), dt),
        indexing="ij",
    )
    alpha, beta, frac = alpha.ravel(), beta.ravel(), frac.ravel()
    log_e = (jnp.log(frac) + y_min) / alpha
    top = jnp.exp(y0 / alpha)
    log_b = jnp.log(jnp.maximum(top - jnp.exp(log_e), 1e-3 * top)) + beta * x0
    return VanillaParams(log_alpha=jnp.log(alpha), log_b=log_b, beta=beta, log_e=log_e)


def _describe_vanilla(p: VanillaParams) -> dict:
    c = p if isinstance(p, VanillaCode) else vanilla_to_code(p)
    return {
        "alpha": float(c.alpha),
        "B": float(1.0 / c.Bv),
        "beta": float(c.beta),
        "E": float(jnp.abs(c.Ev)),
    }


VANILLA = Law(
    name="vanilla",
    params=VanillaParams,
    predict=vanilla,
    init_grid=_vanilla_grid,
    describe=_describe_vanilla,
)


class PowerParams(NamedTuple):
    """Power law with offset: ``B = exp(log_b)``, ``beta = exp(log_beta)``, ``E = exp(log_e)``."""

    log_b: Array
    log_beta: Array
    log_e: Array


def power_law(p: PowerParams, log_d: ArrayLike) -> Array:
    """Math: L(D) = B / D^beta + E (Kaplan et al. 2020 style data scaling with an offset)."""
    return jnp.logaddexp(p.log_b - jnp.exp(p.log_beta) * log_d, p.log_e)


def _power_grid(log_d, log_l, mask) -> PowerParams:
    """15 starts: beta in {.05, .1, .2, .4, .8} x E in {.05, .5, .9} min L, through the first
    point."""
    x0, y0 = _first_point(log_d, log_l, mask)
    y_min = masked_min(log_l, mask)
    dt = log_l.dtype
    beta, frac = jnp.meshgrid(
        jnp.asarray((0.05, 0.1, 0.2, 0.4, 0.8), dt),
        jnp.asarray((0.05, 0.5, 0.9), dt),
        indexing="ij",
    )
    beta, frac = beta.ravel(), frac.ravel()
    log_e = jnp.log(frac) + y_min
    log_b = jnp.log(jnp.maximum(jnp.exp(y0) - jnp.exp(log_e), 1e-3)) + beta * x0
    return PowerParams(log_b=log_b, log_beta=jnp.log(beta), log_e=log_e)


POWER = Law(
    name="power",
    params=PowerParams,
    predict=power_law,
    init_grid=_power_grid,
    describe=lambda p: {
        "B": float(jnp.exp(p.log_b)),
        "beta": float(jnp.exp(p.log_beta)),
        "E": float(jnp.exp(p.log_e)),
    },
)


class LineParams(NamedTuple):
    """Log-log line ``ln L = intercept + slope ln D``."""

    intercept: Array
    slope: Array


def loglinear(p: LineParams, log_d: ArrayLike) -> Array:
    """Math: ln L = a + s ln D, a pure power law without offset (what AtS extrapolates with)."""
    return p.intercept + p.slope * log_d


def _line_grid(log_d, log_l, mask) -> LineParams:
    """One start: the masked OLS line (which is also the exact least-squares answer)."""
    ok = mask & jnp.isfinite(log_d)
    w = ok.astype(log_l.dtype)
    x, y = finite_or(log_d, 0.0), jnp.where(ok, log_l, 0.0)
    n = jnp.maximum(w.sum(), 1)
    mx, my = (w * x).sum() / n, (w * y).sum() / n
    sxx = (w * (x - mx) ** 2).sum()
    slope = jnp.where(sxx > 0, (w * (x - mx) * (y - my)).sum() / jnp.where(sxx > 0, sxx, 1), 0.0)
    return LineParams(intercept=(my - slope * mx)[None], slope=slope[None])


LOGLINEAR = Law(
    name="loglinear",
    params=LineParams,
    predict=loglinear,
    init_grid=_line_grid,
    describe=lambda p: {"intercept": float(p.intercept), "slope": float(p.slope)},
)
