"""Model-subset selection: which model families to evaluate so a fitted law extrapolates well.

Owns the V-optimal design criterion of Ruan et al. (2024, §5; reference ``utils/selection.py``)
and three searches over whole model families: `v_optimal` (exhaustive, the reference's
procedure), `random_subsets` (its random baseline), and `greedy_select` / `exchange_select`
for pools too large to enumerate.

The unit of selection is a family. For a family set S with n_S models and pool PC scores P,

    J(S) = -tr(G G_S^-1),   G = P^T P (whole pool),   G_S = sum_{f in S} P_f^T P_f,

and J(S) = -inf when n_S < m (m = number of design columns) or G_S is numerically singular.
-J is the summed prediction variance (in units of sigma^2) of a linear model in the PCs over
every pool model, so larger is better.

The exhaustive search never materialises the list of combinations: the subsets of each chunk
are *unranked* from their position in `itertools.combinations` order (sizes 1, 2, ... in turn,
lexicographic within a size), their Grams are one matmul against the per-family Gram stack,
and a small unrolled Cholesky gives every trace at once. Memory is O(chunk_size * families)
whatever the number of combinations.

    sel = v_optimal(pcs[:, :3], family_ids, 21, [4, 8, 12], include=[0])
    sel.J, sel.families, sel.n_combinations   # (3,), (3, 10) padded with -1, 431909
"""

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Real

from ..fitting import in_float64

# The reference asserts fewer than 1e7 combinations before its (per-combination) loop.
MAX_COMBINATIONS = 10_000_000

# A Cholesky pivot below this fraction of the largest diagonal entry means G_S is singular
# to working precision (rank-deficient P_S gives pivots ~ 1e-16 of the scale).
_PIVOT_RTOL = 1e-12

# Ridge (relative to tr(G)/m) that lets greedy/exchange rank designs that are still singular:
# a tiny ridge makes -tr(G (G_S + d I)^-1) count the missing directions first, information second.
_RIDGE = 1e-8


class VOptimal(NamedTuple):
    """Best family set per budget from the exhaustive V-optimal search.

    Attributes:
        J: objective of the chosen set, shape (budgets,); -inf where no set fits the budget.
        families: chosen family ids ascending, shape (budgets, max_families), padded with -1.
        family_mask: True where ``families`` holds a real id, shape (budgets, max_families).
        member: chosen families as a mask over all ids, shape (budgets, n_families).
        model_mask: pool models in the chosen families, shape (budgets, models).
        n_models: number of models in the chosen set, shape (budgets,).
        cost: summed cost of the chosen set (= ``n_models`` without a cost), shape (budgets,).
        found: False where no combination within the budget has a finite J, shape (budgets,).
        n_combinations: number of combinations enumerated (the reference's "Total:"; the
            include-only fallback is not counted).
    """

    J: Float[Array, " budgets"]
    families: Int[Array, "budgets width"]
    family_mask: Bool[Array, "budgets width"]
    member: Bool[Array, "budgets families"]
    model_mask: Bool[Array, "budgets models"]
    n_models: Int[Array, " budgets"]
    cost: Float[Array, " budgets"]
    found: Bool[Array, " budgets"]
    n_combinations: int


class RandomSubsets(NamedTuple):
    """Random baseline subsets: ``n_random`` per budget, drawn without replacement.

    Attributes:
        J: objective of each subset, shape (budgets, n_random); -inf where not ``valid``.
        families: family ids ascending, shape (budgets, n_random, max_families), padded -1.
        family_mask: True where ``families`` holds a real id.
        member: subsets as masks over all ids, shape (budgets, n_random, n_families).
        model_mask: pool models in each subset, shape (budgets, n_random, models).
        n_models: models per subset, shape (budgets, n_random).
        valid: False for draws beyond the number of eligible subsets, shape (budgets, n_random).
        n_eligible: eligible subsets per budget, shape (budgets,).
        n_combinations: number of combinations enumerated.
    """

    J: Float[Array, "budgets draws"]
    families: Int[Array, "budgets draws width"]
    family_mask: Bool[Array, "budgets draws width"]
    member: Bool[Array, "budgets draws families"]
    model_mask: Bool[Array, "budgets draws models"]
    n_models: Int[Array, "budgets draws"]
    valid: Bool[Array, "budgets draws"]
    n_eligible: Int[Array, " budgets"]
    n_combinations: int


