"""The Rectified Scaling Law (Lin et al., ICML 2024) in three parameterisations.

- `RectifiedParams`: unconstrained coordinates the fitters use (E > 0, A > E, beta > 0 by
  construction).
- `RectifiedCode`: the reference code's (A, Bc, beta, Ec), ``ln L = ln(|Ec| + (A - |Ec|) /
  (1 + exp(beta ln D + Bc)))``.
- `RectifiedPaper`: the paper's (B, D_l, beta, E), ``L = B / (D_l + D^beta) + E``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._types import Array, ArrayLike, Bool, Float
from ._law import Law, finite_or, masked_max, masked_min, masked_quantiles


class RectifiedParams(NamedTuple):
    """Unconstrained rectified-law parameters.

    ``E = exp(log_e)``, ``A = E + exp(log_gap)`` (the loss at D = 0), ``beta = exp(log_beta)``,
    ``bc`` free; ``D_l = exp(-bc)``.
    """

    log_gap: Array
    bc: Array
    log_beta: Array
    log_e: Array


class RectifiedCode(NamedTuple):
    """Reference-code parameters (A, Bc, beta, Ec); the law uses ``|Ec|``."""

    A: Array
    Bc: Array
    beta: Array
    Ec: Array


class RectifiedPaper(NamedTuple):
    """Paper-form parameters of ``L(D) = B / (D_l + D^beta) + E``."""

    B: Array
    D_l: Array
    beta: Array
    E: Array


def rectified(
    p: "RectifiedParams | RectifiedCode", log_d: Float[ArrayLike, "*points"]
) -> Float[Array, "*points"]:
    """Log loss of the rectified law at natural-log data size ``log_d``.

    Math: L(D) = B / (D_l + D^beta) + E  (Lin et al. 2024, eq. 2), written as
    ln L = logaddexp(ln E, ln(A - E) + log_sigmoid(-(beta ln D + Bc))) for stability.
    ``log_d = -inf`` (D = 0) gives ln A exactly (A = E + B / D_l).
    Code-form parameters (`RectifiedCode`, from reference-mode fits) use the code's formula.
    """
    if isinstance(p, RectifiedCode):
        return rectified_code(p, log_d)
    beta = jnp.exp(p.log_beta)
    zero = jnp.isneginf(log_d)
    z = beta * finite_or(log_d, 0.0) + p.bc
    log_sig = jnp.where(zero, 0.0, jax.nn.log_sigmoid(-z))
    return jnp.logaddexp(p.log_e, p.log_gap + log_sig)


def rectified_code(p: RectifiedCode, log_d: ArrayLike) -> Array:
    """The reference code's formula, verbatim in meaning (NaN where the log argument is <= 0)."""
    e = jnp.abs(p.Ec)
    return jnp.log((p.A - e) / (1.0 + jnp.exp(p.beta * log_d + p.Bc)) + e)


def to_code(p: RectifiedParams) -> RectifiedCode:
    e = jnp.exp(p.log_e)
    return RectifiedCode(A=e + jnp.exp(p.log_gap), Bc=p.bc, beta=jnp.exp(p.log_beta), Ec=e)


def from_code(c: RectifiedCode) -> RectifiedParams:
    """Inverse of `to_code`; requires ``A > |Ec|`` (NaN otherwise) and ``beta > 0``."""
    e = jnp.abs(c.Ec)
    return RectifiedParams(
        log_gap=jnp.log(c.A - e), bc=c.Bc, log_beta=jnp.log(c.beta), log_e=jnp.log(e)
    )


def to_paper(p: RectifiedParams) -> RectifiedPaper:
    """(B, D_l, beta, E) with D_l = exp(-Bc) and B = (A - E) D_l."""
    d_l = jnp.exp(-p.bc)
    return RectifiedPaper(
        B=jnp.exp(p.log_gap - p.bc), D_l=d_l, beta=jnp.exp(p.log_beta), E=jnp.exp(p.log_e)
    )


def from_paper(q: RectifiedPaper) -> RectifiedParams:
    """Inverse of `to_paper` (requires B, D_l, beta, E > 0)."""
    return RectifiedParams(
        log_gap=jnp.log(q.B) - jnp.log(q.D_l),
        bc=-jnp.log(q.D_l),
        log_beta=jnp.log(q.beta),
        log_e=jnp.log(q.E),
    )


