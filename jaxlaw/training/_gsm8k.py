"""GSM8K evaluation by greedy generation: `gsm8k_accuracy` and its `GSM8KResult`.

Each question is posed with `jaxlaw.data.gsm8k_prompt` (or the caller's ``prompt``) through the
tokenizer's chat template, decoded greedily by `jaxlaw.models.generate` until the tokenizer's
eos, and scored by `jaxlaw.data.gsm8k_exact_match` against the record's reference answer::

    result = gsm8k_accuracy(model, tok, load_records("gsm8k/test.jsonl"), n=200)
    print(result.accuracy)
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..data import TextTokenizer, gsm8k_exact_match, gsm8k_final_answer, gsm8k_prompt
from ..models import Decoder, generate


class GSM8KResult(NamedTuple):
    """What `gsm8k_accuracy` returns, in record order.

    Attributes:
        accuracy: share of the ``n`` questions answered exactly right (0 to 1).
        correct: ``[n]`` bool, per question.
        answers: the model's decoded answers (without the closing eos).
        references: the references' normalised final answers (`gsm8k_final_answer`).
    """

    accuracy: float
    correct: np.ndarray
    answers: tuple[str, ...]
    references: tuple[str, ...]


def gsm8k_accuracy(
    model: Decoder,
    tokenizer: TextTokenizer,
    records: Sequence[dict[str, Any]],
    *,
    n: int,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    prompt: Callable[[str], list[dict[str, Any]]] = gsm8k_prompt,
    progress: bool = True,
) -> GSM8KResult:
    """Exact-match accuracy of greedy answers on the first ``n`` GSM8K records.

    Prompts are grouped by token length (shortest first) into left-padded batches of
    ``min(batch_size, n)`` rows; the last batch is filled up with copies of one of its rows,
    so every batch has one shape and `generate` compiles once per prompt-width bucket. Decoding
    stops at the tokenizer's eos or after ``max_new_tokens`` tokens (an unfinished answer is
    scored as it stands).

    Args:
        model: the language model (plain or LoRA-adapted).
        tokenizer: its tokenizer, with a chat template.
        records: dicts with ``"question"`` and ``"answer"`` (GSM8K's jsonl fields).
        n: how many records to evaluate, from the first.
        max_new_tokens: generation budget per answer.
        batch_size: questions decoded at once.
        prompt: question -> chat messages; pose questions as the model was fine-tuned on them
            (default `jaxlaw.data.gsm8k_prompt`: the question plus a "#### <number>" request).
        progress: show a progress bar over questions (stderr).

    Returns:
        `GSM8KResult` of accuracy, per-question correctness, answers and references.

    Raises:
        ValueError: ``n`` outside ``1 .. len(records)``, ``batch_size < 1``, a record without
            ``question``/``answer``, a reference without a number, or no chat template.
    """
    if not 1 <= n <= len(records):
        raise ValueError(f"n must be in 1..{len(records)} (the records given), got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    records = list(records[:n])
    for i, r in enumerate(records):
        if not {"question", "answer"} <= set(r):
            raise ValueError(f"record {i} lacks 'question' or 'answer': keys {sorted(r)}")
    references = []
    for i, r in enumerate(records):
        ref = gsm8k_final_answer(r["answer"])
        if ref is None:
            raise ValueError(f"record {i}: reference answer has no number")
        references.append(ref)
    texts = [tokenizer.apply_chat_template(prompt(r["question"])) for r in records]
    prompts = tokenizer.encode_batch(texts)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    rows_per_batch = min(batch_size, n)
    answers: list[str] = [""] * n
    bar = Progress(
        TextColumn("GSM8K"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays clean for results
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("gsm8k", total=n)
        for lo in range(0, n, rows_per_batch):
            rows = order[lo : lo + rows_per_batch]
            filled = np.concatenate([rows, np.full(rows_per_batch - len(rows), rows[0])])
            width = max(len(prompts[i]) for i in rows)
            tokens = np.full((rows_per_batch, width), tokenizer.pad_id, np.int32)
            mask = np.zeros((rows_per_batch, width), bool)
            for j, i in enumerate(filled):
                tokens[j, width - len(prompts[i]) :] = prompts[i]
                mask[j, width - len(prompts[i]) :] = True
            out = generate(
                model,
                tokens,
                mask,
                max_new_tokens=max_new_tokens,
                stop_tokens=(tokenizer.eos_id,),
                pad_id=tokenizer.pad_id,
            )
            new, lengths, finished = jax.device_get(tuple(out))
            for j, i in enumerate(rows):
                kept = int(lengths[j]) - int(finished[j])  # drop the closing eos
                answers[i] = tokenizer.decode(new[j, :kept].tolist())
            bar.advance(task, len(rows))
    correct = np.array([gsm8k_exact_match(a, r["answer"]) for a, r in zip(answers, records)])
    return GSM8KResult(float(correct.mean()), correct, tuple(answers), tuple(references))
