"""Tests for GSM8K scoring (`jaxlaw.data` answers and prompts) and `jaxlaw.training.gsm8k_accuracy`.

The evaluation loop is checked against per-question `generate` calls (no batching, no
padding), and with a forced `generate` whose outputs are known; the real SmolLM2 runs four
test questions end to end.
"""

import dataclasses
import inspect
import time

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxlaw.training._gsm8k as gsm8k_module
from jaxlaw.data import (
    GSM8K_INSTRUCTION,
    gsm8k_exact_match,
    gsm8k_final_answer,
    gsm8k_prompt,
    load_records,
    train_tokenizer,
)
from jaxlaw.models import Generation, ModelConfig, generate, init_model
from jaxlaw.training import GSM8KResult, gsm8k_accuracy

REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    "text, want",
    [
        (REFERENCE, "72"),
        ("so #### 1,000.00", "1000"),
        ("#### $1,234", "1234"),
        ("#### -5", "-5"),
        ("#### 0.50", "0.5"),
        ("#### .5 dollars", "0.5"),
        ("#### -0", "0"),
        ("#### 18\n\nQuestion: what about 7?", "18"),  # the first number after ####
        ("She has 3 apples, then 5. The answer is 8.", "8"),  # no ####: the last number
        ("costs $2,500 in total", "2500"),
        ("1,00 is not a thousands group", "0"),  # "1,00": the comma ends "1"; then "00"
        ("#### no number, but 12 before", "12"),  # nothing after ####: the last number
        ("no digits here", None),
        ("", None),
    ],
)
def test_final_answer(text, want):
    assert gsm8k_final_answer(text) == want


@given(st.integers(-(10**12), 10**12), st.booleans(), st.booleans(), st.integers(0, 3))
def test_formatted_integer_round_trips(n, commas, dollar, zeros):
    """Any integer written with thousands commas, a $ and trailing decimal zeros reads back."""
    body = f"{abs(n):,}" if commas else str(abs(n))
    body += "." + "0" * zeros if zeros else ""
    text = f"The total is {'-' if n < 0 else ''}{'$' if dollar else ''}{body}.\n#### "
    text += f"{'-' if n < 0 else ''}{'$' if dollar else ''}{body}"
    assert gsm8k_final_answer(text) == str(n)
    assert gsm8k_final_answer(text.split("####")[0]) == str(n)  # the fallback reads it too


def test_exact_match():
    assert gsm8k_exact_match("... so she sold 72 clips.\n#### 72", REFERENCE)
    assert gsm8k_exact_match("The answer is $72.00", REFERENCE)
    assert not gsm8k_exact_match("#### 73", REFERENCE)
    assert not gsm8k_exact_match("I do not know", REFERENCE)
    assert gsm8k_exact_match("#### 1,000", "1000")
    with pytest.raises(ValueError, match="reference answer has no number: 'none'"):
        gsm8k_exact_match("#### 1", "none")


def test_prompt_format():
    messages = gsm8k_prompt("  How many clips?  ")
    assert messages == [{"role": "user", "content": f"How many clips?\n\n{GSM8K_INSTRUCTION}"}]
    assert '"#### <number>"' in GSM8K_INSTRUCTION


# --------------------------------------------------------------------------- the evaluation loop

TEMPLATE = (
    "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 5 boxes?",
    "Sara reads 20 pages a day for 7 days. How many pages does she read?",
    "A shirt costs $15. What do 3 shirts cost?",
    "There are 9 birds and 2 fly away. How many are left?",
]
ANSWERS = ["3 + 4 = 7\n#### 7", "12 * 5 = 60\n#### 60", "#### 140", "#### $45", "#### 7"]
RECORDS = [{"question": q, "answer": a} for q, a in zip(QUESTIONS, ANSWERS)]


@pytest.fixture(scope="module")
def tiny():
    """A byte-level BPE trained on the questions (with a chat template) and a tiny llama."""
    corpus = [f"{r['question']}\n{r['answer']}\n{GSM8K_INSTRUCTION}" for r in RECORDS] * 20
    tok = dataclasses.replace(train_tokenizer(corpus, vocab_size=300), chat_template=TEMPLATE)
    config = ModelConfig.tiny("llama", vocab_size=tok.vocab_size)
    return init_model(config, key=jr.key(0)), tok


