"""The demo's data: its fine-tuning task and its pre-training corpora, all generated offline.

`doctest_task` generates Python REPL examples (the target task); `stdlib_docs` keeps the
docstrings of the standard library's source (`jaxlaw.data.stdlib_corpus`), a second
pre-training corpus beside the source itself: English prose, with the stdlib's own ``>>>``
doctests in it.
"""

import ast
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from jaxlaw.data import Examples, stdlib_corpus

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(source: str) -> str:
    """The docstrings of a module's source, in source order, blank-line separated."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # the corpus cuts its last file mid-statement
        return ""
    docs = [
        (node.body[0].lineno, ast.get_docstring(node, clean=True))
        for node in ast.walk(tree)
        if isinstance(node, _DOC_NODES) and ast.get_docstring(node, clean=True)
    ]
    return "\n\n".join(text for _, text in sorted(docs))


def stdlib_docs(max_chars: int, *, scan_chars: int = 10_000_000) -> list[str]:
    """The standard library's docstrings, one document per module: English prose with doctests.

    Modules come from ``stdlib_corpus(max_chars=scan_chars)`` in its order; about a sixth of
    the stdlib's source is docstrings, so 1M characters of them take ~6M of source.

    Args:
        max_chars: total characters; the last document is cut so the total is exactly this
            (or everything, if the scanned modules hold less).
        scan_chars: source characters to scan.

    Returns:
        One string per module that has docstrings, non-empty.
    """
    docs, total = [], 0
    for source in stdlib_corpus(max_chars=scan_chars):
        text = _docstrings(source)[: max_chars - total]
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


def doctest_task(n: int, *, key: jax.Array, families: Sequence[str] = DOCTEST_FAMILIES) -> Examples:
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
