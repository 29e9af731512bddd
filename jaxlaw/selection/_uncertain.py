"""Model selection with its uncertainty: bootstrap bands, P(best) and the expected regret.

`select_uncertain` fits a law to every model's cells within the budget (as OurFit does), draws
bootstrap replicates of every fit in one batched call (`jaxlaw.fitting.bootstrap_predictions`),
and reads off, per model, the predicted loss at the target with a band, and the probability
that it is the best model there; the pick is the model of lowest point prediction, and its
expected regret is the mean over joint draws of its loss minus the best loss of that draw.
"""

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ..data import LossTable, check_fit_points
from ..fitting import bootstrap_predictions, cached_fit_curves, in_float64, predict
from ..laws import get_law
from ._budget import budget_mask


class Uncertain(NamedTuple):
    """What `select_uncertain` returns (numpy, one entry per model of the table).

    Attributes:
        models: model names.
        pred: point prediction of L(target).
        lo, hi: the ``level`` bootstrap band on L(target) (NaN: fewer than 2 usable draws).
        p_best: share of joint draws in which the model has the lowest L(target).
        chosen: index of the pick (lowest ``pred``).
        regret: expected regret of the pick, E[L_pick - min_m L_m] over the joint draws.
        kept, dropped: bootstrap replicates used / dropped (not converged) per model.
        level: the band's coverage.
    """

    models: tuple[str, ...]
    pred: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p_best: np.ndarray
    chosen: int
    regret: float
    kept: np.ndarray
    dropped: np.ndarray
    level: float


def joint_draws(key, preds, usable, draws: int):
    """``(draws, models)`` joint samples: each model's value drawn from its usable replicates.

    Models are fitted independently, so a joint draw takes one usable replicate of each model,
    uniformly and independently; a model without any usable replicate gives NaN.
    """
    logits = jnp.where(usable, 0.0, -jnp.inf)  # (models, boot)
    keys = jr.split(key, preds.shape[0])
    idx = jax.vmap(lambda k, lg: jr.categorical(k, lg, shape=(draws,)))(keys, logits)
    picked = jnp.take_along_axis(preds, idx, axis=1)  # (models, draws)
    return jnp.where(usable.any(axis=1)[:, None], picked, jnp.nan).T


@in_float64
def select_uncertain(
    table: LossTable,
    budget: int,
    target: int,
    *,
    law: str = "rectified",
    level: float = 0.9,
    n_boot: int = 200,
    resampling: str = "residual",
    draws: int = 4000,
    seed: int = 0,
) -> Uncertain:
    """Rank ``table``'s models by the law's prediction at ``target``, with bands and P(best).

    Args:
        table: loss table.
        budget: the budget M; each model's fit reads the doubling grid up to M (plus the
            zero-shot column for laws finite at D = 0 when the table has one).
        target: the size T to predict.
        law: a `jaxlaw.laws` name.
        level: coverage of the bands, in (0, 1).
        n_boot: bootstrap replicates per model.
        resampling: ``"residual"`` or ``"case"``.
        draws: joint draws for P(best) and the regret.
        seed: PRNG seed of the starts, the bootstrap and the joint draws.

    Returns:
        `Uncertain`.

    Raises:
        ValueError / TableError: bad budget, too few points, unknown law, target at or below
            the budget, or a bad ``level`` / ``n_boot`` / ``resampling`` (one line each).
    """
    if target <= budget:
        raise ValueError(f"target {target} must exceed the budget {budget}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    the_law = get_law(law)
    zero = law in ("rectified", "rectified_alpha") and bool((table.sizes == 0).any())
    mask = np.broadcast_to(budget_mask(table.sizes, budget, include_zero=zero), table.loss.shape)
    mask = mask & np.isfinite(table.loss)
    check_fit_points(table, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_d = np.log(table.sizes.astype(np.float64))
        log_l = np.where(mask, np.log(table.loss), 0.0)
    key_boot, key_draw = jr.split(jr.key(seed))
    fit = cached_fit_curves(the_law, log_d, log_l, mask, seed=seed)
    at = jnp.asarray([math.log(target)])
    preds, usable = bootstrap_predictions(
        the_law, fit, at, log_d=log_d, log_l=log_l, mask=mask, n_boot=n_boot,
        resampling=resampling, key=key_boot,
    )  # fmt: skip
    preds = jnp.exp(preds[..., 0])  # (models, boot)
    alpha = (1 - level) / 2
    p = np.asarray(preds)
    u = np.asarray(usable)
    kept = u.sum(axis=1)
    with warnings.catch_warnings():  # a row without usable replicates has no band
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(np.where(u, p, np.nan), [alpha, 1 - alpha], axis=1)
    lo, hi = np.where(kept >= 2, lo, np.nan), np.where(kept >= 2, hi, np.nan)
    point = np.exp(np.asarray(predict(the_law, fit.params, at[0])))
    point = np.where(np.isfinite(np.asarray(fit.loss)), point, np.nan)
    chosen = int(np.nanargmin(point))
    joint = np.asarray(joint_draws(key_draw, preds, usable, draws))  # (draws, models)
    valid = np.isfinite(joint).all(axis=1)
    joint = joint[valid] if valid.any() else np.where(np.isfinite(joint), joint, np.inf)
    best = joint.argmin(axis=1)
    p_best = np.bincount(best, minlength=len(p)) / len(best)
    regret = float(np.mean(joint[:, chosen] - joint.min(axis=1)))
    return Uncertain(
        models=table.models,
        pred=point,
        lo=lo,
        hi=hi,
        p_best=p_best,
        chosen=chosen,
        regret=regret,
        kept=kept,
        dropped=n_boot - kept,
        level=level,
    )
