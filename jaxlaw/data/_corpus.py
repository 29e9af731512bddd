"""Local text sources: record files, fine-tuning task files, and the built-in demo's data.

Entry points: `load_records` (.jsonl/.json/.csv/.txt through ``datasets``, offline, nothing
cached on disk), `load_task` (a prompt/response file for the CLI), `stdlib_corpus` (the Python
standard library's own source, a pre-training corpus every machine has) and `doctest_task`
(generated Python REPL examples, the demo's fine-tuning target; the stdlib's docstrings are full
of such doctests, so a model pre-trained on `stdlib_corpus` starts with partial knowledge).
"""

import contextlib
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._types import Key
from ._text import Examples

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}


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


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' progress bars and logs for one call, then restore its settings."""
    from datasets.utils import logging as ds_logging

    bars, level = ds_logging.is_progress_bar_enabled(), ds_logging.get_verbosity()
    ds_logging.disable_progress_bar()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # parse errors come back as our ValueError
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if bars:
            ds_logging.enable_progress_bar()


def _root_cause(e: BaseException) -> str:
    for _ in range(20):  # bounded: a chain can in principle loop back on itself
        inner = e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def load_records(
    path: str | Path,
    *,
    fields: Sequence[str] | None = None,
    text_by: Literal["line", "file"] = "line",
) -> list[dict[str, Any]]:
    """Read a local data file into a list of records (dicts), through ``datasets``, offline.

    Formats, by suffix: ``.jsonl`` (one JSON object a line), ``.json`` (a list of objects),
    ``.csv`` (header row; every cell read as a string, empty cells as ``""``) and ``.txt``
    (field ``"text"``: one record per non-empty line, or one for the whole file). The file is
    parsed into memory with a temporary cache that is deleted afterwards, so nothing is written
    beside the data or into the repository. ``datasets`` needs no network for these formats;
    set ``HF_DATASETS_OFFLINE=1`` to be sure.

    Args:
        path: the file.
        fields: fields every record must have; if given, records keep only these.
        text_by: for ``.txt``: ``"line"`` (non-empty lines) or ``"file"`` (whole file).

    Returns:
        The records in file order; a JSON key missing from some rows reads as None.

    Raises:
        ValueError: the file is missing, empty or unparsable, its type is unsupported, or a
            field is absent; the one-line message names the file and the field.
    """
    path = Path(path)
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json, .csv or .txt)"
        )
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        import csv

        from datasets import Features, Value

        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if not header:
            raise ValueError(f"{path}: empty file (no header row)")
        # Strings throughout: "04" must not become 4, nor "NA" a missing value.
        kwargs = dict(
            keep_default_na=False, features=Features({h: Value("string") for h in header})
        )
    elif builder == "text":
        kwargs = dict(sample_by="line" if text_by == "line" else "document")

    from datasets import load_dataset

    with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="jaxlaw-datasets-") as cache:
        try:
            ds = load_dataset(
                builder,
                data_files=str(path.resolve()),
                split="train",
                keep_in_memory=True,
                cache_dir=cache,
                **kwargs,
            )
        except Exception as e:  # datasets wraps parser errors in several exception types
            raise ValueError(f"{path}: cannot read as {builder}: {_root_cause(e)}") from None
        records = ds.to_list()
    if builder == "text" and text_by == "line":
        records = [r for r in records if r["text"].strip()]
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


# The demo task: short Python REPL exchanges. Each family is a list of expression makers; a
# maker reads random ints from a `_Draw` (one row of the single randint call) and returns
# source text. Answers come from evaluating that text, never from a hand-written formula.
DOCTEST_FAMILIES = ("arith", "str", "list", "builtin")
_N_SLOTS = 8  # random ints per example; the hungriest maker reads 6
_WORDS = (
    "spam eggs ham abc cat dog code data list text word name line file key value "
    "python hello world test node tree"
).split()
_LETTERS = "abcdefghij"  # few letters, so that count/find/sorted see repeats and hits


class _Draw:
    """Host-side view of one example's random ints, mapped onto ranges."""

    def __init__(self, row: np.ndarray):
        self.row, self.i = [int(v) for v in row], 0

    def num(self, lo: int, hi: int) -> int:
        v = lo + self.row[self.i] % (hi - lo + 1)
        self.i += 1
        return v

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.num(0, len(options) - 1)]

    def word(self) -> str:
        return self.pick(_WORDS)

    def letters(self, n: int) -> str:
        return "".join(self.pick(_LETTERS) for _ in range(n))

    def ints(self, n: int, hi: int = 99) -> list[int]:
        return [self.num(0, hi) for _ in range(n)]