class SearchResult(NamedTuple):
    """Family set per budget from a local search (`greedy_select`, `exchange_select`).

    Attributes:
        J: objective of the chosen set, shape (budgets,); -inf if it is singular.
        families: chosen family ids ascending, shape (budgets, width), padded with -1
            (width = ``max_families``, or ``n_families`` without a cap).
        family_mask: True where ``families`` holds a real id.
        member: chosen families as a mask over all ids, shape (budgets, n_families).
        model_mask: pool models in the chosen families, shape (budgets, models).
        n_models: models in the chosen set, shape (budgets,).
        cost: summed cost of the chosen set (= ``n_models`` without a cost), shape (budgets,).
        found: J finite and the set within budget, shape (budgets,).
        n_moves: accepted additions (greedy) or additions + exchanges, shape (budgets,).
    """

    J: Float[Array, " budgets"]
    families: Int[Array, "budgets width"]
    family_mask: Bool[Array, "budgets width"]
    member: Bool[Array, "budgets families"]
    model_mask: Bool[Array, "budgets models"]
    n_models: Int[Array, " budgets"]
    cost: Float[Array, " budgets"]
    found: Bool[Array, " budgets"]
    n_moves: Int[Array, " budgets"]


# ---------------------------------------------------------------------------- numerics


def _trace_inv(a, g):
    """tr(A^-1 G) for a batch of small SPD A (..., m, m), and whether A passed the pivot test.

    Unrolled over the static m: for m = 3 this is ~15x faster on CPU than batched LAPACK
    Cholesky (one call per 3x3 matrix) and is plain elementwise work on an accelerator.
    """
    m = a.shape[-1]
    scale = jnp.max(jnp.diagonal(a, axis1=-2, axis2=-1), axis=-1)
    ok = jnp.ones(a.shape[:-2], bool)
    low = [[None] * m for _ in range(m)]  # low[i][j]: entry of the Cholesky factor L
    for j in range(m):
        piv = a[..., j, j] - sum((low[j][k] ** 2 for k in range(j)), jnp.zeros_like(scale))
        ok = ok & (piv > _PIVOT_RTOL * scale)
        d = jnp.sqrt(jnp.where(ok, piv, 1.0))
        low[j][j] = d
        for i in range(j + 1, m):
            off = sum((low[i][k] * low[j][k] for k in range(j)), jnp.zeros_like(scale))
            low[i][j] = (a[..., i, j] - off) / d
    inv = [[None] * m for _ in range(m)]  # inv[i][j]: entry of L^-1 (lower triangular)
    for i in range(m):
        inv[i][i] = 1.0 / low[i][i]
        for j in range(i):
            acc = sum((low[i][k] * inv[k][j] for k in range(j, i)), jnp.zeros_like(scale))
            inv[i][j] = -acc / low[i][i]
    # A^-1 = L^-T L^-1, so tr(A^-1 G) = sum_ab (A^-1)_ab G_ba.
    total = jnp.zeros_like(scale)
    for p in range(m):
        for q in range(m):
            ainv = sum(inv[k][p] * inv[k][q] for k in range(max(p, q), m))
            total = total + ainv * g[..., q, p]
    return total, ok


def _objective(gram_s, n_s, g):
    """J(S) = -tr(G G_S^-1), -inf if n_S < m or G_S is singular."""
    val, ok = _trace_inv(gram_s, g)
    return jnp.where(ok & (n_s >= g.shape[-1]), -val, -jnp.inf)


def _ridged(gram_s, g):
    """-tr(G (G_S + d I)^-1): finite for every set, used only to rank singular designs."""
    m = g.shape[-1]
    ridge = _RIDGE * jnp.trace(g) / m * jnp.eye(m, dtype=g.dtype)
    return -_trace_inv(gram_s + ridge.reshape((1,) * (gram_s.ndim - 2) + (m, m)), g)[0]


# ---------------------------------------------------------------------- enumeration


def _combos_at(g, n_free, max_size):
    """Free-family membership (chunk, n_free) of the combinations at global positions ``g``.

    Positions count through ``itertools.combinations`` order (every size-1 set, then size 2,
    ...); within a size, the lexicographic rank is decoded one element at a time.
    """
    sizes = np.arange(1, max_size + 1)
    ends = jnp.asarray(np.cumsum([math.comb(n_free, int(k)) for k in sizes]), jnp.int32)
    # binom[a, j] = C(a, j); with the 1e7 cap on the total every entry used fits in int32
    binom = jnp.asarray(
        [[math.comb(a, j) for j in range(max_size)] for a in range(n_free)], jnp.int32
    )
    size_idx = jnp.searchsorted(ends, g, side="right").astype(jnp.int32)  # size - 1
    rank = g - jnp.where(size_idx > 0, ends[jnp.maximum(size_idx - 1, 0)], 0)
    x = jnp.arange(n_free, dtype=jnp.int32)[None, :]

    def place(carry, i):
        rank, prev, member = carry
        active = i <= size_idx
        rest = jnp.maximum(size_idx - i, 0)  # elements still to place after this one
        # sets whose i-th element is x, given the elements placed so far: C(n - 1 - x, rest)
        count = jnp.where(x > prev[:, None], binom[n_free - 1 - x, rest[:, None]], 0)
        before = jnp.cumsum(count, axis=1) <= rank[:, None]  # (chunk, n_free)
        pick = jnp.sum(before, axis=1, dtype=jnp.int32)
        rank = rank - jnp.sum(jnp.where(before, count, 0), axis=1, dtype=jnp.int32)
        member = member | ((x == pick[:, None]) & active[:, None])
        return (rank, jnp.where(active, pick, prev), member), None

    # a scan, not a Python loop, over positions: keeps the compiled program small
    init = (rank, jnp.full_like(rank, -1), jnp.zeros((g.shape[0], n_free), bool))
    (_, _, member), _ = jax.lax.scan(place, init, jnp.arange(max_size, dtype=jnp.int32))
    return member


