"""Cluster-balanced selection ("water filling") and the S2L selector. Entry point: `s2l_select`.

S2L fills a budget B from K clusters of loss trajectories by visiting clusters from the smallest
to the largest and giving each the even share of what is left (spec §1.6)::

    sizes sorted ascending: s_1 <= ... <= s_C          (ties: lower cluster id first)
    rem = B
    for i in 1..C:  take_i = min(s_i, floor(rem / (C - i + 1)));  rem -= take_i

`water_fill` computes these quotas with a `lax.scan` (exactly the reference arithmetic). The result
is max-min fair: every cluster gets ``min(size, L)`` or ``L + 1`` for a common level L, the
clusters that get L + 1 being the last (largest) unsaturated ones; the quotas sum to
``min(B, sum of sizes)``.

`balanced_select` applies it to row labels, as the reference does:

- **set-aside clusters**: clusters with fewer than ``min_size`` rows (reference: <= 2, i.e.
  ``min_size=3``) are not water-filled; their rows form a fallback pool that is sampled
  uniformly only for what the other clusters cannot supply (``fallback="pool"``, reference)
  or never (``fallback="error"`` raises instead). Water filling over the C *eligible*
  clusters saturates every one of them before it leaves budget over, so the pool always has
  room when B <= rows (spec §1.6 notes the reference can raise there; here that case is
  guarded by a clear error but cannot occur).
- **budget below the number of clusters** (B < C): the arithmetic gives the C - B smallest
  clusters nothing and the B largest one row each (reference behaviour, kept: "prioritise
  small clusters" is false for tiny budgets; ties between equal sizes go to the higher id).
- **strata** (the reference's split by data source, spec §1.5): the budget is first
  water-filled over strata by their sizes, then each stratum's share over the clusters
  *within* that stratum (a cluster's rows in a stratum count as one cluster there), each with
  its own set-aside pool. A stratum no larger than its share is taken whole.
- **sampling**: one uniform random key per row, rows sorted by (group, key); a row is chosen
  when its rank within its group is below the group's quota: a uniform sample without
  replacement inside every cluster, no Python loop over clusters, deterministic per key.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ..._types import Array, ArrayLike, Bool, Float, Int, Key
from ...fitting import x64_scope
from ._kmeans import (
    DEFAULT_CHUNK_ROWS,
    INIT_METHODS,
    InitMethod,
    KMeansResult,
    _as_features,
    _kmeans_padded_jit,
    kmeans,
)

Fallback = str  # "pool" | "error"
FALLBACKS = ("pool", "error")
Transform = str  # "raw" | "log" | "zscore"
TRANSFORMS = ("raw", "log", "zscore")
LOG_FLOOR = 1e-6  # "log" transform: log(max(x, LOG_FLOOR)), so a filled loss of 0 stays finite


# ---------------------------------------------------------------------------- water filling
def _water_fill(sizes, budget, eligible):
    """Reference water-filling quotas; ``budget`` may be traced (vmappable over strata)."""
    k = sizes.shape[0]
    big = jnp.iinfo(sizes.dtype).max
    order = jnp.argsort(jnp.where(eligible, sizes, big), stable=True)  # eligible first
    c = jnp.sum(eligible, dtype=sizes.dtype)

    def step(rem, inp):
        i, s, e = inp
        share = rem // jnp.maximum(c - i, 1)
        take = jnp.where(e, jnp.minimum(s, share), 0)
        return rem - take, take

    idx = jnp.arange(k, dtype=sizes.dtype)
    _, takes = jax.lax.scan(
        step, jnp.asarray(budget, sizes.dtype), (idx, sizes[order], eligible[order])
    )
    return jnp.zeros_like(sizes).at[order].set(takes)


_water_fill_jit = jax.jit(_water_fill)


def _int_dtype():
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


def water_fill(
    sizes: Int[ArrayLike, " clusters"],
    budget: int,
    *,
    eligible: Bool[ArrayLike, " clusters"] | None = None,
) -> Int[Array, " clusters"]:
    """Per-cluster quotas by the reference's smallest-first water filling (spec §1.6).

    Eligible clusters are sorted by size, ascending (ties: lower index first, a stable sort;
    the reference's ``np.argsort`` is unstable), and visited in that order; cluster i of C
    takes ``min(size_i, floor(remaining / (C - i)))`` (0-based i).

    Args:
        sizes: cluster sizes (non-negative ints), shape (clusters,).
        budget: rows to allocate, a non-negative int.
        eligible: clusters that may receive rows (default: all); the others get 0 and do not
            count in C.

    Returns:
        Quotas, shape (clusters,): each ``<= size``, summing to ``min(budget, sum of eligible
        sizes)``; max-min fair (module docstring). With ``budget`` below the number of
        eligible clusters, the ``budget`` largest get 1 each and the rest 0.

    Raises:
        ValueError: on negative sizes or budget, or a shape mismatch.
    """
    s = np.asarray(sizes)
    if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"sizes must be a 1-D integer array, got shape {s.shape}, {s.dtype}")
    if s.size and s.min() < 0:
        raise ValueError(f"sizes must be non-negative, got min {s.min()}")
    budget = _check_budget(budget)
    e = np.ones(s.shape, bool) if eligible is None else np.asarray(eligible)
    if e.shape != s.shape or e.dtype != bool:
        raise ValueError(
            f"eligible must be a bool array of shape {s.shape}, got {e.shape} {e.dtype}"
        )
    return _water_fill_jit(jnp.asarray(s, _int_dtype()), budget, jnp.asarray(e))


def _check_budget(budget, pool: int | None = None) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise ValueError(f"budget must be an int, got {budget!r}")
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if pool is not None and budget > pool:
        raise ValueError(f"budget {budget} exceeds the pool of {pool} rows")
    return budget


# ------------------------------------------------------------------------ balanced sampling
class Plan(NamedTuple):
    """Quotas of a balanced selection, per stratum and cluster.

    Attributes:
        sizes: rows per (stratum, cluster), shape (sources, clusters + 1); the last column is
            the stratum's set-aside pool (rows of its clusters smaller than ``min_size``),
            whose own columns hold 0.
        quotas: rows to draw per (stratum, cluster), same shape; the last column is what the
            pool supplies.
    """

    sizes: Int[Array, "sources groups"]
    quotas: Int[Array, "sources groups"]


@partial(jax.jit, static_argnames=("n_strata", "n_clusters", "min_size"))
def _plan(labels, strata, valid, budget, n_strata, n_clusters, min_size):
    dt = _int_dtype()
    sizes = jnp.zeros((n_strata, n_clusters), dt).at[strata, labels].add(valid.astype(dt))
    q_strata = _water_fill(jnp.sum(sizes, axis=1), budget, jnp.ones(n_strata, bool))
    eligible = sizes >= min_size
    q = jax.vmap(_water_fill)(sizes, q_strata, eligible)  # clusters within each stratum
    pool = jnp.sum(jnp.where(eligible, 0, sizes), axis=1)
    need = q_strata - jnp.sum(q, axis=1)  # what the eligible clusters could not supply
    all_sizes = jnp.concatenate([jnp.where(eligible, sizes, 0), pool[:, None]], axis=1)
    quotas = jnp.concatenate([q, need[:, None]], axis=1)
    return Plan(all_sizes, quotas)


@jax.jit
def _sample(groups, quotas_flat, key):
    """Mask of the rows whose rank (by a random key) within their group is below its quota."""
    n = groups.shape[0]
    u = jr.bits(key, (n,), jnp.uint32)
    order = jnp.lexsort((u, groups))  # by group, then by the random key
    g = groups[order]
    pos = jnp.arange(n, dtype=jnp.int32)
    first = jax.ops.segment_min(pos, g, quotas_flat.shape[0], indices_are_sorted=True)
    chosen_sorted = pos - first[g] < quotas_flat[g]
    return jnp.zeros(n, bool).at[order].set(chosen_sorted)


def _bucket(n: int, floor: int = 1) -> int:
    """Next power of two >= max(n, floor): padded shapes bound the number of compilations."""
    return 1 << (max(n, floor) - 1).bit_length()


def _dense_ids(values, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values)
    if v.ndim != 1 or (v.size and not np.issubdtype(v.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {v.shape}, {v.dtype}")
    if v.shape[0] != n:
        raise ValueError(f"{name} has {v.shape[0]} entries, expected {n} (one per row)")
    uniq, inv = np.unique(v, return_inverse=True)
    return uniq, inv.astype(np.int32)


def _balanced(
    labels: np.ndarray,
    n_clusters: int,
    strata: np.ndarray,
    n_strata: int,
    budget: int,
    *,
    key,
    min_size: int,
    fallback: str,
) -> tuple[Array, Plan]:
    """Plan and sample with dense ids (labels in [0, n_clusters), strata in [0, n_strata))."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"min_size must be an int >= 1, got {min_size!r}")
    n = labels.shape[0]
    budget = _check_budget(budget, n)
    # Rows, clusters and strata are padded to powers of two (padding rows carry no weight and
    # fall in a group with quota 0), so pools of other sizes reuse the same compilations.
    n_pad, k_pad, s_pad = _bucket(n, 64), _bucket(n_clusters, 16), _bucket(n_strata, 4)
    labels_j = jnp.asarray(np.pad(labels, (0, n_pad - n)), jnp.int32)
    strata_j = jnp.asarray(np.pad(strata, (0, n_pad - n)), jnp.int32)
    valid = jnp.arange(n_pad) < n
    plan = _plan(labels_j, strata_j, valid, budget, s_pad, k_pad, min_size)
    sizes, quotas = np.asarray(plan.sizes), np.asarray(plan.quotas)
    short = quotas[:, -1] - sizes[:, -1]
    if short.max(initial=0) > 0:  # cannot happen for budget <= rows (module docstring)
        raise ValueError(f"the fallback pool is {int(short.max())} rows short of the budget")
    if fallback == "error" and quotas[:, -1].sum() > 0:
        raise ValueError(
            f"budget {budget} needs {int(quotas[:, -1].sum())} rows from clusters smaller than "
            f"min_size={min_size} (fallback='error'); lower the budget or use fallback='pool'"
        )
    if int(quotas.sum()) != budget:
        raise ValueError(f"quotas sum to {int(quotas.sum())}, not the budget {budget}")
    # Group of a row: its (stratum, cluster), or its stratum's pool (column k_pad) when the
    # cluster is set aside (the plan zeroed the sizes of set-aside clusters); padding rows get
    # the extra last group, whose quota is 0.
    eligible = plan.sizes[strata_j, labels_j] > 0
    groups = strata_j * (k_pad + 1) + jnp.where(eligible, labels_j, k_pad)
    groups = jnp.where(valid, groups, s_pad * (k_pad + 1))
    quotas_flat = jnp.concatenate([plan.quotas.reshape(-1), jnp.zeros(1, plan.quotas.dtype)])
    chosen = np.asarray(_sample(groups, quotas_flat, key))[:n]
    cols = np.r_[np.arange(n_clusters), k_pad]  # drop the padding clusters and strata
    out = Plan(plan.sizes[:n_strata][:, cols], plan.quotas[:n_strata][:, cols])
    return jnp.asarray(np.flatnonzero(chosen), jnp.int32), out


def balanced_select(
    labels: Int[ArrayLike, " rows"],
    budget: int,
    *,
    key: Key,
    min_size: int = 3,
    strata: Int[ArrayLike, " rows"] | None = None,
    fallback: Fallback = "pool",
) -> Int[Array, " selected"]:
    """Choose ``budget`` rows, spreading them evenly over clusters (smallest first).

    The S2L allocation (module docstring): water-filling quotas per cluster (within each
    stratum when ``strata`` is given, after the budget is water-filled over strata), then a
    uniform sample without replacement of each cluster's quota.

    Args:
        labels: cluster id of every row (any integers; only equality and order matter, the order
            breaks size ties), shape (rows,).
        budget: rows to choose, an int in 0..rows.
        key: PRNG key; same key, same rows; another key, another sample.
        min_size: clusters with fewer rows are set aside (reference: 3, i.e. clusters of <= 2
            rows) and only used as a fallback pool; 1 disables it.
        strata: optional source id of every row, shape (rows,) (the reference's ``source``).
        fallback: ``"pool"`` (reference) draws what the eligible clusters cannot supply from the
            set-aside rows; ``"error"`` raises instead.

    Returns:
        The chosen row indices (int32), sorted ascending, shape (budget,); no duplicates.

    Raises:
        ValueError: if ``budget`` is negative or above the number of rows, ``labels``/``strata``
            are not 1-D integer arrays of one length, ``min_size`` < 1, or ``fallback="error"``
            and the set-aside rows would be needed.
    """
    lab = np.asarray(labels)
    n = lab.shape[0] if lab.ndim == 1 else -1
    _, lab_d = _dense_ids(lab, "labels", n)
    if strata is None:
        st_d, n_strata = np.zeros(n, np.int32), 1
    else:
        uniq, st_d = _dense_ids(strata, "strata", n)
        n_strata = max(len(uniq), 1)
    n_clusters = max(int(lab_d.max(initial=-1)) + 1, 1)
    idx, _ = _balanced(
        lab_d, n_clusters, st_d, n_strata, budget, key=key, min_size=min_size, fallback=fallback
    )
    return idx


# ----------------------------------------------------------------------------- the selector
class S2LSelection(NamedTuple):
    """Result of `s2l_select`.

    Attributes:
        indices: chosen rows (int32), sorted ascending, shape (budget,).
        labels: cluster of every row (int32), shape (rows,); with ``per_stratum_kmeans`` the
            ids are local to each stratum (0 for strata taken whole without clustering).
        kmeans: the `KMeansResult`, or with ``per_stratum_kmeans`` a tuple with one per stratum
            (in ``sources`` order; ``None`` for a stratum taken whole).
        sizes: rows per (stratum, cluster), shape (sources, k + 1); the last column is the
            set-aside pool (clusters with fewer than ``min_size`` rows), whose own columns are 0.
        quotas: rows drawn per (stratum, cluster), same shape.
        sources: the distinct stratum ids, in row order of ``sizes`` (``[0]`` without strata).
    """

    indices: Int[Array, " selected"]
    labels: Int[Array, " rows"]
    kmeans: KMeansResult | tuple[KMeansResult | None, ...]
    sizes: Int[Array, "sources groups"]
    quotas: Int[Array, "sources groups"]
    sources: Int[Array, " sources"]


def _transform(x: Array, transform: str) -> Array:
    if transform == "raw":
        return x
    if transform == "log":
        neg = int(jnp.sum(x < 0))
        if neg:
            raise ValueError(f"transform='log' needs non-negative features, {neg} entries are < 0")
        return jnp.log(jnp.maximum(x, LOG_FLOOR))
    mu = jnp.mean(x, axis=0, keepdims=True)
    sd = jnp.std(x, axis=0, keepdims=True)
    return (x - mu) / jnp.where(sd > 0, sd, 1.0)


def _per_stratum_kmeans(x, st_d, n_strata, budget, k, key, opts):
    """k-means inside every stratum larger than its water-filled share, all at once.

    Ragged strata become padding plus a count: the rows of each clustered stratum are stacked
    into a ``[strata, max rows, feats]`` block and clustered by one jitted call
    (`_kmeans_padded_jit`) that reproduces `kmeans` on each stratum alone (same keys
    ``fold_in(key, stratum)``, same draws, same labels). Strata with fewer than ``k`` rows use
    as many clusters as rows, so they form their own blocks, one per cluster count.
    """
    sizes_s = np.bincount(st_d, minlength=n_strata)
    shares = np.asarray(water_fill(sizes_s, budget))
    labels = np.zeros(len(st_d), np.int32)
    per: list[KMeansResult | None] = [None] * n_strata  # None: taken whole (reference)
    clustered = np.flatnonzero(sizes_s > shares)
    if clustered.size == 0:
        return labels, tuple(per)
    if opts["restarts"] < 1:
        raise ValueError(f"restarts must be >= 1, got {opts['restarts']}")
    if opts["iters"] < 0:
        raise ValueError(f"iters must be >= 0, got {opts['iters']}")
    mppc = opts["max_points_per_centroid"]
    if mppc is not None and mppc < 1:
        raise ValueError(f"max_points_per_centroid must be >= 1 or None, got {mppc}")
    xn = np.asarray(x)
    order = np.argsort(st_d, kind="stable")  # rows grouped by stratum, in row order
    starts = np.r_[0, np.cumsum(sizes_s)]
    k_of = np.minimum(k, sizes_s)
    for kk in np.unique(k_of[clustered]):  # one block per cluster count (usually just k)
        group = clustered[k_of[clustered] == kk]
        n_max = int(sizes_s[group].max())
        xs = np.zeros((len(group), n_max, xn.shape[1]), xn.dtype)
        for g, s in enumerate(group):
            xs[g, : sizes_s[s]] = xn[order[starts[s] : starts[s + 1]]]
        keys = jax.vmap(jr.fold_in, in_axes=(None, 0))(key, jnp.asarray(group, jnp.uint32))
        res = _kmeans_padded_jit(
            jnp.asarray(xs),
            jnp.asarray(sizes_s[group], jnp.int32),
            keys,
            int(kk),
            opts["init"],
            opts["iters"],
            opts["restarts"],
            None if mppc is None else mppc * int(kk),
            DEFAULT_CHUNK_ROWS,
        )
        res = jax.tree.map(np.asarray, res)
        for g, s in enumerate(group):
            n_s = int(sizes_s[s])
            r = KMeansResult(
                jnp.asarray(res.centroids[g]),
                jnp.asarray(res.labels[g, :n_s]),
                jnp.asarray(res.objective[g]),
                jnp.asarray(res.counts[g]),
                jnp.asarray(res.n_iter[g]),
            )
            labels[order[starts[s] : starts[s + 1]]] = res.labels[g, :n_s]
            per[s] = r
    return labels, tuple(per)


@x64_scope
def s2l_select(
    features: Float[ArrayLike, "rows feats"],
    budget: int,
    *,
    key: Key,
    k: int = 100,
    strata: Int[ArrayLike, " rows"] | None = None,
    transform: Transform = "raw",
    init: InitMethod = "kmeans++",
    iters: int = 20,
    restarts: int = 1,
    per_stratum_kmeans: bool = False,
    max_points_per_centroid: int | None = 256,
    min_size: int = 3,
    fallback: Fallback = "pool",
) -> S2LSelection:
    """S2L: k-means on loss trajectories, then cluster-balanced sampling (spec §1.5, §1.6, §1.8).

    Defaults follow the reference (raw losses, K = 100, 20 Lloyd iterations, a 256·K-row
    training subsample, clusters of <= 2 rows set aside) except the k-means init: k-means++
    (the S2L experiment beats random selection only with it); ``init="random"`` is the
    reference's faiss init. With ``strata`` the budget
    is first split over strata by water filling (§1.5); ``per_stratum_kmeans=True`` also runs
    k-means separately inside every stratum that is larger than its share (the reference runs
    K = 100 per source; a stratum with fewer than ``k`` rows uses as many clusters as rows),
    all strata in one jitted call on padded rows, with the results of one `kmeans` per stratum.
    Strata no larger than their share are taken whole and not clustered.

    Args:
        features: one row per example, shape (rows, feats), e.g. losses at T checkpoints;
            must be finite (fill NaN first; the reference fills NaN losses with 0). Numpy
            float64 features are clustered in float64 with or without x64 (`kmeans`).
        budget: rows to select, an int in 0..rows.
        key: PRNG key for k-means and sampling.
        k: clusters, in 1..rows (per stratum with ``per_stratum_kmeans``).
        strata: optional source id per row, shape (rows,).
        transform: ``"raw"`` (reference), ``"log"`` (natural log of max(x, 1e-6); features must
            be >= 0) or ``"zscore"`` (per column over all rows; constant columns only centred).
        init: k-means init, ``"kmeans++"`` (default) or ``"random"`` (reference parity).
        iters: Lloyd iterations (reference 20).
        restarts: k-means restarts (reference 1).
        per_stratum_kmeans: cluster each stratum separately (needs ``strata``).
        max_points_per_centroid: k-means training subsample per centroid (faiss 256); ``None``
            trains on all rows.
        min_size: set-aside threshold of `balanced_select` (reference 3).
        fallback: see `balanced_select`.

    Returns:
        `S2LSelection` with the chosen indices, labels, k-means result(s), sizes and quotas.

    Raises:
        ValueError: on NaN/inf features (naming how many rows), a budget outside 0..rows,
            ``k`` outside 1..rows, mismatched ``strata`` length, ``per_stratum_kmeans`` without
            strata, or a bad option value.
    """
    x = _as_features(features, "features")
    n = x.shape[0]
    bad = int(jnp.sum(~jnp.all(jnp.isfinite(x), axis=1)))
    if bad:
        raise ValueError(
            f"features have {bad} of {n} rows with NaN or inf; fill them first (the reference "
            "fills NaN losses with 0) or drop those rows"
        )
    budget = _check_budget(budget, n)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if strata is None:
        if per_stratum_kmeans:
            raise ValueError("per_stratum_kmeans=True needs strata (a source id per row)")
        uniq, st_d, n_strata = np.zeros(1, np.int64), np.zeros(n, np.int32), 1
    else:
        uniq, st_d = _dense_ids(strata, "strata", n)
        n_strata = len(uniq)
    x = _transform(x, transform)
    k_km, k_sel = jr.split(key)
    opts = dict(
        init=init, iters=iters, restarts=restarts, max_points_per_centroid=max_points_per_centroid
    )
    if not per_stratum_kmeans:
        if k > n:
            raise ValueError(f"k must be in 1..{n} (the number of rows), got {k}")
        km = kmeans(x, k, key=k_km, **opts)
        labels = np.asarray(km.labels)
        results: KMeansResult | tuple[KMeansResult | None, ...] = km
    else:
        labels, results = _per_stratum_kmeans(x, st_d, n_strata, budget, k, k_km, opts)
    idx, plan = _balanced(
        labels, k, st_d, n_strata, budget, key=k_sel, min_size=min_size, fallback=fallback
    )
    return S2LSelection(
        idx, jnp.asarray(labels, jnp.int32), results, plan.sizes, plan.quotas, jnp.asarray(uniq)
    )
