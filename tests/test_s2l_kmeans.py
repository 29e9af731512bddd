"""k-means in JAX (jaxlaw.data_selection.s2l._kmeans) against numpy and scikit-learn references."""

import json
import os
import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from jaxlaw.data_selection.s2l import KMeansResult, assign, kmeans, kmeans_init, lloyd
from jaxlaw.data_selection.s2l._kmeans import _kmeans_jit, _lloyd_rows


# ------------------------------------------------------------------------------ references
def numpy_lloyd(x, c, iters):
    """Plain Lloyd: exact distances, first argmin, means; an empty cluster (in id order) takes
    the next farthest row from its centroid (decreasing squared distance, lower index first)."""
    x, c = np.asarray(x, np.float64), np.array(c, np.float64)
    rows = np.arange(len(x))
    for _ in range(iters):
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        sq = d[rows, lab]
        counts = np.bincount(lab, minlength=len(c))
        new = c.copy()
        for j in np.flatnonzero(counts):
            new[j] = x[lab == j].mean(0)
        far = np.argsort(-sq, kind="stable")
        for r, j in enumerate(np.flatnonzero(counts == 0)):
            new[j] = x[far[r]]
        if np.array_equal(new, c):
            break
        c = new
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    return c, lab, d[rows, lab].sum()


def blobs(n, t, k, *, seed, spread=4.0, noise=1.0):
    """make_blobs-like data: k centres ~ N(0, spread²), isotropic N(0, noise²) around them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (k, t))
    truth = rng.integers(0, k, n)
    return centres[truth] + rng.normal(0.0, noise, (n, t)), truth


def make_blobs(n, t, k, *, seed):
    """scikit-learn's make_blobs recipe: centres uniform in [-10, 10]^t, unit-variance noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, (k, t))
    truth = rng.integers(0, k, n)
    return centres[truth] + rng.normal(0.0, 1.0, (n, t)), truth


# ------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_rows", [16384, 333])
def test_lloyd_labels_equal_numpy_lloyd_from_same_init(seed, chunk_rows):
    x, _ = blobs(1500, 7, 10, seed=seed, spread=2.0, noise=1.5)
    c0 = np.asarray(kmeans_init(x, 12, key=jr.key(seed), method="random"))
    res = lloyd(x, c0, iters=20, chunk_rows=chunk_rows)
    c_ref, lab_ref, obj_ref = numpy_lloyd(x, c0, 20)
    np.testing.assert_array_equal(np.asarray(res.labels), lab_ref)
    # float64, same labels: centroids differ only by summation order of the means.
    np.testing.assert_allclose(np.asarray(res.centroids), c_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(res.objective), obj_ref, rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(res.counts), np.bincount(lab_ref, minlength=12))
    assert res.labels.dtype == jnp.int32 and res.centroids.dtype == jnp.float64


def test_empty_cluster_repair_matches_numpy_and_leaves_no_cluster_empty():
    x, _ = blobs(800, 5, 6, seed=3)
    c0 = np.array(kmeans_init(x, 8, key=jr.key(3), method="random"))
    c0[1] = c0[0]  # duplicates: the lower id wins every tie, 1 and 2 start empty
    c0[2] = c0[0]
    c0[5] = 1e3  # far from everything: empty too
    res = lloyd(x, c0, iters=1)
    _, lab1, _ = numpy_lloyd(x, c0, 1)
    np.testing.assert_array_equal(np.asarray(res.labels), lab1)
    assert np.all(np.asarray(res.counts) > 0), res.counts
    res = lloyd(x, c0, iters=15)
    _, lab, _ = numpy_lloyd(x, c0, 15)
    np.testing.assert_array_equal(np.asarray(res.labels), lab)
    assert np.all(np.asarray(res.counts) > 0)


def test_fixed_point_stops_early_and_changes_nothing():
    x, _ = blobs(600, 4, 3, seed=4, spread=10.0, noise=0.5)
    res = lloyd(x, np.asarray(kmeans_init(x, 3, key=jr.key(1), method="kmeans++")), iters=50)
    assert 1 <= int(res.n_iter) < 50
    again = lloyd(x, res.centroids, iters=5)
    np.testing.assert_array_equal(np.asarray(again.centroids), np.asarray(res.centroids))
    assert int(again.n_iter) == 1  # one update confirms the fixed point


