"""Batched least-squares / Huber fits of a `Link` (Levenberg-Marquardt), one jitted call.

One problem is (predictor rows x, target y, per-row weights). Weights are 0/1 masks (train
rows, held-out filters) or bootstrap counts, so targets x predictor sets x splits x
bootstrap replicates are all the same shape and `fit_links` vmaps over them.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx

from .._types import Array, ArrayLike, Bool, Float, Key
from ..fitting import huber, in_float64
from ._links import Link, LinkParams


class RegressionFit(NamedTuple):
    """Best start of a link fit (leading batch axes under `fit_links`).

    Attributes:
        params: `LinkParams` (slopes of masked-out predictors are 0).
        loss: the objective at ``params``: weighted SSE ("sse") or weighted Huber sum
            (``inf`` when no start reached a finite objective).
        ok: finite loss, and the solver met its tolerance, or it stopped at ``max_steps``
            with only the floor still creeping to its bound (b within 1e-6 of 0 or the
            width) and the gradient in (w0, w) below 1e-6 max(loss, 1). Other capped starts
            are not ok, though their loss still competes for the best start.
        converged: the solver met its tolerance.
        steps: solver steps of the best start.
    """

    params: LinkParams
    loss: Array
    ok: Array
    converged: Array
    steps: Array


# Largest |gradient| in (w0, w), relative to max(objective, 1), that counts as stationary.
_KKT_RTOL = 1e-6


def _huber_residual(r: Array, delta: float) -> Array:
    """psi(r) with psi^2 / 2 = Huber(r): r inside delta, sign(r) sqrt(2 delta |r| - delta^2)
    outside. Continuous with slope 1 at |r| = delta, so least squares on psi is an exact Huber
    fit that Levenberg-Marquardt converges on far faster than BFGS."""
    a = jnp.abs(r)
    outer = jnp.sign(r) * jnp.sqrt(jnp.maximum(2 * delta * a - delta**2, 0.0))
    return jnp.where(a <= delta, r, outer)


@in_float64
def fit_link(
    link: Link,
    x: Float[ArrayLike, "models predictors"],
    y: Float[ArrayLike, " models"],
    weights: Float[ArrayLike, " models"],
    predictor_mask: Bool[ArrayLike, " predictors"] | None = None,
    *,
    key: Key,
    loss: str = "sse",
    delta: float = 1.0,
    n_starts: int = 1,
    init: str = "linearised",
    max_steps: int = 200,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> RegressionFit:
    """Fit ``link`` to one problem from one start (plus random restarts).

    Args:
        link: the link shape (see `jaxlaw.observational.LINKS`).
        x: predictor rows, shape (models, predictors); NaN allowed where the weight is 0.
        y: targets (already transformed), shape (models,); NaN allowed where the weight is 0.
        weights: per-row weights >= 0 (0/1 train mask, or bootstrap counts).
        predictor_mask: which predictor columns exist (pads ragged predictor sets).
        key: PRNG key for restarts beyond the reference start (w0 = 0, slopes 0.03, b ~ 0).
        loss: "sse" (weighted sum of squared residuals) or "huber" (weighted sum of Huber
            losses with threshold ``delta``; with delta >= max |residual| this is half the
            SSE, as in the reference notebooks). Both are solved by Levenberg-Marquardt,
            Huber through its exact pseudo-residuals (see `_huber_residual`).
        delta: Huber threshold.
        n_starts: starts (others add N(0, 1) to w0 and the slopes of the first start).
        init: "linearised" (weighted least squares of the inverse link of y on x, clipped
            into the link's range: Levenberg-Marquardt then needs a handful of steps) or
            "reference" (w0 = 0, every slope 0.03, b ~ 0, as the reference code starts).
        max_steps, rtol, atol: solver settings.

    Returns:
        `RegressionFit` with scalar leaves.
    """
    x, y, w = jnp.asarray(x), jnp.asarray(y), jnp.asarray(weights, jnp.asarray(y).dtype)
    k = x.shape[-1]
    cols = jnp.ones(k, bool) if predictor_mask is None else jnp.asarray(predictor_mask, bool)
    used = w > 0
    x = jnp.where(used[:, None] & cols[None, :], x, 0.0)
    y = jnp.where(used, y, 0.0)
    w = jnp.where(used, w, 0.0)

    def resid(p: LinkParams) -> Array:
        return link.predict(p, x) - y

    if loss == "sse":
        fn = lambda p, _: jnp.sqrt(w) * resid(p)  # noqa: E731
        objective = lambda p: (w * resid(p) ** 2).sum()  # noqa: E731
    elif loss == "huber":
        fn = lambda p, _: jnp.sqrt(w) * _huber_residual(resid(p), delta)  # noqa: E731
        objective = lambda p: (w * huber(resid(p), delta)).sum()  # noqa: E731
    else:
        raise ValueError(f"unknown loss {loss!r}; choose 'sse' or 'huber'")
    solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)

    if init == "linearised":
        base = _linearised_start(link, x, y, w, cols)
    elif init == "reference":
        base = link.init(k, y.dtype)
    else:
        raise ValueError(f"unknown init {init!r}; choose 'linearised' or 'reference'")
    noise = jr.normal(key, (n_starts, k + 1), y.dtype).at[0].set(0.0)
    starts = LinkParams(
        w0=base.w0 + noise[:, 0],
        w=base.w[None, :] + noise[:, 1:],
        u=jnp.broadcast_to(base.u, (n_starts,)),
    )

    def one(p0):
        sol = optx.least_squares(fn, solver, p0, max_steps=max_steps, throw=False)
        p = sol.value._replace(w=jnp.where(cols, sol.value.w, 0.0))
        value = objective(p)
        converged = sol.result == optx.RESULTS.successful
        # A start stopped by the step cap keeps its loss for choosing the best start, but is
        # ok only where the floor is what still moves: b = width sigmoid(u) reaches its box
        # bound only as u -> -inf (the reference's b = 0 is active on most targets), a creep
        # of ~600 LM steps. There the fit is the bounded optimum if the gradient in (w0, w)
        # vanishes (KKT with b at its bound).
        capped = sol.result == optx.RESULTS.nonlinear_max_steps_reached
        finite = jnp.isfinite(value)
        frac = jax.nn.sigmoid(p.u)
        at_bound = (link.floor_width > 0) & ((frac < 1e-6) | (frac > 1 - 1e-6))
        g = jax.grad(objective)(p)
        grad = jnp.maximum(jnp.abs(g.w0), jnp.max(jnp.where(cols, jnp.abs(g.w), 0.0)))
        kkt = capped & at_bound & (grad <= _KKT_RTOL * jnp.maximum(value, 1.0))
        usable = (converged | capped) & finite
        ok = (converged | kkt) & finite
        return p, jnp.where(usable, value, jnp.inf), ok, converged, sol.stats["num_steps"]

    params, value, ok, converged, steps = jax.vmap(one)(starts)
    best = jnp.argmin(value)
    return RegressionFit(
        params=jax.tree.map(lambda a: a[best], params),
        loss=value[best],
        ok=ok[best],
        converged=converged[best],
        steps=steps[best],
    )


def _linearised_start(link: Link, x: Array, y: Array, w: Array, cols: Array) -> LinkParams:
    """Weighted OLS of the inverse link of y on [1, x] (tiny ridge for masked columns)."""
    if link.shape == "sigmoid":
        p = jnp.clip(y, 1e-3, 1 - 1e-3)
        z = jnp.log(p) - jnp.log1p(-p)
    elif link.shape == "exp":
        z = jnp.log(jnp.maximum(y, 1e-6))
    else:
        z = y
    a = jnp.concatenate([jnp.ones_like(y)[:, None], x], axis=1)  # (models, 1 + predictors)
    ridge = jnp.concatenate([jnp.zeros(1, bool), ~cols]).astype(y.dtype) + 1e-9
    aw = a.T * w[None, :]
    theta = jnp.linalg.solve(aw @ a + jnp.diag(ridge), aw @ z)
    return LinkParams(w0=theta[0], w=jnp.where(cols, theta[1:], 0.0), u=link.init(1, y.dtype).u)


@in_float64
@partial(
    jax.jit,
    static_argnames=("link", "loss", "delta", "n_starts", "init", "max_steps", "rtol", "atol"),
)
def fit_links(
    link: Link,
    x: Float[ArrayLike, "*#batch models predictors"],
    y: Float[ArrayLike, "*#batch models"],
    weights: Float[ArrayLike, "*#batch models"],
    predictor_mask: Bool[ArrayLike, "*#batch predictors"] | None = None,
    *,
    key: Key,
    loss: str = "sse",
    delta: float = 1.0,
    n_starts: int = 1,
    init: str = "linearised",
    max_steps: int = 200,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> RegressionFit:
    """`fit_link` over any leading batch axes (targets, predictor sets, splits, replicates).

    ``x``, ``y``, ``weights`` and ``predictor_mask`` broadcast against each other over the
    leading axes; problem i uses ``jr.split(key, n)[i]``. One compile per shape.

    Returns:
        `RegressionFit` whose leaves carry the broadcast batch shape.
    """
    x, y, w = jnp.asarray(x), jnp.asarray(y), jnp.asarray(weights)
    n_models, k = x.shape[-2], x.shape[-1]
    cols = jnp.ones(k, bool) if predictor_mask is None else jnp.asarray(predictor_mask, bool)
    batch = jnp.broadcast_shapes(x.shape[:-2], y.shape[:-1], w.shape[:-1], cols.shape[:-1])
    flat = lambda a, tail: jnp.broadcast_to(a, batch + tail).reshape((-1,) + tail)  # noqa: E731
    xs, ys = flat(x, (n_models, k)), flat(y, (n_models,))
    ws, cs = flat(w.astype(ys.dtype), (n_models,)), flat(cols, (k,))
    keys = jr.split(key, xs.shape[0])
    one = partial(
        fit_link,
        link,
        loss=loss,
        delta=delta,
        n_starts=n_starts,
        init=init,
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
    )
    out = jax.vmap(lambda a, b, c, d, kk: one(a, b, c, d, key=kk))(xs, ys, ws, cs, keys)
    return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), out)


def weighted_mse(
    link: Link,
    params: LinkParams,
    x: Float[ArrayLike, "models predictors"],
    y: Float[ArrayLike, " models"],
    mask: Bool[ArrayLike, " models"],
) -> Array:
    """Mean squared error of ``link`` over the rows in ``mask`` (NaN if the mask is empty)."""
    mask = jnp.asarray(mask, bool)
    x = jnp.where(mask[:, None], jnp.asarray(x), 0.0)  # (models, predictors)
    r = jnp.where(mask, link.predict(params, x) - jnp.asarray(y), 0.0)
    n = mask.sum()
    return jnp.where(n > 0, (r**2).sum() / jnp.maximum(n, 1), jnp.nan)


@in_float64
def fit_links_reference(
    link: Link,
    x: Float[ArrayLike, "*#batch models predictors"],
    y: Float[ArrayLike, "*#batch models"],
    weights: Float[ArrayLike, "*#batch models"],
    predictor_mask: Bool[ArrayLike, "*#batch predictors"] | None = None,
    *,
    loss: str = "sse",
    delta: float = 1.0,
) -> RegressionFit:
    """The reference notebooks' own link fit (spec obscaling.md §2.7), for parity.

    Starts at w0 = 0, every slope 0.03, floor b = 0, and runs the reference's scipy solver:
    ``loss="sse"`` is ``curve_fit`` (trust-region reflective inside the floor's box
    [0, width], MINPACK Levenberg-Marquardt without a floor); ``loss="huber"`` is
    ``minimize`` of the summed Huber loss (L-BFGS-B inside the box, BFGS without), with
    finite-difference gradients. These stop at scipy's default tolerances, short of the
    optimum `fit_links` reaches (GSM8K 5-shot under the post-training preset: train MSE
    4.6445e-5 against 4.6308e-5), which is what the notebooks report. Problems run one by
    one on the host: a scipy solver cannot be vmapped.

    Args:
        link, x, y, weights, predictor_mask: as in `fit_links` (weights multiply each row's
            squared residual or Huber loss; 0/1 weights are the reference's row selection).
        loss, delta: "sse" or "huber" with threshold ``delta``.

    Returns:
        `RegressionFit` with the broadcast batch shape; ``ok`` is scipy's success flag with
        a finite loss, ``steps`` its function evaluations.
    """
    from scipy.optimize import curve_fit, minimize

    if loss not in ("sse", "huber"):
        raise ValueError(f"unknown loss {loss!r}; choose 'sse' or 'huber'")
    x, y, w = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(weights, np.float64)
    n_models, k = x.shape[-2], x.shape[-1]
    cols = np.ones(k, bool) if predictor_mask is None else np.asarray(predictor_mask, bool)
    batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-1], w.shape[:-1], cols.shape[:-1])
    flat = lambda a, tail: np.broadcast_to(a, batch + tail).reshape((-1,) + tail)  # noqa: E731
    xs, ys, ws, cs = (
        flat(x, (n_models, k)),
        flat(y, (n_models,)),
        flat(w, (n_models,)),
        flat(cols, (k,)),
    )
    width = link.floor_width
    out = []
    for xi, yi, wi, ci in zip(xs, ys, ws, cs):
        rows = wi > 0
        a = np.concatenate([np.ones((rows.sum(), 1)), xi[rows][:, ci]], axis=1)
        t, sw = yi[rows], wi[rows]

        def predict(v, a=a):
            g = a @ v[: a.shape[1]]
            if link.shape == "linear":
                return g
            if link.shape == "exp":
                return np.exp(g)
            b = v[-1] if width else 0.0
            return (1 - b) / (1 + np.exp(-g)) + b

        p0 = np.concatenate([[0.0], np.full(a.shape[1] - 1, 0.03), [0.0] if width else []])
        bounds = [(-np.inf, np.inf)] * a.shape[1] + ([(0.0, width)] if width else [])
        ok, nfev = True, 0
        if loss == "sse":
            try:
                v, _, info, *_ = curve_fit(
                    lambda _, *p: predict(np.asarray(p)),
                    a,
                    t,
                    p0=p0,
                    sigma=1 / np.sqrt(sw),
                    maxfev=10000,
                    bounds=tuple(zip(*bounds)) if width else (-np.inf, np.inf),
                    full_output=True,
                )
                nfev = int(info["nfev"])
            except RuntimeError:
                v, ok = p0, False
            value = float((sw * (predict(v) - t) ** 2).sum())
        else:

            def objective(v):
                r = np.abs(predict(v) - t)
                return (sw * np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))).sum()

            res = minimize(
                objective,
                p0,
                method="L-BFGS-B" if width else "BFGS",
                bounds=bounds if width else None,
            )
            v, ok, nfev, value = res.x, bool(res.success), int(res.nfev), float(res.fun)
        slopes = np.zeros(k)
        slopes[ci] = v[1 : a.shape[1]]
        frac = np.clip(v[-1] / width, 1e-15, 1 - 1e-15) if width else 0.5
        ok = ok and bool(np.isfinite(value))
        out.append((v[0], slopes, np.log(frac) - np.log1p(-frac), value, ok, nfev))
    w0, slopes, u, value, ok, nfev = (np.asarray(c) for c in zip(*out))
    shape = lambda a: jnp.asarray(a.reshape(batch + a.shape[1:]))  # noqa: E731
    return RegressionFit(
        params=LinkParams(w0=shape(w0), w=shape(slopes), u=shape(u)),
        loss=shape(np.where(ok, value, np.inf)),
        ok=shape(ok),
        converged=shape(ok),
        steps=shape(nfev),
    )
