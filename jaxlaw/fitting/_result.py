"""`FitResult`, the one result type of every fitter, and input cleaning shared by them."""

from typing import Any, NamedTuple

import jax.numpy as jnp

from .._types import Array


class FitResult(NamedTuple):
    """Result of `fit_curve` (scalars) or `fit_curves` (leading ``curves`` axis).

    Attributes:
        params: best parameters (the law's NamedTuple).
        loss: objective at ``params``: mean squared log residual ("mse") or summed Huber
            ("huber") over the observed points; ``inf`` if no start gave a usable fit.
        rmsd: root mean squared log residual at ``params`` (whatever the objective).
        ok: True when the best start has a finite loss and met the solver's tolerance in some
            stage. A start stopped by the step cap is not ok, though its loss still competes
            for the best start: degenerate fits (D_l -> 0 creeps towards infinity and never
            meets the tolerance) keep their finite loss and RMSD with ``ok`` False.
        converged: True when the best start met the solver's tolerance.
        steps: solver steps taken by the best start (screening + polishing).
        init_loss: objective reached by every start after the screening phase, shape
            (..., inits); ``inf`` for failed starts.

    Reference-procedure fits (``faithful=True``) hold the reference code's parameters
    (`RectifiedCode`, `VanillaCode`), which the laws' ``predict`` also accepts.
    """

    params: Any
    loss: Array
    rmsd: Array
    ok: Array
    converged: Array
    steps: Array
    init_loss: Array


def clean_points(log_d: Array, log_l: Array, mask: Array | None) -> tuple[Array, Array, Array]:
    """Mask out non-finite losses; zero masked sizes and losses so they cannot poison gradients
    (``where`` does not stop a NaN gradient from an infinite unselected branch, e.g. a vanilla
    law at a masked D = 0)."""
    ok = jnp.isfinite(log_l)
    mask = ok if mask is None else (jnp.asarray(mask, bool) & ok)
    log_d = jnp.broadcast_to(jnp.asarray(log_d, log_l.dtype), log_l.shape)
    return jnp.where(mask, log_d, 0.0), jnp.where(mask, log_l, 0.0), mask


def huber(r: Array, delta: float) -> Array:
    """Huber loss per residual: r^2 / 2 inside ``delta``, delta (|r| - delta / 2) outside."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))
