"""The method registry: the single dispatch point from a method name to its features."""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float, Int

from ..data import LossTable
from ._baselines import ats_table, golden, model_size, subtuning, zero_shot
from ._budget import budget_grid
from ._lawfit import our_fit, vanilla_fit


class Scores(NamedTuple):
    """What a registry method returns when its ranking key differs from its reported feature.

    Attributes:
        feature: what PearCorr sees, shape (budgets, models).
        key: what is ranked, ascending (lower = better), shape (budgets, models).
    """

    feature: Float[np.ndarray, "budgets models"]
    key: Float[np.ndarray, "budgets models"]


MethodFn = Callable[..., "np.ndarray | Scores"]


def per_budget(fn: Callable[..., np.ndarray]) -> MethodFn:
    """Lift a one-budget feature function into the registry's batched signature.

    ``fn(table, budget, target, **options) -> (models,)`` becomes
    ``method(table, budgets, target, **options) -> (budgets, models)``, calling ``fn`` once
    per budget. Its keyword options stay visible to `select`/`selection_grid`.
    """

    @functools.wraps(fn)
    def method(table: LossTable, budgets: Sequence[int], target: int, **options):
        return np.stack([np.asarray(fn(table, b, target, **options)) for b in budgets])

    return method


def _repeat(feature: np.ndarray, budgets: Sequence[int]) -> np.ndarray:
    return np.broadcast_to(feature, (len(budgets),) + feature.shape).copy()


def _ats(table, budgets, target, *, k: int = 3, delta: float = 5.0, faithful: bool = True):
    return ats_table(table, budgets, target=target, k=k, delta=delta, faithful=faithful).pred


def _zeroshot(table, budgets, target):
    return _repeat(zero_shot(table), budgets)


def _subtuning(table, budgets, target):
    return np.stack([subtuning(table, b) for b in budgets])


def _modelsize(table, budgets, target, *, sign: str = "reference"):
    # Always rank by descending size; only the reported feature depends on the sign.
    feature = model_size(table, sign=sign)
    return Scores(_repeat(feature, budgets), _repeat(-np.log(table.n_params), budgets))


def _golden(table, budgets, target):
    return _repeat(golden(table, target), budgets)


METHODS: dict[str, MethodFn] = {
    "ats": _ats,
    "ourfit": our_fit,
    "vanillafit": vanilla_fit,
    "zeroshot": _zeroshot,
    "subtuning": _subtuning,
    "modelsize": _modelsize,
    "golden": _golden,
}
"""Selection methods by key (lower case, no separators).

A method is ``fn(table, budgets, target, **options)`` returning the per-model feature for
every budget, shape (budgets, models), lower = better (the ranking key), or a `Scores` when
the ranked key differs from the reported feature. ``budgets`` is a tuple of subset sizes M,
``target`` the size T whose loss is predicted. Keyword options (e.g. AtS's ``k``, ``delta``)
are routed by name from `select` / `selection_grid`. Registering a method is one entry::

    METHODS["ourfit"] = our_fit_method                 # already batched over budgets
    METHODS["vanillafit"] = per_budget(vanilla_one)    # fn(table, budget, target, **kw)
"""

DISPLAY_NAMES: dict[str, str] = {
    "ats": "AtS",
    "ourfit": "OurFit",
    "vanillafit": "VanillaFit",
    "zeroshot": "ZeroShot",
    "subtuning": "SubTuning",
    "modelsize": "ModelSize",
    "golden": "Golden",
}
"""Names printed in result tables (the reference's); other keys print as themselves."""

COSTS: dict[str, str] = {
    "ats": "grid",
    "ourfit": "grid",
    "vanillafit": "grid",
    "subtuning": "budget",
    "zeroshot": "none",
    "modelsize": "none",
    "golden": "target",
}
"""Fine-tuning examples a method consumes under budget M: "grid" = every subset 200 .. M
(about 2M), "budget" = M, "none" = 0, "target" = T (full fine-tuning)."""


def method_key(name: str) -> str:
    """Registry key of a method name: case and ``_``/``-`` ignored ("AtS", "zero_shot").

    Raises:
        ValueError: listing the registered methods if ``name`` is not one of them.
    """
    key = str(name).lower().replace("_", "").replace("-", "")
    if key not in METHODS:
        raise ValueError(f"unknown selection method {name!r}; choose one of {', '.join(METHODS)}")
    return key


def display_name(name: str) -> str:
    """The reference's display name of a method (``"ats"`` -> ``"AtS"``)."""
    key = method_key(name)
    return DISPLAY_NAMES.get(key, key)


def examples_used(
    method: str, budget: int, sizes: Int[ArrayLike, " points"], *, target: int | None = None
) -> int:
    """Cumulative fine-tuning examples a method consumes under budget M (true cost).

    The budget ratio T/M counts only the largest subset, but the curve methods (AtS, OurFit,
    VanillaFit) fine-tune on every subset 200, 400, ..., M, about 2M examples (spec §3.4
    item 7); SubTuning uses M, ZeroShot and ModelSize none, Golden the full target set.

    Args:
        method: method name (see `METHODS`).
        budget: the budget M.
        sizes: the table's subset sizes, shape (points,).
        target: target size T (needed for Golden; default the largest size).

    Returns:
        Number of examples.

    Raises:
        ValueError: for an unknown method or one without a `COSTS` entry.
        TableError: if the budget is not on the table's grid.
    """
    key = method_key(method)
    if key not in COSTS:
        raise ValueError(f"no cost rule for method {method!r}; add COSTS[{key!r}]")
    rule = COSTS[key]
    sizes = np.asarray(sizes)
    grid = budget_grid(sizes, budget)
    if rule == "grid":
        return int(sum(grid))
    if rule == "budget":
        return int(budget)
    if rule == "target":
        return int(sizes.max() if target is None else target)
    return 0
