"""Per-model selection features of the table-level methods: AtS and the reference baselines.

Every feature is "lower = better" except `model_size` with ``sign="reference"`` (see there).
"""

import math
from collections.abc import Sequence

import jax
import numpy as np
from jaxtyping import Float

from ..data import LossTable, TableError, check_fit_points
from ._ats import TARGET, AtsResult, ats_curves
from ._budget import budget_mask


def zero_shot(table: LossTable) -> Float[np.ndarray, " models"]:
    """ZeroShot feature: the loss without fine-tuning (the size-0 column), shape (models,)."""
    return table.loss[:, table.column(0)].copy()


def subtuning(table: LossTable, budget: int) -> Float[np.ndarray, " models"]:
    """SubTuning feature: the loss after fine-tuning on the whole budget M, shape (models,)."""
    return table.loss[:, table.column(budget)].copy()


def golden(table: LossTable, target: int = TARGET) -> Float[np.ndarray, " models"]:
    """Golden (oracle) feature: the true loss at the target size T, shape (models,)."""
    return table.loss[:, table.column(target)].copy()


def model_size(table: LossTable, *, sign: str = "reference") -> Float[np.ndarray, " models"]:
    """ModelSize feature from the parameter counts, shape (models,).

    The method always prefers the largest model (rank by descending size). What differs is
    the feature reported to PearCorr:

    - ``"reference"``: +ln(size), exactly what the reference correlates with the loss, so a
      useful size prior shows as a NEGATIVE PearCorr (spec §3.4 item 4). Not "lower = better".
    - ``"loss"``: -ln(size), lower = better like every other feature, so PearCorr is
      comparable with the other methods.

    Raises:
        TableError: if the table has no ``size`` column.
        ValueError: for an unknown ``sign``.
    """
    if sign not in ("reference", "loss"):
        raise ValueError(f"model_size sign must be 'reference' or 'loss', got {sign!r}")
    if table.n_params is None:
        raise TableError(f"{table.name}: ModelSize needs a 'size' (parameter count) column")
    log_size = np.log(table.n_params)
    return log_size if sign == "reference" else -log_size


def _log_sizes(sizes: np.ndarray) -> np.ndarray:
    positive = sizes > 0
    return np.where(positive, np.log(np.where(positive, sizes, 1).astype(np.float64)), -np.inf)


def ats_table(
    table: LossTable,
    budgets: Sequence[int],
    *,
    target: int = TARGET,
    k: int = 3,
    delta: float = 5.0,
    faithful: bool = True,
) -> AtsResult:
    """AtS for every model of ``table`` under every budget, in one batched `ats_curves` call.

    Each (budget, model) curve reads the doubling grid 200 .. M of that budget (see
    `budget_mask`); missing cells are skipped.

    Args:
        table: the loss table.
        budgets: budgets M (subset sizes of the table).
        target: target data size T the line is extrapolated to.
        k: minimum window (static).
        delta: rejection threshold in residual standard deviations.
        faithful: reference behaviour (True) or the off-by-one-corrected variant.

    Returns:
        `AtsResult` with leaves of shape (budgets, models), as numpy arrays.

    Raises:
        TableError: if a budget is not on the table's grid or a model has fewer than 3
            non-missing points under some budget.
    """
    masks = np.stack([budget_mask(table.sizes, b) for b in budgets])  # (budgets, points)
    for m in masks:
        check_fit_points(table, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_l = np.log(table.loss)
    shape = (len(masks),) + log_l.shape
    out = ats_curves(
        _log_sizes(table.sizes),
        np.broadcast_to(log_l, shape),
        np.broadcast_to(masks[:, None, :], shape),
        k=k,
        delta=delta,
        log_target=math.log(target),
        faithful=faithful,
    )
    return jax.tree.map(np.asarray, out)
