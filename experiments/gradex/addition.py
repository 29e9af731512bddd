"""The noisy addition-with-scratchpad task of GradEx's validation experiment (spec §4.3-4.4).

Each example adds two 5-digit numbers (leading digits nonzero) and shows its work, least
significant digit first: step k (k = 0..3) prints the carry flag of that step followed by the
partial sum digits so far (most significant first); the last line is the full sum (5 or 6
digits). Written without the spaces of the reference notebook::

    97990+53728        <- prompt (context, no loss)
    08                 <- 0+8 = 8, carry 0
    118                <- 9+2 = 11: carry 1, digits "18"
    1718
    11718
    151718             <- answer = 97990 + 53728

A *noisy* example keeps the prompt and the layout (line lengths, newlines) but replaces every
output digit, carry flags included, by a uniform random digit. Sources 0..K-n_noisy-1 are clean
and the last ``n_noisy`` are noisy, as in the reference notebook (groups 0-11 clean, 12-19 noisy).

Entry points: `addition_tokenizer` (the 14-symbol character vocabulary), `scratchpad` (one
example's text), `addition_examples` (many, from a key) and `addition_task` (the disjoint splits
of the experiment as `jaxlaw.data.TokenizedSet`, loss on the output tokens only).
"""

from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Bool
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from jaxlaw._types import Key
from jaxlaw.data import ENDOFTEXT, Examples, TextTokenizer, TokenizedSet, tokenize_examples

PAD = "<pad>"
# Digits 0-9 keep their own value as id, so a token row reads as the digits it holds.
SYMBOLS: tuple[str, ...] = tuple("0123456789") + ("+", "\n", PAD, ENDOFTEXT)
N_DIGITS = 5
# Longest row: 12 prompt chars + 4 step lines (2..5 digits) + a 6-digit answer, 5 newlines, eos.
MAX_TOKENS = 12 + (2 + 3 + 4 + 5 + 6) + 4 + 1