class _Pool(NamedTuple):
    """Per-family statistics of a pool, split into the free families and the include set."""

    free_grams: Array  # (n_free, m, m)
    free_counts: Array  # (n_free,)
    free_costs: Array  # (n_free,)
    base_gram: Array  # (m, m): Gram of the include families
    base_count: Array  # ()
    base_cost: Array  # ()
    g: Array  # (m, m): Gram of the whole pool


def _family_stats(x, ids, cost, n_families):
    """Per-family Gram stack (F, m, m), model counts (F,), costs (F,) and the pool Gram."""
    grams = jax.ops.segment_sum(x[:, :, None] * x[:, None, :], ids, num_segments=n_families)
    counts = jax.ops.segment_sum(jnp.ones_like(ids, jnp.int32), ids, num_segments=n_families)
    costs = jax.ops.segment_sum(cost, ids, num_segments=n_families)
    return grams, counts, costs, x.T @ x


def _make_pool(grams, counts, costs, g, free, inc_mask):
    incf = inc_mask.astype(grams.dtype)
    return _Pool(
        free_grams=grams[free],
        free_counts=counts[free],
        free_costs=costs[free],
        base_gram=jnp.einsum("f,fij->ij", incf, grams),
        base_count=inc_mask.astype(counts.dtype) @ counts,
        base_cost=incf @ costs,
        g=g,
    )


def _chunk_stats(pool, member):
    memf = member.astype(pool.free_grams.dtype)
    gram_s = pool.base_gram[None] + jnp.einsum("cf,fij->cij", memf, pool.free_grams)
    n_s = pool.base_count + member.astype(pool.free_counts.dtype) @ pool.free_counts
    cost_s = pool.base_cost + memf @ pool.free_costs
    return gram_s, n_s, cost_s


