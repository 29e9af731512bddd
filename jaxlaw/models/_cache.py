"""The key/value cache of incremental decoding: `KVCache` of per-layer `LayerCache` arrays.

`Decoder.init_cache` makes an empty one and `Decoder.extend` writes new tokens into it;
`jaxlaw.models.generate` is the loop that drives both.
"""

from typing import NamedTuple

from .._types import Array, Bool, Float, Int


class LayerCache(NamedTuple):
    """Keys and values of one attention layer, one row per cache slot.

    Keys are stored after the rotary embedding, so a slot never needs its position again.

    Attributes:
        k: keys, ``[examples, slots, kv_heads, head_dim]`` in the compute dtype.
        v: values, same shape and dtype.
    """

    k: Float[Array, "examples slots kv_heads head_dim"]
    v: Float[Array, "examples slots kv_heads head_dim"]


class KVCache(NamedTuple):
    """The key/value cache of a `Decoder`: every layer's slots plus which of them are real.

    Slots are filled in order, the same slot range for every example (``index`` onwards), so
    the cache has a static shape; padding tokens occupy slots too but are never attended to.

    Attributes:
        layers: one `LayerCache` per block, in model order.
        valid: ``[examples, slots]``, True at slots holding a real token.
        index: int32 scalar, the number of slots written so far (the next slot to write).
        positions: ``[examples, slots]`` int32, the position of the token in each slot (what
            sliding-window attention measures distance in; 0 at unwritten slots).
    """

    layers: tuple[LayerCache, ...]
    valid: Bool[Array, "examples slots"]
    index: Int[Array, ""]
    positions: Int[Array, "examples slots"]