def _list(xs: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


_MAKERS = {
    "arith": [
        lambda d: f"{d.num(2, 99)} + {d.num(2, 99)}",
        lambda d: f"{d.num(2, 99)} - {d.num(2, 99)}",
        lambda d: f"{d.num(2, 19)} * {d.num(2, 19)}",
        lambda d: f"{d.num(10, 99)} // {d.num(2, 9)}",
        lambda d: f"{d.num(10, 99)} % {d.num(2, 9)}",
        lambda d: f"{d.num(2, 9)} ** {d.num(0, 4)}",
        lambda d: f"({d.num(1, 9)} + {d.num(1, 9)}) * {d.num(2, 9)}",
        lambda d: f"divmod({d.num(10, 99)}, {d.num(2, 9)})",
    ],
    "str": [
        lambda d: f"'{d.word()}'.upper()",
        lambda d: f"'{d.word().upper()}'.lower()",
        lambda d: f"'{d.word()}'.capitalize()",
        lambda d: f"'{d.word()}'[::-1]",
        lambda d: f"'{d.letters(2)}' * {d.num(2, 4)}",
        lambda d: f"'{d.word()}'.find('{d.letters(1)}')",
        lambda d: f"'{d.letters(5)}'.count('{d.letters(1)}')",
        lambda d: f"'{(w := d.word())}'.replace('{d.pick(w)}', '{d.letters(1)}')",
        lambda d: f"'{d.word()} {d.word()}'.split()",
        lambda d: f"'-'.join('{d.letters(3)}')",
        lambda d: f"'{(w := d.word())}'.startswith('{d.pick([w[:2], d.letters(2)])}')",
        lambda d: f"'{d.word()}' + '{d.word()}'",
    ],
    "list": [
        lambda d: f"{_list(d.ints(4))}[{d.num(-4, 3)}]",
        lambda d: f"{_list(d.ints(2))} + {_list(d.ints(2))}",
        lambda d: f"{_list(d.ints(4))}[{d.num(0, 2)}:{d.num(2, 4)}]",
        lambda d: f"sum({_list(d.ints(4, 20))})",
        lambda d: f"list(reversed({_list(d.ints(4))}))",
        lambda d: f"[x * {d.num(2, 5)} for x in {_list(d.ints(3, 20))}]",
        lambda d: f"list(range({d.num(0, 5)}, {d.num(5, 10)}))",
        lambda d: f"{_list(xs := d.ints(4, 9))}.index({xs[d.num(0, 3)]})",
        lambda d: f"{_list(d.ints(5, 3))}.count({d.num(0, 3)})",
    ],
    "builtin": [
        lambda d: f"len('{d.word()}')",
        lambda d: f"len({_list(d.ints(d.num(1, 5)))})",
        lambda d: f"min({_list(d.ints(4))})",
        lambda d: f"max({d.num(0, 99)}, {d.num(0, 99)}, {d.num(0, 99)})",
        lambda d: f"sorted('{d.letters(d.num(3, 5))}')",
        lambda d: f"sorted({_list(d.ints(4))})",
        lambda d: f"sorted({_list(d.ints(4))}, reverse=True)",
        lambda d: f"abs({d.num(-99, -1)})",
        lambda d: f"str({d.num(0, 99)}) + '{d.letters(2)}'",
        lambda d: f"list('{d.letters(3)}')",
        lambda d: f"int('{d.num(0, 99)}') + {d.num(0, 9)}",
    ],
}
# Only what the makers use, so that evaluating a prompt cannot reach anything else.
_EVAL_BUILTINS = {
    f.__name__: f
    for f in (abs, divmod, int, len, list, max, min, range, reversed, sorted, str, sum)
}


def _answer(prompt: str) -> str:
    """What the REPL prints for a prompt ``">>> <expression>\\n"``: the ``repr`` of its value."""
    expr = prompt.removeprefix(">>> ").rstrip("\n")
    return repr(eval(expr, {"__builtins__": _EVAL_BUILTINS}, {}))


def doctest_task(n: int, *, key: Key, families: Sequence[str] = DOCTEST_FAMILIES) -> Examples:
    """Generate Python REPL examples, e.g. ``">>> sorted('bca')\\n"`` -> ``"['a', 'b', 'c']"``.

    Families: integer arithmetic, string methods, list operations, and builtins (len, min, max,
    sorted, abs, ...). Each example picks a family and an expression shape uniformly, fills it
    with small random values, and its response is what Python prints for it, obtained by
    evaluating the expression. All random ints come from one ``jax.random.randint`` call; the
    text is built on the host. Same key, same examples. With a 1024-token BPE trained on
    `stdlib_corpus()`, bos + prompt + response + eos is ~20 tokens (median), under 48 for all,
    so `tokenize_examples` picks the 64 bucket; the response + eos is ~6 tokens.

    Args:
        n: number of examples.
        key: a ``jax.random`` key.
        families: which of `DOCTEST_FAMILIES` to draw from.

    Returns:
        ``n`` prompts and responses.

    Raises:
        ValueError: an unknown family name, or ``n < 0``.
    """
    unknown = [f for f in families if f not in _MAKERS]
    if unknown or not families:
        raise ValueError(f"unknown doctest families {unknown}; choose from {DOCTEST_FAMILIES}")
    if n < 0:
        raise ValueError(f"n={n} is negative")
    # Column 0 picks the family, column 1 the shape, the rest fill in values; int32 so that the
    # draws are the same with and without jax_enable_x64.
    draws = np.asarray(jr.randint(key, (n, 2 + _N_SLOTS), 0, 2**30, dtype=jnp.int32))
    prompts, responses = [], []
    for row in draws:
        makers = _MAKERS[families[row[0] % len(families)]]
        prompt = f">>> {makers[row[1] % len(makers)](_Draw(row[2:]))}\n"
        prompts.append(prompt)
        responses.append(_answer(prompt))
    return Examples(prompts, responses)