def pre_learned_examples(p: RectifiedParams) -> Array:
    """The pre-learned data size in examples, ``D_l ** (1 / beta)`` (D_l is in units of D^beta)."""
    return jnp.exp(-p.bc / jnp.exp(p.log_beta))


_BETAS = (0.25, 0.5, 1.0, 2.0)
_KNEE_QS = (0.0, 0.25, 0.5, 0.75, 1.0)
_E_FRACS = (0.3, 0.7, 0.95)


def rectified_grid(
    log_d: Float[ArrayLike, " points"],
    log_l: Float[ArrayLike, " points"],
    mask: Bool[ArrayLike, " points"],
) -> RectifiedParams:
    """60 starts: beta in {0.25, .5, 1, 2} x knee at the {0, .25, .5, .75, 1} quantiles of the
    observed ln D x E in {0.3, 0.7, 0.95} min L; A = max(1.02 max L, 1.01 E + 1e-3)."""
    finite = mask & jnp.isfinite(log_d)
    knees = masked_quantiles(log_d, finite, _KNEE_QS)
    l_min = jnp.exp(masked_min(log_l, mask))
    l_max = jnp.exp(masked_max(log_l, mask))
    beta, knee, frac = jnp.meshgrid(
        jnp.asarray(_BETAS, log_l.dtype), knees, jnp.asarray(_E_FRACS, log_l.dtype), indexing="ij"
    )
    beta, knee, frac = beta.ravel(), knee.ravel(), frac.ravel()
    e0 = frac * l_min
    a0 = jnp.maximum(1.02 * l_max, 1.01 * e0 + 1e-3)
    return RectifiedParams(
        log_gap=jnp.log(a0 - e0), bc=-beta * knee, log_beta=jnp.log(beta), log_e=jnp.log(e0)
    )


def _describe(p: RectifiedParams) -> dict:
    if isinstance(p, RectifiedCode):
        p = from_code(p)
    q, c = to_paper(p), to_code(p)
    return {
        "A": float(c.A),
        "B": float(q.B),
        "D_l": float(q.D_l),
        "beta": float(q.beta),
        "E": float(q.E),
        "D_l_examples": float(pre_learned_examples(p)),
    }


RECTIFIED = Law(
    name="rectified",
    params=RectifiedParams,
    predict=rectified,
    init_grid=rectified_grid,
    describe=_describe,
)


class RectifiedAlphaParams(NamedTuple):
    """Rectified parameters plus an outer exponent ``alpha = exp(log_alpha)``."""

    log_gap: Array
    bc: Array
    log_beta: Array
    log_e: Array
    log_alpha: Array


def rectified_alpha(p: RectifiedAlphaParams, log_d: ArrayLike) -> Array:
    """Math: L(D) = (B / (D_l + D^beta) + E)^alpha (project page of Lin et al. 2024)."""
    inner = RectifiedParams(p.log_gap, p.bc, p.log_beta, p.log_e)
    return jnp.exp(p.log_alpha) * rectified(inner, log_d)


def _rectified_alpha_grid(log_d, log_l, mask) -> RectifiedAlphaParams:
    # alpha = 1 reduces to the rectified law; alpha in {0.5, 2} rescales ln L before gridding.
    parts = []
    for alpha in (1.0, 0.5, 2.0):
        g = rectified_grid(log_d, log_l / alpha, mask)
        parts.append(RectifiedAlphaParams(*g, log_alpha=jnp.full_like(g.bc, jnp.log(alpha))))
    return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


def _describe_alpha(p: RectifiedAlphaParams) -> dict:
    out = _describe(RectifiedParams(p.log_gap, p.bc, p.log_beta, p.log_e))
    out["alpha"] = float(jnp.exp(p.log_alpha))
    return out


RECTIFIED_ALPHA = Law(
    name="rectified_alpha",
    params=RectifiedAlphaParams,
    predict=rectified_alpha,
    init_grid=_rectified_alpha_grid,
    describe=_describe_alpha,
)
