"""Benchmark tables of the observational-scaling study (host side, pandas). Entry point:
`load_benchmarks`.

One row per model, keyed by ``Model`` (a HuggingFace id or API name); every other column except
``Model Family`` is numeric (NaN = not evaluated). Functions here align tables by model name,
never by row position. Malformed input raises `jaxlaw.data.TableError` with one line naming the
culprit (file, column, model), never a pandas traceback. Named tables come from the copy bundled
with jaxlaw unless ``root`` / ``$JAXLAW_DATA`` names another folder (`jaxlaw.data.data_root`)::

    base = load_benchmarks()                         # 77 models, 21 families
    lb = merge_tables(load_benchmarks(eval_families_only=False, include_preregistered=True),
                      load_benchmarks("leaderboard_v2"))
    X = benchmark_matrix(base, ALL8)                 # (77, 8) float64, NaN = missing
"""

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from ..data import TableError, data_root, read_raw_csv
from ..data._table import missing_hint
from ._constants import (
    BASE_TABLES,
    EVAL_BASE_MODEL_FAMILIES,
    FAMILY,
    FLOPS,
    FRACTION_COLUMNS,
    KNOWN_ERRORS,
    MODEL,
    PREREGISTERED_MODELS,
    SIZE,
    TABLES,
)
from ._constants import DATA as DATA_SIZE

_TEXT_COLUMNS = (MODEL, FAMILY)
_POSITIVE_COLUMNS = (SIZE, DATA_SIZE, FLOPS)
# Cell spellings of a missing value (pandas' common NA tokens); model names never are.
_NA = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "<na>"})


def _fail(where: str, msg: str) -> TableError:
    return TableError(f"{where}: {msg}" if where else msg)


def _name(df: pd.DataFrame, default: str) -> str:
    name = df.attrs.get("name") if isinstance(df, pd.DataFrame) else None
    return str(name) if name else default


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in _NA
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _to_float(v: Any) -> float | None:
    """A cell as a float (NaN if missing), or None if it is not a number."""
    if _is_missing(v):
        return math.nan
    if isinstance(v, (bool, np.bool_)):
        return None
    try:
        return float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError, OverflowError):
        return None


def _same(a: Any, b: Any) -> bool:
    fa, fb = _to_float(a), _to_float(b)
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-12, abs_tol=0.0)
    return str(a).strip() == str(b).strip()


def validate_table(df: pd.DataFrame, *, name: str = "table") -> pd.DataFrame:
    """Check a benchmark table and return a clean copy (float64 score columns).

    Args:
        df: one row per model: a ``Model`` column of unique names, an optional ``Model Family``
            text column, every other column numeric (numbers, numeric strings or NaN/blank).
        name: how error messages name the table (a file path, ``"base"``...).

    Returns:
        A new DataFrame with a default index, ``Model``/``Model Family`` as stripped strings,
        every other column float64, and ``attrs["name"] = name``.

    Raises:
        TableError: not a DataFrame; no rows; no ``Model`` column; blank or duplicate column
            names; blank or duplicate model names; a non-numeric or infinite score (naming
            column and model); a value outside [0, 1] in a column known to be an accuracy
            (`FRACTION_COLUMNS`); a non-positive model size, data size or FLOPs.
    """
    if not isinstance(df, pd.DataFrame):
        raise _fail(name, f"expected a pandas DataFrame, got {type(df).__name__}")
    labels = [str(c).strip() if not _is_missing(c) else "" for c in df.columns]
    if "" in labels:
        raise _fail(name, f"column {labels.index('') + 1} has no name")
    dup_cols = sorted({c for c in labels if labels.count(c) > 1})
    if dup_cols:
        raise _fail(name, f"duplicate columns: {', '.join(map(repr, dup_cols))}")
    if MODEL not in labels:
        raise _fail(name, f"no {MODEL!r} column (columns: {', '.join(map(repr, labels))})")
    if len(df) == 0:
        raise _fail(name, "empty table: no model rows")
    cells = df.to_numpy(dtype=object)
    col = {c: j for j, c in enumerate(labels)}

    models = []
    for i, m in enumerate(cells[:, col[MODEL]]):
        if (
            m is None
            or (isinstance(m, str) and not m.strip())
            or (not isinstance(m, str) and _is_missing(m))
        ):
            raise _fail(name, f"row {i + 1} has no model name")
        models.append(str(m).strip())
    seen: set[str] = set()
    dups = [m for m in models if m in seen or seen.add(m)]
    if dups:
        raise _fail(name, f"duplicate models: {', '.join(map(repr, dict.fromkeys(dups)))}")

    out: dict[str, Any] = {}
    for c in labels:
        raw = cells[:, col[c]]
        if c == MODEL:
            out[c] = models
            continue
        if c == FAMILY:
            out[c] = ["" if _is_missing(v) else str(v).strip() for v in raw]
            continue
        values = np.empty(len(models), dtype=np.float64)
        for i, v in enumerate(raw):
            x = _to_float(v)
            if x is None:
                raise _fail(
                    name, f"non-numeric value {v!r} in column {c!r} for model {models[i]!r}"
                )
            if math.isinf(x):
                raise _fail(name, f"infinite value in column {c!r} for model {models[i]!r}")
            if c in FRACTION_COLUMNS and not (math.isnan(x) or 0.0 <= x <= 1.0):
                raise _fail(
                    name,
                    f"column {c!r} holds accuracies in [0, 1]; got {x!r} for model {models[i]!r}",
                )
            if c in _POSITIVE_COLUMNS and not (math.isnan(x) or x > 0):
                raise _fail(
                    name, f"column {c!r} must be positive; got {x!r} for model {models[i]!r}"
                )
            values[i] = x
        out[c] = values
    clean = pd.DataFrame(out, columns=labels)
    clean.attrs["name"] = name
    return clean


