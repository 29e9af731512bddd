"""Ranking and selection metrics: `rank_models`, `pearson` (PearCorr), `rel_acc` (RelAcc)."""

import numpy as np
from jaxtyping import ArrayLike, Float, Int


def rank_models(feature: Float[ArrayLike, "*batch models"]) -> Float[np.ndarray, "*batch models"]:
    """Average ranks of ``feature`` ascending (1 = lowest = best), ties sharing their mean rank.

    This is pandas' default ``Series.rank()``; it is equivariant to permuting the models.

    Args:
        feature: per-model scores, lower is better, shape (..., models); must not be NaN.

    Returns:
        Ranks as float64, same shape.
    """
    f = np.asarray(feature, np.float64)
    # A tie run spanning sorted positions lo+1 .. hi gets (lo + 1 + hi) / 2; O(models^2) is
    # nothing at selection sizes and needs no sort.
    below = (f[..., None, :] < f[..., :, None]).sum(-1)
    up_to = (f[..., None, :] <= f[..., :, None]).sum(-1)
    return (below + 1 + up_to) / 2.0


def pearson(
    feature: Float[ArrayLike, "*batch models"], truth: Float[ArrayLike, "*batch models"]
) -> Float[np.ndarray, "*batch"]:
    """Pearson correlation over the models (last axis), computed in float64.

    PearCorr of the paper: ``feature`` is a method's per-model feature (a predicted loss, so
    a good method correlates positively), ``truth`` the true loss at the target size. The
    reference casts both to float32 before correlating; do that before calling for parity.
    No rounding here.

    Args:
        feature: shape (..., models).
        truth: shape (..., models).

    Returns:
        Correlation in [-1, 1], shape (...) (0-d array for one set of models); NaN if either
        input is constant.
    """
    x = np.asarray(feature, np.float64)
    y = np.asarray(truth, np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
        y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.asarray(np.clip((x * y).sum(axis=-1), -1.0, 1.0))


def rel_acc(
    chosen: Int[ArrayLike, "*batch"], truth: Float[ArrayLike, "*batch models"]
) -> Float[np.ndarray, "*batch"]:
    """Relative accuracy of a choice: (max L_T - L_T[chosen]) / (max L_T - min L_T).

    1 = the best model (lowest true loss) was chosen, 0 = the worst. No rounding here.

    Args:
        chosen: index of the chosen model, shape (...).
        truth: true losses at the target size, shape (..., models), float64 for parity.

    Returns:
        RelAcc in [0, 1], shape (...) (0-d array for one choice).
    """
    t = np.asarray(truth, np.float64)
    c = np.asarray(chosen, np.int64)
    picked = np.take_along_axis(t, c[..., None], axis=-1)[..., 0]
    hi, lo = t.max(axis=-1), t.min(axis=-1)
    return np.asarray((hi - picked) / (hi - lo))
