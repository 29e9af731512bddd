"""Tokenised text sets: prompt/response pairs and packed documents as padded arrays plus masks.

Entry points: `format_examples` (records -> prompt and response strings), `tokenize_examples`
(fine-tuning pairs -> `TokenizedSet`, loss on the response only) and `pack_texts` (documents ->
fixed windows for pre-training). Every result has a static shape, ``(examples, seq)``, with the
sequence length picked from a few buckets so that a jitted step compiles once per bucket.

The loss convention shared with `jaxlaw.training`: the model predicts token ``t`` from the
tokens before it, and that prediction counts with weight ``loss_mask[t]``. Position 0 has no
context and is therefore never a target.
"""

import string
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Bool, Int

from ._tokenizer import TextTokenizer

BUCKETS = (32, 64, 128, 256, 512, 1024)


class TruncationWarning(UserWarning):
    """Some examples were longer than the sequence length and were cut."""


class Examples(NamedTuple):
    """Fine-tuning pairs as text: the model reads ``prompts[i]`` and learns ``responses[i]``.

    Attributes:
        prompts: one prompt per example, fed as context (no loss).
        responses: one response per example; its tokens and the closing eos are the targets.
    """

    prompts: list[str]
    responses: list[str]


class TokenizedSet(NamedTuple):
    """A tokenised set: padded token ids and the masks that training and evaluation need.

    Attributes:
        tokens: token ids, shape (examples, seq), int32; padding holds the tokenizer's pad id.
        attention_mask: True on real tokens, False on padding, shape (examples, seq).
        loss_mask: True on target tokens, shape (examples, seq): response tokens and the
            closing eos for fine-tuning, every real token but the first for packed text.
            Never True at position 0 or on padding.
        example_id: position of each row in the input list, shape (examples,), int32.
        source_id: index into ``sources`` of each row's source, shape (examples,), int32.
        sources: source names (sorted); one name, ``"all"``, if none were given.
    """

    tokens: Int[np.ndarray, "examples seq"]
    attention_mask: Bool[np.ndarray, "examples seq"]
    loss_mask: Bool[np.ndarray, "examples seq"]
    example_id: Int[np.ndarray, " examples"]
    source_id: Int[np.ndarray, " examples"]
    sources: tuple[str, ...]

    @property
    def n_examples(self) -> int:
        """Number of rows (``len()`` of a NamedTuple counts its fields instead)."""
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        """Padded sequence length."""
        return self.tokens.shape[1]

    @property
    def n_response_tokens(self) -> int:
        """Number of target tokens, i.e. ``loss_mask.sum()``."""
        return int(self.loss_mask.sum())


def row_lengths(attention_mask: Bool[np.ndarray, "examples seq"]) -> Int[np.ndarray, " examples"]:
    """Tokens each row actually uses: one past its last real position, 0 for an empty row.

    Rows are right-padded, so cutting every column from this length on changes no loss."""
    mask = np.asarray(attention_mask)
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 0).astype(np.int32)


