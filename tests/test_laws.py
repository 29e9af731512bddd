"""Law algebra: closed forms, parameter conversions, the D = 0 limit, init samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlaw.laws import (
    LAWS,
    LOGLINEAR,
    RECTIFIED,
    LineParams,
    PowerParams,
    RectifiedAlphaParams,
    RectifiedPaper,
    RectifiedParams,
    VanillaCode,
    VanillaParams,
    from_code,
    from_paper,
    get_law,
    loglinear,
    power_law,
    pre_learned_examples,
    rectified,
    rectified_alpha,
    to_code,
    to_paper,
    vanilla,
    vanilla_from_code,
    vanilla_to_code,
)

D = np.array([1.0, 200.0, 3200.0, 51200.0, 1638400.0, 1e9])
P = RectifiedParams(log_gap=jnp.log(2.5), bc=-4.0, log_beta=jnp.log(0.4), log_e=jnp.log(0.7))


def test_rectified_matches_paper_formula(strict_dtypes):
    q = to_paper(P)
    expected = np.log(float(q.B) / (float(q.D_l) + D ** float(q.beta)) + float(q.E))
    np.testing.assert_allclose(rectified(P, jnp.log(D)), expected, rtol=1e-12)


def test_rectified_code_form_agrees():
    np.testing.assert_allclose(
        rectified(to_code(P), jnp.log(D)), rectified(P, jnp.log(D)), rtol=1e-12
    )


def test_conversions_round_trip():
    for back in (from_paper(to_paper(P)), from_code(to_code(P))):
        for a, b in zip(back, P):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_rectified_at_zero_data_is_ln_a():
    a = float(to_code(P).A)
    assert float(rectified(P, jnp.array(-jnp.inf))) == pytest.approx(np.log(a), rel=1e-15)
    # ...and the gradient there is finite (the unused branch must not leak NaN).
    g = jax.grad(lambda p: rectified(p, jnp.array(-jnp.inf)))(P)
    assert all(np.isfinite(leaf) for leaf in g)


def test_rectified_large_d_slope_is_minus_beta_when_e_is_zero():
    p = P._replace(log_e=jnp.array(-80.0))
    slope = jax.grad(lambda x: rectified(p, x))(jnp.log(1e40))
    np.testing.assert_allclose(slope, -0.4, rtol=1e-6)


def test_pre_learned_examples():
    q = to_paper(P)
    np.testing.assert_allclose(
        pre_learned_examples(P), float(q.D_l) ** (1 / float(q.beta)), rtol=1e-12
    )


def test_from_paper_values():
    p = from_paper(
        RectifiedPaper(B=jnp.array(6.0), D_l=jnp.array(3.0), beta=jnp.array(0.5), E=jnp.array(1.0))
    )
    # L(0) = E + B / D_l = 3
    np.testing.assert_allclose(jnp.exp(rectified(p, jnp.array(-jnp.inf))), 3.0, rtol=1e-14)


def test_vanilla_matches_closed_form():
    p = VanillaParams(
        log_alpha=jnp.log(1.3), log_b=jnp.log(4.0), beta=jnp.array(0.3), log_e=jnp.log(0.5)
    )
    expected = 1.3 * np.log(4.0 / D**0.3 + 0.5)
    np.testing.assert_allclose(vanilla(p, jnp.log(D)), expected, rtol=1e-12)
    c = vanilla_to_code(p)
    # The code form (D^-beta / Bv + |Ev|)^alpha with Bv = 1/B.
    np.testing.assert_allclose(vanilla(c, jnp.log(D)), expected, rtol=1e-12)
    for a, b in zip(vanilla_from_code(c), p):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_vanilla_code_with_negative_bv_is_nan_as_in_reference():
    # 1 / (Bv D^beta) + |Ev| = -0.0707 + 0.01 < 0: the log is NaN, which the reference rejects.
    c = VanillaCode(
        alpha=jnp.array(1.0), Bv=jnp.array(-1.0), beta=jnp.array(0.5), Ev=jnp.array(0.01)
    )
    assert np.isnan(vanilla(c, jnp.log(200.0)))


def test_extra_laws_closed_forms():
    pw = PowerParams(log_b=jnp.log(3.0), log_beta=jnp.log(0.3), log_e=jnp.log(0.2))
    np.testing.assert_allclose(power_law(pw, jnp.log(D)), np.log(3 * D**-0.3 + 0.2), rtol=1e-12)
    ln = LineParams(intercept=jnp.array(1.5), slope=jnp.array(-0.2))
    np.testing.assert_allclose(loglinear(ln, jnp.log(D)), 1.5 - 0.2 * np.log(D), rtol=1e-12)
    pa = RectifiedAlphaParams(*P, log_alpha=jnp.log(1.7))
    np.testing.assert_allclose(
        rectified_alpha(pa, jnp.log(D)), 1.7 * rectified(P, jnp.log(D)), rtol=1e-12
    )


def test_get_law_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown law 'nope'.*rectified"):
        get_law("nope")


@pytest.mark.parametrize("name", sorted(LAWS))
def test_init_grid_is_finite_and_deterministic(name, key):
    law = LAWS[name]
    x = jnp.log(jnp.asarray([200.0 * 2**j for j in range(14)]))
    y = jnp.log(2.0 + 10 * jnp.exp(-0.3 * x))
    mask = jnp.ones(14, bool).at[3].set(False)
    for n in (1, law.n_grid, law.n_grid + 7):
        a = law.sample_init(key, x, y, mask, n)
        b = law.sample_init(key, x, y, mask, n)
        assert all(leaf.shape == (n,) for leaf in a)
        assert all(np.isfinite(leaf).all() for leaf in a)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
        assert np.isfinite(jax.vmap(law.predict, in_axes=(0, None))(a, x)).all()


def test_rectified_grid_has_60_starts():
    assert RECTIFIED.n_grid == 60
    assert LOGLINEAR.n_grid == 1