def test_assign_matches_numpy_argmin():
    x, _ = blobs(1000, 6, 5, seed=5)
    c = x[:9]
    lab, sq = assign(x, c, chunk_rows=128)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(lab), d.argmin(1))
    # ‖x‖² − 2x·c + ‖c‖² vs the direct difference: float64 cancellation at |x|² ~ 1e2.
    np.testing.assert_allclose(np.asarray(sq), d.min(1), rtol=1e-9, atol=1e-9)


def test_lloyd_is_equivariant_to_row_permutation():
    x, _ = blobs(700, 4, 5, seed=6)
    c0 = x[:5].copy()
    perm = np.random.default_rng(0).permutation(len(x))
    a, b = lloyd(x, c0, iters=10), lloyd(x[perm], c0, iters=10)
    np.testing.assert_array_equal(np.asarray(b.labels), np.asarray(a.labels)[perm])


# -------------------------------------------------------------------------- vs scikit-learn
def test_objective_within_2_percent_of_sklearn_on_blobs():
    from sklearn.cluster import KMeans

    for seed in (0, 1):
        x, _ = make_blobs(4000, 12, 20, seed=seed)
        sk = KMeans(20, n_init=4, random_state=seed).fit(x)
        sk_obj = float(((x - sk.cluster_centers_[sk.labels_]) ** 2).sum())
        ours = kmeans(x, 20, key=jr.key(seed), init="kmeans++", restarts=4)
        # Acceptance bar of the issue: within 2% of sklearn's objective (lower is fine).
        assert float(ours.objective) <= 1.02 * sk_obj, (float(ours.objective), sk_obj)
        assert float(ours.objective) >= 0.98 * sk_obj  # and not suspiciously lower


def test_lloyd_equals_sklearn_lloyd_from_the_same_init():
    from sklearn.cluster import KMeans

    x, _ = make_blobs(3000, 12, 15, seed=3)
    c0 = np.asarray(kmeans_init(x, 15, key=jr.key(3), method="random"))
    sk = KMeans(15, init=c0, n_init=1, max_iter=20, tol=0, algorithm="lloyd").fit(x)
    ours = lloyd(x, c0, iters=20)
    np.testing.assert_array_equal(np.asarray(ours.labels), sk.labels_)
    # float64; sklearn sums in another order (and its inertia_ comes after one more E-step,
    # which changes nothing once labels are stable).
    np.testing.assert_allclose(float(ours.objective), sk.inertia_, rtol=1e-10)


def test_kmeanspp_init_beats_random_init_on_average():
    x, _ = blobs(3000, 8, 15, seed=7, spread=5.0, noise=0.7)

    def init_objective(method, seed):
        c = kmeans_init(x, 15, key=jr.key(seed), method=method)
        return float(jnp.sum(assign(x, c)[1]))

    seeds = range(8)
    pp = np.mean([init_objective("kmeans++", s) for s in seeds])
    rnd = np.mean([init_objective("random", s) for s in seeds])
    assert pp < 0.7 * rnd, (pp, rnd)  # D² sampling covers the blobs; uniform rows repeat blobs