def read_table(path: str | os.PathLike, *, name: str | None = None) -> pd.DataFrame:
    """Read and validate one benchmark CSV (see `validate_table` for the format).

    Args:
        path: the CSV file.
        name: how errors name the table; default the path.

    Returns:
        The validated DataFrame, rows in file order.

    Raises:
        TableError: missing or unparsable file, or any problem of `validate_table`.
    """
    path = Path(path)
    where = str(path) if name is None else name
    if not path.is_file():
        raise _fail("", f"benchmark table not found: {path}")
    values = read_raw_csv(path, where)
    frame = pd.DataFrame(values[1:], columns=list(values[0]))
    return validate_table(frame, name=where)


def select_base_models(
    df: pd.DataFrame,
    *,
    eval_families_only: bool = True,
    include_preregistered: bool = False,
) -> pd.DataFrame:
    """The reference's default row filter for base-model tables.

    Args:
        df: a table with ``Model`` and ``Model Family`` columns.
        eval_families_only: keep only `EVAL_BASE_MODEL_FAMILIES` (the 28 evaluated families).
        include_preregistered: keep the 20 `PREREGISTERED_MODELS` (paper v3's held-out
            predictions); by default they are dropped.

    Returns:
        The kept rows, in their original order, with a default index.

    Raises:
        TableError: if ``df`` lacks a ``Model`` or (when filtering families) a ``Model Family``
            column.
    """
    where = _name(df, "table")
    if MODEL not in df.columns:
        raise _fail(where, f"no {MODEL!r} column")
    keep = np.ones(len(df), dtype=bool)
    if eval_families_only:
        if FAMILY not in df.columns:
            raise _fail(where, f"no {FAMILY!r} column to filter families by")
        keep &= df[FAMILY].isin(EVAL_BASE_MODEL_FAMILIES).to_numpy()
    if not include_preregistered:
        keep &= ~df[MODEL].isin(PREREGISTERED_MODELS).to_numpy()
    out = df.loc[keep].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def _known_errors(df: pd.DataFrame, *, fix: bool, where: str) -> pd.DataFrame:
    """Warn about (or fix) the rows listed in `KNOWN_ERRORS`."""
    for model, fixes in KNOWN_ERRORS.items():
        rows = np.flatnonzero(df[MODEL].to_numpy() == model)
        cols = [c for c in fixes if c in df.columns]
        if rows.size == 0 or not cols:
            continue
        bad = [c for c in cols if not np.isclose(df.at[rows[0], c], fixes[c])]
        if not bad:
            continue
        if fix:
            df = df.copy()
            for c in bad:
                df.at[rows[0], c] = fixes[c]
        else:
            have = ", ".join(f"{c} = {df.at[rows[0], c]:g}" for c in bad)
            want = ", ".join(f"{fixes[c]:g}" for c in bad)
            warnings.warn(
                f"{where}: known data error for {model!r}: {have} (should be {want}); "
                "pass fix_known_errors=True to correct it",
                UserWarning,
                stacklevel=3,
            )
    return df


