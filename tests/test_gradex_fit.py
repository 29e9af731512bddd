"""GradEx surrogate fits, loss estimates and selection (spec 2.5-2.9, 5.4-5.6).

References are written here independently: scipy L-BFGS for the logistic fits, numpy closed
forms, sklearn liblinear for the reference parity, and the model evaluated by hand with the
LoRA update written into its adapters.
"""

import inspect
import itertools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from jaxlaw.data import TokenizedSet, take
from jaxlaw.data_selection.gradex import (
    Projection,
    auroc,
    calibrate_scale,
    estimate_first_order,
    estimate_lifted,
    estimate_linear,
    fit_subsets,
    forward_selection,
    lora_norm,
    projected_grads,
    random_ensemble,
    rescale,
    sample_mask,
    sample_outputs,
    select_threshold,
    subset_masks,
    target_loss_grad,
    taylor_errors,
)
from jaxlaw.data_selection.gradex import _fit as fit_mod
from jaxlaw.data_selection.gradex._estimate import _lifted_fn
from jaxlaw.data_selection.gradex._fit import _fit_jit
from jaxlaw.lora import LoraConfig, apply_lora, linear_paths, lora_paths, split_lora
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import Batch, evaluate, mean_loss

# ----------------------------------------------------------------------------- fixtures


def _problem(n=60, d=6, m=4, seed=0):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, d))
    f0 = rng.normal(size=n)
    mask = rng.random((m, n)) < 0.5
    mask[:, 0] = True  # no empty row
    return G, f0, mask


def _bad_shapes(fn, *args, match, **kw):
    """The library's own ValueError for mismatched shapes; under the test run's jaxtyping hook the
    annotations may catch them first (a TypeError), so the unwrapped function is checked too."""
    with pytest.raises(ValueError, match=match):
        inspect.unwrap(fn)(*args, **kw)
    with pytest.raises((ValueError, TypeError)):
        fn(*args, **kw)


def _lam_rel(G, mask_row, lam):
    return lam * mask_row.sum() * np.mean(np.sum(G**2, axis=1)) / G.shape[1]


