"""Baseline selectors in S2L's API. Entry points: `select_random`, `select_stratified`,
`select_by_score`, `select_final_loss_clusters`, `select_embedding_kmeans`.

Every selector returns the chosen row indices (int32), sorted ascending, exactly ``budget`` of
them without duplicates, and is deterministic given its key:

- `select_random`: a uniform subset (the baseline S2L must beat).
- `select_stratified`: water filling over data sources, uniform inside each: the reference's
  source stratification without k-means (spec §1.5, §3.3 pitfalls: always run it).
- `select_by_score`: the ``budget`` highest (or lowest) scores, e.g. the final proxy loss
  (an EL2N-like "hardest examples" / "easiest examples" rule).
- `select_final_loss_clusters`: S2L's clustering and balanced sampling on the final loss only
  (one column instead of the whole trajectory).
- `select_embedding_kmeans`: the same clustering and sampling on embeddings (e.g. the proxy's
  mean input embeddings) instead of loss trajectories.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ..._types import Array, ArrayLike, Float, Int, Key
from ._kmeans import InitMethod
from ._select import Fallback, Transform, _check_budget, balanced_select, s2l_select


def _sorted_int32(idx) -> Array:
    return jnp.sort(jnp.asarray(idx)).astype(jnp.int32)


def select_random(n: int, budget: int, *, key: Key) -> Int[Array, " selected"]:
    """A uniform random subset of ``budget`` of the rows 0..n-1.

    Args:
        n: number of rows in the pool (a non-negative int).
        budget: rows to choose, in 0..n.
        key: PRNG key.

    Returns:
        Sorted row indices (int32), shape (budget,).

    Raises:
        ValueError: if ``n`` is negative or ``budget`` is outside 0..n.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    budget = _check_budget(budget, int(n))
    if budget == 0:
        return jnp.zeros(0, jnp.int32)
    # The top-budget of n uniforms is a uniform subset (cheaper than a full permutation on CPU).
    return _sorted_int32(jax.lax.top_k(jr.uniform(key, (int(n),)), budget)[1])


def select_stratified(
    strata: Int[ArrayLike, " rows"], budget: int, *, key: Key
) -> Int[Array, " selected"]:
    """Source-stratified random selection: water filling over strata, uniform inside.

    Strata are visited from the smallest, each taking ``min(size, floor(rest / strata
    left))`` (so small sources are taken whole and the rest is shared evenly), then each
    stratum's quota is a uniform sample of its rows. No stratum is set aside.

    Args:
        strata: source id of every row (integers), shape (rows,).
        budget: rows to choose, in 0..rows.
        key: PRNG key.

    Returns:
        Sorted row indices (int32), shape (budget,).

    Raises:
        ValueError: if ``strata`` is not a 1-D integer array or ``budget`` is out of range.
    """
    return balanced_select(strata, budget, key=key, min_size=1)


def select_by_score(
    scores: Float[ArrayLike, " rows"], budget: int, *, highest: bool = True
) -> Int[Array, " selected"]:
    """The ``budget`` rows with the highest (or lowest) score; ties go to the lower row index.

    With the proxy's final per-example loss as the score, ``highest=True`` keeps the hardest
    examples (EL2N-like) and ``highest=False`` the easiest.

    Args:
        scores: one finite score per row, shape (rows,).
        budget: rows to choose, in 0..rows.
        highest: keep the largest scores (else the smallest).

    Returns:
        Sorted row indices (int32), shape (budget,).

    Raises:
        ValueError: if ``scores`` is not 1-D or has NaN/inf, or ``budget`` is out of range.
    """
    s = jnp.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (rows,), got shape {tuple(s.shape)}")
    bad = int(jnp.sum(~jnp.isfinite(s)))
    if bad:
        raise ValueError(f"scores have {bad} NaN or inf entries of {s.shape[0]}")
    budget = _check_budget(budget, s.shape[0])
    if budget == 0:
        return jnp.zeros(0, jnp.int32)
    # lax.top_k is stable (equal values: lower index first), so ties go to the lower index.
    return _sorted_int32(jax.lax.top_k(s if highest else -s, budget)[1])


def select_final_loss_clusters(
    trajectories_or_final: Float[ArrayLike, "rows ..."],
    budget: int,
    *,
    key: Key,
    k: int = 100,
    strata: Int[ArrayLike, " rows"] | None = None,
    init: InitMethod = "kmeans++",
    iters: int = 20,
    max_points_per_centroid: int | None = 256,
    min_size: int = 3,
    fallback: Fallback = "pool",
) -> Int[Array, " selected"]:
    """S2L on the final loss only: k-means of the last column, then balanced sampling.

    Args:
        trajectories_or_final: loss trajectories, shape (rows, ckpts) (the last column, i.e. the
            last checkpoint, is used), or the final losses, shape (rows,).
        budget: rows to choose, in 0..rows.
        key: PRNG key.
        k, strata, init, iters, max_points_per_centroid, min_size, fallback: as in
            `s2l_select`.

    Returns:
        Sorted row indices (int32), shape (budget,).

    Raises:
        ValueError: as `s2l_select`, or if the input is neither 1-D nor 2-D.
    """
    a = jnp.asarray(trajectories_or_final)
    if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] == 0):
        raise ValueError(f"expected (rows,) or (rows, ckpts) losses, got shape {tuple(a.shape)}")
    final = a[:, -1:] if a.ndim == 2 else a[:, None]
    return s2l_select(
        final,
        budget,
        key=key,
        k=k,
        strata=strata,
        init=init,
        iters=iters,
        max_points_per_centroid=max_points_per_centroid,
        min_size=min_size,
        fallback=fallback,
    ).indices


def select_embedding_kmeans(
    embeddings: Float[ArrayLike, "rows feats"],
    budget: int,
    *,
    key: Key,
    k: int = 100,
    strata: Int[ArrayLike, " rows"] | None = None,
    transform: Transform = "raw",
    init: InitMethod = "kmeans++",
    iters: int = 20,
    max_points_per_centroid: int | None = 256,
    min_size: int = 3,
    fallback: Fallback = "pool",
) -> Int[Array, " selected"]:
    """k-means on embeddings, then S2L's balanced sampling (an embedding-diversity baseline).

    Args:
        embeddings: one vector per row, shape (rows, feats), finite.
        budget: rows to choose, in 0..rows.
        key: PRNG key.
        k, strata, transform, init, iters, max_points_per_centroid, min_size, fallback: as in
            `s2l_select` (``transform="zscore"`` standardises embedding dimensions).

    Returns:
        Sorted row indices (int32), shape (budget,).

    Raises:
        ValueError: as `s2l_select`.
    """
    return s2l_select(
        embeddings,
        budget,
        key=key,
        k=k,
        strata=strata,
        transform=transform,
        init=init,
        iters=iters,
        max_points_per_centroid=max_points_per_centroid,
        min_size=min_size,
        fallback=fallback,
    ).indices
