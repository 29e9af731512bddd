"""Loss tables: per-model test losses after fine-tuning on nested subsets of a dataset.

Host-side only (numpy/pandas, no jax). Every malformed input becomes one `TableError` whose
message names the culprit (file, column, model), never a pandas or numpy traceback.

The paper tables ship inside the package (`bundled_root`, with a README naming source, commit and
license); `data_root` resolves where loaders read them from (``root`` / ``--data DIR``, else
``$JAXLAW_DATA``, else the bundled copy). Entry points: `load_dataset`, `load_table`.
"""

import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float, Int

_INT_RE = re.compile(r"\s*\+?[0-9]+\s*")
_META = ("size", "family")
# Cell spellings of a missing value (pandas' common NA tokens); model names never are.
_NA = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "<na>"})
DATASETS = ("flan", "wmt19", "gigaword")
# Loss tables jaxlaw measured itself (`experiments/`), bundled in ``tables/measured/``; an
# override folder without them falls back to the bundled copy (no paper data folder has them).
MEASURED = ("smollm2_gsm8k",)


class TableError(ValueError):
    """A loss table is malformed; the one-line message names the offending file, column or model."""


class LossTable(NamedTuple):
    """Test losses of several models fine-tuned on nested subsets of one dataset.

    Attributes:
        name: dataset name (e.g. ``"flan"``).
        models: model identifiers, one per row; unique. Tables are aligned by these names,
            never by row position (the reference files order rows differently).
        sizes: subset sizes D in examples, shape (points,), int64, strictly ascending; a
            leading 0 is the zero-shot (no fine-tuning) column.
        loss: test loss after fine-tuning on ``sizes[j]`` examples, shape (models, points),
            float64, positive and finite; NaN marks a missing cell.
        n_params: parameter count per model, shape (models,), float64, or None.
        families: model family per row ("" when blank), or None.
    """

    name: str
    models: tuple[str, ...]
    sizes: Int[np.ndarray, " points"]
    loss: Float[np.ndarray, "models points"]
    n_params: Float[np.ndarray, " models"] | None
    families: tuple[str, ...] | None

    def column(self, size: int) -> int:
        """Index of the column holding subset size ``size``; raises `TableError` otherwise."""
        hit = np.flatnonzero(self.sizes == size)
        if hit.size == 0:
            raise TableError(
                f"{self.name}: no column for subset size {size}; "
                f"sizes are {', '.join(map(str, self.sizes))}"
            )
        return int(hit[0])


def _fail(where: str, msg: str) -> TableError:
    return TableError(f"{where}: {msg}" if where else msg)


def _is_missing(v: Any, *, tokens: bool = False) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in _NA if tokens else v.strip() == ""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _to_float(v: Any) -> float | None:
    """A cell as float (NaN if missing), or None if it is not a number."""
    if _is_missing(v, tokens=True):
        return float("nan")
    if isinstance(v, (bool, np.bool_)):
        return None
    try:
        return float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        return None


def _size_label(label: Any) -> int | None:
    """The subset size a column label names, or None if it is not an integer label."""
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        return int(label)
    if isinstance(label, str) and _INT_RE.fullmatch(label):
        return int(label)
    return None