def _scipy_logistic(G, o, m, lam):
    """argmin sum_i m_i softplus(-(o_i + G_i w)) + lam/2 ||w||^2 by L-BFGS at tight tolerance."""
    Gs, os_ = G[m], o[m]

    def fun(w):
        z = os_ + Gs @ w
        s = 1.0 / (1.0 + np.exp(z))
        return np.sum(np.logaddexp(0.0, -z)) + 0.5 * lam * w @ w, lam * w - Gs.T @ s

    r = minimize(
        fun,
        np.zeros(G.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options=dict(gtol=1e-13, ftol=1e-16, maxiter=100000),
    )
    return r.x


# ---------------------------------------------------------------------------------- fits


@pytest.mark.parametrize(
    "offsets,lam_rule,lam", [(True, "relative", 0.3), (False, "absolute", 2.0)]
)
def test_logistic_matches_scipy(offsets, lam_rule, lam):
    G, f0, mask = _problem()
    W = np.asarray(fit_subsets(G, f0, mask, lam=lam, lam_rule=lam_rule, offsets=offsets))
    assert W.dtype == np.float64
    o = f0 if offsets else np.zeros_like(f0)
    for j in range(mask.shape[0]):
        lam_j = _lam_rel(G, mask[j], lam) if lam_rule == "relative" else lam
        ref = _scipy_logistic(G, o, mask[j], lam_j)
        # L-BFGS at gtol 1e-13 is accurate to ~1e-8 relative; Newton to f64 round-off.
        np.testing.assert_allclose(W[j], ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
        # The Newton solution is stationary to round-off.
        z = o[mask[j]] + G[mask[j]] @ W[j]
        grad = lam_j * W[j] - G[mask[j]].T @ (1 / (1 + np.exp(z)))
        assert np.abs(grad).max() < 1e-10


@pytest.mark.parametrize("method", ["logistic", "ridge", "one_step"])
def test_vmapped_equals_loop_and_chunk_invariant(method):
    G, f0, mask = _problem(m=3)
    W = np.asarray(fit_subsets(G, f0, mask, method=method))
    W1 = np.asarray(fit_subsets(G, f0, mask, method=method, chunk=2))
    loop = np.stack(
        [
            np.asarray(fit_subsets(G, f0, mask[j : j + 1], method=method))[0]
            for j in range(mask.shape[0])
        ]
    )
    # f64, same arithmetic batched or not: only BLAS summation order differs.
    np.testing.assert_allclose(W, loop, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W1, W, rtol=1e-10, atol=1e-12)


def test_logistic_stops_at_convergence_and_blocked_hessian(monkeypatch):
    G, f0, mask = _problem(n=70, d=5, m=5, seed=4)
    W = np.asarray(fit_subsets(G, f0, mask, lam=0.01))
    # Converged well before 30 iterations: a larger cap stops at the same iterate, bit for bit.
    np.testing.assert_array_equal(np.asarray(fit_subsets(G, f0, mask, lam=0.01, iters=100)), W)
    # The cap still binds: 3 iterations are not yet at the optimum (a weak penalty, ~2e-4
    # relative left here; 5 reach it).
    W3 = np.asarray(fit_subsets(G, f0, mask, lam=0.01, iters=3))
    assert np.abs(W3 - W).max() > 1e-5 * np.abs(W).max()
    # The pair table rebuilt by blocks of 8 rows (as beyond its memory budget) gives the same
    # Hessians up to summation order.
    monkeypatch.setattr(fit_mod, "_PAIRS_BYTES", 8 * 15 * 8)  # 8 rows of 15 pairs, f64
    assert fit_mod._pair_rows(5, 8) == 8
    np.testing.assert_allclose(np.asarray(fit_subsets(G, f0, mask, lam=0.01)), W, rtol=1e-10)
    Wr = np.asarray(fit_subsets(G, f0, mask, method="ridge"))
    monkeypatch.undo()
    np.testing.assert_allclose(Wr, np.asarray(fit_subsets(G, f0, mask, method="ridge")), rtol=1e-10)


def test_reference_parity_matches_scipy_on_the_augmented_problem():
    G, _, mask = _problem(n=50, d=4, m=3, seed=5)
    key, lam, fraction = jr.key(2), 2.0, 0.8
    W = np.asarray(
        fit_subsets(G, np.zeros(50), mask, parity="reference", lam=lam, key=key, fit_fraction=0.8)
    )
    keys = jr.split(key, mask.shape[0])
    for j in range(mask.shape[0]):
        sign = np.where(np.asarray(jr.bernoulli(keys[j], 0.7, (50,))), 1.0, -1.0)
        keep = np.zeros(50, bool)
        keep[np.flatnonzero(mask[j])[: max(int(fraction * mask[j].sum()), 1)]] = True
        ref = _scipy_logistic(np.concatenate([G, sign[:, None]], axis=1), np.zeros(50), keep, lam)
        # As in test_logistic_matches_scipy: L-BFGS is the looser of the two.
        np.testing.assert_allclose(W[j], ref[:-1], rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_ridge_closed_form_and_first_newton_iterate():
    G, f0, mask = _problem()
    lam = 0.7
    W = np.asarray(fit_subsets(G, f0, mask, method="ridge", lam=lam))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    for j in range(mask.shape[0]):
        m = mask[j]
        h = sig(f0[m]) * sig(-f0[m])
        y = 1 + np.exp(-f0[m])  # working response 1 / sigma(f*)
        A = G[m].T @ (h[:, None] * G[m]) + _lam_rel(G, m, lam) * np.eye(G.shape[1])
        ref = np.linalg.solve(A, G[m].T @ (h * y))
        np.testing.assert_allclose(W[j], ref, rtol=1e-10)  # f64 direct solves
    # One Newton iteration of the logistic fit from 0 takes the full step here: same point.
    W1 = np.asarray(fit_subsets(G, f0, mask, lam=lam, iters=1))
    np.testing.assert_allclose(W1, W, rtol=1e-10)


def test_one_step_closed_form_and_large_lam_limit():
    G, f0, mask = _problem()
    lam = 1e7
    W = np.asarray(fit_subsets(G, f0, mask, method="one_step", lam=lam, lam_rule="absolute"))
    ref = (mask * (1 / (1 + np.exp(f0)))[None, :]) @ G / lam
    np.testing.assert_allclose(W, ref, rtol=1e-12)
    Wl = np.asarray(fit_subsets(G, f0, mask, lam=lam, lam_rule="absolute"))
    # w_logistic = w_one_step (1 + O(||G||^2 |S| / lam)) = 1e-4 relative here.
    np.testing.assert_allclose(Wl, W, rtol=1e-3, atol=1e-3 * np.abs(W).max())
    Wr = np.asarray(fit_subsets(G, f0, mask, method="one_step", lam=2.0))
    np.testing.assert_allclose(Wr[0], ref[0] * lam / _lam_rel(G, mask[0], 2.0), rtol=1e-12)


def test_relative_lam_is_scale_and_size_invariant():
    G, f0, mask = _problem()
    W = np.asarray(fit_subsets(G, f0, mask))
    # Gradients x10: penalty x100, so w / 10 gives the same log-odds and the same objective.
    np.testing.assert_allclose(np.asarray(fit_subsets(10 * G, f0, mask)), W / 10, rtol=1e-9)
    # Every example twice: the mean loss over S is unchanged, so is w.
    W2 = np.asarray(
        fit_subsets(
            np.concatenate([G, G]), np.concatenate([f0, f0]), np.concatenate([mask, mask], axis=1)
        )
    )
    np.testing.assert_allclose(W2, W, rtol=1e-9)


@pytest.mark.parametrize("C,fraction", [(1e-4, 0.8), (0.5, 1.0)])
def test_reference_parity_vs_sklearn_liblinear(C, fraction):
    G, _, mask = _problem(n=80, d=8, m=3, seed=3)
    f0 = np.random.default_rng(9).normal(size=80)  # ignored in reference parity
    key = jr.key(7)
    W = np.asarray(
        fit_subsets(G, f0, mask, parity="reference", lam=1 / C, key=key, fit_fraction=fraction)
    )
    keys = jr.split(key, mask.shape[0])
    for j in range(mask.shape[0]):
        # The documented stream: Bernoulli(0.7) labels from the j-th split key.
        labels = np.asarray(jr.bernoulli(keys[j], 0.7, (G.shape[0],)))
        idx = np.flatnonzero(mask[j])[: max(int(fraction * mask[j].sum()), 1)]
        X = np.where(labels[idx, None], 1.0, -1.0) * G[idx]
        clf = LogisticRegression(
            C=C, solver="liblinear", tol=1e-12, max_iter=100000, random_state=0
        ).fit(X, labels[idx].astype(int))
        coef = clf.coef_[0]
        cos = W[j] @ coef / np.linalg.norm(W[j]) / np.linalg.norm(coef)
        assert cos >= 0.999, cos  # the spec's parity bar (5.4)


def test_fit_bad_inputs():
    G, f0, mask = _problem()
    with pytest.raises(ValueError, match="unknown fit method"):
        fit_subsets(G, f0, mask, method="lasso")
    _bad_shapes(fit_subsets, G, f0[:-1], mask, match="outputs has shape")
    _bad_shapes(fit_subsets, G, f0, mask[:, :-1], match="mask must be bool")
    empty = mask.copy()
    empty[2] = False
    with pytest.raises(ValueError, match="subset 2 contains no example"):
        fit_subsets(G, f0, empty)
    with pytest.raises(ValueError, match="lam must be"):
        fit_subsets(G, f0, mask, lam=0.0)
    bad = G.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="example 5"):
        fit_subsets(bad, f0, mask)
    with pytest.raises(ValueError, match="key="):
        fit_subsets(G, f0, mask, parity="reference")
    with pytest.raises(ValueError, match="offsets"):
        fit_subsets(G, f0, mask, parity="reference", key=jr.key(0), offsets=True)
    with pytest.raises(ValueError, match="all gradients are zero"):
        fit_subsets(np.zeros_like(G), f0, mask)


def test_fit_traces_once_per_shape():
    G, f0, mask = _problem()
    fit_subsets(G, f0, mask, iters=7)
    n0 = _fit_jit._cache_size()
    fit_subsets(G + 1.0, f0 - 1.0, ~mask | mask[:1], iters=7)
    assert _fit_jit._cache_size() == n0


# -------------------------------------------------------------------- subsets and masks


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 10), m=st.integers(1, 4), seed=st.integers(0, 2**16), data=st.data())
def test_subset_masks_exact_size_and_deterministic(k, m, seed, data):
    size = data.draw(st.integers(1, k))
    z = np.asarray(subset_masks(jr.key(seed), k, m, size))
    assert z.shape == (m, k) and z.dtype == np.bool_
    np.testing.assert_array_equal(z.sum(axis=1), size)
    np.testing.assert_array_equal(np.asarray(subset_masks(jr.key(seed), k, m, size)), z)


