"""k-means, S2L selection and GradEx fits run in float64 whatever the process's x64 flag.

Guards review.md: without x64 these dropped to float32 silently while their tolerances assume
float64. The entry points now enable x64 around their own numerics; a run with x64 off must give
the float64 results of a run with x64 on (the conftest turns x64 on globally).
"""

import jax
import jax.random as jr
import numpy as np

from jaxlaw.data_selection.gradex import estimate_linear, fit_subsets, rescale
from jaxlaw.data_selection.s2l import assign, kmeans, kmeans_init, lloyd, s2l_select


def _blobs(n=600, t=4, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5.0, 5.0, (k, t))
    return centres[rng.integers(0, k, n)] + rng.normal(0.0, 0.7, (n, t))


def _both(fn):
    with jax.enable_x64(True):
        on = fn()
    with jax.enable_x64(False):
        off = fn()
    return on, off


def test_kmeans_entry_points_are_float64_with_x64_off():
    x = _blobs()
    on, off = _both(lambda: kmeans(x, 6, key=jr.key(0)))
    assert off.centroids.dtype == np.float64 and off.objective.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(off.labels), np.asarray(on.labels))
    # The same float64 program compiled twice: identical numbers.
    np.testing.assert_array_equal(np.asarray(off.centroids), np.asarray(on.centroids))
    c_on, c_off = _both(lambda: kmeans_init(x, 6, key=jr.key(1)))
    assert c_off.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(c_off), np.asarray(c_on))
    l_on, l_off = _both(lambda: lloyd(x, np.asarray(c_on), iters=5))
    assert l_off.centroids.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(l_off.centroids), np.asarray(l_on.centroids))
    a_on, a_off = _both(lambda: assign(x, np.asarray(c_on)))
    assert a_off[1].dtype == np.float64
    np.testing.assert_array_equal(np.asarray(a_off[1]), np.asarray(a_on[1]))


def test_s2l_select_clusters_in_float64_with_x64_off():
    x = _blobs(seed=1)
    on, off = _both(lambda: s2l_select(x, 60, key=jr.key(2), k=6))
    assert off.kmeans.centroids.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(off.labels), np.asarray(on.labels))
    np.testing.assert_array_equal(np.asarray(off.indices), np.asarray(on.indices))


def test_gradex_fits_and_estimates_are_float64_with_x64_off():
    rng = np.random.default_rng(0)
    n, d, m = 80, 6, 5
    G = rng.normal(size=(n, d)).astype(np.float32)  # per-sample grads come as float32
    f0 = rng.normal(size=n).astype(np.float32)
    mask = rng.random((m, n)) < 0.5
    mask[:, 0] = True
    tg = rng.normal(size=(30, d)).astype(np.float32)
    tf = rng.normal(size=30).astype(np.float32)
    gram = np.eye(d)

    def run():
        W = fit_subsets(G, f0, mask)
        c = rescale(W, gram, 2.0, 0.1)
        est = estimate_linear(W, tg, tf, gram=gram, theta_norm=2.0, scale=0.1)
        return W, c, est

    on, off = _both(run)
    for a, b in zip(on, off):
        assert b.dtype == np.float64
        # Same float64 programs: equal to round-off (rtol 1e-12: the two compilations may
        # fuse differently).
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)
