"""LoRA as tree surgery on an NNX model: add adapters, split them out, fold them back in."""

import math
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from .._types import Array, Float
from ..models import Linear

DEFAULT_TARGETS = r"attn\.(qkv|q_proj|v_proj)$"


@dataclass(frozen=True)
class LoraConfig:
    """Which projections get an adapter, and its shape.

    Attributes:
        targets: regular expression searched (``re.search``) in each `Linear`'s module path,
            e.g. ``blocks.3.attn.qkv``; the default adapts the query/value (or fused qkv)
            projections of every block.
        rank: adapter rank r.
        alpha: the update is scaled by ``alpha / rank`` (so changing r keeps its size).
        dropout: dropout rate on the adapter's input while training.
    """

    targets: str = DEFAULT_TARGETS
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"LoRA targets is not a valid regex ({e}): {self.targets!r}") from None

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraAdapter(nnx.Module):
    """The low-rank update ``scale * dropout(x) @ a @ b`` of one `Linear`.

    ``a`` starts uniform in ``±1/sqrt(in)`` (PyTorch's/peft's Kaiming-uniform default) and ``b``
    at zero, so an adapted model equals its base model until ``b`` trains. Both are
    `nnx.LoRAParam`, which is what `split_lora` filters on, stored in ``dtype`` (`apply_lora`
    passes the base kernel's dtype, so enabling x64 for a fit elsewhere does not make the
    adapters float64).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: LoraConfig,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        bound = 1.0 / math.sqrt(in_features)
        shape = (in_features, config.rank)
        # Drawn in float32 whatever x64 says, then stored in ``dtype``: the same init numbers
        # with x64 on or off.
        a = jax.random.uniform(rngs.params(), shape, jnp.float32, minval=-bound, maxval=bound)
        self.a = nnx.LoRAParam(a.astype(dtype))
        self.b = nnx.LoRAParam(jnp.zeros((config.rank, out_features), dtype))
        self.scale = config.scale
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None
        # Set by `seed_dropout` inside a pure step; None falls back to the module's own stream.
        self.dropout_key = nnx.data(None)

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        if self.dropout is not None:
            x = self.dropout(x, rngs=self.dropout_key)
        a, b = self.a[...].astype(x.dtype), self.b[...].astype(x.dtype)
        return self.scale * ((x @ a) @ b)

    def delta(self) -> Float[Array, "in out"]:
        """The dense update this adapter adds to the kernel."""
        return self.scale * (self.a[...] @ self.b[...])


def linear_paths(model: nnx.Module) -> dict[str, Linear]:
    """Every `Linear` of ``model`` by its dotted module path (``blocks.0.attn.qkv``)."""
    return {
        ".".join(str(p) for p in path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, Linear)
    }


def apply_lora(model: nnx.Module, config: LoraConfig, *, rngs: nnx.Rngs) -> tuple[str, ...]:
    """Give every `Linear` whose path matches ``config.targets`` a fresh adapter, in place.

    Each adapter's ``a`` and ``b`` take the dtype of the kernel they adapt.

    Args:
        model: any NNX model built from `jaxlaw.models.Linear` projections.
        config: targets, rank, scaling and dropout.
        rngs: random streams; ``params`` draws ``a``, ``dropout`` seeds the adapter dropout.

    Returns:
        The adapted module paths, in model order.

    Raises:
        ValueError: when the regex matches no projection (the message lists the paths there
            are), or when the model already has adapters.
    """
    linears = linear_paths(model)
    if any(m.lora is not None for m in linears.values()):
        raise ValueError("model already has LoRA adapters; merge_lora or reload it first")
    pattern = re.compile(config.targets)
    chosen = tuple(path for path in linears if pattern.search(path))
    if not chosen:
        names = sorted({re.sub(r"\.\d+\.", ".N.", p) for p in linears})
        raise ValueError(
            f"LoRA targets {config.targets!r} match no projection; "
            f"projections are: {', '.join(names)}"
        )
    for path in chosen:
        m = linears[path]
        dtype = m.kernel[...].dtype
        m.lora = LoraAdapter(m.in_features, m.out_features, config, rngs=rngs, dtype=dtype)
    return chosen


def split_lora(model: nnx.Module, trainable=nnx.LoRAParam):
    """``(graphdef, trainable_state, frozen_state)`` of ``model``.

    ``trainable`` is an NNX filter: `nnx.LoRAParam` (the default) for LoRA fine-tuning, or
    `nnx.Param` to train every weight of a model without adapters (pre-training). Recombine with
    ``nnx.merge(graphdef, trainable_state, frozen_state)``.
    """
    return nnx.split(model, trainable, ...)


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` with every adapter folded into its kernel and removed.

    The copy is a plain model again (same module paths as before `apply_lora`), ready for
    `jaxlaw.models.save_pretrained`; ``model`` itself is not changed.
    """
    merged = nnx.clone(model)
    for m in linear_paths(merged).values():
        if m.lora is not None:
            kernel = m.kernel[...]
            m.kernel[...] = (kernel + m.lora.delta()).astype(kernel.dtype)
            m.lora = None
    return merged


def seed_dropout(model: nnx.Module, key) -> None:
    """Give each adapter's dropout its own key derived from ``key`` (in place).

    Pure train steps call this on the model they merge, so dropout masks are a function of the
    step's key rather than of RNG counters carried in the model state.
    """
    adapters = [m.lora for m in linear_paths(model).values() if m.lora is not None]
    for i, adapter in enumerate(a for a in adapters if a.dropout is not None):
        adapter.dropout_key = jax.random.fold_in(key, i)


def lora_paths(model: nnx.Module) -> tuple[str, ...]:
    """Module paths of the projections that carry an adapter."""
    return tuple(p for p, m in linear_paths(model).items() if m.lora is not None)