def test_subset_masks_uniform():
    z = np.asarray(subset_masks(jr.key(1), 6, 4000, 3))
    # Each source is in a 3-of-6 subset with p = 1/2: 4000 draws, sd 0.008; 5 sd band.
    np.testing.assert_allclose(z.mean(axis=0), 0.5, atol=0.04)
    # All C(6,3) = 20 subsets appear with p = 1/20 (sd 0.0034; 5 sd band).
    counts = np.unique(z @ (2 ** np.arange(6)), return_counts=True)[1]
    assert counts.size == 20
    np.testing.assert_allclose(counts / 4000, 1 / 20, atol=0.018)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 6), size=st.integers(-2, 9))
def test_subset_masks_bad_size(k, size):
    if 1 <= size <= k:
        assert subset_masks(jr.key(0), k, 2, size).shape == (2, k)
    else:
        with pytest.raises(ValueError, match="subset size"):
            subset_masks(jr.key(0), k, 2, size)


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(1, 5),
    sid=st.lists(st.integers(-2, 6), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_sample_mask_property(k, sid, seed):
    z = np.random.default_rng(seed).random((3, k)) < 0.6
    z[:, 0] = True
    sid = np.asarray(sid, np.int32)
    if np.any((sid < 0) | (sid >= k)):
        with pytest.raises(ValueError, match="out of range"):
            sample_mask(z, sid)
    elif not z[:, sid].any(axis=1).all():
        with pytest.raises(ValueError, match="contains no example"):
            sample_mask(z, sid)
    else:
        np.testing.assert_array_equal(np.asarray(sample_mask(z, sid)), z[:, sid])


def test_sample_mask_and_errors():
    z = np.array([[True, False, True], [False, True, False]])
    sid = np.array([0, 1, 2, 2, 1, 0], np.int32)
    np.testing.assert_array_equal(np.asarray(sample_mask(z, sid)), z[:, sid])
    with pytest.raises(ValueError, match="subset 1 is empty"):
        sample_mask(np.array([[True, False, False], [False, False, False]]), sid)
    with pytest.raises(ValueError, match="source_id 3 of example 1 is out of range"):
        sample_mask(z, np.array([0, 3], np.int32))
    with pytest.raises(ValueError, match="contains no example"):
        sample_mask(z, np.array([0, 2], np.int32))  # source 1 has no example


# -------------------------------------------------------------------------- estimates


def test_rescale_sets_the_lifted_norm():
    rng = np.random.default_rng(0)
    P = rng.choice([-1.0, 1.0], size=(50, 6)) / np.sqrt(6)  # a small dense P
    W = rng.normal(size=(4, 6))
    W[3] = 0.0
    c = np.asarray(rescale(W, P.T @ P, 2.5, 0.1))
    norms = np.linalg.norm((c[:, None] * W) @ P.T, axis=1)
    np.testing.assert_allclose(norms[:3], 0.25, rtol=1e-12)  # f64 exact up to round-off
    assert c[3] == 0.0
    with pytest.raises(ValueError, match="scale"):
        rescale(W, P.T @ P, 2.5, -0.1)


def test_estimate_linear_and_first_order_vs_loop():
    rng = np.random.default_rng(1)
    d, m, t = 5, 4, 30
    W = rng.normal(size=(m, d))
    Gt = rng.normal(size=(t, d))
    ft = rng.normal(size=t)
    gram = np.cov(rng.normal(size=(d, 40))) + np.eye(d)
    wts = rng.integers(1, 9, t).astype(float)
    est = np.asarray(estimate_linear(W, Gt, ft, gram=gram, theta_norm=3.0, scale=0.2))
    est_w = np.asarray(
        estimate_linear(W, Gt, ft, gram=gram, theta_norm=3.0, scale=0.2, weights=wts, anchor=1.5)
    )
    lg = rng.normal(size=d)
    fo = np.asarray(estimate_first_order(W, lg, 0.9, gram=gram, theta_norm=3.0, scale=0.2))
    for j in range(m):
        c = 0.6 / np.sqrt(W[j] @ gram @ W[j])
        z = np.array([ft[i] + c * Gt[i] @ W[j] for i in range(t)])
        ref = np.mean(np.log1p(np.exp(-z)))
        np.testing.assert_allclose(est[j], ref, rtol=1e-12)
        ref_w = np.sum(wts * np.log1p(np.exp(-z))) / wts.sum()
        base = np.sum(wts * np.log1p(np.exp(-ft))) / wts.sum()
        np.testing.assert_allclose(est_w[j], ref_w - base + 1.5, rtol=1e-12)
        np.testing.assert_allclose(fo[j], 0.9 + c * lg @ W[j], rtol=1e-12)
    _bad_shapes(
        estimate_linear,
        W,
        Gt[:, :-1],
        ft,
        gram=gram,
        theta_norm=3.0,
        scale=0.2,
        match="target_grads",
    )


def _tiny():
    cfg = ModelConfig.tiny(
        "gpt2", vocab_size=16, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=16
    )
    model = init_model(cfg, key=jr.key(0))
    apply_lora(model, LoraConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    for path in lora_paths(model):
        ad = linear_paths(model)[path].lora
        ad.b[...] = jnp.asarray(rng.normal(0, 0.3, ad.b.shape), jnp.float32)
    return model


def _dataset(n=11, seq=12, seed=0, n_sources=3):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 16, (n, seq)).astype(np.int32)
    lengths = rng.integers(6, seq + 1, n)
    att = np.arange(seq)[None, :] < lengths[:, None]
    loss = att & (np.arange(seq)[None, :] >= 4)
    sid = (np.arange(n) % n_sources).astype(np.int32)
    return TokenizedSet(
        tokens,
        att,
        loss,
        np.arange(n, dtype=np.int32),
        sid,
        tuple(f"s{k}" for k in range(n_sources)),
    )


def _add_by_hand(model, delta):
    """A copy of ``model`` with ``delta`` (nested dict by module path) added to each adapter."""
    m2 = nnx.clone(model)
    for path in lora_paths(m2):
        node = delta
        for part in path.split("."):
            node = node[int(part) if part.isdigit() else part]
        ad = linear_paths(m2)[path].lora
        # The adapters keep their own dtype (float32) even under the suite's x64.
        ad.a[...] = (ad.a[...] + node["lora"]["a"]).astype(ad.a.dtype)
        ad.b[...] = (ad.b[...] + node["lora"]["b"]).astype(ad.b.dtype)
    return m2


@pytest.fixture(scope="module")
def tiny():
    model = _tiny()
    proj = Projection.for_tree(split_lora(model)[1], dim=8, seed=3)
    return model, proj


def test_lora_norm(tiny):
    model, _ = tiny
    ref = np.sqrt(
        sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(split_lora(model)[1]))
    )
    np.testing.assert_allclose(float(lora_norm(model)), ref, rtol=1e-12)