def load_benchmarks(
    name: str | os.PathLike = "base",
    *,
    root: str | os.PathLike | None = None,
    eval_families_only: bool = True,
    include_preregistered: bool = False,
    fix_known_errors: bool = False,
) -> pd.DataFrame:
    """Load a benchmark table of the observational-scaling study.

    Named tables are read from ``<data_root(root)>/obscaling/``: by default the copy bundled
    with jaxlaw, which holds ``"base"`` (148 base models x 8 benchmarks + metadata),
    ``"sub10b"`` (its 92 models of at most 9 B), ``"instruct"`` (27 instruct/API models),
    ``"emergent"`` and ``"leaderboard_v2"`` (task tables: ``Model`` + task columns; combine
    with `merge_tables`). ``root`` (``--data DIR``), else ``$JAXLAW_DATA``, names a folder that
    replaces the bundled copy as a whole (see `jaxlaw.data.data_root`); that is how
    ``"post_training"`` and ``"agent"``, which are not bundled, are read. Any other value is
    read as the path of a CSV with a ``Model`` column.

    For ``"base"`` and ``"sub10b"`` the reference's default filter applies (spec §1): keep the
    evaluated families and drop the pre-registered models, giving 77 models of 21 families for
    ``"base"`` (97 / 28 with ``include_preregistered=True``, 148 with neither filter). Other
    tables are not filtered (apply `select_base_models` yourself).

    Whenever the returned rows include a known data error (BTLM-3B: data size 627 T and FLOPs
    11286 instead of 0.627 T and 11.286) a `UserWarning` says so, unless
    ``fix_known_errors=True``, which corrects the values instead.

    Args:
        name: a table name or a CSV path.
        root: data folder overriding the bundled tables; default ``$JAXLAW_DATA`` if set,
            else the bundled copy.
        eval_families_only: base tables only: keep `EVAL_BASE_MODEL_FAMILIES`.
        include_preregistered: base tables only: keep the 20 `PREREGISTERED_MODELS`.
        fix_known_errors: correct the entries of `KNOWN_ERRORS` instead of warning.

    Returns:
        The validated table (see `validate_table`), rows in file order, with
        ``attrs["name"]`` set to the table name or path.

    Raises:
        TableError: unknown name, an override folder that does not exist, a missing file
            (listing the tables found), or a malformed table (naming file, column and model).
    """
    key = os.fspath(name)
    if key in TABLES:
        top = data_root(root)
        base = top / "obscaling"
        path = base / TABLES[key]
        if not path.is_file():
            have = [k for k, f in TABLES.items() if (base / f).is_file()]
            hint = missing_hint(top, have)
            raise _fail("", f"benchmark table {key!r} not found at {path}; {hint}")
        df = read_table(path, name=key)
        if key in BASE_TABLES:
            df = select_base_models(
                df,
                eval_families_only=eval_families_only,
                include_preregistered=include_preregistered,
            )
    else:
        path = Path(key)
        if not path.is_file():
            raise _fail(
                "",
                f"unknown benchmark table {key!r}: not one of {', '.join(TABLES)} and no such file",
            )
        df = read_table(path)
    df = _known_errors(df, fix=fix_known_errors, where=df.attrs["name"])
    return df


