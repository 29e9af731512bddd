"""Capabilities against compute (spec §2 steps 9, 10a): `family_r2`, `fit_equiv_flops`.

`family_r2` measures how linear PC-1 is in log10 FLOPs within each model family. The
compute-equivalent axis maps an aggregated capability g = w0 + w.x back to "log10 FLOPs a
reference-family model would need for that g", via an OLS fit g = alpha log10 F + beta over the
reference family; it re-labels the x-axis and changes no fit or metric.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, ArrayLike, Bool, Float, Int
from ..fitting import in_float64


class FamilyR2(NamedTuple):
    """Per-family OLS fits of PC-1 on log10 FLOPs.

    Attributes:
        r2: R^2 of each family's fit (squared Pearson correlation), NaN for families with fewer
            than ``min_models`` usable models; shape (families,).
        count: usable models per family (finite PC-1 and FLOPs), shape (families,).
        valid: families with at least ``min_models`` usable models, shape (families,).
        mean: mean R^2 over the valid families ("R^2_avg").
    """

    r2: Float[Array, " families"]
    count: Int[Array, " families"]
    valid: Bool[Array, " families"]
    mean: Float[Array, ""]


class EquivFlops(NamedTuple):
    """OLS fit g = alpha * log10(FLOPs) + beta over the reference family.

    Attributes:
        alpha: slope, capability per decade of FLOPs.
        beta: intercept.
    """

    alpha: Float[Array, ""]
    beta: Float[Array, ""]


def _is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


@in_float64
def family_r2(
    pc1: Float[ArrayLike, " models"],
    log10_flops: Float[ArrayLike, " models"],
    family_ids: Int[ArrayLike, " models"],
    min_models: int = 3,
    *,
    n_families: int | None = None,
) -> FamilyR2:
    """R^2 of a per-family OLS of PC-1 on log10 FLOPs (spec §2 step 10a).

    Args:
        pc1: first PC score per model, shape (models,).
        log10_flops: log10 of training FLOPs per model (any unit), shape (models,); NaN marks
            unknown FLOPs (the model is skipped).
        family_ids: family index per model in 0..n_families-1, shape (models,); negative
            ids are skipped.
        min_models: families with fewer usable models get no R^2 (reference: 3). Python int.
        n_families: number of families (static); default ``max(family_ids) + 1``, which needs
            concrete ids.

    Returns:
        A `FamilyR2` indexed by family id.
    """
    y = jnp.asarray(pc1)
    x = jnp.asarray(log10_flops)
    ids = jnp.asarray(family_ids)
    if n_families is None:
        n_families = int(np.max(np.asarray(family_ids), initial=-1)) + 1
    usable = jnp.isfinite(x) & jnp.isfinite(y) & (ids >= 0)
    onehot = (ids[None, :] == jnp.arange(n_families)[:, None]) & usable[None, :]
    w = onehot.astype(y.dtype)  # (families, models)
    x0 = jnp.where(usable, x, 0.0)
    y0 = jnp.where(usable, y, 0.0)
    n = w.sum(axis=1)
    nn = jnp.maximum(n, 1.0)
    mx = (w @ x0) / nn
    my = (w @ y0) / nn
    dx = x0[None, :] - mx[:, None]
    dy = y0[None, :] - my[:, None]
    sxx = (w * dx * dx).sum(axis=1)
    syy = (w * dy * dy).sum(axis=1)
    sxy = (w * dx * dy).sum(axis=1)
    valid = n >= min_models
    r2 = jnp.where(valid, sxy**2 / (sxx * syy), jnp.nan)
    n_valid = valid.sum().astype(r2.dtype)
    mean = jnp.where(
        n_valid > 0, jnp.where(valid, r2, 0.0).sum() / jnp.maximum(n_valid, 1.0), jnp.nan
    )
    return FamilyR2(r2, n.astype(jnp.int32), valid, mean)


@in_float64
def fit_equiv_flops(
    g: Float[ArrayLike, " models"],
    log10_flops: Float[ArrayLike, " models"],
    ref_mask: Bool[ArrayLike, " models"],
) -> EquivFlops:
    """Fit the compute-equivalent axis: OLS of g on log10 FLOPs over the reference family.

    The reference uses every kept model of the family (train and test rows alike): 3 points
    (84, 156, 840 in 1E21 FLOPs) for Llama-2.

    Args:
        g: aggregated capability w0 + w.x per model, shape (models,).
        log10_flops: log10 of training FLOPs per model, shape (models,); NaN = unknown.
        ref_mask: rows of the reference family, shape (models,).

    Returns:
        An `EquivFlops` (alpha, beta).

    Raises:
        ValueError: (concrete inputs only) fewer than 2 reference models with finite g and
            FLOPs, or all of them at the same FLOPs. Fewer than 3 emits a `UserWarning`
            (two points always fit exactly). Under jit these checks are skipped and a
            degenerate fit returns NaN/inf.
    """
    g = jnp.asarray(g)
    x = jnp.asarray(log10_flops)
    use = jnp.asarray(ref_mask, dtype=bool) & jnp.isfinite(g) & jnp.isfinite(x)
    if not _is_traced(g, x, use):
        n = int(use.sum())
        if n < 2:
            raise ValueError(
                "compute-equivalent axis needs at least 2 reference-family models with known "
                f"FLOPs and capability; got {n}"
            )
        if float(jnp.ptp(jnp.where(use, x, x[jnp.argmax(use)]))) == 0.0:
            raise ValueError(
                "compute-equivalent axis is undefined: all reference-family models have the "
                "same FLOPs"
            )
        if n < 3:
            warnings.warn(
                f"compute-equivalent axis fitted on only {n} reference-family models; "
                "the line passes through them exactly",
                UserWarning,
                stacklevel=2,
            )
    w = use.astype(g.dtype)
    n = w.sum()
    mx = (w * jnp.where(use, x, 0.0)).sum() / n
    my = (w * jnp.where(use, g, 0.0)).sum() / n
    dx = jnp.where(use, x - mx, 0.0)
    dy = jnp.where(use, g - my, 0.0)
    alpha = (dx * dy).sum() / (dx * dx).sum()
    return EquivFlops(alpha, my - alpha * mx)


@in_float64
def to_equiv(
    g: Float[ArrayLike, "*models"], alpha: Float[ArrayLike, ""], beta: Float[ArrayLike, ""]
) -> Float[Array, "*models"]:
    """Capability -> log10 reference-family-equivalent FLOPs: ``(g - beta) / alpha``."""
    return (jnp.asarray(g) - beta) / alpha


@in_float64
def from_equiv(
    x: Float[ArrayLike, "*models"], alpha: Float[ArrayLike, ""], beta: Float[ArrayLike, ""]
) -> Float[Array, "*models"]:
    """Log10 equivalent FLOPs -> capability: ``alpha * x + beta`` (inverse of `to_equiv`)."""
    return alpha * jnp.asarray(x) + beta