def _build(
    name: str, where: str, models: Sequence[Any], labels: Sequence[Any], cells: np.ndarray
) -> LossTable:
    """Validate raw model names, column labels and an object cell matrix into a `LossTable`."""
    if len(models) == 0:
        raise _fail(where, "empty table: no model rows")
    names = []
    for i, m in enumerate(models):
        if _is_missing(m):
            raise _fail(where, f"row {i + 1} has no model name")
        names.append(str(m).strip())
    seen, dups = set(), []
    for m in names:
        if m in seen and m not in dups:
            dups.append(m)
        seen.add(m)
    if dups:
        raise _fail(where, f"duplicate model names: {', '.join(map(repr, dups))}")

    size_cols: dict[int, int] = {}
    meta_cols: dict[str, int] = {}
    for j, label in enumerate(labels):
        d = _size_label(label)
        text = "" if _is_missing(label) else str(label).strip()
        if d is not None:
            if d in size_cols:
                raise _fail(where, f"duplicate subset-size column {d}")
            size_cols[d] = j
        elif text.lower() in _META:
            if text.lower() in meta_cols:
                raise _fail(where, f"duplicate column {text!r}")
            meta_cols[text.lower()] = j
        else:
            raise _fail(
                where,
                f"column {text or '<blank>'!r} (position {j + 2}) is neither an integer subset "
                "size nor 'size'/'family'",
            )
    if not size_cols:
        raise _fail(where, "no integer subset-size columns (expected headers like 0, 200, 400)")

    sizes = np.array(sorted(size_cols), dtype=np.int64)
    loss = np.empty((len(names), sizes.size), dtype=np.float64)
    for jj, d in enumerate(sizes):
        col = cells[:, size_cols[int(d)]]
        for i, v in enumerate(col):
            x = _to_float(v)
            if x is None:
                raise _fail(where, f"non-numeric loss {v!r} in column {d} for model {names[i]!r}")
            if np.isinf(x) or (not np.isnan(x) and x <= 0):
                raise _fail(
                    where,
                    f"loss must be positive and finite (NaN = missing), got {x!r} in column "
                    f"{d} for model {names[i]!r}",
                )
            loss[i, jj] = x

    n_params = None
    if "size" in meta_cols:
        n_params = np.empty(len(names), dtype=np.float64)
        for i, v in enumerate(cells[:, meta_cols["size"]]):
            x = _to_float(v)
            if x is None or not np.isfinite(x) or x <= 0:
                raise _fail(
                    where,
                    f"'size' (parameter count) must be a positive number, got {v!r} for model "
                    f"{names[i]!r}",
                )
            n_params[i] = x
    families = None
    if "family" in meta_cols:
        families = tuple(
            "" if _is_missing(v, tokens=True) else str(v).strip()
            for v in cells[:, meta_cols["family"]]
        )
    return LossTable(name, tuple(names), sizes, loss, n_params, families)


def table_from_frame(df: pd.DataFrame, *, name: str, model_column: str | None = None) -> LossTable:
    """Build a validated `LossTable` from a DataFrame.

    Args:
        df: one row per model. Columns labelled by integers (``200`` or ``"200"``) hold
            losses for that subset size, in any order; optional ``size`` (parameter count) and
            ``family`` columns; nothing else.
        name: dataset name stored in the table.
        model_column: column holding the model names; default the index (which must then
            not be a default integer index).

    Returns:
        The `LossTable`, size columns sorted ascending.

    Raises:
        TableError: naming the culprit, for any of the problems listed in `load_table`.
    """
    where = name
    if not isinstance(df, pd.DataFrame):
        raise _fail(where, f"expected a pandas DataFrame, got {type(df).__name__}")
    if model_column is None:
        if isinstance(df.index, pd.RangeIndex):
            raise _fail(
                where,
                "no model column: the frame has a default integer index; "
                "pass model_column or set the index to the model names",
            )
        models = list(df.index)
        labels = list(df.columns)
        cells = df.to_numpy(dtype=object)
    else:
        hits = [j for j, c in enumerate(df.columns) if c == model_column]
        if not hits:
            raise _fail(where, f"no model column {model_column!r}")
        j0 = hits[0]
        models = list(df.iloc[:, j0])
        labels = [c for j, c in enumerate(df.columns) if j != j0]
        cells = np.delete(df.to_numpy(dtype=object), j0, axis=1)
    if len(labels) == 0 and len(models) == 0:
        raise _fail(where, "empty table")
    return _build(name, where, models, labels, cells.reshape(len(models), len(labels)))