def test_estimate_lifted_matches_model_by_hand(tiny):
    model, proj = tiny
    norm0 = float(lora_norm(model))
    target = _dataset()
    W = np.random.default_rng(2).normal(size=(3, 8))
    scale = 0.3
    est = estimate_lifted(
        model, proj, W, target, scale=scale, batch_size=4, subset_chunk=2, progress=False
    )
    est3 = estimate_lifted(
        model, proj, W, target, scale=scale, batch_size=3, subset_chunk=3, progress=False
    )
    c = np.asarray(rescale(W, proj.gram(), lora_norm(model), scale))
    for j in range(W.shape[0]):
        delta = proj.lift(jnp.asarray(c[j] * W[j], jnp.float32))
        shifted = _add_by_hand(model, delta)
        ref = mean_loss(evaluate(shifted, target, batch_size=4))
        # f32 forward passes through different (vmapped) programs: rtol 1e-5.
        np.testing.assert_allclose(est[j], ref, rtol=1e-5)
    np.testing.assert_allclose(est3, est, rtol=1e-5)  # chunking/batching invariance, f32
    assert np.ptp(est) > 1e-3  # the updates matter, so the check above has teeth
    # scale 0: theta* itself.
    base = estimate_lifted(
        model, proj, W[:2], target, scale=0.0, batch_size=4, subset_chunk=2, progress=False
    )
    np.testing.assert_allclose(base, mean_loss(evaluate(model, target)), rtol=1e-5)
    # The model itself is untouched.
    assert float(lora_norm(model)) == norm0
    # One trace per chunk shape.
    fn = _lifted_fn(split_lora(model)[0], (proj,))
    n0 = fn._cache_size()
    estimate_lifted(
        model, proj, W + 1.0, target, scale=0.1, batch_size=4, subset_chunk=2, progress=False
    )
    assert fn._cache_size() == n0


