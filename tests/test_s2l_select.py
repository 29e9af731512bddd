"""Water filling, balanced selection, the S2L selector, its baselines (spec §1.5, §1.6, §3.3 A)."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from jaxlaw.data_selection.s2l import (
    balanced_select,
    kmeans_init,
    lloyd,
    s2l_select,
    select_by_score,
    select_embedding_kmeans,
    select_final_loss_clusters,
    select_random,
    select_stratified,
    water_fill,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ references
def reference_water_fill(sizes, budget, eligible=None):
    """Spec §1.6 pseudo-code, transcribed: eligible clusters by size ascending (stable: lower
    id first), quota = floor(left / clusters left), take min(size, quota)."""
    sizes = np.asarray(sizes, np.int64)
    eligible = np.ones(len(sizes), bool) if eligible is None else np.asarray(eligible)
    order = [i for i in np.argsort(sizes, kind="stable") if eligible[i]]
    takes = np.zeros(len(sizes), np.int64)
    left = budget
    for i, c in enumerate(order):
        quota = left // (len(order) - i)
        takes[c] = min(sizes[c], quota)
        left -= takes[c]
    return takes


def closed_form_water_fill(sizes, budget, eligible=None):
    """Closed form: level L = the largest l with sum(min(s, l)) <= budget; every cluster gets
    min(s, L); the r = budget - that sum leftover rows go one each to the r *last* (largest,
    then highest id) clusters with s > L (the sequential floors hand the remainder to the end)."""
    sizes = np.asarray(sizes, np.int64)
    eligible = np.ones(len(sizes), bool) if eligible is None else np.asarray(eligible)
    s = np.where(eligible, sizes, 0)
    if budget >= s.sum():
        return s
    level = max(lv for lv in range(int(s.max()) + 1) if np.minimum(s, lv).sum() <= budget)
    takes = np.minimum(s, level)
    r = budget - takes.sum()
    open_ = [i for i in np.lexsort((np.arange(len(s)), s)) if s[i] > level]
    for i in open_[len(open_) - r :]:
        takes[i] += 1
    return takes


def reference_counts(labels, budget, strata=None, min_size=3):
    """Expected rows per (stratum, cluster) from spec §1.5 + §1.6, with the pool as column K."""
    labels = np.asarray(labels)
    strata = np.zeros(len(labels), int) if strata is None else np.asarray(strata)
    su, s_inv = np.unique(strata, return_inverse=True)
    lu, l_inv = np.unique(labels, return_inverse=True)
    out = np.zeros((len(su), len(lu) + 1), np.int64)
    q_strata = reference_water_fill(np.bincount(s_inv, minlength=len(su)), budget)
    for s in range(len(su)):
        sizes = np.bincount(l_inv[s_inv == s], minlength=len(lu))
        elig = sizes >= min_size
        out[s, :-1] = reference_water_fill(sizes, q_strata[s], elig)
        out[s, -1] = q_strata[s] - out[s, :-1].sum()  # from the pooled set-aside clusters
        assert out[s, -1] <= sizes[~elig].sum()
    return out


def observed_counts(idx, labels, strata=None, min_size=3):
    labels = np.asarray(labels)
    strata = np.zeros(len(labels), int) if strata is None else np.asarray(strata)
    su, s_inv = np.unique(strata, return_inverse=True)
    lu, l_inv = np.unique(labels, return_inverse=True)
    sizes = np.zeros((len(su), len(lu)), np.int64)
    np.add.at(sizes, (s_inv, l_inv), 1)
    col = np.where(sizes[s_inv, l_inv] >= min_size, l_inv, len(lu))
    out = np.zeros((len(su), len(lu) + 1), np.int64)
    np.add.at(out, (s_inv[idx], col[idx]), 1)
    return out


def labels_from_sizes(sizes, seed=0):
    lab = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(lab)


# ---------------------------------------------------------------------------- water filling
@SETTINGS
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=10),
    frac=st.floats(0, 1.2),
    data=st.data(),
)
def test_water_fill_equals_reference_and_closed_form(sizes, frac, data):
    eligible = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    budget = int(frac * sum(sizes))
    got = np.asarray(water_fill(np.array(sizes), budget, eligible=np.array(eligible)))
    ref = reference_water_fill(sizes, budget, eligible)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, closed_form_water_fill(sizes, budget, eligible))
    s = np.where(eligible, sizes, 0)
    assert got.sum() == min(budget, s.sum())
    assert np.all(got <= s)
    # Max-min fairness of water filling: a cluster that is not taken whole gets at least the
    # take of any other cluster minus one (takes are min(size, L) or L + 1 for one level L).
    unsat = np.flatnonzero(got < s)
    if len(unsat):
        assert got[unsat].min() >= got.max() - 1


def test_water_fill_budget_below_cluster_count_gives_the_largest_one_each():
    sizes = np.array([7, 3, 9, 3, 5, 20])
    np.testing.assert_array_equal(np.asarray(water_fill(sizes, 2)), [0, 0, 1, 0, 0, 1])
    # Equal sizes: the higher id comes later in the stable order and gets the row.
    np.testing.assert_array_equal(np.asarray(water_fill(np.array([4, 4, 4]), 1)), [0, 0, 1])
    np.testing.assert_array_equal(np.asarray(water_fill(sizes, 0)), np.zeros(6))


# ------------------------------------------------------------------------ balanced selection
@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    frac=st.floats(0, 1),
    n_strata=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_balanced_select_properties(sizes, frac, n_strata, seed):
    labels = labels_from_sizes(sizes, seed)
    n = len(labels)
    budget = int(round(frac * n))
    strata = None if n_strata == 1 else np.random.default_rng(seed + 1).integers(0, n_strata, n)
    idx = np.asarray(balanced_select(labels, budget, key=jr.key(seed), strata=strata))
    assert idx.shape == (budget,)  # exactly the budget (always possible: budget <= rows)
    assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    assert idx.min(initial=0) >= 0 and idx.max(initial=0) < max(n, 1)
    got = observed_counts(idx, labels, strata)
    np.testing.assert_array_equal(got, reference_counts(labels, budget, strata))
    again = np.asarray(balanced_select(labels, budget, key=jr.key(seed), strata=strata))
    np.testing.assert_array_equal(idx, again)  # same key, same rows


def test_pools_of_similar_size_share_one_compilation():
    from jaxlaw.data_selection.s2l._select import _plan, _sample

    balanced_select(labels_from_sizes([30, 40, 20]), 10, key=jr.key(0))
    before = (_plan._cache_size(), _sample._cache_size())
    # Other sizes, budgets and cluster counts in the same padded buckets (128 rows, at most
    # 16 clusters, at most 4 strata): no new trace.
    balanced_select(labels_from_sizes([50, 31, 20, 2]), 17, key=jr.key(1))
    balanced_select(labels_from_sizes([65, 33]), 40, key=jr.key(2))
    balanced_select(labels_from_sizes([30] * 4), 9, key=jr.key(2), strata=np.arange(120) % 3)
    assert (_plan._cache_size(), _sample._cache_size()) == before


def test_a_different_key_changes_the_sample_but_not_the_counts():
    labels = labels_from_sizes([40, 25, 60, 10])
    a = np.asarray(balanced_select(labels, 30, key=jr.key(0)))
    b = np.asarray(balanced_select(labels, 30, key=jr.key(1)))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(observed_counts(a, labels), observed_counts(b, labels))


def test_sampling_inside_a_cluster_is_uniform():
    """Each of 20 rows in one cluster of a 2-cluster pool is drawn with probability 5/20."""
    labels = np.array([0] * 20 + [1] * 20)
    hits = np.zeros(40)
    for s in range(400):
        hits[np.asarray(balanced_select(labels, 10, key=jr.key(s)))] += 1
    # Binomial(400, 1/4): sd ~ 8.7; 4.5 sd bounds over 40 rows.
    assert np.all(np.abs(hits - 100) < 40), hits


def test_reference_fallback_pool_of_tiny_clusters():
    # Clusters of 1 and 2 rows are set aside (reference: <= 2 rows); they are used only once
    # every other cluster is exhausted.
    labels = labels_from_sizes([1, 2, 5, 10])
    n = len(labels)
    counts = observed_counts(np.asarray(balanced_select(labels, 15, key=jr.key(0))), labels)
    np.testing.assert_array_equal(counts, [[0, 0, 5, 10, 0]])
    counts = observed_counts(np.asarray(balanced_select(labels, 17, key=jr.key(0))), labels)
    np.testing.assert_array_equal(counts, [[0, 0, 5, 10, 2]])  # 2 drawn from the pool of 3
    idx = np.asarray(balanced_select(labels, n, key=jr.key(0)))
    np.testing.assert_array_equal(idx, np.arange(n))
    with pytest.raises(ValueError, match="needs 2 rows from clusters smaller than min_size=3"):
        balanced_select(labels, 17, key=jr.key(0), fallback="error")
    # min_size=1 sets nothing aside: the 1- and 2-row clusters are water-filled first.
    counts = observed_counts(
        np.asarray(balanced_select(labels, 8, key=jr.key(0), min_size=1)), labels, min_size=1
    )
    np.testing.assert_array_equal(counts, [[1, 2, 2, 3, 0]])


def test_budget_below_number_of_clusters_keeps_reference_behaviour():
    labels = labels_from_sizes([3, 50, 4, 8, 30, 5])
    counts = observed_counts(np.asarray(balanced_select(labels, 2, key=jr.key(0))), labels)
    np.testing.assert_array_equal(counts, [[0, 1, 0, 0, 1, 0, 0]])  # the two largest


def test_strata_follow_the_reference_source_split():
    # Source 0 is small (taken whole, no clustering needed); the rest is shared evenly and
    # water-filled over the clusters within each source.
    labels = np.array([0] * 4 + [0] * 30 + [1] * 10 + [2] * 40 + [1] * 6)
    strata = np.array([0] * 4 + [1] * 40 + [2] * 46)
    idx = np.asarray(balanced_select(labels, 40, key=jr.key(3), strata=strata))
    got = observed_counts(idx, labels, strata)
    np.testing.assert_array_equal(got, reference_counts(labels, 40, strata))
    np.testing.assert_array_equal(np.bincount(strata[idx]), [4, 18, 18])


def test_balanced_select_bad_inputs():
    labels = np.array([0, 0, 1, 1, 1])
    key = jr.key(0)
    with pytest.raises(ValueError, match="budget 6 exceeds the pool of 5 rows"):
        balanced_select(labels, 6, key=key)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        balanced_select(labels, -1, key=key)
    # Length mismatches: the jaxtyping annotation (checked in tests) or the library's own check.
    with pytest.raises((ValueError, TypeCheckError), match="strata|rows"):
        balanced_select(labels, 2, key=key, strata=np.zeros(4, int))
    with pytest.raises(ValueError, match="min_size must be an int >= 1"):
        balanced_select(labels, 2, key=key, min_size=0)
    with pytest.raises(ValueError, match="fallback must be one of"):
        balanced_select(labels, 2, key=key, fallback="any")
    with pytest.raises(ValueError, match="sizes must be non-negative"):
        water_fill(np.array([3, -1]), 2)


# --------------------------------------------------------- positive control (spec §3.3 A)
def group_trajectories(sizes, t=12, *, seed=0, noise=0.02):
    """Group g's loss curve: exp-decay 2.5·exp(-r_g·step) + floor_g with its own rate and
    floor, plus N(0, noise²) per example and checkpoint."""
    rng = np.random.default_rng(seed)
    g = len(sizes)
    rates = np.geomspace(0.05, 1.5, g)
    floors = np.linspace(0.2, 1.4, g)[rng.permutation(g)]
    steps = np.arange(1, t + 1)
    curves = 2.5 * np.exp(-rates[:, None] * steps[None]) + floors[:, None]  # (groups, ckpts)
    truth = labels_from_sizes(sizes, seed)
    return curves[truth] + rng.normal(0.0, noise, (len(truth), t)), truth


def test_positive_control_recovers_groups_and_water_fills_them():
    from sklearn.metrics import adjusted_rand_score

    sizes = (1200 / np.arange(1, 9)).astype(int)  # Zipf: 1200, 600, 400, ..., 150
    x, truth = group_trajectories(sizes, seed=1)
    budget = 600
    sel = s2l_select(
        x, budget, key=jr.key(0), k=8, init="kmeans++", restarts=3, max_points_per_centroid=None
    )
    assert adjusted_rand_score(truth, np.asarray(sel.labels)) > 0.999
    # Labels equal a numpy Lloyd from the same init (float64), on these real trajectories too.
    from test_s2l_kmeans import numpy_lloyd

    c0 = np.asarray(kmeans_init(x, 8, key=jr.key(4), method="kmeans++"))
    np.testing.assert_array_equal(
        np.asarray(lloyd(x, c0, iters=20).labels), numpy_lloyd(x, c0, 20)[1]
    )
    per_group = np.bincount(truth[np.asarray(sel.indices)], minlength=8)
    np.testing.assert_array_equal(per_group, closed_form_water_fill(sizes, budget))
    np.testing.assert_array_equal(per_group[::-1], [75] * 8)  # all groups above the level
    small = s2l_select(
        x, 2000, key=jr.key(0), k=8, init="kmeans++", restarts=3, max_points_per_centroid=None
    )
    per_group = np.bincount(truth[np.asarray(small.indices)], minlength=8)
    np.testing.assert_array_equal(per_group, closed_form_water_fill(sizes, 2000))
    assert per_group[-1] == sizes[-1]  # the smallest group is taken whole


# -------------------------------------------------------------------------------- s2l_select
def test_s2l_select_output_and_determinism():
    x, truth = group_trajectories([300, 120, 60, 20, 2], seed=2)
    a = s2l_select(x, 100, key=jr.key(1), k=5)
    b = s2l_select(x, 100, key=jr.key(1), k=5)
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
    assert a.indices.shape == (100,) and len(np.unique(np.asarray(a.indices))) == 100
    assert a.quotas.shape == (1, 6) and int(a.quotas.sum()) == 100
    assert np.all(np.asarray(a.quotas) <= np.asarray(a.sizes))
    np.testing.assert_array_equal(
        observed_counts(np.asarray(a.indices), np.asarray(a.labels)).sum(), 100
    )
    for transform in ("log", "zscore"):
        sel = s2l_select(x, 100, key=jr.key(1), k=5, transform=transform)
        assert len(np.unique(np.asarray(sel.indices))) == 100


def test_s2l_select_per_stratum_kmeans_matches_reference_split():
    x, truth = group_trajectories([200, 150, 100, 50], seed=3)
    strata = np.random.default_rng(0).integers(0, 3, len(truth))
    strata[:10] = 7  # a tiny source: taken whole, never clustered
    sel = s2l_select(x, 120, key=jr.key(2), k=4, strata=strata, per_stratum_kmeans=True)
    idx = np.asarray(sel.indices)
    sizes = np.bincount(np.unique(strata, return_inverse=True)[1])
    np.testing.assert_array_equal(
        np.bincount(np.unique(strata, return_inverse=True)[1][idx]),
        reference_water_fill(sizes, 120),
    )
    assert sel.kmeans[-1] is None and all(r is not None for r in sel.kmeans[:-1])
    np.testing.assert_array_equal(np.asarray(sel.sources), [0, 1, 2, 7])
    # Within every clustered source: the reference allocation over that source's clusters.
    np.testing.assert_array_equal(
        observed_counts(idx, np.asarray(sel.labels), strata),
        reference_counts(np.asarray(sel.labels), 120, strata),
    )


def test_s2l_select_bad_inputs():
    x, _ = group_trajectories([30, 20], seed=4)
    key = jr.key(0)
    bad = x.copy()
    bad[[1, 5, 9], 3] = np.nan
    bad[5, 4] = np.inf
    with pytest.raises(ValueError, match="3 of 50 rows with NaN or inf"):
        s2l_select(bad, 10, key=key, k=2)
    with pytest.raises(ValueError, match="budget 51 exceeds the pool of 50 rows"):
        s2l_select(x, 51, key=key, k=2)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        s2l_select(x, -3, key=key, k=2)
    with pytest.raises(ValueError, match="k must be in 1..50"):
        s2l_select(x, 10, key=key, k=51)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        s2l_select(x, 10, key=key, k=0)
    with pytest.raises((ValueError, TypeCheckError), match="strata|rows"):
        s2l_select(x, 10, key=key, k=2, strata=np.zeros(49, int))
    with pytest.raises(ValueError, match="per_stratum_kmeans=True needs strata"):
        s2l_select(x, 10, key=key, k=2, per_stratum_kmeans=True)
    with pytest.raises(ValueError, match="transform must be one of"):
        s2l_select(x, 10, key=key, k=2, transform="sqrt")
    with pytest.raises(ValueError, match="transform='log' needs non-negative"):
        s2l_select(x - 10.0, 10, key=key, k=2, transform="log")


# -------------------------------------------------------------------------------- baselines
def test_select_random_is_a_uniform_subset():
    idx = np.asarray(select_random(100, 30, key=jr.key(0)))
    assert idx.shape == (30,) and np.all(np.diff(idx) > 0) and idx.max() < 100
    np.testing.assert_array_equal(idx, np.asarray(select_random(100, 30, key=jr.key(0))))
    hits = np.zeros(10)
    for s in range(300):
        hits[np.asarray(select_random(10, 3, key=jr.key(s)))] += 1
    # Binomial(300, 0.3): sd ~ 7.9; 4.5 sd bounds.
    assert np.all(np.abs(hits - 90) < 36), hits
    assert select_random(5, 0, key=jr.key(0)).shape == (0,)
    with pytest.raises(ValueError, match="budget 11 exceeds the pool of 10 rows"):
        select_random(10, 11, key=jr.key(0))


def test_select_stratified_water_fills_sources():
    strata = np.array([5] * 3 + [1] * 50 + [9] * 20)
    idx = np.asarray(select_stratified(strata, 24, key=jr.key(0)))
    assert len(np.unique(idx)) == 24
    # Sources by size: 3 -> take all (quota 8), then 20 -> 10, then 50 -> 11.
    np.testing.assert_array_equal(np.bincount(strata[idx], minlength=10)[[5, 9, 1]], [3, 10, 11])


def test_select_by_score_breaks_ties_by_index():
    scores = np.array([0.5, 2.0, 2.0, 1.0, 2.0, 0.1])
    np.testing.assert_array_equal(np.asarray(select_by_score(scores, 2)), [1, 2])
    np.testing.assert_array_equal(np.asarray(select_by_score(scores, 2, highest=False)), [0, 5])
    np.testing.assert_array_equal(
        np.asarray(select_by_score(scores, 4, highest=False)), [0, 1, 3, 5]
    )
    with pytest.raises(ValueError, match="1 NaN or inf entries"):
        select_by_score(np.array([1.0, np.nan]), 1)


def test_final_loss_and_embedding_baselines():
    x, truth = group_trajectories([100, 60, 40], seed=5)
    a = np.asarray(select_final_loss_clusters(x, 30, key=jr.key(0), k=3))
    b = np.asarray(s2l_select(x[:, -1:], 30, key=jr.key(0), k=3).indices)
    np.testing.assert_array_equal(a, b)  # the last column only
    np.testing.assert_array_equal(
        a, np.asarray(select_final_loss_clusters(x[:, -1], 30, key=jr.key(0), k=3))
    )
    emb = np.random.default_rng(0).normal(size=(200, 6)) + truth[:, None] * 5.0
    e = np.asarray(select_embedding_kmeans(emb, 30, key=jr.key(0), k=3, init="kmeans++"))
    assert len(np.unique(e)) == 30
    np.testing.assert_array_equal(np.bincount(truth[e], minlength=3), [10, 10, 10])
    with pytest.raises(ValueError, match="budget 300 exceeds the pool of 200 rows"):
        select_embedding_kmeans(emb, 300, key=jr.key(0), k=3)
    assert jnp.asarray(a).dtype == jnp.int32


def test_selectors_default_to_kmeanspp_init():
    """Guards the issue's fix: S2L's default k-means init is k-means++ in every selector (it
    was "random"); the defaults must give exactly what an explicit ``init="kmeans++"`` gives."""
    import inspect

    from jaxlaw.data_selection.s2l import kmeans, kmeans_init

    for fn in (s2l_select, select_final_loss_clusters, select_embedding_kmeans, kmeans):
        assert inspect.signature(fn).parameters["init"].default == "kmeans++", fn.__name__
    assert inspect.signature(kmeans_init).parameters["method"].default == "kmeans++"
    x, _ = group_trajectories([120, 50, 30], seed=6)
    a = s2l_select(x, 40, key=jr.key(3), k=3)
    b = s2l_select(x, 40, key=jr.key(3), k=3, init="kmeans++")
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))


def _old_per_stratum_loop(x, strata, budget, k, key, **opts):
    """The per-stratum k-means as it was: one `kmeans` call per clustered stratum."""
    from jaxlaw.data_selection.s2l import kmeans

    _, st = np.unique(strata, return_inverse=True)
    sizes = np.bincount(st)
    shares = np.asarray(water_fill(sizes, budget))
    k_km, _ = jr.split(key)
    labels, per = np.zeros(len(st), np.int32), []
    for s in range(len(sizes)):
        rows = np.flatnonzero(st == s)
        if sizes[s] <= shares[s]:
            per.append(None)
            continue
        r = kmeans(x[rows], min(k, len(rows)), key=jr.fold_in(k_km, s), **opts)
        labels[rows] = np.asarray(r.labels)
        per.append(r)
    return labels, per


@pytest.mark.parametrize(
    "opts",
    [
        dict(init="kmeans++", max_points_per_centroid=6),  # big strata train on a subsample
        dict(init="random", max_points_per_centroid=None, restarts=2),
    ],
)
def test_per_stratum_kmeans_equals_the_old_loop_in_one_compilation(opts):
    """Guards review.md: per-stratum k-means was a host loop with one compilation per stratum
    size. Strata are now padded to one shape and clustered in one call, with the loop's labels
    and centroids (rtol 1e-12: padded rows change float64 summation order only)."""
    from jaxlaw.data_selection.s2l._kmeans import _kmeans_padded_jit

    rng = np.random.default_rng(11)
    sizes = [90, 61, 47, 3, 30]  # stratum 3 has fewer rows than k; small ones taken whole
    strata = np.repeat(np.arange(len(sizes)) * 10, sizes)  # ids need not be dense
    perm = rng.permutation(len(strata))
    strata = strata[perm]  # strata interleaved in row order
    x = rng.normal(size=(len(strata), 3)) + (strata[:, None] // 10) * 0.5
    x[strata == 0] += rng.integers(0, 4, (90, 1)) * 3.0
    k, budget = 5, 120
    _kmeans_padded_jit._clear_cache()
    sel = s2l_select(x, budget, key=jr.key(4), k=k, strata=strata, per_stratum_kmeans=True, **opts)
    labels, per = _old_per_stratum_loop(x, strata, budget, k, jr.key(4), **opts)
    np.testing.assert_array_equal(np.asarray(sel.labels), labels)
    assert [r is None for r in sel.kmeans] == [r is None for r in per]
    assert sum(r is not None for r in per) >= 3
    for new, old in zip(sel.kmeans, per):
        if old is None:
            continue
        np.testing.assert_array_equal(np.asarray(new.labels), np.asarray(old.labels))
        np.testing.assert_array_equal(np.asarray(new.counts), np.asarray(old.counts))
        np.testing.assert_allclose(np.asarray(new.centroids), np.asarray(old.centroids), rtol=1e-12)
        np.testing.assert_allclose(float(new.objective), float(old.objective), rtol=1e-12)
        assert int(new.n_iter) == int(old.n_iter)
    # Strata of 90, 61 and 47 rows share one compilation (the 3-row one is its own k = 3).
    clustered_k = {min(k, s) for s, r in zip(sizes, per) if r is not None}
    assert _kmeans_padded_jit._cache_size() == len(clustered_k)