def merge_tables(base: pd.DataFrame, task: pd.DataFrame) -> pd.DataFrame:
    """Inner-join a base table with a task table on ``Model``.

    Rows come in ``base`` order; columns are ``base``'s then ``task``'s new ones. A column in
    both tables (e.g. ``Model Family``) is kept once and must agree wherever both are present.

    Args:
        base: a table with ``Model`` (e.g. from `load_benchmarks`).
        task: a table with ``Model`` and task columns.

    Returns:
        The merged table, ``attrs["name"] = "<base>+<task>"``.

    Raises:
        TableError: naming the side: a missing ``Model`` column, duplicate models, conflicting
            shared columns, or no model in common.
    """
    names = (_name(base, "base table"), _name(task, "task table"))
    for df, where in zip((base, task), names):
        if not isinstance(df, pd.DataFrame):
            raise _fail(where, f"expected a pandas DataFrame, got {type(df).__name__}")
        if MODEL not in df.columns:
            raise _fail(where, f"no {MODEL!r} column to merge on")
        dup = df[MODEL][df[MODEL].duplicated()].unique()
        if len(dup):
            raise _fail(where, f"duplicate models: {', '.join(map(repr, dup))}")
    common = [c for c in task.columns if c in base.columns and c != MODEL]
    right = task.set_index(MODEL)
    hit = base[MODEL].isin(right.index).to_numpy()
    if not hit.any():
        raise _fail(
            "",
            f"no models in common between {names[0]} ({len(base)} models) and "
            f"{names[1]} ({len(task)} models)",
        )
    out = base.loc[hit].reset_index(drop=True)
    aligned = right.loc[out[MODEL].to_numpy()]
    for c in common:
        a, b = out[c].to_numpy(dtype=object), aligned[c].to_numpy(dtype=object)
        for i in range(len(out)):
            if not _is_missing(a[i]) and not _is_missing(b[i]) and not _same(a[i], b[i]):
                raise _fail(
                    "",
                    f"{names[0]} and {names[1]} disagree on {c!r} for model "
                    f"{out[MODEL].iloc[i]!r}: {a[i]!r} vs {b[i]!r}",
                )
    new = [c for c in task.columns if c != MODEL and c not in base.columns]
    for c in new:
        out[c] = aligned[c].to_numpy()
    out.attrs = {"name": f"{names[0]}+{names[1]}"}
    return out


def benchmark_matrix(
    df: pd.DataFrame, columns: Sequence[str]
) -> Float[np.ndarray, "models benchmarks"]:
    """The score matrix of ``columns``, float64, NaN = missing.

    Args:
        df: a validated table.
        columns: column names, in the order wanted.

    Returns:
        Array of shape (len(df), len(columns)).

    Raises:
        TableError: naming the requested columns the table lacks, or a non-numeric column.
    """
    where = _name(df, "table")
    columns = list(columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise _fail(
            where,
            f"missing columns: {', '.join(map(repr, missing))} "
            f"(available: {', '.join(map(repr, map(str, df.columns)))})",
        )
    numeric, boolean, dtypes = pd.api.types.is_numeric_dtype, pd.api.types.is_bool_dtype, df.dtypes
    if all(numeric(dtypes[c]) and not boolean(dtypes[c]) for c in columns):
        return df[columns].to_numpy(dtype=np.float64)  # fast path: nothing to name
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        for i, v in enumerate(df[c].to_numpy(dtype=object)):
            x = _to_float(v)
            if x is None:
                model = df[MODEL].iloc[i] if MODEL in df.columns else f"row {i + 1}"
                raise _fail(where, f"non-numeric value {v!r} in column {c!r} for model {model!r}")
            out[i, j] = x
    return out


def family_codes(
    df: pd.DataFrame, families: Sequence[str] | None = None
) -> tuple[Int[np.ndarray, " models"], tuple[str, ...]]:
    """Integer family ids per row, for `family_r2` and subset selection.

    Args:
        df: a table with a ``Model Family`` column.
        families: the family order; default the order of first appearance. Rows of a family
            not listed get id -1.

    Returns:
        ``(ids, names)``: ids of shape (models,) int64 indexing ``names``.

    Raises:
        TableError: if ``df`` has no ``Model Family`` column.
    """
    if FAMILY not in df.columns:
        raise _fail(_name(df, "table"), f"no {FAMILY!r} column")
    fam = [str(f) for f in df[FAMILY]]
    names = tuple(dict.fromkeys(fam)) if families is None else tuple(families)
    index = {f: i for i, f in enumerate(names)}
    return np.array([index.get(f, -1) for f in fam], dtype=np.int64), names
