"""The reference code's own fitting procedures (Lin et al. 2024, `src/fit_law.py`), for parity.

These reproduce what the paper's tables were computed with, including its weaknesses: a
single deterministic start with a relaxation stage for the rectified law, and an almost-L1
Huber fit from 10 uniform random starts for the vanilla law. Use `fit_curves` for real fits.
"""

import jax
import jax.numpy as jnp
import jax.random as jr

from .._types import Array, ArrayLike, Bool, Float, Key
from ..laws import RectifiedCode, VanillaCode, rectified_code, vanilla_code
from ._result import FitResult, clean_points, huber
from ._x64 import in_float64


def _mmean(v: Array, w: Array) -> Array:
    return (v * w).sum() / jnp.maximum(w.sum(), 1.0)


def _bfgs(fn, y0, max_steps, rtol, atol):
    """(solution, converged, steps) of an optimistix BFGS run."""
    import optimistix as optx  # a slow import, needed only by the faithful fits

    sol = optx.minimise(fn, optx.BFGS(rtol=rtol, atol=atol), y0, max_steps=max_steps, throw=False)
    return sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]


def _rmsd(pred: Array, log_l: Array, mask: Array) -> Array:
    return jnp.sqrt(_mmean(jnp.where(mask, pred - log_l, 0.0) ** 2, mask.astype(log_l.dtype)))


@in_float64
def fit_rectified_reference(
    log_d: Float[ArrayLike, " points"],
    log_l: Float[ArrayLike, " points"],
    mask: Bool[ArrayLike, " points"] | None = None,
    *,
    max_steps: int = 2000,
    rtol: float = 1e-9,
    atol: float = 1e-9,
) -> FitResult:
    """The reference's two-stage rectified-law fit of one curve (spec §3.1).

    Start A = max L, Bc = 0, beta = 1, Ec = sqrt(max L min L) and one auxiliary u_i = 1 per
    point. Stage 1 minimises (BFGS) the relaxation
    mean[(ln(A + |Ec| Z) - ln(1 + Z) - y)^2] + mean[(ln Z - beta x - Bc)^2], Z = u^2;
    stage 2 freezes (Bc, beta) and minimises the log-space MSE over (A, Ec). The reference runs
    this three times from the same start; one run gives the same answer. BFGS here has exact
    autodiff gradients where the reference used finite differences, so local optima can differ
    (the reference itself lands in different optima across scipy versions).

    Args:
        log_d: natural log of the subset sizes, shape (points,) (the reference encodes D = 0 as
            ln 1e-10).
        log_l: natural log of the losses, shape (points,).
        mask: points to fit; default all finite ``log_l``.
        max_steps, rtol, atol: BFGS settings of each stage.

    Returns:
        `FitResult` with `RectifiedCode` params; ``ok`` is the reference's acceptance test
        (A > Ec with SIGNED Ec, as the reference checks it) and a finite loss; ``loss`` is the
        stage-2 MSE (inf when not ok).
    """
    log_d, log_l, mask = clean_points(log_d, log_l, mask)
    w = mask.astype(log_l.dtype)
    x = log_d
    y_max = jnp.max(jnp.where(mask, log_l, -jnp.inf))
    y_min = jnp.min(jnp.where(mask, log_l, jnp.inf))
    theta0 = jnp.stack(
        [jnp.exp(y_max), jnp.zeros_like(y_max), jnp.ones_like(y_max), jnp.exp((y_max + y_min) / 2)]
    )

    def stage1(v, _):
        a, bc, beta, ec = v[0][0], v[0][1], v[0][2], v[0][3]
        z = v[1] ** 2
        fit_y = jnp.log(a + jnp.abs(ec) * z) - jnp.log1p(z) - log_l
        fit_z = jnp.log(z) - beta * x - bc
        return _mmean(jnp.where(mask, fit_y, 0.0) ** 2, w) + _mmean(
            jnp.where(mask, fit_z, 0.0) ** 2, w
        )

    (theta, _), conv1, steps1 = _bfgs(stage1, (theta0, jnp.ones_like(log_l)), max_steps, rtol, atol)
    bc, beta = theta[1], theta[2]

    def stage2(ae, _):
        p = RectifiedCode(A=ae[0], Bc=bc, beta=beta, Ec=ae[1])
        return _mmean(jnp.where(mask, rectified_code(p, log_d) - log_l, 0.0) ** 2, w)

    ae, conv2, steps2 = _bfgs(stage2, jnp.stack([theta[0], theta[3]]), max_steps, rtol, atol)
    params = RectifiedCode(A=ae[0], Bc=bc, beta=beta, Ec=ae[1])
    loss = stage2(ae, None)
    ok = (params.A > params.Ec) & jnp.isfinite(loss)
    loss = jnp.where(ok, loss, jnp.inf)
    return FitResult(
        params=params,
        loss=loss,
        rmsd=_rmsd(rectified_code(params, log_d), log_l, mask),
        ok=ok,
        converged=conv1 & conv2,
        steps=steps1 + steps2,
        init_loss=loss[None],
    )


@in_float64
def fit_vanilla_reference(
    log_d: Float[ArrayLike, " points"],
    log_l: Float[ArrayLike, " points"],
    mask: Bool[ArrayLike, " points"] | None = None,
    *,
    key: Key,
    n_inits: int = 10,
    delta: float = 1e-3,
    max_steps: int = 2000,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> FitResult:
    """The reference's vanilla-law fit of one curve (spec §3.2), seeded.

    ``n_inits`` starts with every code-form coordinate (alpha, Bv, beta, Ev) drawn U[0, 1)
    from ``key`` (the reference used Python's unseeded global `random`), BFGS on the SUMMED
    Huber loss of the log residuals with threshold ``delta`` = 1e-3 (almost L1); the lowest
    finite objective wins.

    Returns:
        `FitResult` with `VanillaCode` params (``ok`` False if every start was NaN).
    """
    log_d, log_l, mask = clean_points(log_d, log_l, mask)
    starts = jr.uniform(key, (n_inits, 4), log_l.dtype)

    def objective(v, _):
        p = VanillaCode(*v)
        return huber(jnp.where(mask, vanilla_code(p, log_d) - log_l, 0.0), delta).sum()

    def one(v0):
        v, converged, steps = _bfgs(objective, v0, max_steps, rtol, atol)
        f = objective(v, None)
        return v, jnp.where(jnp.isfinite(f), f, jnp.inf), converged, steps

    vs, fs, converged, steps = jax.vmap(one)(starts)
    best = jnp.argmin(fs)
    params = VanillaCode(*vs[best])
    return FitResult(
        params=params,
        loss=fs[best],
        rmsd=_rmsd(vanilla_code(params, log_d), log_l, mask),
        ok=jnp.isfinite(fs[best]),
        converged=converged[best],
        steps=steps[best],
        init_loss=fs,
    )