def _scan_best(pool, budgets, n_free, max_size, n_total, chunk):
    """Per budget, the max J among combinations with cost <= budget, first one on ties.

    Returns J (budgets,) and the free-family membership (budgets, n_free) of the winner.
    """
    n_chunks = -(-n_total // chunk)

    def body(carry, c):
        best_j, best_member = carry
        g = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        valid = g < n_total
        member = _combos_at(jnp.minimum(g, n_total - 1), n_free, max_size)
        gram_s, n_s, cost_s = _chunk_stats(pool, member)
        j = _objective(gram_s, n_s, pool.g)
        fits = valid[None, :] & (cost_s[None, :] <= budgets[:, None])  # (budgets, chunk)
        jb = jnp.where(fits, j[None, :], -jnp.inf)
        i = jnp.argmax(jb, axis=1)  # first maximum: ties go to enumeration order
        v = jnp.take_along_axis(jb, i[:, None], axis=1)[:, 0]
        better = v > best_j  # strict, so an earlier chunk keeps its tie
        best_member = jnp.where(better[:, None], member[i], best_member)
        return (jnp.where(better, v, best_j), best_member), None

    init = (
        jnp.full(budgets.shape, -jnp.inf, pool.g.dtype),
        jnp.zeros((budgets.shape[0], n_free), bool),
    )
    (best_j, best_member), _ = jax.lax.scan(body, init, jnp.arange(n_chunks, dtype=jnp.int32))
    return best_j, best_member


def _scan_random(pool, lo, hi, key, n_free, max_size, n_total, chunk, n_random):
    """Per budget, the ``n_random`` eligible combinations with the smallest random priority.

    Returns their free-family memberships (budgets, n_random, n_free), a valid mask
    (budgets, n_random) and the eligible count per budget.
    """
    n_chunks = -(-n_total // chunk)

    def body(carry, c):
        top_v, top_member, n_elig = carry
        g = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        valid = g < n_total
        member = _combos_at(jnp.minimum(g, n_total - 1), n_free, max_size)
        _, n_s, _ = _chunk_stats(pool, member)
        # a priority per combination (not per chunk), so the draw does not depend on chunk
        u = jax.vmap(lambda gi: jr.uniform(jr.fold_in(key, gi)))(g)
        elig = valid[None, :] & (n_s[None, :] >= lo[:, None]) & (n_s[None, :] <= hi[:, None])
        v, i = jax.lax.top_k(jnp.where(elig, -u[None, :], -jnp.inf), n_random)
        v = jnp.concatenate([top_v, v], axis=1)
        both = jnp.concatenate([top_member, member[i]], axis=1)  # (budgets, 2 n_random, n_free)
        v, i = jax.lax.top_k(v, n_random)
        n_elig = n_elig + elig.sum(1).astype(n_elig.dtype)
        return (v, jnp.take_along_axis(both, i[:, :, None], axis=1), n_elig), None

    b = lo.shape[0]
    init = (
        jnp.full((b, n_random), -jnp.inf, pool.g.dtype),
        jnp.zeros((b, n_random, n_free), bool),
        jnp.zeros((b,), jnp.int32),
    )
    (v, member, n_elig), _ = jax.lax.scan(body, init, jnp.arange(n_chunks, dtype=jnp.int32))
    return member, v > -jnp.inf, n_elig


def _full_member(free_member, free, inc_mask):
    """Free-family memberships (..., n_free) -> masks over all ids (..., n_families)."""
    full = jnp.zeros((*free_member.shape[:-1], inc_mask.shape[0]), bool)
    return full.at[..., free].set(free_member) | inc_mask.reshape((1,) * (full.ndim - 1) + (-1,))


def _finish(member, j, counts, costs, ids, width):
    """Turn family masks (..., F) and their J into the fields of a result."""
    f = member.shape[-1]
    memf = member.astype(costs.dtype)
    n_models = member.astype(counts.dtype) @ counts
    ids_b = jnp.broadcast_to(jnp.arange(f), member.shape)
    order = jnp.sort(jnp.where(member, ids_b, f), axis=-1)[..., :width]
    families = jnp.where(order < f, order, -1)
    return dict(
        J=j,
        families=families,
        family_mask=families >= 0,
        member=member,
        model_mask=member[..., ids],
        n_models=n_models,
        cost=memf @ costs,
    )


# One jitted call per search: statistics, scan and bookkeeping together, so a new pool of
# the same shape runs without retracing. The host wrappers only validate and count.


@partial(
    jax.jit,
    static_argnames=("n_families", "n_free", "max_size", "n_total", "chunk", "width"),
)
def _v_optimal_kernel(
    x, ids, cost, budgets, free, inc_mask, *, n_families, n_free, max_size, n_total, chunk, width
):
    grams, counts, costs, g = _family_stats(x, ids, cost, n_families)
    pool = _make_pool(grams, counts, costs, g, free, inc_mask)
    best_j, best_member = _scan_best(pool, budgets, n_free, max_size, n_total, chunk)
    found = jnp.isfinite(best_j)
    member = jnp.where(found[:, None], _full_member(best_member, free, inc_mask), False)
    # The include set alone is scored last, as a fallback: any superset has J at least as
    # large (G_S only grows), so it is chosen only where the reference finds nothing.
    j_inc = _objective(pool.base_gram, pool.base_count, g)
    alone = jnp.any(inc_mask) & ~found & jnp.isfinite(j_inc) & (pool.base_cost <= budgets)
    member = jnp.where(alone[:, None], inc_mask[None, :], member)
    return _finish(member, jnp.where(alone, j_inc, best_j), counts, costs, ids, width)


@partial(
    jax.jit,
    static_argnames=("n_families", "n_free", "max_size", "n_total", "chunk", "n_random", "width"),
)
def _random_kernel(
    x,
    ids,
    lo,
    hi,
    key,
    free,
    inc_mask,
    *,
    n_families,
    n_free,
    max_size,
    n_total,
    chunk,
    n_random,
    width,
):
    cost = jnp.ones(x.shape[:1], x.dtype)
    grams, counts, costs, g = _family_stats(x, ids, cost, n_families)
    pool = _make_pool(grams, counts, costs, g, free, inc_mask)
    free_member, valid, n_elig = _scan_random(
        pool, lo, hi, key, n_free, max_size, n_total, chunk, n_random
    )
    member = jnp.where(valid[..., None], _full_member(free_member, free, inc_mask), False)
    memf = member.astype(grams.dtype)
    j = _objective(
        jnp.einsum("...f,fij->...ij", memf, grams), member.astype(counts.dtype) @ counts, g
    )
    out = _finish(member, jnp.where(valid, j, -jnp.inf), counts, costs, ids, width)
    del out["cost"]
    return out, valid, n_elig


# ------------------------------------------------------------------------ host side


def _validate(p, family_ids, n_families, budgets, cost, intercept):
    """Checks shared by every search; returns host arrays (design, ids, budgets, cost)."""
    p = np.asarray(p)
    if p.ndim != 2:
        raise ValueError(f"P must be (models, pcs), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        bad = np.argwhere(~np.isfinite(p))[:5].tolist()
        raise ValueError(f"P has NaN/inf entries (first (model, pc) cells: {bad}); impute first")
    ids = np.asarray(family_ids)
    if ids.shape != (p.shape[0],):
        raise ValueError(f"family_ids must have shape ({p.shape[0]},), got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"family_ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n_families):
        raise ValueError(
            f"family_ids must lie in 0..{n_families - 1} (n_families={n_families}), "
            f"got range {ids.min()}..{ids.max()}"
        )
    design = p.astype(np.result_type(p.dtype, np.float32))
    if intercept:
        design = np.concatenate([np.ones((p.shape[0], 1), design.dtype), design], axis=1)
    m = design.shape[1]
    b = np.atleast_1d(np.asarray(budgets, dtype=design.dtype))
    if b.ndim != 1 or b.size == 0:
        raise ValueError(f"budgets must be a non-empty 1-D list, got shape {b.shape}")
    if cost is None:
        if np.any(b < m):
            raise ValueError(
                f"budgets {b[b < m].tolist()} are below m={m} design columns"
                f"{' (PCs + intercept)' if intercept else ' (PCs)'}: a set with fewer models "
                "than columns has a singular Gram"
            )
        c = np.ones(p.shape[0], design.dtype)
    else:
        c = np.asarray(cost, dtype=design.dtype)
        if c.shape != (p.shape[0],) or not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ValueError(f"cost must be finite and >= 0 with shape ({p.shape[0]},)")
    return design, ids, b, c


def _include_mask(include, present, n_families):
    inc = sorted({int(f) for f in include})
    bad = [f for f in inc if not (0 <= f < n_families) or not present[f]]
    if bad:
        raise ValueError(
            f"unknown include families {bad}: not an id in 0..{n_families - 1} with models "
            f"in the pool (ids with models: {np.flatnonzero(present).tolist()})"
        )
    mask = np.zeros(n_families, bool)
    mask[inc] = True
    return mask


class _Setup(NamedTuple):
    arrays: dict  # jnp inputs of the kernels
    static: dict  # static sizes of the kernels
    n_total: int
    m: int


def _exhaustive_setup(
    p, family_ids, n_families, budgets, max_families, include, intercept, cost, limit
):
    """Validate, split free / include families and count the combinations."""
    if max_families < 1:
        raise ValueError(f"max_families must be >= 1, got {max_families}")
    design, ids, b, c = _validate(p, family_ids, n_families, budgets, cost, intercept)
    present = np.bincount(ids, minlength=n_families) > 0
    inc_mask = _include_mask(include, present, n_families)
    n_inc = int(inc_mask.sum())
    if n_inc >= max_families:
        raise ValueError(
            f"include has {n_inc} families but max_families={max_families}: no slot left "
            "for a family to choose"
        )
    # Families with no pool model are not enumerated (the reference enumerates the families
    # present in the pool, in the order of its family list = our id order).
    free = np.flatnonzero(present & ~inc_mask)
    max_size = min(max_families - n_inc, len(free))
    n_total = sum(math.comb(len(free), k) for k in range(1, max_size + 1))
    if n_total == 0:
        raise ValueError("no family left to choose: every family with models is in include")
    if n_total >= limit:
        raise ValueError(
            f"{n_total} family combinations ({len(free)} free families, up to {max_size} per "
            f"set) exceed the limit of {limit}: lower max_families or use greedy_select / "
            "exchange_select"
        )
    arrays = dict(
        x=jnp.asarray(design),
        ids=jnp.asarray(ids),
        budgets=jnp.asarray(b),
        cost=jnp.asarray(c),
        free=jnp.asarray(free),
        inc_mask=jnp.asarray(inc_mask),
    )
    static = dict(
        n_families=int(n_families),
        n_free=len(free),
        max_size=max_size,
        n_total=n_total,
        width=int(max_families),
    )
    return _Setup(arrays, static, n_total, design.shape[1])


@in_float64
def v_optimal(
    P: Float[ArrayLike, "models pcs"],
    family_ids: Int[ArrayLike, " models"],
    n_families: int,
    budgets: Real[ArrayLike, " budgets"] | Sequence[int | float],
    *,
    max_families: int = 10,
    include: Sequence[int] = (),
    intercept: bool = False,
    cost: Float[ArrayLike, " models"] | None = None,
    chunk_size: int = 65536,
    max_combinations: int = MAX_COMBINATIONS,
) -> VOptimal:
    """Exhaustive V-optimal choice of model families, one best set per budget.

    Scores every family combination of size 1..``max_families`` (``include`` families are
    added to every combination and count towards ``max_families``), exactly as the reference
    ``brute_force`` does, and for each budget keeps the combination with the largest J among
    those within budget. Ties go to the first combination in enumeration order:
    ``itertools.combinations`` over the ids of the non-included families that have pool
    models, ascending, all sets of size 1 first, then size 2, and so on. The reference never
    scores the include set on its own; here it is scored after everything else, so it is
    returned only for budgets where no enumerated set is within budget with a finite J (the
    reference would crash or return a -inf set there). Budgets with no finite set at all get
    ``found=False``, J = -inf and no families.

    Math: J(S) = -tr(G G_S^-1), G = X^T X, G_S = X_S^T X_S, X = P (or [1, P] with
    ``intercept``); J = -inf if n_S < m or G_S is singular. V-optimality (Ruan et al. 2024,
    §5): -J / pool size is the mean prediction variance / sigma^2 over the pool.

    Not jittable as a whole (the number of combinations sets static shapes); the scoring loop
    inside is one jitted scan over chunks of ``chunk_size`` combinations.

    Args:
        P: pool PC scores, shape (models, pcs), already centred on the pool (the reference
            uses the first 3 PCs and no intercept). Float64 under x64.
        family_ids: family of each pool model, ints in 0..n_families-1, shape (models,).
            The enumeration order of families is their id order.
        n_families: number of family ids (a Python int); ids without models are skipped.
        budgets: largest set size per query, in models (or in ``cost`` units), shape
            (budgets,).
        max_families: largest number of families in a set, include families counted.
        include: family ids added to every set (reference ``include_family``).
        intercept: prepend a ones column to P (not in the reference; makes the design
            account for the fitted intercept; m grows by one).
        cost: per-model cost (e.g. FLOPs), shape (models,); budgets are then compared with a
            set's summed cost instead of its model count.
        chunk_size: combinations scored per scan step (bounds memory).
        max_combinations: refuse searches with this many combinations or more (reference
            asserts < 1e7).

    Returns:
        A `VOptimal` with the per-budget J, chosen families (ids ascending, padded with -1),
        model mask, model count, cost, found flag and the number of combinations.

    Raises:
        ValueError: P not 2-D or with NaN/inf; family_ids of the wrong shape or out of range;
            a budget below m (count budgets); an include id with no pool models; include
            filling all ``max_families`` slots; too many combinations (use `greedy_select`
            or `exchange_select`).
    """
    setup = _exhaustive_setup(
        P,
        family_ids,
        n_families,
        budgets,
        max_families,
        include,
        intercept,
        cost,
        max_combinations,
    )
    chunk = int(min(chunk_size, setup.n_total))
    out = _v_optimal_kernel(**setup.arrays, **setup.static, chunk=chunk)
    return VOptimal(**out, found=jnp.isfinite(out["J"]), n_combinations=setup.n_total)


@in_float64
def random_subsets(
    P: Float[ArrayLike, "models pcs"],
    family_ids: Int[ArrayLike, " models"],
    n_families: int,
    budgets: Real[ArrayLike, " budgets"] | Sequence[int | float],
    *,
    key: PRNGKeyArray,
    n_random: int = 5,
    grace: int = 2,
    max_families: int = 10,
    include: Sequence[int] = (),
    intercept: bool = False,
    chunk_size: int = 65536,
    max_combinations: int = MAX_COMBINATIONS,
) -> RandomSubsets:
    """Random baseline of the selection study: ``n_random`` family sets per budget.

    Eligible sets are the enumerated combinations of `v_optimal` (same ``max_families`` /
    ``include`` rules) with max(B - grace, m) <= n_S <= B models (the reference's floor is 3
    = m for 3 PCs). Each combination gets a uniform priority from ``key`` folded with its
    enumeration position; the ``n_random`` smallest are returned, i.e. the first draws of a
    uniform shuffle. Same key, same sets (bit for bit); not the reference's Python
    ``random.seed(0)`` stream.

    Args:
        P: pool PC scores, shape (models, pcs).
        family_ids: family of each pool model, ints in 0..n_families-1, shape (models,).
        n_families: number of family ids.
        budgets: budgets in models, shape (budgets,).
        key: JAX PRNG key.
        n_random: draws per budget (reference: 5).
        grace: eligible sizes reach down to B - grace (reference: 2).
        max_families: largest number of families in a set, include families counted.
        include: family ids added to every set.
        intercept: prepend a ones column to P (changes m and J only).
        chunk_size: combinations per scan step; rounded up to ``n_random`` if smaller.
        max_combinations: refuse searches with this many combinations or more.

    Returns:
        A `RandomSubsets`; ``valid`` is False for draws beyond the eligible count.

    Raises:
        ValueError: as `v_optimal`.
    """
    setup = _exhaustive_setup(
        P,
        family_ids,
        n_families,
        budgets,
        max_families,
        include,
        intercept,
        None,
        max_combinations,
    )
    arrays = dict(setup.arrays)
    hi = jnp.floor(arrays.pop("budgets")).astype(jnp.int32)
    lo = jnp.maximum(hi - grace, setup.m)
    del arrays["cost"]
    chunk = int(max(min(chunk_size, setup.n_total), n_random))
    out, valid, n_elig = _random_kernel(
        **arrays, lo=lo, hi=hi, key=key, **setup.static, chunk=chunk, n_random=int(n_random)
    )
    return RandomSubsets(**out, valid=valid, n_eligible=n_elig, n_combinations=setup.n_total)


# ---------------------------------------------------------------------- local search


def _rank_key(j_true, j_reg, elig):
    """Scores for argmax: finite J if any eligible candidate has one, else the ridged J."""
    finite = jnp.isfinite(j_true) & elig
    use_true = jnp.any(finite)
    score = jnp.where(use_true, jnp.where(finite, j_true, -jnp.inf), j_reg)
    return jnp.where(elig, score, -jnp.inf), use_true


def _greedy_one(budget, grams, counts, costs, present, inc_mask, g, max_families):
    """Greedy additions for one budget; returns (family mask, additions)."""
    f = grams.shape[0]

    def step(_, state):
        member, moves = state
        memf = member.astype(grams.dtype)
        gram_s = jnp.einsum("f,fij->ij", memf, grams)
        cand = gram_s[None] + grams  # (F, m, m): the set plus one family
        n_new = member.astype(counts.dtype) @ counts + counts
        elig = (
            present & ~member & (memf @ costs + costs <= budget) & (jnp.sum(member) < max_families)
        )
        score, _ = _rank_key(_objective(cand, n_new, g), _ridged(cand, g), elig)
        a = jnp.argmax(score)
        ok = jnp.any(elig)
        return jnp.where(ok, member.at[a].set(True), member), moves + ok.astype(jnp.int32)

    return jax.lax.fori_loop(0, f, step, (inc_mask, jnp.int32(0)))


def _exchange_one(budget, grams, counts, costs, present, inc_mask, g, max_families, max_iter):
    """Fedorov exchange from the greedy set: best improving swap/addition until none."""
    f = grams.shape[0]
    member0, moves0 = _greedy_one(budget, grams, counts, costs, present, inc_mask, g, max_families)
    zero_gram = jnp.zeros((1, *grams.shape[1:]), grams.dtype)
    grams_r = jnp.concatenate([grams, zero_gram])  # row F = "remove nothing"
    counts_r = jnp.concatenate([counts, jnp.zeros((1,), counts.dtype)])
    costs_r = jnp.concatenate([costs, jnp.zeros((1,), costs.dtype)])
    removable = jnp.concatenate([jnp.zeros((f,), bool), jnp.ones((1,), bool)])

    def stats(member):
        memf = member.astype(grams.dtype)
        gram_s = jnp.einsum("f,fij->ij", memf, grams)
        n_s = member.astype(counts.dtype) @ counts
        return gram_s, n_s, memf @ costs, jnp.sum(member)

    def body(state):
        member, moves, _, it = state
        gram_s, n_s, cost_s, nf = stats(member)
        j_cur = _objective(gram_s, n_s, g)
        reg_cur = _ridged(gram_s, g)
        # (F + 1, F) candidates: remove r (r = F: nothing), add a
        cand = gram_s[None, None] - grams_r[:, None] + grams[None, :]
        n_new = n_s - counts_r[:, None] + counts[None, :]
        c_new = cost_s - costs_r[:, None] + costs[None, :]
        nf_new = nf - (jnp.arange(f + 1) < f)[:, None] + 1
        can_remove = removable | jnp.concatenate([member & ~inc_mask, jnp.zeros((1,), bool)])
        elig = (
            can_remove[:, None]
            & (present & ~member)[None, :]
            & (c_new <= budget)
            & (nf_new <= max_families)
        )
        j_new = _objective(cand, n_new, g)
        reg_new = _ridged(cand, g)
        score, use_true = _rank_key(j_new, reg_new, elig)
        k = jnp.argmax(score.reshape(-1))
        r, a = k // f, k % f
        best = score.reshape(-1)[k]
        # Improvement is lexicographic in (finite J, value); the relative margin stops
        # cycling between numerically tied sets.
        cur = jnp.where(use_true, j_cur, reg_cur)
        finite_gain = use_true & ~jnp.isfinite(j_cur)
        gain = finite_gain | (best > cur + 1e-12 * jnp.abs(cur))
        improve = jnp.any(elig) & gain
        new = member.at[a].set(True)
        new = jnp.where(r < f, new.at[jnp.minimum(r, f - 1)].set(False), new)
        return (
            jnp.where(improve, new, member),
            moves + improve.astype(jnp.int32),
            improve,
            it + 1,
        )

    def cond(state):
        return state[2] & (state[3] < max_iter)

    member, moves, _, _ = jax.lax.while_loop(
        cond, body, (member0, moves0, jnp.bool_(True), jnp.int32(0))
    )
    return member, moves


@partial(jax.jit, static_argnames=("n_families", "max_families", "max_iter", "exchange"))
def _local_kernel(
    x, ids, cost, budgets, present, inc_mask, *, n_families, max_families, max_iter, exchange
):
    grams, counts, costs, g = _family_stats(x, ids, cost, n_families)
    args = (grams, counts, costs, present, inc_mask, g, max_families)
    if exchange:
        member, moves = jax.vmap(lambda b: _exchange_one(b, *args, max_iter))(budgets)
    else:
        member, moves = jax.vmap(lambda b: _greedy_one(b, *args))(budgets)
    memf = member.astype(grams.dtype)
    j = _objective(
        jnp.einsum("...f,fij->...ij", memf, grams), member.astype(counts.dtype) @ counts, g
    )
    out = _finish(member, j, counts, costs, ids, max_families)
    found = jnp.isfinite(j) & (out["cost"] <= budgets)
    return out, found, moves


def _local(
    P, family_ids, n_families, budgets, max_families, include, intercept, cost, max_iter, exchange
):
    design, ids, b, c = _validate(P, family_ids, n_families, budgets, cost, intercept)
    present = np.bincount(ids, minlength=n_families) > 0
    inc_mask = _include_mask(include, present, n_families)
    cap = n_families if max_families is None else int(max_families)
    if cap < max(int(inc_mask.sum()), 1):
        raise ValueError(
            f"max_families={cap} is smaller than the {int(inc_mask.sum())} include families"
        )
    out, found, moves = _local_kernel(
        jnp.asarray(design),
        jnp.asarray(ids),
        jnp.asarray(c),
        jnp.asarray(b),
        jnp.asarray(present),
        jnp.asarray(inc_mask),
        n_families=int(n_families),
        max_families=cap,
        max_iter=max_iter,
        exchange=exchange,
    )
    return SearchResult(**out, found=found, n_moves=moves)


@in_float64
def greedy_select(
    P: Float[ArrayLike, "models pcs"],
    family_ids: Int[ArrayLike, " models"],
    n_families: int,
    budgets: Real[ArrayLike, " budgets"] | Sequence[int | float],
    *,
    max_families: int | None = None,
    include: Sequence[int] = (),
    intercept: bool = False,
    cost: Float[ArrayLike, " models"] | None = None,
) -> SearchResult:
    """Greedy forward selection of families under a budget, same J as `v_optimal`.

    Starts from ``include`` and repeatedly adds the family with the largest J among those that
    still fit the budget (and ``max_families``), until none fits. Adding a family never
    lowers J, so stopping early never helps. While every candidate is singular, candidates are
    ranked by J of G_S + d I with a tiny ridge d (rank first, information second). Ties go to
    the lowest id. Cost O(n_families^2) small solves per budget, so it scales to pools far
    beyond exhaustive search; pass ``family_ids = arange(models)`` to select single models.

    Args:
        P: pool PC scores, shape (models, pcs).
        family_ids: family of each pool model, ints in 0..n_families-1, shape (models,).
        n_families: number of family ids.
        budgets: budgets in models (or in ``cost`` units), shape (budgets,).
        max_families: cap on the number of families (include counted); None = no cap.
        include: family ids always in the set.
        intercept: prepend a ones column to P.
        cost: per-model cost (e.g. FLOPs), shape (models,), for cost-weighted budgets.

    Returns:
        A `SearchResult`; ``J`` is a lower bound on the `v_optimal` optimum under the same
        constraints.

    Raises:
        ValueError: as `v_optimal` (bad P, ids, budgets, include).
    """
    return _local(
        P, family_ids, n_families, budgets, max_families, include, intercept, cost, 0, False
    )


@in_float64
def exchange_select(
    P: Float[ArrayLike, "models pcs"],
    family_ids: Int[ArrayLike, " models"],
    n_families: int,
    budgets: Real[ArrayLike, " budgets"] | Sequence[int | float],
    *,
    max_families: int | None = None,
    include: Sequence[int] = (),
    intercept: bool = False,
    cost: Float[ArrayLike, " models"] | None = None,
    max_iter: int = 100,
) -> SearchResult:
    """Fedorov-style exchange search started from `greedy_select`, same J as `v_optimal`.

    Each iteration scores every move "remove one chosen (non-include) family, add one
    unchosen family" and every pure addition, all (n_families + 1) * n_families at once,
    and takes the best if it improves J (relative margin 1e-12); stops when none does or
    after ``max_iter`` moves. J never decreases, so the result is at least as good as greedy.

    Args:
        P: pool PC scores, shape (models, pcs).
        family_ids: family of each pool model, ints in 0..n_families-1, shape (models,).
        n_families: number of family ids.
        budgets: budgets in models (or in ``cost`` units), shape (budgets,).
        max_families: cap on the number of families (include counted); None = no cap.
        include: family ids always in the set (never exchanged out).
        intercept: prepend a ones column to P.
        cost: per-model cost (e.g. FLOPs), shape (models,), for cost-weighted budgets.
        max_iter: most exchange moves per budget (a static Python int).

    Returns:
        A `SearchResult`; ``n_moves`` counts greedy additions plus exchange moves.

    Raises:
        ValueError: as `v_optimal` (bad P, ids, budgets, include).
    """
    return _local(
        P,
        family_ids,
        n_families,
        budgets,
        max_families,
        include,
        intercept,
        cost,
        int(max_iter),
        True,
    )
