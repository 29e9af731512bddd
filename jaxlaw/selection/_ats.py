"""AtS ("Accept then Stop"): extrapolate the power phase of a fine-tuning curve with a line.

Entry points: `ats` for one curve and `ats_curves`, its jitted vmap over curves.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike

from .._types import Array, Bool, Float, Int
from ..fitting import in_float64

TARGET = 1638400
LOG_TARGET = math.log(TARGET)


class AtsResult(NamedTuple):
    """Result of `ats` (scalars) or `ats_curves` (leading ``curves`` axes).

    Attributes:
        pred: extrapolated loss L̂(T) = exp(intercept + slope * log_target); NaN only when the
            curve has no usable point.
        transition: index t of the rejected (pre-power) point among the usable points sorted
            by ascending D; points t+1 .. n-1 are accepted. -1 when every point is accepted.
        n_accepted: number of points the final line is fitted on (= n - 1 - t).
        slope: slope of that line in (ln D, ln L).
        intercept: its intercept (ln L at ln D = 0).
    """

    pred: Float[Array, "*curves"]
    transition: Int[Array, "*curves"]
    n_accepted: Int[Array, "*curves"]
    slope: Float[Array, "*curves"]
    intercept: Float[Array, "*curves"]


@in_float64
def ats(
    log_d: Float[ArrayLike, " points"],
    log_l: Float[ArrayLike, " points"],
    mask: Bool[ArrayLike, " points"] | None = None,
    *,
    k: int = 3,
    delta: Float[ArrayLike, ""] = 5.0,
    log_target: Float[ArrayLike, ""] = LOG_TARGET,
    faithful: bool = True,
) -> AtsResult:
    """AtS model-selection extrapolation for ONE curve (Lin et al., ICML 2024, §4.3 of the spec).

    Over the usable points (``mask`` and finite), sorted by ascending D (i = 0 .. n-1):
    starting from the ``k`` largest subsets, grow the accepted window towards smaller D; for
    window size p = k .. n-1 fit an OLS line to the p largest points in (ln D, ln L), take the
    population std s (ddof=0) of its residuals, and stop at the first p whose next smaller
    point has |residual| / s > ``delta`` (the phase transition, t = n-p-1). The prediction is
    the OLS line through the accepted points evaluated at ``log_target``.

    Loop-free: the OLS fit of every window size is computed at once (prefix sums for the
    means, masked two-pass sums for the centred moments, as numpy's own std does), and the
    first rejection is an ``argmax`` over the window sizes.

    Faithful mode reproduces the reference exactly: when nothing is rejected t = 0, so the
    smallest point is still dropped; when n <= k every point is used (t = -1); s = 0 gives
    r = inf (rejected) or NaN (0/0, not rejected) as numpy does. ``faithful=False`` keeps all
    n points when nothing is rejected.

    Args:
        log_d: natural log of the subset sizes, shape (points,), any order; non-finite
            entries (ln 0 = -inf, the zero-shot column) are never used.
        log_l: natural log of the losses, shape (points,); NaN = missing.
        mask: points the method may read (the budget's grid), shape (points,); default all.
        k: minimum window size (Python int, static).
        delta: rejection threshold in residual standard deviations.
        log_target: natural log of the target data size T (default ln 1638400).
        faithful: reference behaviour (True) or the off-by-one-corrected variant (False).

    Returns:
        `AtsResult` with scalar leaves.
    """
    dtype = jnp.result_type(log_d, log_l, float)
    log_d = jnp.asarray(log_d, dtype)
    log_l = jnp.asarray(log_l, dtype)
    usable = jnp.isfinite(log_d) & jnp.isfinite(log_l)
    if mask is not None:
        usable = usable & jnp.asarray(mask, bool)
    n_pts = log_d.shape[-1]

    # Usable points first, largest D first: window size p is then the prefix of length p.
    order = jnp.argsort(jnp.where(usable, -log_d, jnp.inf), stable=True)
    m = usable[order]
    x_top = jnp.where(m[0], log_d[order][0], 0.0)
    # Centre ln D on the largest point (always in the window) for conditioning.
    x = jnp.where(m, log_d[order] - x_top, 0.0)
    y = jnp.where(m, log_l[order], 0.0)
    mf = m.astype(dtype)
    n = m.sum()

    p = jnp.arange(1, n_pts + 1)  # window sizes, row p-1
    cnt = jnp.maximum(jnp.cumsum(mf), 1.0)
    mx = jnp.cumsum(x * mf) / cnt
    my = jnp.cumsum(y * mf) / cnt
    win = ((jnp.arange(n_pts)[None, :] < p[:, None]) & m[None, :]).astype(dtype)  # (p, points)
    dx = (x[None, :] - mx[:, None]) * win
    dy = (y[None, :] - my[:, None]) * win
    sxx = (dx * dx).sum(-1)
    sxy = (dx * dy).sum(-1)
    # A single point (or coincident D) has no slope; like sklearn, fit a constant.
    slope = jnp.where(sxx > 0, sxy / jnp.where(sxx > 0, sxx, 1.0), 0.0)
    icpt = my - slope * mx
    res = (y[None, :] - icpt[:, None] - slope[:, None] * x[None, :]) * win
    res_mean = res.sum(-1) / cnt
    s = jnp.sqrt((((res - res_mean[:, None]) * win) ** 2).sum(-1) / cnt)

    # Window p is tested on the next smaller point, sorted position p.
    test = jnp.minimum(p, n_pts - 1)
    e = jnp.abs(y[test] - icpt - slope * x[test])
    safe_s = jnp.where(s > 0, s, 1.0)
    r = jnp.where(s > 0, e / safe_s, jnp.where(e > 0, jnp.inf, jnp.nan))
    stop = (p >= k) & (p <= n - 1) & (r > delta)
    p_stop = p[jnp.argmax(stop)]
    t_none = 0 if faithful else -1
    t = jnp.where(n <= k, -1, jnp.where(stop.any(), n - p_stop - 1, t_none))
    n_acc = n - 1 - t

    row = jnp.clip(n_acc - 1, 0, n_pts - 1)
    b, a = slope[row], icpt[row]
    pred = jnp.where(n > 0, jnp.exp(a + b * (log_target - x_top)), jnp.nan)
    return AtsResult(pred=pred, transition=t, n_accepted=n_acc, slope=b, intercept=a - b * x_top)


@in_float64
@partial(jax.jit, static_argnames=("k", "faithful"))
def ats_curves(
    log_d: Float[ArrayLike, "*#curves points"],
    log_l: Float[ArrayLike, "*curves points"],
    mask: Bool[ArrayLike, "*#curves points"] | None = None,
    *,
    k: int = 3,
    delta: Float[ArrayLike, ""] = 5.0,
    log_target: Float[ArrayLike, ""] = LOG_TARGET,
    faithful: bool = True,
) -> AtsResult:
    """`ats` for a batch of curves in one jitted, vmapped call.

    Same arguments as `ats`, with leading ``curves`` axes on ``log_l`` (and ``mask``);
    ``log_d`` and ``mask`` broadcast against ``log_l`` (e.g. ``log_d`` shared, shape
    (points,); one budget mask per curve selects the grid D = 200 .. M). ``k`` and
    ``faithful`` are static; ``delta`` and ``log_target`` are traced, so sweeping them does not
    recompile.

    Returns:
        `AtsResult` whose leaves have the leading ``curves`` axes of ``log_l``.
    """
    log_l = jnp.asarray(log_l)
    dtype = jnp.result_type(log_l, float)
    shape = log_l.shape
    n_pts = shape[-1]
    log_d = jnp.broadcast_to(jnp.asarray(log_d, dtype), shape).reshape(-1, n_pts)
    mask = jnp.ones(shape, bool) if mask is None else jnp.broadcast_to(mask, shape)
    one = partial(ats, k=k, delta=delta, log_target=log_target, faithful=faithful)
    out = jax.vmap(one)(log_d, log_l.astype(dtype).reshape(-1, n_pts), mask.reshape(-1, n_pts))
    return jax.tree.map(lambda a: a.reshape(shape[:-1]), out)