def test_estimate_lifted_averages_projection_seeds_in_parameter_space(tiny):
    """Several projections: each lift P_k w_k normalised to 1, the average rescaled to
    scale * ||theta*_LoRA||, one evaluation per subset; computed here leaf by leaf in numpy."""
    model, proj = tiny
    lora = split_lora(model)[1]
    projs = [proj, Projection.for_tree(lora, dim=8, seed=7)]
    target = _dataset()
    W = np.random.default_rng(3).normal(size=(2, 3, 8))
    scale = 0.2
    est = estimate_lifted(
        model, projs, W, target, scale=scale, batch_size=4, subset_chunk=2, progress=False
    )
    size = scale * float(lora_norm(model))

    def norm(tree):
        return np.sqrt(sum(np.sum(np.asarray(y, np.float64) ** 2) for y in jax.tree.leaves(tree)))

    for j in range(W.shape[1]):
        lifts = [p.lift(jnp.asarray(W[k, j], jnp.float32)) for k, p in enumerate(projs)]
        units = [jax.tree.map(lambda x, n=norm(t): np.asarray(x) / n, t) for t in lifts]
        mean = jax.tree.map(lambda a, b: (a + b) / 2, *units)
        delta = jax.tree.map(lambda x, n=norm(mean): jnp.asarray(size * x / n), mean)
        ref = mean_loss(evaluate(_add_by_hand(model, delta), target, batch_size=4))
        np.testing.assert_allclose(est[j], ref, rtol=1e-5)
    # One projection in a list is the single-projection estimate.
    one = estimate_lifted(model, [proj], W[:1], target, scale=scale, progress=False)
    single = estimate_lifted(model, proj, W[0], target, scale=scale, progress=False)
    np.testing.assert_allclose(one, single, rtol=1e-6)
    with pytest.raises(ValueError, match="W must be"):
        estimate_lifted(model, projs, W[0], target, scale=scale, progress=False)
    with pytest.raises(ValueError, match="one matrix per projection"):
        estimate_lifted(model, projs, W, target, scale=scale, gram=[proj.gram()], progress=False)
    with pytest.raises(ValueError, match="projections must be"):
        estimate_lifted(model, [], W, target, scale=scale, progress=False)