def load_table(path: str | os.PathLike, *, name: str | None = None) -> LossTable:
    """Load a loss table from a CSV file in the reference format.

    Format (as in the reference's ``benchmark/*.csv``): a header row; the first column holds
    the model names whatever its header (``config name`` in the reference); columns with
    integer headers hold the test loss after fine-tuning on that many examples (0 = zero-shot),
    in any order; optional ``size`` (parameter count) and ``family`` columns. Empty cells are
    missing (NaN).

    Args:
        path: the CSV file.
        name: dataset name; default the file stem.

    Returns:
        The validated `LossTable`, size columns sorted ascending.

    Raises:
        TableError: missing/unreadable file; empty table or no model column; no integer size
            columns; a column that is neither an integer size nor ``size``/``family``;
            duplicate columns or model names; a non-numeric, non-positive or infinite loss
            (naming model and column); a non-numeric or non-positive ``size``.
    """
    path = Path(path)
    name = path.stem if name is None else name
    where = str(path)
    if not path.is_file():
        raise _fail("", f"loss table not found: {path}")
    values = read_raw_csv(path, where, skipinitialspace=True)
    header, body = values[0], values[1:]
    if len(header) < 2:
        raise _fail(where, "need a model column plus at least one subset-size column")
    if _size_label(header[0]) is not None:
        raise _fail(where, f"no model column: the first column is the subset size {header[0]!r}")
    if body.shape[0] == 0:
        raise _fail(where, "empty table: no model rows")
    return _build(name, where, list(body[:, 0]), list(header[1:]), body[:, 1:])


