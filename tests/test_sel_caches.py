"""Bounded caches of compiled steps in data selection (review.md: unbounded module caches)."""

import jax.random as jr
from flax import nnx

from jaxlaw.data_selection.s2l import _trajectories as traj
from jaxlaw.lora import split_lora
from jaxlaw.models import ModelConfig, init_model


def _graphdef(hidden: int, seed: int = 0):
    config = ModelConfig.tiny("gpt2", vocab_size=16, hidden_size=hidden, intermediate_size=32)
    return split_lora(init_model(config, key=jr.key(seed)), nnx.Param)[0]


def test_stacked_eval_step_cache_is_bounded_and_keyed_by_graph():
    """Guards review.md: `_STACKED_STEPS` was a dict that grew with every model ever seen."""
    step = traj._stacked_eval_step
    step.cache_clear()
    maxsize = step.cache_info().maxsize
    assert maxsize is not None and maxsize <= 16
    # Same architecture, other weights: one graph, one entry (the key is the structure).
    a = step(_graphdef(8, seed=0))
    assert step(_graphdef(8, seed=1)) is a
    assert step.cache_info().currsize == 1
    # Another architecture is another step.
    assert step(_graphdef(16)) is not a
    for i in range(maxsize + 3):  # cheap distinct graphs: the cache never calls them
        step(nnx.split(nnx.Linear(i + 1, 2, rngs=nnx.Rngs(0)))[0])
    assert step.cache_info().currsize == maxsize
    step.cache_clear()
