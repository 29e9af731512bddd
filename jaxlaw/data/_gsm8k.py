"""GSM8K answers and prompts: `gsm8k_final_answer`, `gsm8k_exact_match`, `gsm8k_prompt`.

A GSM8K reference answer is a worked solution ending in ``#### <number>``. The prompt asks the
model for the same format (`GSM8K_INSTRUCTION`), and exact match compares the normalised final
numbers. `jaxlaw.training.gsm8k_accuracy` is the evaluation loop built on these.
"""

import re
from decimal import Decimal
from typing import Any

GSM8K_INSTRUCTION = (
    'Solve the problem step by step. End your answer with a last line "#### <number>" '
    "giving the final numeric answer."
)

# An optional sign and $, then digits with thousands commas ("1,000") or plain ("1000"), then
# an optional decimal part. A comma not followed by exactly three digits ends the number.
_NUMBER = re.compile(r"(-?)\$?\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")


def _normalise(sign: str, digits: str) -> str:
    """``"1,000.00"`` -> ``"1000"``, ``"-0.50"`` -> ``"-0.5"``, ``"-0"`` -> ``"0"``."""
    value = Decimal(sign + digits.replace(",", ""))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def gsm8k_final_answer(text: str) -> str | None:
    """The final numeric answer of a GSM8K solution, normalised for comparison.

    The first number after the first ``####`` (the reference format), with ``$`` and
    thousands commas stripped and trailing decimal zeros dropped, so ``"#### $1,000.00"`` gives
    ``"1000"``. Model output that lacks ``####`` (or has no number after it) falls back to the
    last number anywhere in the text, the usual lenient reading of free-form output.

    Args:
        text: a reference answer or a model's generated text.

    Returns:
        The number as a canonical string (``"72"``, ``"-3"``, ``"0.25"``), or None when the
        text holds no number at all.
    """
    _, marker, tail = text.partition("####")
    if marker:
        found = _NUMBER.search(tail)
        if found:
            return _normalise(*found.groups())
    numbers = _NUMBER.findall(text)
    return _normalise(*numbers[-1]) if numbers else None


def gsm8k_exact_match(pred_text: str, reference_answer: str) -> bool:
    """Whether a model's text ends on the reference's final answer (`gsm8k_final_answer` of both).

    Args:
        pred_text: the generated text.
        reference_answer: GSM8K's ``answer`` field (or just the number).

    Returns:
        True when both final answers exist and are equal after normalisation.

    Raises:
        ValueError: the reference holds no number.
    """
    ref = gsm8k_final_answer(reference_answer)
    if ref is None:
        raise ValueError(f"reference answer has no number: {reference_answer[:60]!r}")
    return gsm8k_final_answer(pred_text) == ref


def gsm8k_prompt(question: str) -> list[dict[str, Any]]:
    """The chat messages that pose a GSM8K question, for a tokenizer's chat template.

    One user turn: the question, a blank line, then `GSM8K_INSTRUCTION` (work step by step and
    end with ``#### <number>``), so that `gsm8k_final_answer` reads the model's answer as it
    reads the reference. No system turn: the template adds its own default, if any.

    Args:
        question: GSM8K's ``question`` field.

    Returns:
        ``[{"role": "user", "content": question + "\\n\\n" + GSM8K_INSTRUCTION}]``.
    """
    return [{"role": "user", "content": f"{question.strip()}\n\n{GSM8K_INSTRUCTION}"}]