def test_accuracy_batches_like_one_question_at_a_time(tiny):
    """Length-grouped, left-padded, filled batches give each question the answer that an
    unpadded `generate` on it alone gives, in record order."""
    model, tok = tiny
    result = gsm8k_accuracy(
        model, tok, RECORDS, n=5, max_new_tokens=6, batch_size=2, progress=False
    )
    assert isinstance(result, GSM8KResult)
    assert result.correct.shape == (5,) and result.correct.dtype == bool
    assert len(result.answers) == 5
    assert result.references == ("7", "60", "140", "45", "7")
    assert result.accuracy == result.correct.mean()
    for r, answer in zip(RECORDS, result.answers):
        ids = tok.encode(tok.apply_chat_template(gsm8k_prompt(r["question"])))
        out = generate(model, np.array([ids]), max_new_tokens=6, stop_tokens=(tok.eos_id,))
        n = int(out.lengths[0]) - int(out.finished[0])
        assert answer == tok.decode(np.asarray(out.tokens[0, :n]).tolist())


def test_forced_outputs_score_as_their_text(tiny, monkeypatch):
    """A `generate` that writes the reference solution (then eos) for even records and a wrong
    number for odd ones scores exactly those: correct = [T, F, T, F, T]."""
    model, tok = tiny

    def forced(model, tokens, mask, *, max_new_tokens, stop_tokens, pad_id):
        rows, lengths = [], []
        for row, m in zip(tokens, mask):
            prompt = tok.decode(row[m].tolist())
            i = next(i for i, q in enumerate(QUESTIONS) if q in prompt)
            text = ANSWERS[i] if i % 2 == 0 else "#### 999"
            ids = tok.encode(text)[: max_new_tokens - 1] + [stop_tokens[0]]
            lengths.append(len(ids))
            rows.append(ids + [pad_id] * (max_new_tokens - len(ids)))
        n = len(rows)
        return Generation(jnp.array(rows), jnp.array(lengths), jnp.ones(n, bool))

    monkeypatch.setattr(gsm8k_module, "generate", forced)
    result = gsm8k_accuracy(
        model, tok, RECORDS, n=5, max_new_tokens=64, batch_size=3, progress=False
    )
    np.testing.assert_array_equal(result.correct, [True, False, True, False, True])
    assert result.accuracy == 0.6
    assert result.answers[0] == ANSWERS[0] and result.answers[1] == "#### 999"


def test_prompt_function_poses_the_questions(tiny, monkeypatch):
    """``prompt=`` replaces `gsm8k_prompt`: the prompts generate sees are the chat template of
    exactly what it returns (here the bare question, as a model fine-tuned on it expects)."""
    model, tok = tiny
    seen = []

    def spy(model, tokens, mask, **kw):
        seen.extend(tok.decode(row[m].tolist()) for row, m in zip(tokens, mask))
        return generate(model, tokens, mask, **kw)

    monkeypatch.setattr(gsm8k_module, "generate", spy)
    bare = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    gsm8k_accuracy(model, tok, RECORDS, n=2, max_new_tokens=2, prompt=bare, progress=False)
    want = {
        tok.decode(tok.encode(tok.apply_chat_template(bare(r["question"])))) for r in RECORDS[:2]
    }
    assert set(seen) == want and not any(GSM8K_INSTRUCTION in s for s in seen)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n=0), r"n must be in 1..5 \(the records given\), got 0"),
        (dict(n=6), r"n must be in 1..5 \(the records given\), got 6"),
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(records=[{"question": "q"}]), r"record 0 lacks 'question' or 'answer'"),
        (dict(records=[{"question": "q", "answer": "none"}]), "record 0: reference answer has no"),
    ],
)
def test_bad_input(tiny, change, message):
    model, tok = tiny
    kw = dict(records=RECORDS, n=1, progress=False) | change
    with pytest.raises(ValueError, match=message):
        inspect.unwrap(gsm8k_accuracy)(model, tok, **kw)


def test_needs_a_chat_template(tiny):
    model, tok = tiny
    plain = dataclasses.replace(tok, chat_template=None)
    with pytest.raises(ValueError, match="this tokenizer has no chat template"):
        gsm8k_accuracy(model, plain, RECORDS, n=1, progress=False)


# --------------------------------------------------------------------------- the real SmolLM2


def test_real_four_questions_end_to_end(smollm2, text_root):
    """Four GSM8K test questions, greedy, 128 new tokens each, in one batch: 12-16 s here
    (compilation included, 2 CPU cores shared with other work)."""
    model, tok = smollm2
    records = load_records(text_root / "text" / "gsm8k" / "test.jsonl")[:4]
    start = time.perf_counter()
    result = gsm8k_accuracy(model, tok, records, n=4, max_new_tokens=128, progress=False)
    seconds = time.perf_counter() - start
    assert result.correct.shape == (4,)
    assert result.references == ("18", "3", "70000", "540")
    assert all(len(a) > 50 for a in result.answers)  # it worked the problems
    assert "16" in result.answers[0]  # Janet's ducks lay 16 eggs per day
    # Loose on purpose (wall time on shared cores): catches a recompile per step, not load.
    assert seconds < 60, seconds
