"""Random projections ``R^p -> R^d`` of parameter pytrees that never hold the ``p x d`` matrix.

Entry point: `Projection.for_tree`. A `Projection` is only a description (seed, width, kind,
block size and the template's leaf layout): every block of the matrix ``P`` is regenerated from
its own key whenever it is needed, so projecting, lifting and the Gram matrix cost O(block) memory
and the same description gives the same ``P``, bit for bit, on any device or chunking::

    _, lora, _ = split_lora(model)
    proj = Projection.for_tree(lora, dim=128, seed=0)
    g_tilde = jax.vmap(proj.project)(per_example_grads)   # [examples, 128]
    delta = proj.lift(w)                                   # pure dict shaped like lora
    nnx.replace_by_pure_dict(lora, jax.tree.map(jnp.add, nnx.to_pure_dict(lora), delta))
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..._types import Array, Float

KINDS = ("rademacher", "gaussian")
_FORMAT = "jaxlaw.gradex.Projection/1"
_HIGHEST = jax.lax.Precision.HIGHEST  # f32 products on TPU/GPU too, not bf16/TF32 passes
# A projection whose p x d matrix takes at most this many bytes may be held in memory whole
# (`all_blocks`): `projected_grads` passes it to its chunk step, `Projection.gram` sums it.
BLOCKS_IN_MEMORY_BYTES = 32 * 2**20


def _key_str(k: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _pure(tree: Any) -> Any:
    """nnx.State -> nested dict of arrays (what the layout's paths describe); others unchanged."""
    return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


def tree_paths(tree: Any) -> list[tuple[str, Any]]:
    """``(dotted path, leaf)`` of every leaf in tree-flatten order (nnx.State as a pure dict)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(_pure(tree))
    return [(".".join(_key_str(k) for k in path), leaf) for path, leaf in flat]


def _nest(paths: list[str], leaves: list[Any]) -> dict:
    """Nested dict from dotted paths; all-digit components become int keys (nnx.List indices)."""
    out: dict = {}
    for path, leaf in zip(paths, leaves):
        keys = [int(c) if c.isdigit() else c for c in path.split(".")]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf
    return out


@dataclass(frozen=True, repr=False)
class Projection:
    """A seeded random ``p x d`` matrix ``P`` over a parameter pytree, defined block by block.

    ``P``'s rows follow the template's leaves in tree-flatten order, each leaf's entries in
    row-major order. Leaf ``l`` (of ``p_l`` entries) is cut into row blocks of ``block_rows``
    (the last one shorter); block ``b`` of leaf ``l`` is drawn from
    ``fold_in(fold_in(key(seed), l), b)`` with its exact shape ``(rows, d)``:

    - ``rademacher``: ``jax.random.bits(key, (rows, ceil(d / 32)), uint32)``; entry ``[i, j]`` is
      ``+1/sqrt(d)`` if bit ``j % 32`` of word ``[i, j // 32]`` is set, else ``-1/sqrt(d)``;
    - ``gaussian``: ``jax.random.normal(key, (rows, d), float32) / sqrt(d)``.

    So ``E[P P^T] = I_p`` (inner products survive: ``<P^T a, P^T b> ~ <a, b>``, with standard
    deviation ``<= sqrt(2/d) ||a|| ||b||``), while ``P^T P ~ (p/d) I_d`` (exactly ``p/d`` on the
    diagonal for Rademacher): lifting a ``d``-vector ``w`` gives ``||P w|| ~ sqrt(p/d) ||w||``.
    All products are accumulated in float32 at full precision.

    Trees: an `nnx.State` is read through ``nnx.to_pure_dict(state)``; any other pytree is used as
    is. The layout's paths are the dotted key paths of that (pure) tree, e.g.
    ``blocks.0.attn.q_proj.lora.a``, so an `nnx.State` and its pure dict are interchangeable.
    `lift` returns a nested pure dict (int keys for all-digit path components), the structure of
    ``nnx.to_pure_dict(split_lora(model)[1])``.

    Instances are frozen and hashable (usable as a static jit argument or closed over). Build one
    with `Projection.for_tree`; `to_dict` / `from_dict` give JSON-able metadata to store beside
    the projected gradients instead of ``P``.

    Attributes:
        seed: PRNG seed, ``0 <= seed < 2**31``.
        dim: projection width d.
        kind: ``"rademacher"`` or ``"gaussian"``.
        block_rows: rows of ``P`` generated at once (memory: ``block_rows * d * 4`` bytes).
        layout: ``(path, shape)`` of every template leaf in tree-flatten order.
        dtypes: dtype name of every template leaf (what `lift` returns); empty means float32.
    """

    seed: int
    dim: int
    kind: str = "rademacher"
    block_rows: int = 65536
    layout: tuple[tuple[str, tuple[int, ...]], ...] = ()
    dtypes: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim <= 0:
            raise ValueError(f"projection dim must be a positive int, got {self.dim!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown projection kind {self.kind!r}; choose one of {KINDS}")
        if not isinstance(self.block_rows, int) or self.block_rows <= 0:
            raise ValueError(f"block_rows must be a positive int, got {self.block_rows!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise ValueError(f"projection seed must be an int in [0, 2**31), got {self.seed!r}")
        if not self.layout:
            raise ValueError("projection layout is empty: the template tree has no leaves")
        if self.dtypes and len(self.dtypes) != len(self.layout):
            raise ValueError(f"{len(self.dtypes)} dtypes for {len(self.layout)} layout leaves")

    def __repr__(self) -> str:
        return (
            f"Projection(seed={self.seed}, dim={self.dim}, kind={self.kind!r}, "
            f"block_rows={self.block_rows}, n_params={self.n_params}, "
            f"leaves={len(self.layout)})"
        )

    @classmethod
    def for_tree(
        cls,
        tree: Any,
        *,
        dim: int,
        seed: int = 0,
        kind: str = "rademacher",
        block_rows: int = 65536,
    ) -> "Projection":
        """The projection for parameter trees shaped like ``tree``.

        Args:
            tree: the template, e.g. the LoRA state ``split_lora(model)[1]`` (an `nnx.State`) or
                any pytree of arrays; only leaf paths, shapes and dtypes are read.
            dim: projection width d (> 0).
            seed: PRNG seed.
            kind: ``"rademacher"`` (default, as the reference) or ``"gaussian"``.
            block_rows: rows of ``P`` generated at once.

        Returns:
            The `Projection`.

        Raises:
            ValueError: ``dim <= 0``, an unknown ``kind``, a bad seed or block size, or a tree
                without leaves.
        """
        flat = tree_paths(tree)
        layout = tuple((path, tuple(int(s) for s in np.shape(leaf))) for path, leaf in flat)
        dtypes = tuple(str(jnp.dtype(getattr(leaf, "dtype", jnp.float32))) for _, leaf in flat)
        return cls(seed, dim, kind, block_rows, layout, dtypes)

    @property
    def n_params(self) -> int:
        """p: the number of rows of ``P`` (entries of one template tree)."""
        return sum(math.prod(shape) for _, shape in self.layout)

    # ------------------------------------------------------------------------------ blocks
    def _block(
        self, leaf: int, block: Any, rows: int, seed: Any = None
    ) -> Float[Array, "rows proj"]:
        """Block ``block`` of leaf ``leaf``: a ``(rows, d)`` float32 slice of ``P``.

        ``seed`` overrides ``self.seed`` (it may be traced: one compilation for many seeds).
        """
        seed = self.seed if seed is None else seed
        key = jax.random.fold_in(jax.random.key(seed), leaf)
        key = jax.random.fold_in(key, jnp.asarray(block, jnp.uint32))
        d = self.dim
        scale = np.float32(1.0 / math.sqrt(d))
        if self.kind == "gaussian":
            return jax.random.normal(key, (rows, d), jnp.float32) * scale
        words = -(-d // 32)
        bits = jax.random.bits(key, (rows, words), jnp.uint32)
        shifts = jnp.arange(32, dtype=jnp.uint32)
        on = ((bits[:, :, None] >> shifts[None, None, :]) & jnp.uint32(1)).reshape(rows, -1)
        return jnp.where(on[:, :d] == 1, scale, -scale)

    def _blocks(self, size: int) -> tuple[int, int]:
        """(number of full blocks, rows of the last partial block) of a leaf of ``size``."""
        return divmod(size, self.block_rows)

    # ------------------------------------------------------------------------- public maps
    def check_tree(self, tree: Any) -> None:
        """Raise unless ``tree``'s leaves have the layout's paths and shapes, in order.

        Args:
            tree: an `nnx.State` or pytree (leaves may be traced; shapes are static).

        Raises:
            ValueError: naming the first leaf whose path or shape differs, or the leaf counts.
        """
        flat = tree_paths(tree)
        for i, ((path, leaf), (want, shape)) in enumerate(zip(flat, self.layout)):
            got = tuple(np.shape(leaf))
            if path != want or got != shape:
                raise ValueError(
                    f"tree does not match the projection's layout at leaf {i}: got {path!r} "
                    f"with shape {got}, expected {want!r} with shape {shape}"
                )
        if len(flat) != len(self.layout):
            raise ValueError(
                f"tree has {len(flat)} leaves, the projection's layout has {len(self.layout)} "
                f"(first layout leaf {self.layout[0][0]!r})"
            )

    def blocks(self, seed: Any = None) -> tuple:
        """Every block of ``P`` at once, per leaf ``(full [n_full, rows, d] | None, last | None)``.

        This holds all ``p x d`` entries: only for projections small enough to keep in memory
        (`projected_grads` passes them to its chunk step when they fit ``P_CACHE_BYTES`` instead
        of regenerating them in every chunk). The blocks are the ones `project` generates.

        Args:
            seed: overrides ``self.seed``; may be a traced int, so that one jitted function
                serves every seed of a layout.
        """
        R = self.block_rows
        out = []
        for leaf_i, (_, shape) in enumerate(self.layout):
            n_full, rest = self._blocks(math.prod(shape))
            full = None
            if n_full:
                ids = jnp.arange(n_full, dtype=jnp.uint32)
                full = jax.vmap(lambda b, leaf_i=leaf_i: self._block(leaf_i, b, R, seed))(ids)
            last = self._block(leaf_i, n_full, rest, seed) if rest else None
            out.append((full, last))
        return tuple(out)

    def project(self, tree: Any, blocks: tuple | None = None) -> Float[Array, " proj"]:
        """``P^T g`` for ONE tree ``g`` shaped like the template (``jax.vmap`` it for a batch).

        Args:
            tree: an `nnx.State` or pytree with the layout's paths and shapes, any float dtype.
            blocks: `blocks()` of this projection to use instead of regenerating them (same
                numbers, same order of accumulation).

        Returns:
            Float32 ``[d]``.

        Raises:
            ValueError: the tree does not match the layout (see `check_tree`).
        """
        self.check_tree(tree)
        R = self.block_rows
        acc = jnp.zeros((self.dim,), jnp.float32)
        for leaf_i, (_, leaf) in enumerate(tree_paths(tree)):
            flat = jnp.reshape(leaf, (-1,)).astype(jnp.float32)
            n_full, rest = self._blocks(flat.shape[0])
            full, last = (None, None) if blocks is None else blocks[leaf_i]
            if n_full:
                gs = flat[: n_full * R].reshape(n_full, R)
                if full is None:

                    def body(acc, xs, leaf_i=leaf_i):
                        b, g = xs
                        blk = self._block(leaf_i, b, R)
                        return acc + jnp.dot(g, blk, precision=_HIGHEST), None

                    xs = (jnp.arange(n_full, dtype=jnp.uint32), gs)
                else:

                    def body(acc, xs):
                        blk, g = xs
                        return acc + jnp.dot(g, blk, precision=_HIGHEST), None

                    xs = (full, gs)
                acc, _ = jax.lax.scan(body, acc, xs)
            if rest:
                blk = self._block(leaf_i, n_full, rest) if last is None else last
                acc = acc + jnp.dot(flat[n_full * R :], blk, precision=_HIGHEST)
        return acc

    def lift(self, w: Float[Array, " proj"], blocks: tuple | None = None) -> dict:
        """``P w`` as a parameter tree (vmappable over ``w``).

        Args:
            w: a ``[d]`` vector (any float dtype; products in float32).
            blocks: `blocks()` of this projection to use instead of regenerating them (same
                numbers).

        Returns:
            A nested pure dict with the template's structure, shapes and dtypes (that of
            ``nnx.to_pure_dict(split_lora(model)[1])`` for a LoRA template). Add it to a model's
            LoRA state with ``nnx.replace_by_pure_dict(lora, jax.tree.map(jnp.add,
            nnx.to_pure_dict(lora), delta))``.

        Raises:
            ValueError: ``w`` is not a ``[dim]`` vector.
        """
        if w.shape != (self.dim,):
            raise ValueError(f"lift expects a vector of shape ({self.dim},), got {w.shape}")
        w = w.astype(jnp.float32)
        R = self.block_rows
        leaves = []
        for leaf_i, (_, shape) in enumerate(self.layout):
            n_full, rest = self._blocks(math.prod(shape))
            full_blocks, last_block = (None, None) if blocks is None else blocks[leaf_i]
            parts = []
            if n_full and full_blocks is not None:
                parts.append(jnp.einsum("brd,d->br", full_blocks, w, precision=_HIGHEST).ravel())
            elif n_full:

                def body(_, b, leaf_i=leaf_i):
                    return None, jnp.dot(self._block(leaf_i, b, R), w, precision=_HIGHEST)

                _, full = jax.lax.scan(body, None, jnp.arange(n_full, dtype=jnp.uint32))
                parts.append(full.reshape(-1))
            if rest:
                blk = self._block(leaf_i, n_full, rest) if last_block is None else last_block
                parts.append(jnp.dot(blk, w, precision=_HIGHEST))
            flat = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
            dtype = self.dtypes[leaf_i] if self.dtypes else "float32"
            leaves.append(flat.reshape(shape).astype(dtype))
        return _nest([path for path, _ in self.layout], leaves)

    def gram(self) -> Float[Array, "proj proj"]:
        """``P^T P`` (``d x d``, float32), accumulated block by block.

        Its diagonal is exactly ``p/d`` for Rademacher entries; ``||P w||^2 = w^T (P^T P) w``.
        One compiled program per layout, width and kind serves every seed (the seed is traced).
        """
        if 4 * self.n_params * self.dim <= BLOCKS_IN_MEMORY_BYTES:
            # From the blocks (the program `projected_grads` has already compiled for them).
            return _gram_from_blocks(all_blocks(self))
        return _gram_jit(dataclasses.replace(self, seed=0), jnp.asarray(self.seed, jnp.int32))

    def _gram(self, seed: Any) -> Float[Array, "proj proj"]:
        R, d = self.block_rows, self.dim
        acc = jnp.zeros((d, d), jnp.float32)
        for leaf_i, (_, shape) in enumerate(self.layout):
            n_full, rest = self._blocks(math.prod(shape))
            if n_full:

                def body(acc, b, leaf_i=leaf_i):
                    blk = self._block(leaf_i, b, R, seed)
                    return acc + jnp.dot(blk.T, blk, precision=_HIGHEST), None

                acc, _ = jax.lax.scan(body, acc, jnp.arange(n_full, dtype=jnp.uint32))
            if rest:
                blk = self._block(leaf_i, n_full, rest, seed)
                acc = acc + jnp.dot(blk.T, blk, precision=_HIGHEST)
        return acc

    # ---------------------------------------------------------------------------- metadata
    def to_dict(self) -> dict:
        """JSON-able description (no matrix): what to store next to projected gradients."""
        return {
            "format": _FORMAT,
            "seed": self.seed,
            "dim": self.dim,
            "kind": self.kind,
            "block_rows": self.block_rows,
            "layout": [[path, list(shape)] for path, shape in self.layout],
            "dtypes": list(self.dtypes),
            "n_params": self.n_params,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Projection":
        """Inverse of `to_dict`.

        Raises:
            ValueError: a missing field or another format tag.
        """
        if d.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"not a {_FORMAT} description: format {d.get('format')!r}")
        try:
            layout = tuple((str(p), tuple(int(s) for s in shape)) for p, shape in d["layout"])
            return cls(
                seed=int(d["seed"]),
                dim=int(d["dim"]),
                kind=str(d["kind"]),
                block_rows=int(d["block_rows"]),
                layout=layout,
                dtypes=tuple(str(t) for t in d.get("dtypes", ())),
            )
        except KeyError as e:
            raise ValueError(f"projection description lacks the field {e.args[0]!r}") from None


_gram_jit = jax.jit(Projection._gram, static_argnums=0)
_blocks_jit = jax.jit(Projection.blocks, static_argnums=0)


def all_blocks(projection: Projection) -> tuple:
    """`Projection.blocks` by one compiled program per layout, width and kind (seed traced)."""
    template = dataclasses.replace(projection, seed=0)
    return _blocks_jit(template, jnp.asarray(projection.seed, jnp.int32))


@jax.jit
def _gram_from_blocks(blocks: tuple) -> Float[Array, "proj proj"]:
    acc = 0.0
    for full, last in blocks:
        if full is not None:
            acc = acc + jnp.einsum("brd,bre->de", full, full, precision=_HIGHEST)
        if last is not None:
            acc = acc + jnp.dot(last.T, last, precision=_HIGHEST)
    return acc
