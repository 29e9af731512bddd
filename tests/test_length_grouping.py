"""Length grouping: `trim_length`, `row_lengths`, the grouped order and trimmed batches of `train`,
and `evaluate`'s length-sorted batches. Trimming right padding must change no number; grouping
must only reorder examples within each window of an epoch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_training import Toy, lora_model

from jaxlaw.data import row_lengths, trim_length
from jaxlaw.lora import split_lora
from jaxlaw.training import (
    Batch,
    TrainConfig,
    batch_indices,
    evaluate,
    length_batches,
    make_optimizer,
    make_train_step,
    train,
)
from jaxlaw.training._config import GROUP_WINDOW


def ragged_task(n=40, seq=64, vocab=100, seed=0) -> Toy:
    """Rows of 6..seq real tokens (most short), right-padded; loss on the second half."""
    rng = np.random.default_rng(seed)
    length = np.minimum(6 + rng.geometric(1 / 12, n), seq)
    tok = rng.integers(1, vocab, (n, seq)).astype(np.int32)
    am = np.arange(seq)[None] < length[:, None]
    lm = am & (np.arange(seq)[None] >= (length // 2)[:, None])
    return Toy(np.where(am, tok, 0).astype(np.int32), am, lm)


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_trim_length_bounds(longest, seq_len):
    got = trim_length(longest, seq_len)
    assert got <= seq_len
    if longest <= seq_len:
        assert got >= longest
        assert got - longest < max(16, got / 8)  # rounding waste: under ~11% (or one 16-step)
    else:
        assert got == seq_len


def test_trim_length_rejects_bad_seq_len():
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        trim_length(10, 0)


def test_row_lengths():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(row_lengths(mask), [2, 4, 0])


def test_grouped_order_is_an_epoch_permutation_sorted_in_windows():
    rng = np.random.default_rng(1)
    n, batch = 3 * GROUP_WINDOW * 2 + 5, 2  # two full windows and a partial one per epoch
    lengths = rng.integers(1, 500, n)
    key = jax.random.key(0)
    steps = -(-n // batch)
    plain = np.concatenate([batch_indices(n, batch, s, key=key) for s in range(steps)])[:n]
    grouped = np.concatenate(
        [batch_indices(n, batch, s, key=key, lengths=lengths) for s in range(steps)]
    )[:n]
    assert sorted(grouped) == list(range(n))
    window = GROUP_WINDOW * batch
    for lo in range(0, n, window):  # same rows per window, each sorted longest first
        assert sorted(grouped[lo : lo + window]) == sorted(plain[lo : lo + window])
        w = lengths[grouped[lo : lo + window]]
        assert np.all(np.diff(w) <= 0)


def test_grouped_training_equals_full_width_steps_in_the_same_order():
    """train(group_by_length) = the bare step on untrimmed batches in the grouped order."""
    data = ragged_task()
    config = TrainConfig(steps=7, batch_size=4, lr=5e-3, warmup_steps=2, group_by_length=True)
    model = lora_model()
    result = train(model, data, config, progress=False)

    ref = lora_model()
    graphdef, params, frozen = split_lora(ref)
    tx = make_optimizer(config)
    step = make_train_step(graphdef, tx)
    opt_state = tx.init(params)
    lengths = row_lengths(data.attention_mask)
    data_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    losses = []
    for s in range(config.steps):
        idx = batch_indices(len(lengths), config.batch_size, s, key=data_key, lengths=lengths)
        b = Batch(*(jnp.asarray(x[idx][None]) for x in data))
        k = jax.random.fold_in(dropout_key, s)
        params, opt_state, m = step(params, opt_state, frozen, b, k)
        losses.append(float(m.loss))
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    got = jax.tree.leaves(split_lora(model)[1])
    for a, b in zip(got, jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # Padding: the trimmed batches against the full width of the set.
    assert 0 < result.padding < 1 - lengths.mean() / data.tokens.shape[1]


def test_ungrouped_training_reports_the_padding_of_full_width_batches():
    data = ragged_task()
    config = TrainConfig(steps=10, batch_size=40, lr=1e-3)  # one epoch per step: every row
    result = train(lora_model(), data, config, progress=False)
    want = 1 - data.attention_mask.sum() / data.attention_mask.size
    np.testing.assert_allclose(result.padding, want, rtol=1e-6)


def test_train_stack_refuses_grouping():
    from jaxlaw.training import train_stack

    data = ragged_task()
    config = TrainConfig(steps=2, batch_size=4, group_by_length=True)
    with pytest.raises(ValueError, match="group_by_length is not supported"):
        train_stack(lora_model(), data, np.ones((1, 40), bool), config, progress=False)


def test_length_batches_cover_every_row_once():
    lengths = np.array([5, 60, 7, 33, 1, 64, 17])
    plan = length_batches(lengths, 3, 64)
    rows = np.concatenate([r for r, _ in plan])
    assert sorted(rows) == list(range(7))
    for r, seq in plan:
        assert lengths[r].max() <= seq <= 64


def test_grouped_evaluation_equals_full_width():
    data = ragged_task(n=37)
    model = lora_model()
    a = evaluate(model, data, batch_size=8)
    b = evaluate(model, data, batch_size=8, group_by_length=False)
    np.testing.assert_allclose(a.total, b.total, rtol=1e-5)
    np.testing.assert_array_equal(a.count, b.count)
