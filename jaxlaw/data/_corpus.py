"""Local text sources: record files, fine-tuning task files, and the standard library's source.

Entry points: `load_records` (.jsonl/.json/.csv/.txt with the standard library, offline,
nothing written to disk), `load_task` (a prompt/response file for the CLI) and `stdlib_corpus`
(the Python standard library's own source, a pre-training corpus every machine has).
"""

import csv
import io
import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".txt": "text"}


class Task(NamedTuple):
    """A fine-tuning task read from a file.

    Attributes:
        prompts: prompt strings, in file order.
        responses: response strings, in file order.
        sources: a source name per example, or None when the file has no source field.
    """

    prompts: list[str]
    responses: list[str]
    sources: list[str] | None


def _json_rows(path: Path, text: str, fmt: str) -> list[Any]:
    """The JSON values of a file: one per non-blank line (JSON lines) or the list it holds."""
    if fmt == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # a .json file may hold JSON lines, as ``datasets`` allows
                raise ValueError(f"{path}: cannot read as json: {e}") from None
        else:
            if not isinstance(value, list):
                raise ValueError(f"{path}: a .json file must hold a list of objects")
            return value
    rows = []
    for i, line in enumerate(text.split("\n")):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: cannot read as json: line {i + 1}: {e}") from None
    return rows


def _json_records(path: Path, text: str, fmt: str) -> list[dict[str, Any]]:
    rows = _json_rows(path, text, fmt)
    keys: dict[str, None] = {}  # every key, in order of first appearance
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record {i} is a {type(row).__name__}, not a JSON object")
        keys.update(dict.fromkeys(row))
    return [{k: row.get(k) for k in keys} for row in rows]


def _csv_records(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    if not header:
        raise ValueError(f"{path}: empty file (no header row)")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ValueError(f"{path}: duplicate column name(s) {', '.join(map(repr, dup))}")
    records = []
    try:
        for row in reader:
            if not row:  # a blank line
                continue
            if len(row) > len(header):
                raise ValueError(
                    f"{path}: line {reader.line_num} has {len(row)} cells, the header {len(header)}"
                )
            records.append(dict(zip(header, row + [""] * (len(header) - len(row)))))
    except csv.Error as e:
        raise ValueError(f"{path}: cannot read as csv: line {reader.line_num}: {e}") from None
    return records


def load_records(
    path: str | Path,
    *,
    fields: Sequence[str] | None = None,
    text_by: Literal["line", "file"] = "line",
) -> list[dict[str, Any]]:
    """Read a local data file into a list of records (dicts), with the standard library.

    Formats, by suffix: ``.jsonl`` (one JSON object a line; blank lines skipped), ``.json`` (a
    list of objects, or JSON lines), ``.csv`` (header row; every cell read as a string, empty
    and missing trailing cells as ``""``) and ``.txt`` (field ``"text"``: one record
    per non-blank line, or one for the whole file). Text is UTF-8 (a leading byte-order mark is
    dropped) with universal newlines. Nothing is written anywhere. The records equal what
    ``datasets.load_dataset`` gave the earlier version of this function (with string-typed CSV
    columns), except that JSON values keep their own types (``datasets`` unifies a column's type,
    turning ``1`` into ``1.0`` next to ``2.5``).

    Args:
        path: the file.
        fields: fields every record must have; if given, records keep only these.
        text_by: for ``.txt``: ``"line"`` (non-blank lines) or ``"file"`` (whole file).

    Returns:
        The records in file order; a JSON key missing from some rows reads as None.

    Raises:
        ValueError: the file is missing, empty or unparsable, its type is unsupported, or a
            field is absent; the one-line message names the file and the field.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json, .csv or .txt)"
        )
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    try:
        # csv reads its own line ends, so that a quoted cell keeps the newlines it holds.
        with path.open(encoding="utf-8-sig", newline="" if fmt == "csv" else None) as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text: {e}") from None
    if fmt == "csv":
        records = _csv_records(path, text)
    elif fmt == "text":
        lines = text.split("\n") if text_by == "line" else [text]
        records = [{"text": t} for t in lines if t.strip()]
    else:
        records = _json_records(path, text, fmt)
    if not records:
        raise ValueError(f"{path}: empty file (no records)")
    if fields is not None:
        have = list(records[0])
        for f in fields:
            if f not in have:
                raise ValueError(f"{path}: no field {f!r} (fields: {', '.join(have)})")
        records = [{f: r[f] for f in fields} for r in records]
    return records


def load_task(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    source_field: str | None = None,
) -> Task:
    """Read a fine-tuning task file (.jsonl/.json/.csv) for the CLI.

    Args:
        path: the file; see `load_records` for the formats.
        prompt_field: field holding the prompt text.
        response_field: field holding the response text.
        source_field: optional field naming each example's source (task, domain, ...).

    Returns:
        Prompts, responses and sources (None without ``source_field``), as strings.

    Raises:
        ValueError: as `load_records`, or a record has no value (null) for a field; the
            message names the file, the record (0-based, as `TokenizedSet.example_id`) and field.
    """
    wanted = [prompt_field, response_field] + ([source_field] if source_field else [])
    records = load_records(path, fields=wanted)
    columns: dict[str, list[str]] = {}
    for f in wanted:
        col = [r[f] for r in records]
        if None in col:
            raise ValueError(f"{path}: record {col.index(None)} has no value for field {f!r}")
        columns[f] = [str(v) for v in col]
    return Task(
        prompts=columns[prompt_field],
        responses=columns[response_field],
        sources=columns[source_field] if source_field else None,
    )


# Path components never taken into the corpus: test suites, installed packages, IDLE and demos,
# build artefacts, and generated data tables (codecs' mapping tables, pydoc's topic dump).
STDLIB_EXCLUDE = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "site-packages",
        "dist-packages",
        "turtledemo",
        "__pycache__",
        "lib-dynload",
        "ensurepip",
        "encodings",
        "pydoc_data",
    }
)


def stdlib_corpus(
    *,
    max_chars: int = 2_000_000,
    max_file_chars: int | None = None,
    root: str | Path | None = None,
) -> list[str]:
    """The Python standard library's own source files, as a pre-training corpus.

    Files are the ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, in sorted order of their
    relative paths, skipping `STDLIB_EXCLUDE` directories, ``test_*.py`` and ``config-*``
    build directories. The text is read as UTF-8 (undecodable bytes replaced). Same Python
    version, same corpus: nothing random is involved. 2 MB is about 110 modules, ``__future__``
    to ``ctypes`` on CPython 3.11.

    Args:
        max_chars: total characters; the last file is cut so the total is exactly this (or
            everything, if the library is smaller).
        max_file_chars: cut each file to this many characters first (more modules, less of
            each), or None.
        root: library directory to read instead of the running interpreter's.

    Returns:
        One string per file, non-empty.

    Raises:
        ValueError: ``root`` holds no Python files.
    """
    root = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if STDLIB_EXCLUDE.intersection(rel.parts[:-1]) or rel.parts[0].startswith("config-"):
            continue
        if p.name.startswith("test_") or not p.is_file():
            continue
        files.append(rel.as_posix())
    if not files:
        raise ValueError(f"{root}: no Python source files")
    docs, total = [], 0
    for rel in sorted(files):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        text = text[: max_file_chars if max_file_chars is not None else len(text)]
        text = text[: max_chars - total]
        if text:
            docs.append(text)
            total += len(text)
        if total >= max_chars:
            break
    return docs
