"""Model selection on loss tables: `select` (one method, one budget) and `selection_grid`."""

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..data import LossTable, TableError, take_models
from ..fitting import in_float64
from ._ats import TARGET
from ._methods import METHODS, Scores, display_name, method_key
from ._metrics import pearson, rank_models, rel_acc

BUDGETS = (204800, 102400, 51200, 25600, 12800, 6400, 3200)


class Selection(NamedTuple):
    """Result of `select`.

    Attributes:
        feature: the method's per-model feature, shape (models,), float64 (a predicted loss
            for AtS/OurFit/VanillaFit; +ln size for ModelSize with the reference sign).
        rank: average rank of each model, 1 = best, ties sharing their mean rank (pandas'
            ``rank()``), shape (models,).
        chosen: row index of the selected model: the first row, in table order, among the
            best-ranked (as the reference's ``argmin(rank)``).
    """

    feature: Float[np.ndarray, " models"]
    rank: Float[np.ndarray, " models"]
    chosen: int


def _options(fn, kw: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``kw`` that ``fn`` accepts as keyword options."""
    params = list(inspect.signature(fn).parameters.values())[3:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(kw)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in kw.items() if k in names}


def _scores(key: str, table: LossTable, budgets: tuple[int, ...], target: int, kw) -> Scores:
    """Run registry method ``key`` and check what it returns."""
    out = METHODS[key](table, budgets, target, **_options(METHODS[key], kw))
    feature, rank_key = out if isinstance(out, Scores) else (out, out)
    feature = np.asarray(feature, np.float64)
    rank_key = np.asarray(rank_key, np.float64)
    want = (len(budgets), len(table.models))
    if feature.shape != want or rank_key.shape != want:
        raise ValueError(
            f"method {key!r} returned shape {feature.shape}, expected (budgets, models) = {want}"
        )
    bad = np.isnan(rank_key)
    if bad.any():
        b, m = np.nonzero(bad)
        cells = ", ".join(f"{table.models[j]!r} at budget {budgets[i]}" for i, j in zip(b, m))
        raise ValueError(f"{table.name}: method {key!r} gave NaN features for {cells}")
    return Scores(feature, rank_key)


def _unused(kw: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    used = set()
    for key in keys:
        used |= set(_options(METHODS[key], kw))
    return [k for k in kw if k not in used]


@in_float64
def select(
    table: LossTable, method: str, budget: int, *, target: int = TARGET, **options: Any
) -> Selection:
    """Rank the models of ``table`` with one selection method under one data budget.

    Args:
        table: the loss table (see `jaxlaw.data`).
        method: a `METHODS` name ("ats", "zeroshot", "subtuning", "modelsize", "golden", or
            a registered one; case and ``_`` ignored).
        budget: the budget M in examples (a subset size of the table).
        target: target size T whose loss is predicted.
        **options: the method's keyword options, e.g. ``k``, ``delta``, ``faithful`` (AtS),
            ``sign`` (ModelSize).

    Returns:
        `Selection` with the feature, the ranks and the chosen row.

    Raises:
        ValueError: unknown method or option, or NaN features.
        TableError: the budget or target is not a column, or too few points.
    """
    key = method_key(method)
    unused = _unused(options, [key])
    if unused:
        raise ValueError(f"method {method!r} takes no option(s) {', '.join(unused)}")
    feature, rank_key = _scores(key, table, (int(budget),), int(target), options)
    return Selection(feature[0], rank_models(rank_key[0]), int(np.argmin(rank_key[0])))


@in_float64
def selection_grid(
    tables: Mapping[str, LossTable],
    methods: Sequence[str],
    budgets: Sequence[int] = BUDGETS,
    *,
    target: int = TARGET,
    max_size: float | None = None,
    **options: Any,
) -> pd.DataFrame:
    """PearCorr and RelAcc of several methods over datasets x budgets (the paper's tables).

    Mirrors the reference's ``selection_performance``: features cast to float32 and
    correlated with the float32 target losses (PearCorr); RelAcc from the float64 target
    losses; both rounded to 4 decimals. Each method is called once per dataset with every
    budget (AtS: one batched `ats_curves` call over budgets x models).

    Args:
        tables: loss tables by dataset name (the ``dataset`` column is the name upper-cased).
        methods: method names (see `METHODS`).
        budgets: budgets M; ``ratio`` = int(target / M).
        target: target size T.
        max_size: keep only models with parameter count < ``max_size`` (size ablation).
        **options: keyword options, each routed to the methods that accept it (e.g. ``k=4``
            reaches AtS only).

    Returns:
        DataFrame with columns dataset, ratio, max_data_num, predict_data_num, metric
        ("PearCorr"/"RelAcc"), method (display name), value (fraction, 4 decimals); rows in
        the order dataset, budget, method, metric.

    Raises:
        ValueError: unknown method or an option no method accepts.
        TableError: bad budgets/target, missing target losses, no ``size`` column with
            ``max_size``, or fewer than 2 models left.
    """
    keys = [method_key(m) for m in methods]
    unused = _unused(options, keys)
    if unused:
        raise ValueError(f"no method among {', '.join(keys)} takes option(s) {', '.join(unused)}")
    budgets = tuple(int(b) for b in budgets)
    rows = []
    for name, table in tables.items():
        if max_size is not None:
            if table.n_params is None:
                raise TableError(f"{table.name}: max_size needs a 'size' column")
            table = take_models(
                table, [m for m, s in zip(table.models, table.n_params) if s < max_size]
            )
        if len(table.models) < 2:
            raise TableError(f"{table.name}: fewer than 2 models to select from")
        truth = table.loss[:, table.column(target)]
        if np.isnan(truth).any():
            bad = [m for m, t in zip(table.models, truth) if np.isnan(t)]
            raise TableError(
                f"{table.name}: target loss (column {target}) missing for {', '.join(bad)}"
            )
        scores = {key: _scores(key, table, budgets, int(target), options) for key in keys}
        for i, budget in enumerate(budgets):
            for key in keys:
                feature, rank_key = scores[key].feature[i], scores[key].key[i]
                pc = pearson(feature.astype(np.float32), truth.astype(np.float32))
                ra = rel_acc(int(np.argmin(rank_key)), truth)
                for metric, value in (("PearCorr", pc), ("RelAcc", ra)):
                    rows.append(
                        {
                            "dataset": name.upper(),
                            "ratio": int(target / budget),
                            "max_data_num": budget,
                            "predict_data_num": int(target),
                            "metric": metric,
                            "method": display_name(key),
                            "value": round(float(value), 4),
                        }
                    )
    return pd.DataFrame(rows)