def test_default_init_is_kmeanspp_and_finds_sklearns_optimum_on_separated_blobs():
    """Guards the issue's fix: the default init was "random" (faiss's), which on separated
    blobs puts several centres in one blob and leaves others uncovered (objective 5-25x
    sklearn's here, for every key tried); the k-means++ default reaches sklearn's optimum from
    one start for most keys (10 of 12 seen) and with 3 restarts for every key tried."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    k, t, n = 20, 6, 4000
    centres = rng.uniform(-10.0, 10.0, (k, t))
    x = centres[rng.integers(0, k, n)] + rng.normal(0.0, 0.5, (n, t))
    sk = KMeans(k, n_init=10, random_state=0).fit(x)
    sk_obj = float(((x - sk.cluster_centers_[sk.labels_]) ** 2).sum())

    def at_optimum(res):
        # Same partition as sklearn's best of 10: objectives differ by summation order only.
        return abs(float(res.objective) - sk_obj) <= 1e-9 * sk_obj

    hits = 0
    for seed in range(8):
        default = kmeans(x, k, key=jr.key(seed))
        pp = kmeans(x, k, key=jr.key(seed), init="kmeans++")
        np.testing.assert_array_equal(np.asarray(default.labels), np.asarray(pp.labels))
        hits += at_optimum(default)
        assert not at_optimum(kmeans(x, k, key=jr.key(seed), init="random"))
    assert hits >= 6, hits
    for seed in range(4):
        assert at_optimum(kmeans(x, k, key=jr.key(seed), restarts=3))
    c_default = kmeans_init(x, k, key=jr.key(0))
    c_pp = kmeans_init(x, k, key=jr.key(0), method="kmeans++")
    np.testing.assert_array_equal(np.asarray(c_default), np.asarray(c_pp))


def test_random_init_draws_distinct_rows():
    x = np.arange(50.0)[:, None] * np.ones((1, 3))
    c = np.asarray(kmeans_init(x, 50, key=jr.key(0), method="random"))
    assert len(np.unique(c[:, 0])) == 50


# ------------------------------------------------------------------------- restarts, subsample
def test_vmapped_restarts_equal_looped_lloyd():
    x, _ = blobs(900, 5, 8, seed=8)
    inits = jnp.stack([kmeans_init(x, 8, key=jr.key(s)) for s in range(4)])
    batched = jax.jit(partial(_lloyd_rows, iters=20, chunk_rows=256, sharding=None))
    c, lab, _, obj, counts, n_iter = batched(jnp.asarray(x), inits)
    for r in range(4):
        one = lloyd(x, inits[r], iters=20, chunk_rows=256)
        np.testing.assert_array_equal(np.asarray(lab[r]), np.asarray(one.labels))
        np.testing.assert_array_equal(np.asarray(c[r]), np.asarray(one.centroids))
        assert int(n_iter[r]) == int(one.n_iter)
        np.testing.assert_allclose(float(obj[r]), float(one.objective), rtol=1e-12)


def test_kmeans_keeps_the_best_restart_of_its_documented_keys():
    x, _ = blobs(900, 5, 8, seed=9)
    res = kmeans(x, 8, key=jr.key(5), restarts=5, max_points_per_centroid=None)
    keys = jr.split(jr.split(jr.key(5))[1], 5)  # documented key scheme of `kmeans`
    runs = [lloyd(x, kmeans_init(x, 8, key=kk), iters=20) for kk in keys]
    best = int(np.argmin([float(r.objective) for r in runs]))
    np.testing.assert_array_equal(np.asarray(res.labels), np.asarray(runs[best].labels))
    # Batched vs single objective sums: float64 reassociation only.
    np.testing.assert_allclose(float(res.objective), float(runs[best].objective), rtol=1e-12)


def test_subsample_train_then_assign_is_deterministic_and_assigns_every_row():
    x, _ = blobs(6000, 4, 10, seed=10)
    a = kmeans(x, 10, key=jr.key(1), max_points_per_centroid=50)  # trains on 500 rows
    b = kmeans(x, 10, key=jr.key(1), max_points_per_centroid=50)
    c = kmeans(x, 10, key=jr.key(2), max_points_per_centroid=50)
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
    np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
    assert not np.array_equal(np.asarray(a.centroids), np.asarray(c.centroids))
    lab, sq = assign(x, a.centroids)
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(lab))
    np.testing.assert_allclose(float(a.objective), float(jnp.sum(sq)), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(a.counts), np.bincount(np.asarray(lab), minlength=10))
    # The 5% bar was set with the reference's random init, kept here: with k-means++ (the
    # default) on these overlapping blobs the subsampled run stopped 12% above the full run
    # (seen: 26308 vs 23432).
    a = kmeans(x, 10, key=jr.key(1), max_points_per_centroid=50, init="random")
    full = kmeans(x, 10, key=jr.key(1), max_points_per_centroid=None, init="random")
    # A 500-row training set still finds these blobs: objective within 5%.
    assert float(a.objective) <= 1.05 * float(full.objective)


def test_kmeans_traces_once_per_shape():
    x, _ = blobs(500, 3, 4, seed=11)
    kmeans(x, 4, key=jr.key(0))
    before = _kmeans_jit._cache_size()
    kmeans(x + 1.0, 4, key=jr.key(1))
    kmeans(x * 2.0, 4, key=jr.key(2))
    assert _kmeans_jit._cache_size() == before


def test_float32_input_stays_float32():
    x, _ = blobs(400, 3, 4, seed=12)
    res = kmeans(x.astype(np.float32), 4, key=jr.key(0))
    assert isinstance(res, KMeansResult)
    assert res.centroids.dtype == jnp.float32 and res.objective.dtype == jnp.float32


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    x, _ = blobs(50, 3, 2, seed=13)
    key = jr.key(0)
    with pytest.raises(ValueError, match="k must be in 1..50"):
        kmeans(x, 51, key=key)
    with pytest.raises(ValueError, match="k must be in 1..50"):
        kmeans(x, 0, key=key)
    bad = x.copy()
    bad[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match="2 of 50 rows with NaN or inf"):
        kmeans(bad, 3, key=key)
    # The jaxtyping annotation (checked in tests) or the library's own check rejects it.
    with pytest.raises((ValueError, TypeCheckError)):
        kmeans(x[:, 0], 3, key=key)
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans(x, 3, key=key, init="kmeans||")
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        kmeans(x, 3, key=key, restarts=0)
    with pytest.raises(ValueError, match="iters must be >= 0"):
        lloyd(x, x[:3], iters=-1)
    with pytest.raises((ValueError, TypeCheckError)):  # feats mismatch: annotation or check
        lloyd(x, x[:3, :2])
    with pytest.raises(ValueError, match="max_points_per_centroid"):
        kmeans(x, 3, key=key, max_points_per_centroid=0)


# ------------------------------------------------------------------------- sharded (8 devices)
SHARDED = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, jax.random as jr, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import NamedSharding, PartitionSpec
    from jaxlaw.data_selection.s2l import assign, kmeans, lloyd
    from jaxlaw.training import data_mesh
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (12, 5))[rng.integers(0, 12, 4096)] + rng.normal(0, 1, (4096, 5))
    mesh = data_mesh(8)
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    c0 = x[:10].copy(); c0[3] = c0[2]  # a duplicate: exercises the sharded empty-cluster repair
    out = {}
    for name, arr in (("single", jnp.asarray(x)), ("mesh", xs)):
        full = kmeans(arr, 10, key=jr.key(0), max_points_per_centroid=None, restarts=2)
        sub = kmeans(arr, 10, key=jr.key(0), max_points_per_centroid=64)
        rep = lloyd(arr, c0, iters=8, chunk_rows=100)
        lab, sq = assign(arr, full.centroids, chunk_rows=100)
        out[name] = dict(
            full=np.asarray(full.labels).tolist(), full_c=np.asarray(full.centroids).tolist(),
            sub=np.asarray(sub.labels).tolist(), rep=np.asarray(rep.labels).tolist(),
            rep_counts=np.asarray(rep.counts).tolist(), assign=np.asarray(lab).tolist(),
            obj=float(full.objective),
            sharded=str(getattr(full.labels, "sharding", None)),
        )
    print(json.dumps(out))
    """
)


def test_row_sharded_kmeans_equals_single_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    single, mesh = out["single"], out["mesh"]
    for field in ("full", "sub", "rep", "assign", "rep_counts"):
        assert mesh[field] == single[field], field
    assert min(mesh["rep_counts"]) > 0
    # float64; per-cluster sums are reduced per device then psum-ed: reassociation only.
    np.testing.assert_allclose(mesh["full_c"], single["full_c"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mesh["obj"], single["obj"], rtol=1e-12)
    assert "data" in mesh["sharded"]  # labels come back sharded like the rows