def trim_length(longest: int, seq_len: int) -> int:
    """The padded length for a batch whose longest row has ``longest`` tokens, at most
    ``seq_len``: ``longest`` rounded up to a multiple of 16 up to 256 tokens, then of a
    sixteenth of the next power of two (32 up to 512, 64 up to 1024, ...). At most ~11%
    padding from the rounding, and few distinct lengths, each compiled once.

    Raises:
        ValueError: ``seq_len < 1``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    longest = max(int(longest), 1)
    step = max(16, (1 << (longest - 1).bit_length()) // 16)
    return min(-(-longest // step) * step, seq_len)


def take(ts: TokenizedSet, idx: Any) -> TokenizedSet:
    """Rows ``idx`` of a tokenised set; ids and source names are kept, so rows stay traceable.

    Args:
        ts: the set.
        idx: anything numpy can index axis 0 with: int array (examples,), bool mask, slice.

    Returns:
        The subset, with the same ``seq_len`` and ``sources``.
    """
    if isinstance(idx, (int, np.integer)):
        idx = [idx]  # keep the examples axis
    return TokenizedSet(
        tokens=ts.tokens[idx],
        attention_mask=ts.attention_mask[idx],
        loss_mask=ts.loss_mask[idx],
        example_id=ts.example_id[idx],
        source_id=ts.source_id[idx],
        sources=ts.sources,
    )


def format_examples(
    records: Sequence[Mapping[str, Any]],
    *,
    prompt: str = "{prompt}",
    response: str = "{response}",
) -> Examples:
    """Fill a prompt and a response template from each record (``str.format`` syntax).

    Example::

        format_examples(recs, prompt="Q: {question}\\nA: ", response="{answer}")

    Args:
        records: rows such as those of `load_records`; values are formatted with ``str``.
        prompt: template of the prompt, naming record fields in braces.
        response: template of the response.

    Returns:
        The prompts and responses, one per record, in order.

    Raises:
        ValueError: a template names a field a record lacks (or that is None), or is malformed.
    """
    prompts, responses = [], []
    for which, template, out in (("prompt", prompt, prompts), ("response", response, responses)):
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as e:
            raise ValueError(f"{which} template {template!r} is malformed: {e}") from None
        if "" in fields or any(f.isdigit() for f in fields):
            raise ValueError(f"{which} template {template!r} must name fields, e.g. {{prompt}}")
        roots = sorted({f.split(".")[0].split("[")[0] for f in fields})
        for i, rec in enumerate(records):
            missing = [f for f in roots if rec.get(f) is None]
            if missing:
                raise ValueError(
                    f"record {i}: {which} template {template!r} needs field {missing[0]!r}; "
                    f"the record has {', '.join(map(repr, rec)) or 'no fields'}"
                    + (" (its value is None)" if missing[0] in rec else "")
                )
            out.append(template.format_map(rec))
    return Examples(prompts, responses)


def _source_ids(sources: Sequence[str] | None, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    if sources is None:
        return np.zeros(n, np.int32), ("all",)
    if len(sources) != n:
        raise ValueError(f"sources has {len(sources)} entries for {n} examples")
    names = tuple(sorted(set(sources)))
    lookup = {s: i for i, s in enumerate(names)}
    return np.array([lookup[s] for s in sources], np.int32), names


def tokenize_examples(
    tokenizer: TextTokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    seq_len: int | None = None,
    buckets: Sequence[int] = BUCKETS,
    sources: Sequence[str] | None = None,
    add_bos: bool | None = None,
) -> TokenizedSet:
    """Tokenise prompt/response pairs for fine-tuning, with the loss on the response only.

    Each row is ``[bos] + prompt + response + [eos]``, padded with the pad id to ``seq_len``;
    ``loss_mask`` is True on the response tokens and the eos. Prompt and response are encoded
    separately, so no token straddles the boundary.

    Truncation rule, for a row longer than ``seq_len``: the targets (response + eos) are kept
    and the prompt is cut from the left, keeping its end, which sits next to the response; bos
    stays at position 0. If the targets alone do not fit, the prompt is dropped except for one
    context token (bos, else its last token) and the targets are cut from the right. So a row
    always keeps ``min(len(response) + 1, seq_len - 1)`` targets. A `TruncationWarning` reports
    how many rows were cut. (With no bos and an empty prompt the first response token becomes
    the context, as position 0 cannot be a target.)

    Args:
        tokenizer: the tokenizer (see `load_tokenizer`, `train_tokenizer`).
        prompts: prompt strings, one per example.
        responses: response strings, one per example.
        seq_len: padded length; None picks the smallest of ``buckets`` that holds the longest
            row, or the largest bucket (truncating) if none does.
        buckets: candidate lengths for ``seq_len=None``, ascending.
        sources: a source name per example (e.g. the task it comes from), or None.
        add_bos: put the tokenizer's bos at position 0; None means "if it has one".

    Returns:
        The tokenised set; ``example_id`` is each row's position in ``prompts``.

    Raises:
        ValueError: empty or mismatched inputs, ``seq_len < 2``, or ``add_bos=True`` with a
            tokenizer that has no bos token.
    """
    n = len(prompts)
    if n != len(responses):
        raise ValueError(f"{n} prompts but {len(responses)} responses")
    if n == 0:
        raise ValueError("no examples to tokenise")
    source_id, names = _source_ids(sources, n)
    if add_bos is None:
        add_bos = tokenizer.bos_id is not None
    elif add_bos and tokenizer.bos_id is None:
        raise ValueError("add_bos=True but the tokenizer has no bos token")
    bos = [tokenizer.bos_id] if add_bos else []

    p_ids = tokenizer.encode_batch(prompts)
    r_ids = tokenizer.encode_batch(responses)
    longest = max(len(bos) + len(p) + len(r) + 1 for p, r in zip(p_ids, r_ids))
    if seq_len is None:
        if not buckets:
            raise ValueError("seq_len=None needs at least one bucket")
        seq_len = next((b for b in sorted(buckets) if b >= longest), max(buckets))
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} leaves no room for a target (need >= 2)")

    tokens = np.full((n, seq_len), tokenizer.pad_id, np.int32)
    attention = np.zeros((n, seq_len), bool)
    loss = np.zeros((n, seq_len), bool)
    n_cut, n_cut_response = 0, 0
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        context, targets = bos + p, r + [tokenizer.eos_id]
        if not context:
            context, targets = targets[:1], targets[1:]
        n_t = min(len(targets), seq_len - 1)
        n_c = min(len(context), seq_len - n_t)  # >= 1, since n_t <= seq_len - 1
        # Cut the prompt from the left, but never the bos at position 0.
        kept = bos + p[len(p) - (n_c - len(bos)) :] if add_bos else context[len(context) - n_c :]
        row = kept + targets[:n_t]
        tokens[i, : len(row)] = row
        attention[i, : len(row)] = True
        loss[i, n_c : len(row)] = True
        if n_t < len(targets) or n_c < len(context):
            n_cut += 1
            n_cut_response += n_t < len(targets)
    if n_cut:
        warnings.warn(
            f"tokenize_examples: {n_cut} of {n} examples are longer than seq_len={seq_len} "
            f"tokens and were truncated (prompt cut from the left); {n_cut_response} of them "
            "also lost response tokens",
            TruncationWarning,
            stacklevel=2,
        )
    return TokenizedSet(
        tokens=tokens,
        attention_mask=attention,
        loss_mask=loss,
        example_id=np.arange(n, dtype=np.int32),
        source_id=source_id,
        sources=names,
    )


def pack_texts(
    tokenizer: TextTokenizer, texts: Sequence[str], *, seq_len: int, source: str = "text"
) -> TokenizedSet:
    """Pack documents into fixed windows for pre-training (next-token loss on every token).

    The documents are encoded, each followed by eos, concatenated into one stream and cut into
    consecutive windows of ``seq_len`` tokens, so every token appears exactly once, in order.
    Every position but the first of a window is a target (the first has no context inside the
    window). The last window is padded with the pad id and masked.

    Args:
        tokenizer: the tokenizer.
        texts: documents, in order.
        seq_len: window length, at least 2.
        source: the single source name of the result.

    Returns:
        The windows; ``example_id`` is the window index, ``source_id`` is 0.

    Raises:
        ValueError: no texts, or ``seq_len < 2``.
    """
    if len(texts) == 0:
        raise ValueError("no texts to pack")
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} leaves no room for a target (need >= 2)")
    eos = np.array([tokenizer.eos_id], np.int32)
    stream = np.concatenate(
        [part for ids in tokenizer.encode_batch(texts) for part in (np.asarray(ids, np.int32), eos)]
    )
    n_windows = -(-stream.size // seq_len)
    tokens = np.full(n_windows * seq_len, tokenizer.pad_id, np.int32)
    tokens[: stream.size] = stream
    attention = np.arange(n_windows * seq_len) < stream.size
    attention = attention.reshape(n_windows, seq_len)  # (examples, seq)
    loss = attention.copy()
    loss[:, 0] = False
    return TokenizedSet(
        tokens=tokens.reshape(n_windows, seq_len),
        attention_mask=attention,
        loss_mask=loss,
        example_id=np.arange(n_windows, dtype=np.int32),
        source_id=np.zeros(n_windows, np.int32),
        sources=(source,),
    )