def addition_tokenizer() -> TextTokenizer:
    """The character-level tokenizer of the addition task: 14 symbols, one token per character.

    Ids: ``"0"``-``"9"`` are 0-9, ``"+"`` is 10, ``"\\n"`` is 11, ``<pad>`` is 12 and
    ``<|endoftext|>`` (eos) is 13. There is no bos: the prompt's first digit is the context of the
    second. Characters outside the vocabulary encode as ``<pad>``; the task never produces any.
    Save it with `jaxlaw.data.save_tokenizer` to make a model directory the CLI can read.

    Returns:
        The tokenizer, with ``eos_id=13``, ``pad_id=12``, ``bos_id=None``.
    """
    vocab = {s: i for i, s in enumerate(SYMBOLS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    # One token per character, newline included ("." would skip it).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([PAD, ENDOFTEXT])
    return TextTokenizer(tok, eos_id=vocab[ENDOFTEXT], pad_id=vocab[PAD], bos_id=None)


def scratchpad(a: int, b: int) -> tuple[str, str]:
    """Prompt and clean response of ``a + b`` (two 5-digit numbers).

    Example: ``scratchpad(97990, 53728) == ("97990+53728\\n", "08\\n118\\n1718\\n11718\\n151718")``.

    Args:
        a: first addend, 10000..99999.
        b: second addend, 10000..99999.

    Returns:
        ``(prompt, response)``: the prompt ends with a newline; the response is the four step
        lines and the answer joined by newlines (no trailing newline).

    Raises:
        ValueError: an addend is not a 5-digit number with a nonzero leading digit.
    """
    for x in (a, b):
        if not 10 ** (N_DIGITS - 1) <= x < 10**N_DIGITS:
            raise ValueError(f"addends must be 5-digit numbers (10000..99999), got {x}")
    da, db = str(a)[::-1], str(b)[::-1]  # least significant first
    carry, digits, lines = 0, "", []
    for k in range(N_DIGITS):
        s = int(da[k]) + int(db[k]) + carry
        carry, digits = s // 10, str(s % 10) + digits
        if k < N_DIGITS - 1:  # step 4 is the answer itself
            lines.append(f"{carry}{digits}")
    lines.append(str(a + b))
    return f"{a}+{b}\n", "\n".join(lines)


def _corrupt(response: str, digits: np.ndarray) -> str:
    """``response`` with its i-th digit replaced by ``digits[i]`` (newlines kept)."""
    it = iter(digits.tolist())
    return "".join(str(next(it)) if c.isdigit() else c for c in response)


def addition_examples(n: int, *, key: Key, noisy: bool = False) -> Examples:
    """``n`` random addition examples drawn from ``key`` (same key, same examples).

    Addends are uniform over 10000..99999 (``jr.randint``). A noisy example's output digits
    come from ``jr.randint(fold_in(key, 1), (n, 20), 0, 10)``, taken in reading order.

    Args:
        n: number of examples, >= 1.
        key: PRNG key.
        noisy: replace every output digit by a uniform random digit (same layout).

    Returns:
        `jaxlaw.data.Examples` of prompts and responses.

    Raises:
        ValueError: ``n < 1``.
    """
    pairs = _draw_pairs(n, key)
    return _examples(pairs, jr.fold_in(key, 1) if noisy else None)


def _draw_pairs(n: int, key: Key) -> np.ndarray:
    if n < 1:
        raise ValueError(f"need at least one example, got n={n}")
    lo, hi = 10 ** (N_DIGITS - 1), 10**N_DIGITS
    # int32 covers 5-digit numbers, so no x64 is needed for the draw.
    return np.asarray(jr.randint(key, (n, 2), lo, hi, dtype=jnp.int32)).astype(np.int64)


def _examples(pairs: np.ndarray, noise_key: Key | None) -> Examples:
    prompts, responses = zip(*(scratchpad(int(a), int(b)) for a, b in pairs))
    responses = list(responses)
    if noise_key is not None:
        max_digits = MAX_TOKENS - 12 - 4 - 1  # output digits of the longest row
        noise = np.asarray(jr.randint(noise_key, (len(pairs), max_digits), 0, 10))
        responses = [_corrupt(r, noise[i]) for i, r in enumerate(responses)]
    return Examples(list(prompts), responses)


class AdditionTask(NamedTuple):
    """The splits of the GradEx validation experiment, as tokenised sets (loss on outputs only).

    Every split is drawn from one pool of distinct addend pairs, so no pair appears twice.

    Attributes:
        pretrain: clean examples for pre-training the base model (stage A), source ``"pretrain"``.
        train: the K sources of ``per_source`` examples each, source names ``"s00_clean"``...
            ``"s19_noisy"`` (sorted order = source index), sources ordered clean then noisy.
        noisy: True for the noisy sources, ``[sources]``, aligned with ``train.sources``.
        valid: clean target set V (selection and calibration), source ``"valid"``.
        test: clean target set T (reporting only), source ``"test"``.
    """

    pretrain: TokenizedSet
    train: TokenizedSet
    noisy: Bool[np.ndarray, " sources"]
    valid: TokenizedSet
    test: TokenizedSet


def addition_task(
    *,
    key: Key,
    n_sources: int = 20,
    n_noisy: int = 8,
    per_source: int = 25,
    n_pretrain: int = 2000,
    n_valid: int = 512,
    n_test: int = 512,
    seq_len: int = 40,
) -> AdditionTask:
    """Generate the experiment's disjoint splits from ``key`` (spec §4.4 defaults).

    Rule: ``jr.randint(key, (2 * total, 2), ...)`` draws addend pairs; the first ``total``
    distinct pairs, in draw order, are cut into pretrain | sources | valid | test. Source
    examples are grouped consecutively (source k holds rows ``k*per_source ...``); noisy
    outputs come from ``fold_in(key, 1)``.

    Args:
        key: PRNG key; same key, same task, bit for bit.
        n_sources: K, number of sources.
        n_noisy: how many of them (the last ones) are noisy.
        per_source: examples per source.
        n_pretrain: clean pre-training examples (stage A).
        n_valid: size of V.
        n_test: size of T.
        seq_len: padded length (rows have at most 37 tokens, `MAX_TOKENS`).

    Returns:
        `AdditionTask`.

    Raises:
        ValueError: a size is not positive, ``n_noisy`` is outside ``0..n_sources``, or
            ``seq_len < 37``.
    """
    sizes = dict(n_sources=n_sources, per_source=per_source, n_pretrain=n_pretrain)
    sizes |= dict(n_valid=n_valid, n_test=n_test)
    for name, v in sizes.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not 0 <= n_noisy <= n_sources:
        raise ValueError(f"n_noisy must be in 0..n_sources={n_sources}, got {n_noisy}")
    if seq_len < MAX_TOKENS:
        raise ValueError(f"seq_len={seq_len} is shorter than the longest row ({MAX_TOKENS})")
    n_train = n_sources * per_source
    total = n_pretrain + n_train + n_valid + n_test
    pairs = _draw_pairs(2 * total, key)
    _, first = np.unique(pairs[:, 0] * 10**N_DIGITS + pairs[:, 1], return_index=True)
    pairs = pairs[np.sort(first)][:total]  # distinct pairs, in draw order
    if len(pairs) < total:  # astronomically unlikely (9e4^2 possible pairs)
        raise ValueError("could not draw enough distinct addend pairs; use another key")
    cuts = np.cumsum([n_pretrain, n_train, n_valid])
    pre, src, val, tst = np.split(pairs, cuts)

    tok = addition_tokenizer()

    def tokenized(ex: Examples, sources: list[str]) -> TokenizedSet:
        return tokenize_examples(tok, ex.prompts, ex.responses, seq_len=seq_len, sources=sources)

    n_clean = n_sources - n_noisy
    names = [f"s{k:02d}_{'clean' if k < n_clean else 'noisy'}" for k in range(n_sources)]
    if n_sources > 100:  # keep sorted order = source index
        names = [f"s{k:04d}_{n.split('_')[1]}" for k, n in enumerate(names)]
    clean_ex = _examples(src, None)
    noisy_ex = _examples(src, jr.fold_in(key, 1))
    is_noisy = np.repeat(np.arange(n_sources) >= n_clean, per_source)
    train_ex = Examples(
        clean_ex.prompts,
        [n if z else c for c, n, z in zip(clean_ex.responses, noisy_ex.responses, is_noisy)],
    )
    train = tokenized(train_ex, [n for n in names for _ in range(per_source)])
    return AdditionTask(
        pretrain=tokenized(_examples(pre, None), ["pretrain"] * len(pre)),
        train=train,
        noisy=np.arange(n_sources) >= n_clean,
        valid=tokenized(_examples(val, None), ["valid"] * len(val)),
        test=tokenized(_examples(tst, None), ["test"] * len(tst)),
    )
