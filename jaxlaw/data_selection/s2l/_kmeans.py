"""Lloyd k-means in JAX: init, Lloyd iterations, assignment. Entry point: `kmeans`.

S2L clusters the per-example loss trajectories L [rows, ckpts] with L2 k-means, K = 100,
20 Lloyd iterations (spec §1.6, §4.3). The reference calls ``faiss.Kmeans`` with its defaults;
this module reproduces that recipe, except for the default init:

- **init** ``"kmeans++"`` (the default): K sequential D²-sampling passes, greedy as in
  scikit-learn (2 + floor(ln K) candidates per pass, the one that lowers the summed squared
  distance most is kept); the S2L experiment beats random selection only with it.
  ``"random"``: K distinct rows drawn uniformly (faiss's default, for reference parity).
- **training subsample**: with ``max_points_per_centroid=m`` and more than m·K rows, the
  centroids are trained on a seeded uniform subsample of m·K rows (faiss's default m = 256),
  then every row is assigned once. ``None`` trains on all rows.
- **Lloyd step**: squared distances ‖c‖² − 2 x·c (+ ‖x‖², only for reported distances) in row
  chunks; nearest centroid = first minimum (ties go to the lower cluster id, like
  ``np.argmin``); centroid = mean of its rows. The loop stops early when an update leaves
  every centroid bit-for-bit unchanged (a fixed point: further updates change nothing).
- **empty clusters** (rule): after an assignment, each empty cluster, in increasing id order,
  is re-seeded at a row farthest from its own centroid (rows taken in decreasing squared
  distance, ties to the lower row index; the row stays counted in its old cluster for that
  update). faiss instead splits a large cluster with a random perturbation; sklearn uses the
  same farthest-row rule as here.
- **restarts**: inits are vmapped over split keys (restart r uses
  ``jr.split(jr.split(key)[1], restarts)[r]``); all restarts run in one jitted while loop with
  per-restart stop flags, and the one with the lowest training objective wins.
- **dtype**: every entry point runs under ``jax.enable_x64(True)``, so numpy float64 (and
  integer) features are clustered in float64 even in a process without x64; a float32 jax
  array stays float32 (the caller chose it).
- **sharding**: a row-sharded input (a `jax.Array` whose `NamedSharding` splits axis 0, e.g.
  over the ``data`` axis of `jaxlaw.training.data_mesh`) runs under `jax.shard_map`: each device
  assigns its own rows, per-cluster sums and counts are ``psum``-ed, centroids stay replicated;
  labels come back sharded like the rows.

Performance note (XLA:CPU): ``jnp.argmin`` over the cluster axis lowers to a slow variadic
reduce, so the nearest centroid is found with an unrolled compare/select chain over a
(clusters, chunk) distance block, about 10x faster, and identical labels (strict ``<``).
Chunks of ~16K rows keep that block in cache (larger chunks were 3x slower on a 2-core box).
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..._types import Array, ArrayLike, Float, Int, Key, Scalar
from ...fitting import x64_scope

InitMethod = str  # "random" | "kmeans++" (a plain str so a bad value gets our ValueError)
INIT_METHODS = ("random", "kmeans++")
DEFAULT_CHUNK_ROWS = 16384
# Above this many clusters the compare/select chain is rolled into a loop (compile time).
_UNROLL_MAX = 128


class KMeansResult(NamedTuple):
    """A fitted k-means clustering.

    Attributes:
        centroids: cluster centres, shape (clusters, feats), the input's float dtype.
        labels: nearest centroid of every row (int32), shape (rows,).
        objective: sum over all rows of the squared L2 distance to their assigned centroid
            (scalar, same dtype as the features).
        counts: rows assigned to each cluster (int32), shape (clusters,).
        n_iter: Lloyd updates performed (int32 scalar); fewer than ``iters`` when a fixed point
            was reached.
    """

    centroids: Float[Array, "clusters feats"]
    labels: Int[Array, " rows"]
    objective: Scalar
    counts: Int[Array, " clusters"]
    n_iter: Int[Array, ""]


# --------------------------------------------------------------------------------- helpers
def _as_features(x, name: str = "x") -> Array:
    """A 2-D float array (integer input promoted to the default float); sharding is kept."""
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, feats), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64)  # entry points run under x64 (`x64_scope`)
    return x


def _check_finite(x: Array, name: str = "x") -> None:
    bad = int(jnp.sum(~jnp.all(jnp.isfinite(x), axis=1)))
    if bad:
        raise ValueError(
            f"{name} has {bad} of {x.shape[0]} rows with NaN or inf; fill or drop them first"
        )


def _row_sharding(x) -> tuple[Mesh, object] | None:
    """(mesh, row axes) when ``x`` is a jax.Array split by rows over more than one device."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding) or len(sharding.spec) == 0:
        return None
    axes = sharding.spec[0]
    if axes is None:
        return None
    if any(s is not None for s in sharding.spec[1:]):
        raise ValueError(f"only row sharding is supported, got PartitionSpec {sharding.spec}")
    names = axes if isinstance(axes, tuple) else (axes,)
    if math.prod(sharding.mesh.shape[a] for a in names) == 1:
        return None
    return sharding.mesh, axes


