"""Padding on real text (issue 13): GSM8K through the real SmolLM2 tokenizer and its chat
template, padded to 512 tokens as the fine-tuning pipeline does. Length-grouped training
batches (`TrainConfig.group_by_length`) and evaluation batches (`evaluate`'s default plan) must
keep padding under 15% of the tokens they run; the full-width batches they replace are about
60% padding."""

import jax
import pytest
from flax import nnx

from jaxlaw.data import load_records, load_tokenizer, row_lengths, tokenize_examples
from jaxlaw.lora import LoraConfig, apply_lora
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import TrainConfig, length_batches, train

MAX_PADDING = 0.15


@pytest.fixture(scope="module")
def gsm8k_sets(smollm2_gguf, text_root):
    tok = load_tokenizer(smollm2_gguf)

    def tokenized(split: str, n: int):
        recs = load_records(text_root / f"text/gsm8k/{split}.jsonl")[:n]
        prompts = [
            tok.apply_chat_template([{"role": "user", "content": r["question"]}]) for r in recs
        ]
        return tokenize_examples(tok, prompts, [r["answer"] for r in recs], seq_len=512)

    return tok, tokenized("train", 800), tokenized("test", 400)


def _padding(rows_and_lengths, lengths) -> float:
    real = sum(int(lengths[r].sum()) for r, _ in rows_and_lengths)
    padded = sum(len(r) * seq for r, seq in rows_and_lengths)
    return 1 - real / padded


def test_full_width_batches_are_mostly_padding(gsm8k_sets):
    _, train_set, _ = gsm8k_sets
    full = 1 - train_set.attention_mask.mean()
    assert full > 0.4  # what grouping is for: ~60% of a 512-wide batch is padding


def test_grouped_training_batches_pad_under_15_percent(gsm8k_sets):
    tok, train_set, _ = gsm8k_sets
    # The real vocabulary and lengths, a one-layer llama body: the batches are what is measured
    # (each trimmed length compiles once, so the body's depth is what the test pays for).
    config = ModelConfig.tiny("llama", vocab_size=tok.vocab_size, max_positions=512, n_layers=1)
    model = init_model(config, key=jax.random.key(0))
    apply_lora(model, LoraConfig(rank=2), rngs=nnx.Rngs(0))
    tcfg = TrainConfig(steps=40, batch_size=8, group_by_length=True)
    result = train(model, train_set, tcfg, progress=False)
    assert result.padding < MAX_PADDING, result.padding


def test_evaluation_batches_pad_under_15_percent(gsm8k_sets):
    _, _, test_set = gsm8k_sets
    lengths = row_lengths(test_set.attention_mask)
    for batch in (8, 32):
        pad = _padding(length_batches(lengths, batch, test_set.seq_len), lengths)
        assert pad < MAX_PADDING, (batch, pad)