def bundled_root() -> Path:
    """The paper tables shipped inside the package (``rectified/``, ``obscaling/``).

    A copy, byte for byte, of the reference repositories' tables; source, commit and license of
    each file are in this folder's ``README.md``. Text corpora are not bundled.
    """
    # jaxlaw is installed as plain files (jaxlib cannot be imported from a zip), so the
    # resource is a real folder and os.fspath holds.
    return Path(os.fspath(resources.files("jaxlaw.data") / "tables"))


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder whose ``rectified/`` and ``obscaling/`` hold the paper tables.

    Resolution, first match wins: ``root`` (the CLI's ``--data DIR``); else ``$JAXLAW_DATA``
    when set and non-empty; else the copy bundled with jaxlaw (`bundled_root`). An override
    replaces the bundled copy as a whole (no per-file fallback), so it must use the same
    layout; it may also hold ``text/`` for the corpora, which are never bundled.

    Args:
        root: an explicit data folder, or None.

    Returns:
        The data folder.

    Raises:
        TableError: if the override (``root`` or ``$JAXLAW_DATA``) is not an existing
            directory; the message names the path and where it came from.
    """
    if root is not None:
        path, origin, undo = Path(root), f"data folder {root}", "omit it"
    elif os.environ.get("JAXLAW_DATA"):
        path = Path(os.environ["JAXLAW_DATA"])
        origin, undo = f"JAXLAW_DATA={path}", "unset it"
    else:
        return bundled_root()
    if not path.is_dir():
        bundled = f"{undo} to use the tables bundled with jaxlaw"
        raise _fail("", f"{origin} is not a directory ({bundled})")
    return path


def missing_hint(base: Path, have: Sequence[str]) -> str:
    """The tail of a table-not-found message: what data root ``base`` holds, how to get the rest."""
    listed = f"available: {', '.join(have)}" if have else "no tables there"
    if base == bundled_root():
        return f"{listed}; other tables are not bundled: pass --data DIR or set JAXLAW_DATA"
    if have:
        return listed
    return f"{listed}; omit --data / unset JAXLAW_DATA to use the tables bundled with jaxlaw"


def read_raw_csv(path: Path, where: str, *, skipinitialspace: bool = False) -> np.ndarray:
    """Every cell of a CSV as raw text (header row included), or one `TableError` line.

    Raw text keeps duplicate headers visible (pandas would rename them), keeps a model called
    "NA" a name, and leaves every conversion to code that can name the cell.
    """
    try:
        raw = pd.read_csv(
            path, header=None, dtype=str, keep_default_na=False, skipinitialspace=skipinitialspace
        )
    except pd.errors.EmptyDataError:
        raise _fail(where, "empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _fail(where, f"cannot parse CSV ({first})") from None
    return raw.to_numpy(dtype=object)


def load_dataset(name: str, root: str | os.PathLike | None = None) -> LossTable:
    """Load one of the reference loss tables (`DATASETS`, `MEASURED`).

    A paper table (``"flan"``, ``"wmt19"``, ``"gigaword"``) is ``<data_root(root)>/rectified/
    <name>.csv``: by default the copy bundled with jaxlaw; ``root`` (``--data DIR``), else
    ``$JAXLAW_DATA``, overrides it (see `data_root`). A table jaxlaw measured itself
    (``"smollm2_gsm8k"``: SmolLM2-135M-Instruct LoRA-fine-tuned on GSM8K subsets by
    ``experiments/gsm8k_scaling``) is ``<root>/measured/<name>.csv`` when the override has
    one, else the bundled copy.

    Args:
        name: dataset name (the file stem).
        root: data folder overriding the bundled tables, or None.

    Returns:
        The `LossTable` named ``name``.

    Raises:
        TableError: if the override folder does not exist, the file is missing (the message
            lists the tables that exist there) or malformed.
    """
    base = data_root(root)
    if name in MEASURED:
        path = base / "measured" / f"{name}.csv"
        if not path.is_file():
            path = bundled_root() / "measured" / f"{name}.csv"
        return load_table(path, name=name)
    path = base / "rectified" / f"{name}.csv"
    if not path.is_file():
        have = sorted(p.stem for p in (base / "rectified").glob("*.csv"))
        raise _fail("", f"loss table {name!r} not found at {path}; {missing_hint(base, have)}")
    return load_table(path, name=name)


def take_models(table: LossTable, models: Sequence[str]) -> LossTable:
    """The rows of ``table`` for ``models``, in that order (alignment by name).

    Args:
        table: the source table.
        models: model names, each present in ``table``; duplicates are not allowed.

    Returns:
        A `LossTable` with ``models`` as its rows.

    Raises:
        TableError: naming models absent from ``table`` or given twice.
    """
    models = tuple(models)
    index = {m: i for i, m in enumerate(table.models)}
    missing = [m for m in models if m not in index]
    if missing:
        raise _fail(table.name, f"unknown models: {', '.join(map(repr, missing))}")
    if len(set(models)) != len(models):
        dups = sorted({m for m in models if models.count(m) > 1})
        raise _fail(table.name, f"models requested twice: {', '.join(map(repr, dups))}")
    rows = np.array([index[m] for m in models], dtype=np.int64)
    return LossTable(
        name=table.name,
        models=models,
        sizes=table.sizes,
        loss=table.loss[rows],
        n_params=None if table.n_params is None else table.n_params[rows],
        families=None if table.families is None else tuple(table.families[i] for i in rows),
    )


def check_fit_points(
    table: LossTable,
    mask: Bool[np.ndarray, "*models points"],
    min_points: int = 3,
) -> Int[np.ndarray, " models"]:
    """Check that every model has at least ``min_points`` usable points under ``mask``.

    A point is usable when it is selected by ``mask`` and its loss is not missing.

    Args:
        table: the loss table.
        mask: points a method may read, shape (points,) or (models, points).
        min_points: minimum usable points per model.

    Returns:
        Usable points per model, shape (models,).

    Raises:
        TableError: naming the models with fewer than ``min_points`` usable points.
    """
    usable = np.broadcast_to(np.asarray(mask, bool), table.loss.shape) & np.isfinite(table.loss)
    count = usable.sum(axis=-1)
    short = np.flatnonzero(count < min_points)
    if short.size:
        sel = table.sizes[np.asarray(mask, bool).any(axis=0) if np.ndim(mask) > 1 else mask]
        bad = ", ".join(f"{table.models[i]!r} ({count[i]})" for i in short)
        raise _fail(
            table.name,
            f"need at least {min_points} non-missing points among sizes "
            f"{', '.join(map(str, sel))}; too few for: {bad}",
        )
    return count