def _chunking(n: int, chunk_rows: int) -> tuple[int, int]:
    """(chunk, padded rows): the fewest chunks of at most ``chunk_rows`` rows, evenly sized."""
    n_chunks = max(1, -(-n // chunk_rows))
    chunk = -(-n // n_chunks)
    return chunk, chunk * n_chunks


def _nearest(xb, c, cc):
    """Nearest centroid of each row of a block: labels (int32) and ‖c‖² − 2x·c at it."""
    d = cc[:, None] - 2.0 * (c @ xb.T)  # (clusters, chunk): each row contiguous for the chain
    k = d.shape[0]

    def step(j, state):
        best, lab = state
        better = d[j] < best  # strict: ties keep the lower cluster id, as np.argmin
        return jnp.where(better, d[j], best), jnp.where(better, j, lab)

    init = (d[0], jnp.zeros(d.shape[1], jnp.int32))
    unroll = True if k <= _UNROLL_MAX else 16
    best, lab = jax.lax.fori_loop(1, k, step, init, unroll=unroll)
    return lab, best


def _assign_padded(x, c, chunk: int):
    """Labels and ‖c‖² − 2x·c of rows already padded to a multiple of ``chunk``."""
    n, t = x.shape
    cc = jnp.sum(c * c, axis=1)
    if n == chunk:
        return _nearest(x, c, cc)
    lab, best = jax.lax.map(lambda xb: _nearest(xb, c, cc), x.reshape(n // chunk, chunk, t))
    return lab.reshape(n), best.reshape(n)


def _pad_rows(x, n_pad: int):
    n = x.shape[0]
    valid = jnp.arange(n_pad) < n
    return jnp.pad(x, ((0, n_pad - n), (0, 0))), valid


def _farthest_rows(x, sq, k: int, axes):
    """The ``k`` rows of largest ``sq`` over all shards, in decreasing order, as (k, feats)."""
    kk = min(k, x.shape[0])
    vals, idx = jax.lax.top_k(sq, kk)
    rows = x[idx]
    if axes is not None:
        # Shards are contiguous row blocks in device order and top_k keeps the lower index on
        # ties, so the gathered (device-major) order reproduces a single-device top_k.
        vals = jax.lax.all_gather(vals, axes, tiled=True)
        rows = jax.lax.all_gather(rows, axes, tiled=True)
        vals, idx = jax.lax.top_k(vals, k)
        rows = rows[idx]
    return rows


def _lloyd_local(x, valid, c0, *, iters: int, chunk: int, axes):
    """Lloyd from each init of ``c0`` (restarts, clusters, feats) on this shard's padded rows.

    All restarts share one while loop (batched state, per-restart stop flags). The restarts
    axis is batched by hand rather than by `jax.vmap`: under vmap the empty-cluster `lax.cond`
    would become a select and run its top-k over all rows at every iteration.
    Sums and counts are psum-ed over ``axes`` (shard_map) when given.
    """
    k = c0.shape[1]
    xx = jnp.sum(x * x, axis=1)
    psum = (lambda v: jax.lax.psum(v, axes)) if axes is not None else (lambda v: v)

    def estep(c):
        lab, best = _assign_padded(x, c, chunk)
        lab = jnp.where(valid, lab, k)  # padding rows fall outside every segment
        sums = jax.ops.segment_sum(x, lab, k)
        counts = jax.ops.segment_sum(jnp.ones_like(lab), lab, k)
        return lab, best, sums, counts

    def estep_all(cs):
        # Restarts one after another: a vmapped segment_sum lowers to a batched scatter that
        # is ~20x slower on XLA:CPU (1e6 rows: 60 ms vs 3 ms), and each E-step fills the
        # machine on its own anyway.
        if cs.shape[0] == 1:
            lab, best, sums, counts = jax.tree.map(lambda a: a[None], estep(cs[0]))
        else:
            lab, best, sums, counts = jax.lax.map(estep, cs)
        return lab, best, psum(sums), psum(counts)

    def repair_one(c, best, nonempty):
        sq = jnp.where(valid, best + xx, -jnp.inf)
        far = _farthest_rows(x, sq, k, axes)  # (clusters, feats), farthest first
        rank = jnp.clip(jnp.cumsum(~nonempty) - 1, 0, k - 1)
        return jnp.where(nonempty[:, None], c, far[rank])

    def body(state):
        it, cs, done, *_ = state
        # One E-step per pass: it labels the current centroids; a restart that has used its
        # `iters` updates (or reached a fixed point) keeps these labels as its final ones.
        lab, best, sums, counts = estep_all(cs)
        final = done | (it >= iters)
        nonempty = counts > 0
        means = sums / jnp.maximum(counts, 1).astype(x.dtype)[..., None]
        new = jnp.where(nonempty[..., None], means, cs)
        new = jax.lax.cond(
            jnp.all(nonempty | final[:, None]),
            lambda n: n,
            lambda n: jax.vmap(repair_one)(n, best, nonempty),
            new,
        )
        new = jnp.where(final[:, None, None], cs, new)
        # A fixed point (an update that changes nothing) leaves `lab` valid for `new`.
        done = final | jnp.all(new == cs, axis=(1, 2))
        return it + jnp.where(final, 0, 1), new, done, lab, best, counts

    def cond(state):
        return jnp.any(~state[2])

    r, n = c0.shape[0], x.shape[0]
    state = (
        jnp.zeros(r, jnp.int32),
        c0,
        jnp.zeros(r, bool),
        jnp.zeros((r, n), jnp.int32),
        jnp.zeros((r, n), x.dtype),
        jnp.zeros((r, k), jnp.int32),
    )
    n_iter, cs, _, lab, best, counts = jax.lax.while_loop(cond, body, state)
    sq = jnp.where(valid[None], jnp.maximum(best + xx[None], 0.0), 0.0)
    return cs, lab, sq, psum(jnp.sum(sq, axis=1)), counts, n_iter


def _lloyd_rows(x, inits, *, iters: int, chunk_rows: int, sharding):
    """Lloyd from each of ``inits`` (restarts, clusters, feats) on all rows of ``x``.

    Returns centroids (restarts, clusters, feats), labels and sqdist (restarts, rows),
    objective (restarts,), counts (restarts, clusters), n_iter (restarts,).
    """

    def local(x, inits, axes):
        n = x.shape[0]
        chunk, n_pad = _chunking(n, chunk_rows)
        xp, valid = _pad_rows(x, n_pad)
        c, lab, sq, obj, counts, n_iter = _lloyd_local(
            xp, valid, inits, iters=iters, chunk=chunk, axes=axes
        )
        return c, lab[:, :n], sq[:, :n], obj, counts, n_iter

    if sharding is None:
        return local(x, inits, None)
    mesh, axes = sharding
    rows, rep = PartitionSpec(axes), PartitionSpec()
    fn = jax.shard_map(
        partial(local, axes=axes),
        mesh=mesh,
        in_specs=(rows, rep),
        out_specs=(rep, PartitionSpec(None, axes), PartitionSpec(None, axes), rep, rep, rep),
        check_vma=False,
    )
    return fn(x, inits)


def _assign_rows(x, c, *, chunk_rows: int, sharding):
    def local(x, c):
        n = x.shape[0]
        chunk, n_pad = _chunking(n, chunk_rows)
        xp, _ = _pad_rows(x, n_pad)
        lab, best = _assign_padded(xp, c, chunk)
        sq = jnp.maximum(best + jnp.sum(xp * xp, axis=1), 0.0)
        return lab[:n], sq[:n]

    if sharding is None:
        return local(x, c)
    mesh, axes = sharding
    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(axes), PartitionSpec()),
        out_specs=(PartitionSpec(axes), PartitionSpec(axes)),
        check_vma=False,
    )
    return fn(x, c)


def _sample_rows(key, n: int, m: int):
    """``m`` distinct row indices drawn uniformly from ``n``, in increasing order."""
    # The top-m of n uniforms is a uniform m-subset; `jr.choice(replace=False)` permutes all n
    # rows instead, and XLA:CPU sorts are slow (1e6 rows: 1.1 s vs 21 ms for this top-k).
    return jnp.sort(jax.lax.top_k(jr.uniform(key, (n,)), m)[1])


def _init_random(x, k: int, key, valid=None):
    u = jr.uniform(key, (x.shape[0],))
    if valid is not None:  # padding rows below every uniform: never drawn
        u = jnp.where(valid, u, -1.0)
    idx = jax.lax.top_k(u, k)[1]  # k distinct rows, random order
    return x[idx]


def _init_kmeanspp(x, k: int, key, valid=None):
    """Greedy k-means++ (sklearn's default): per centre, draw 2 + floor(ln k) candidates by D²
    sampling (inverse CDF of the cumulated squared distances, as sklearn) and keep the one that
    lowers the total squared distance most. ``valid`` (a prefix of the rows) marks real rows:
    padding rows weigh 0 and are never drawn, so padded and unpadded inputs draw alike."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    w = jnp.ones(n, x.dtype) if valid is None else valid.astype(x.dtype)
    n_valid = n if valid is None else jnp.sum(valid)
    k_first, k_rest = jr.split(key)
    first = x[jr.randint(k_first, (), 0, n_valid)]
    c = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first[None]) ** 2, axis=1) * w

    def body(j, state):
        c, d2 = state
        cdf = jnp.cumsum(d2)
        total = cdf[-1]
        u = jr.uniform(jr.fold_in(k_rest, j), (trials,), x.dtype)
        # side="right": rows of weight 0 (chosen centres, padding) are never drawn. If every
        # row sits on a centre already (duplicates), draw rows uniformly.
        cand = jnp.where(
            total > 0,
            jnp.searchsorted(cdf, u * total, side="right"),
            jnp.floor(u * n_valid).astype(jnp.int32),
        )
        cand = jnp.clip(cand, 0, n_valid - 1)
        dist = jnp.sum((x[None] - x[cand][:, None]) ** 2, axis=2)
        d2_cand = jnp.minimum(d2[None], dist) * w[None]
        best = jnp.argmin(jnp.sum(d2_cand, axis=1))  # first on ties
        return c.at[j].set(x[cand[best]]), d2_cand[best]

    c, _ = jax.lax.fori_loop(1, k, body, (c, d2))
    return c


def _init(x, k: int, key, method: str, valid=None):
    if method == "random":
        return _init_random(x, k, key, valid)
    return _init_kmeanspp(x, k, key, valid)


def _check_common(x: Array, k: int, *, iters: int | None = None, chunk_rows: int) -> None:
    n = x.shape[0]
    if not isinstance(k, int | np.integer) or isinstance(k, bool):
        raise ValueError(f"k must be a Python int, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of rows), got {k}")
    if iters is not None and iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


# ------------------------------------------------------------------------------ public API
@partial(jax.jit, static_argnames=("k", "method"))
def _kmeans_init_jit(x, key, k, method):
    return _init(x, k, key, method)


@x64_scope
def kmeans_init(
    x: Float[ArrayLike, "rows feats"], k: int, *, key: Key, method: InitMethod = "kmeans++"
) -> Float[Array, "clusters feats"]:
    """Initial centroids for k-means.

    Args:
        x: rows to draw the centroids from, shape (rows, feats); finite.
        k: number of clusters, a Python int in 1..rows.
        key: PRNG key; same key, same centroids.
        method: ``"kmeans++"`` (default; greedy D² sampling as scikit-learn: first row
            uniform, then for each next centre 2 + floor(ln k) candidate rows drawn with
            probability proportional to their squared distance to the nearest chosen centre,
            keeping the candidate that lowers the summed squared distance most; uniform draws
            if all distances are 0) or ``"random"`` (k distinct rows, uniformly; faiss's
            default, for reference parity).

    Returns:
        Centroids, shape (k, feats), rows of ``x``.

    Raises:
        ValueError: on a bad ``method``, ``k`` out of range, or non-finite rows.
    """
    x = _as_features(x)
    if method not in INIT_METHODS:
        raise ValueError(f"method must be one of {INIT_METHODS}, got {method!r}")
    _check_common(x, k, chunk_rows=1)
    _check_finite(x)
    return _kmeans_init_jit(x, key, k, method)


@partial(jax.jit, static_argnames=("iters", "chunk_rows", "sharding"))
def _lloyd_jit(x, centroids, iters, chunk_rows, sharding):
    c, lab, sq, obj, counts, n_iter = _lloyd_rows(
        x, centroids[None], iters=iters, chunk_rows=chunk_rows, sharding=sharding
    )
    return KMeansResult(c[0], lab[0], obj[0], counts[0], n_iter[0])


@x64_scope
def lloyd(
    x: Float[ArrayLike, "rows feats"],
    centroids: Float[ArrayLike, "clusters feats"],
    *,
    iters: int = 20,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> KMeansResult:
    """Lloyd iterations from given centroids on all rows of ``x`` (no subsampling).

    One iteration assigns every row to its nearest centroid (first minimum on ties) and moves
    each centroid to the mean of its rows; empty clusters are re-seeded at the farthest rows
    (module docstring). Stops after ``iters`` updates or at a fixed point, then assigns every
    row to the final centroids.

    Args:
        x: features, shape (rows, feats); may be row-sharded over a mesh (see module docstring).
        centroids: initial centroids, shape (clusters, feats), at most ``rows`` of them.
        iters: maximum number of centroid updates (20 = the reference's ``niter``).
        chunk_rows: rows per distance block (memory clusters x chunk_rows floats).

    Returns:
        `KMeansResult` with the final centroids, labels of every row, objective and counts.

    Raises:
        ValueError: on shape mismatch, too many centroids, non-finite input or bad sizes.
    """
    x = _as_features(x)
    c = jnp.asarray(centroids, dtype=x.dtype)
    if c.ndim != 2 or c.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids must have shape (clusters, {x.shape[1]}), got {tuple(c.shape)}"
        )
    _check_common(x, c.shape[0], iters=iters, chunk_rows=chunk_rows)
    _check_finite(x)
    _check_finite(c, "centroids")
    return _lloyd_jit(x, c, iters, chunk_rows, _row_sharding(x))


@partial(jax.jit, static_argnames=("chunk_rows", "sharding"))
def _assign_jit(x, centroids, chunk_rows, sharding):
    return _assign_rows(x, centroids, chunk_rows=chunk_rows, sharding=sharding)


@x64_scope
def assign(
    x: Float[ArrayLike, "rows feats"],
    centroids: Float[ArrayLike, "clusters feats"],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[Int[Array, " rows"], Float[Array, " rows"]]:
    """Nearest centroid of every row.

    Args:
        x: features, shape (rows, feats); may be row-sharded.
        centroids: shape (clusters, feats).
        chunk_rows: rows per distance block.

    Returns:
        ``(labels, sqdist)``: the index of the nearest centroid (int32; ties to the lower id)
        and the squared L2 distance to it (clamped at 0 against rounding), both shape (rows,).

    Raises:
        ValueError: on a feature-count mismatch or a bad ``chunk_rows``.
    """
    x = _as_features(x)
    c = jnp.asarray(centroids, dtype=x.dtype)
    if c.ndim != 2 or c.shape[1] != x.shape[1] or c.shape[0] < 1:
        raise ValueError(
            f"centroids must have shape (clusters, {x.shape[1]}), got {tuple(c.shape)}"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return _assign_jit(x, c, chunk_rows, _row_sharding(x))


@partial(
    jax.jit,
    static_argnames=("k", "init", "iters", "restarts", "n_train", "chunk_rows", "sharding"),
)
def _kmeans_jit(x, key, k, init, iters, restarts, n_train, chunk_rows, sharding):
    n = x.shape[0]
    k_sub, k_init = jr.split(key)
    subsample = n_train < n
    if subsample:
        xt = x[_sample_rows(k_sub, n, n_train)]
    else:
        xt = x
    inits = jax.vmap(lambda kk: _init(xt, k, kk, init))(jr.split(k_init, restarts))
    c, lab, sq, obj, counts, n_iter = _lloyd_rows(
        xt,
        inits,
        iters=iters,
        chunk_rows=chunk_rows,
        sharding=None if subsample else sharding,
    )
    best = jnp.argmin(obj)  # restarts: lowest training objective wins (first on ties)
    centroids = c[best]
    if subsample:
        labels, sqdist = _assign_rows(x, centroids, chunk_rows=chunk_rows, sharding=sharding)
        counts_all = jnp.zeros(k, jnp.int32).at[labels].add(1)
        return KMeansResult(centroids, labels, jnp.sum(sqdist), counts_all, n_iter[best])
    return KMeansResult(centroids, lab[best], obj[best], counts[best], n_iter[best])


@x64_scope
def kmeans(
    x: Float[ArrayLike, "rows feats"],
    k: int,
    *,
    key: Key,
    init: InitMethod = "kmeans++",
    iters: int = 20,
    restarts: int = 1,
    max_points_per_centroid: int | None = 256,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> KMeansResult:
    """L2 k-means (Lloyd), faiss's recipe with a k-means++ init; restarts in one loop.

    Recipe (module docstring for details): draw a training set (all rows, or a seeded uniform
    subsample of ``max_points_per_centroid * k`` rows when there are more rows than that, as
    faiss does), initialise ``restarts`` times, run up to ``iters`` Lloyd updates per restart in
    one jitted loop, keep the restart with the lowest objective on the training set, then
    assign every row of ``x`` to its centroids. Deterministic given ``key``. One jitted call;
    it compiles once per (shape, dtype, k, init, iters, restarts, subsample size, chunk).

    Args:
        x: features, shape (rows, feats); finite. A float32 jax array stays float32; numpy
            float64 and integer input run in float64 whether or not x64 is enabled.
            A `jax.Array` sharded by rows over a mesh axis runs data-parallel.
        k: number of clusters, a Python int in 1..rows.
        key: PRNG key (subsample and init draws are split from it).
        init: ``"kmeans++"`` (default) or ``"random"`` (k distinct rows; reference parity).
        iters: maximum Lloyd updates per restart (reference: 20).
        restarts: independent inits run at once (faiss's ``nredo``; reference: 1).
        max_points_per_centroid: training-subsample size per centroid (faiss default 256);
            ``None`` trains on all rows.
        chunk_rows: rows per distance block (peak memory ~ k x chunk_rows floats per restart).

    Returns:
        `KMeansResult`: centroids, labels of all rows, objective over all rows, counts, n_iter.

    Raises:
        ValueError: if ``x`` is not 2-D or has NaN/inf rows, ``k`` is not in 1..rows, or
            ``init``/``iters``/``restarts``/``max_points_per_centroid``/``chunk_rows`` is invalid.
    """
    x = _as_features(x)
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    _check_common(x, k, iters=iters, chunk_rows=chunk_rows)
    k = int(k)  # a numpy int would be a different static argument: one more compilation
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise ValueError(
            f"max_points_per_centroid must be >= 1 or None, got {max_points_per_centroid}"
        )
    _check_finite(x)
    n = x.shape[0]
    cap = n if max_points_per_centroid is None else max_points_per_centroid * k
    return _kmeans_jit(x, key, k, init, iters, restarts, min(n, cap), chunk_rows, _row_sharding(x))


def _kmeans_padded_one(x, n_valid, key, *, k, init, iters, restarts, cap, chunk_rows):
    """`kmeans` of the first ``n_valid`` rows of ``x`` (the rest is padding), same draws.

    The training subsample is the top ``min(n_valid, cap)`` of the same uniforms (padding
    below them all), in row order, padded to a static ``min(rows, cap)``; the rows are then all
    assigned to the winning centroids, so labels equal an unpadded `kmeans` call.
    """
    n = x.shape[0]
    m_max = n if cap is None else min(n, cap)
    m = n_valid if cap is None else jnp.minimum(n_valid, cap)
    k_sub, k_init = jr.split(key)
    u = jnp.where(jnp.arange(n) < n_valid, jr.uniform(k_sub, (n,)), -1.0)
    top = jax.lax.top_k(u, m_max)[1]
    keep = jnp.arange(m_max) < m
    idx = jnp.sort(jnp.where(keep, top, n))  # training rows in row order, padding last
    xt = x[jnp.minimum(idx, n - 1)]
    inits = jax.vmap(lambda kk: _init(xt, k, kk, init, keep))(jr.split(k_init, restarts))
    chunk, m_pad = _chunking(m_max, chunk_rows)
    xtp, _ = _pad_rows(xt, m_pad)
    valid_t = jnp.arange(m_pad) < m
    c, _, _, obj, _, n_iter = _lloyd_local(xtp, valid_t, inits, iters=iters, chunk=chunk, axes=None)
    best = jnp.argmin(obj)
    centroids = c[best]
    labels, sqdist = _assign_rows(x, centroids, chunk_rows=chunk_rows, sharding=None)
    valid = jnp.arange(n) < n_valid
    counts = jax.ops.segment_sum(valid.astype(jnp.int32), labels, k)
    objective = jnp.sum(jnp.where(valid, sqdist, 0.0))
    return KMeansResult(centroids, labels, objective, counts, n_iter[best])


@partial(jax.jit, static_argnames=("k", "init", "iters", "restarts", "cap", "chunk_rows"))
def _kmeans_padded_jit(xs, n_valid, keys, k, init, iters, restarts, cap, chunk_rows):
    one = partial(
        _kmeans_padded_one,
        k=k, init=init, iters=iters, restarts=restarts, cap=cap, chunk_rows=chunk_rows,
    )  # fmt: skip
    # One problem after another (lax.map), not vmap: a vmapped segment_sum lowers to a batched
    # scatter ~20x slower on XLA:CPU and each problem fills the machine on its own (see
    # `_lloyd_local`); the point is one compilation for every stratum.
    return jax.lax.map(lambda a: one(*a), (xs, n_valid, keys))