def test_fit_on_a_source_lowers_that_source_most(tiny):
    """End to end (grads -> fit -> lift): the update fitted on source k's examples lowers the
    loss of source k's examples, and more than the updates fitted on the other sources."""
    model, _ = tiny
    proj = Projection.for_tree(split_lora(model)[1], dim=64, seed=1)
    data = _dataset(n=24, seed=4, n_sources=3)
    pg = projected_grads(model, data, [proj], progress=False)
    W = fit_subsets(pg.grads[0], pg.outputs, sample_mask(np.eye(3, dtype=bool), pg.source_id))
    gram = proj.gram()
    for k in range(3):
        own = take(data, data.source_id == k)
        kw = dict(gram=gram, batch_size=4, subset_chunk=3, progress=False)
        est = estimate_lifted(model, proj, W, own, scale=0.05, **kw)
        base = estimate_lifted(model, proj, W, own, scale=0.0, **kw)[0]
        assert np.argmin(est) == k and est[k] < base - 1e-3, (k, est, base)


def test_estimate_lifted_bad_inputs(tiny):
    model, proj = tiny
    target = _dataset()
    W = np.ones((2, 8))
    empty = target._replace(loss_mask=np.zeros_like(target.loss_mask))
    with pytest.raises(ValueError, match="no response tokens"):
        estimate_lifted(model, proj, W, empty, scale=0.1, progress=False)
    _bad_shapes(
        estimate_lifted,
        model,
        proj,
        np.ones((2, 7)),
        target,
        scale=0.1,
        progress=False,
        match="W must be",
    )
    other = Projection.for_tree({"x": np.zeros(3, np.float32)}, dim=8)
    with pytest.raises(ValueError, match="layout"):
        estimate_lifted(model, other, W, target, scale=0.1, progress=False)


def test_target_loss_grad_first_order(tiny):
    model, proj = tiny
    target = _dataset()
    g, l0 = target_loss_grad(model, proj, target, batch_size=4)
    np.testing.assert_allclose(l0, mean_loss(evaluate(model, target)), rtol=1e-5)
    # Directional derivative along P w by central differences of the lifted estimate.
    w = np.random.default_rng(5).normal(size=(1, 8))
    gram = proj.gram()
    h = 1e-2
    up, dn = estimate_lifted(
        model,
        proj,
        np.concatenate([w, -w]),
        target,
        scale=h,
        gram=gram,
        batch_size=4,
        subset_chunk=2,
        progress=False,
    )
    fo = np.asarray(
        estimate_first_order(
            np.concatenate([w, -w]), g, l0, gram=gram, theta_norm=lora_norm(model), scale=h
        )
    )
    # f32 losses over ~80 tokens, step 1e-2 relative: the slope agrees to a few 1e-3.
    np.testing.assert_allclose(fo[0] - fo[1], up - dn, rtol=2e-2)


def test_taylor_errors(tiny):
    model, proj = tiny
    data = _dataset(n=16, seed=4)
    pg = projected_grads(model, data, [proj], progress=False)
    dirs = np.random.default_rng(3).normal(size=(3, 8))
    gram = proj.gram()
    res = {
        rho: taylor_errors(model, proj, pg.grads[0], pg.outputs, dirs, data, rho=rho, gram=gram)
        for rho in (0.01, 0.05, 0.2)
    }
    for rho, r in res.items():
        assert np.all(r.first_order < r.zeroth_order), (rho, r)
    assert np.all(res[0.01].first_order < res[0.05].first_order)
    assert np.all(res[0.05].first_order < res[0.2].first_order)
    # Remainders: first order O(rho^2) -> MSRE x5^4 = 625 from rho 0.01 to 0.05, zeroth order
    # O(rho) -> x25 (measured 506-640 and 25-29 on this model; bands leave room for f32 noise).
    r1 = res[0.05].first_order / res[0.01].first_order
    r0 = res[0.05].zeroth_order / res[0.01].zeroth_order
    assert np.all((r1 > 200) & (r1 < 2000)) and np.all((r0 > 15) & (r0 < 45)), (r1, r0)
    # One direction by hand: the log-odds of the shifted model and spec 2.9's formula.
    c = float(rescale(dirs[:1], gram, lora_norm(model), 0.05)[0])
    shifted = _add_by_hand(model, proj.lift(jnp.asarray(c * dirs[0], jnp.float32)))
    shifted.eval()
    f = np.asarray(
        sample_outputs(
            shifted,
            Batch(
                jnp.asarray(data.tokens),
                jnp.asarray(data.attention_mask),
                jnp.asarray(data.loss_mask),
            ),
        ),
        np.float64,
    )
    # <g_i, D> = (P^T g_i) . (c w), with c w in float32 as it is lifted.
    pred = pg.outputs + np.float32(c * dirs[0]).astype(np.float64) @ pg.grads[0].T
    e1 = (pred - f) / np.maximum(np.abs(f), np.abs(pg.outputs))
    # f32 forward passes; errors are ~1e-6 absolute: compare with atol on the MSRE.
    np.testing.assert_allclose(res[0.05].first_order[0], np.mean(e1**2), rtol=1e-3, atol=1e-9)


def test_calibrate_scale():
    truth = np.array([1.0, 2.0, 3.0])
    cal = calibrate_scale(lambda s: truth * (1 + (s - 0.3)), truth, [0.1, 0.2, 0.3, 0.5])
    assert cal.scale == 0.3 and cal.errors[2] == 0.0
    np.testing.assert_allclose(cal.errors, [(0.2) ** 2, 0.1**2, 0.0, 0.2**2], rtol=1e-12)
    with pytest.raises(ValueError, match="grid"):
        calibrate_scale(lambda s: truth, truth, [])


# ------------------------------------------------------------------------------ selection


def test_random_ensemble_vs_loop():
    rng = np.random.default_rng(0)
    z = rng.random((30, 6)) < 0.4
    z[:, 5] = False  # never sampled
    losses = rng.normal(size=30)
    s = np.asarray(random_ensemble(z, losses))
    for k in range(5):
        np.testing.assert_allclose(
            s[k], np.mean([losses[j] for j in range(30) if z[j, k]]), rtol=1e-12
        )
    assert np.isnan(s[5])
    with pytest.raises(ValueError, match="not finite"):
        random_ensemble(z, np.where(np.arange(30) == 3, np.inf, losses))
    _bad_shapes(random_ensemble, z, losses[:-1], match="rows")


def test_select_threshold():
    s = np.array([0.5, 0.2, np.nan, 0.2, 0.9])
    np.testing.assert_array_equal(select_threshold(s, gamma=0.6), [True, True, False, True, False])
    np.testing.assert_array_equal(select_threshold(s, top_k=2), [False, True, False, True, False])
    np.testing.assert_array_equal(select_threshold(s, top_k=1), [False, True, False, False, False])
    # NaN is never selected, so top_k=5 gives the 4 scored sources.
    np.testing.assert_array_equal(select_threshold(s, top_k=5), [True, True, False, True, True])
    with pytest.raises(ValueError, match="exactly one"):
        select_threshold(s, gamma=0.5, top_k=2)
    with pytest.raises(ValueError, match="top_k"):
        select_threshold(s, top_k=6)


def _brute_force(estimate, k):
    rows = np.array([r for r in itertools.product([False, True], repeat=k) if any(r)])
    est = estimate(rows)
    return rows[int(np.argmin(est))], float(est.min())


def test_forward_stepwise_finds_additive_optimum():
    rng = np.random.default_rng(4)
    k = 8
    a = rng.normal(size=k)  # sources with a_k < 0 help
    calls = []

    def estimate(rows):
        calls.append(rows.shape[0])
        return 2.0 + rows.astype(float) @ a

    res = forward_selection(estimate, k)
    best, best_loss = _brute_force(lambda r: 2.0 + r.astype(float) @ a, k)
    np.testing.assert_array_equal(res.selected, best)
    np.testing.assert_array_equal(res.selected, a < 0)
    assert res.loss == pytest.approx(best_loss, rel=1e-12)
    # One batched call of fixed shape per round (K rows), then a final round that stops.
    n_sel = int((a < 0).sum())
    assert calls == [k] * (n_sel + 1)
    assert res.accepted.tolist() == [True] * n_sel + [False]
    # max_size caps it.
    capped = forward_selection(estimate, k, max_size=2)
    assert capped.selected.sum() == 2 and set(np.flatnonzero(capped.selected)) <= set(
        np.argsort(a)[:2]
    )


def _old_stepwise(estimate, k, cap):
    """The stepwise loop as it was: one row per remaining source, a new shape every round."""
    sel, current, cands, losses, acc = np.zeros(k, bool), np.inf, [], [], []
    while sel.sum() < cap:
        free = np.flatnonzero(~sel)
        rows = np.repeat(sel[None, :], free.size, axis=0)
        rows[np.arange(free.size), free] = True
        est = np.asarray(estimate(rows), np.float64)
        j = int(np.argmin(est))
        better = bool(est[j] < current)
        cands.append(int(free[j]))
        losses.append(float(est[j]))
        acc.append(better)
        if not better:
            break
        sel[free[j]] = True
        current = float(est[j])
    return sel, current, cands, losses, acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_stepwise_equals_the_old_loop_and_compiles_once(seed):
    """Guards review.md: stepwise rounds passed K, K-1, ... rows, so a jitted estimator
    recompiled every round. Now every round is one [K, K] call, with the old loop's result."""
    rng = np.random.default_rng(seed)
    k = 9
    v = jnp.asarray(rng.normal(size=k))
    pair = jnp.asarray(rng.normal(size=(k, k)) * 0.3)

    @jax.jit
    def est_jit(rows):  # not additive: pairwise interactions, a mean and a size penalty
        z = rows.astype(v.dtype)
        n = jnp.sum(z, axis=1)
        return (z @ v) / n + jnp.einsum("ri,ij,rj->r", z, pair, z) / n**2 + 0.05 * n

    def estimate(rows):
        return np.asarray(est_jit(jnp.asarray(rows)))

    for cap in (k, 4):
        est_jit._clear_cache()
        res = forward_selection(estimate, k, max_size=cap)
        assert est_jit._cache_size() == 1  # one shape for every round
        sel, cur, cands, losses, acc = _old_stepwise(estimate, k, cap)
        np.testing.assert_array_equal(res.selected, sel)
        assert res.loss == cur
        assert res.candidates.tolist() == cands and res.accepted.tolist() == acc
        np.testing.assert_array_equal(res.losses, losses)
        assert res.n_estimates == k * len(cands)


def test_forward_single_pass_is_the_reference_loop():
    rng = np.random.default_rng(5)
    k = 7
    v = rng.normal(size=k)

    def estimate(rows):  # mean "loss" of the chosen sources: not additive
        return (rows.astype(float) @ v) / rows.sum(axis=1)

    order = rng.permutation(k)
    res = forward_selection(estimate, k, variant="single_pass", order=order)
    sel, cur = np.zeros(k, bool), np.inf
    for src in order:  # spec 2.8: keep iff the estimate does not get worse
        row = sel.copy()
        row[src] = True
        e = estimate(row[None])[0]
        if e <= cur:
            sel, cur = row, e
    np.testing.assert_array_equal(res.selected, sel)
    assert res.n_estimates == k and res.loss == pytest.approx(cur)
    # Stepwise on the same (mean) estimator picks the single best source and stops.
    sw = forward_selection(estimate, k)
    np.testing.assert_array_equal(sw.selected, np.arange(k) == np.argmin(v))
    np.testing.assert_array_equal(sw.selected, _brute_force(estimate, k)[0])
    with pytest.raises(ValueError, match="permutation"):
        forward_selection(estimate, k, variant="single_pass", order=[0, 0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="non-finite"):
        forward_selection(lambda r: np.full(r.shape[0], np.nan), k)
    with pytest.raises(ValueError, match="shape"):
        forward_selection(lambda r: np.zeros(1), k)


def test_auroc_vs_sklearn():
    rng = np.random.default_rng(6)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.random(40) < 0.4
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    with pytest.raises(ValueError, match="positive and one negative"):
        auroc(s, np.ones(40, bool))


@pytest.mark.parametrize(
    "opts",
    [
        dict(method="logistic"),
        dict(method="ridge"),
        dict(method="one_step"),
        dict(parity="reference", fit_fraction=0.8, lam=10.0),
    ],
)
def test_projection_axis_equals_the_per_projection_loop(opts):
    """Guards review.md: callers looped over projections, one `fit_subsets` / `estimate_linear`
    call each. A leading projection axis now runs them in one vmapped call, with the loop's
    results (float64; rtol 1e-10: vmapped and single GEMMs may sum in other orders, and the
    batched Newton loop runs each member's own steps)."""
    rng = np.random.default_rng(7)
    P, n, d, m = 3, 70, 5, 6
    G = rng.normal(size=(P, n, d))
    f0 = rng.normal(size=n)
    mask = rng.random((m, n)) < 0.5
    mask[:, 0] = True
    key = jr.key(3) if opts.get("parity") == "reference" else None
    loop = np.stack([np.asarray(fit_subsets(G[j], f0, mask, key=key, **opts)) for j in range(P)])
    batched = np.asarray(fit_subsets(G, f0, mask, key=key, **opts))
    assert batched.shape == (P, m, d)
    np.testing.assert_allclose(batched, loop, rtol=1e-10, atol=1e-12)

    tg = rng.normal(size=(P, 40, d))
    tf = rng.normal(size=40)
    grams = np.stack([np.eye(d) + 0.1 * (a @ a.T) for a in rng.normal(size=(P, d, d))])
    kw = dict(theta_norm=1.5, scale=0.2, anchor=0.7)
    est_loop = np.stack(
        [np.asarray(estimate_linear(loop[j], tg[j], tf, gram=grams[j], **kw)) for j in range(P)]
    )
    est = np.asarray(estimate_linear(loop, tg, tf, gram=grams, **kw))
    assert est.shape == (P, m)
    np.testing.assert_allclose(est, est_loop, rtol=1e-12)
    c_loop = np.stack([np.asarray(rescale(loop[j], grams[j], 1.5, 0.2)) for j in range(P)])
    np.testing.assert_allclose(np.asarray(rescale(loop, grams, 1.5, 0.2)), c_loop, rtol=1e-12)
    with pytest.raises((ValueError, TypeError)):
        estimate_linear(loop, tg[0], tf, gram=grams, **kw)  # projection axes must match
