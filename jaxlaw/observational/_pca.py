"""Unstandardised PCA of benchmark scores with a fixed sign convention. Entry point: `pca_fit`.

Matches the reference's ``sklearn.decomposition.PCA`` (spec §2 step 5): centred on the train
means, no scaling or whitening, explained variance with ddof 1. Signs follow sklearn >= 1.5: each
component's largest-|loading| entry is positive (ties: the first such entry), so loadings can be
compared across runs and implementations.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._types import Array, ArrayLike, Bool, Float
from ..fitting import in_float64


class PCA(NamedTuple):
    """A fitted PCA basis.

    Attributes:
        mean: train column means, shape (benchmarks,).
        components: principal axes (unit rows, sign-normalised), shape (pcs, benchmarks).
        explained_variance: variance along each axis over the train rows (ddof 1), shape (pcs,).
        explained_variance_ratio: share of the total train variance, shape (pcs,).
    """

    mean: Float[Array, " benchmarks"]
    components: Float[Array, "pcs benchmarks"]
    explained_variance: Float[Array, " pcs"]
    explained_variance_ratio: Float[Array, " pcs"]


def sign_normalise(
    components: Float[ArrayLike, "pcs benchmarks"],
) -> Float[Array, "pcs benchmarks"]:
    """Flip each row so that its largest-|entry| is positive (sklearn >= 1.5 ``svd_flip``).

    Args:
        components: principal axes as rows, shape (pcs, benchmarks).

    Returns:
        The same axes with the canonical sign.
    """
    v = jnp.asarray(components)
    pivot = jnp.take_along_axis(v, jnp.argmax(jnp.abs(v), axis=1)[:, None], axis=1)
    return v * jnp.where(pivot < 0, -1.0, 1.0).astype(v.dtype)


@in_float64
@partial(jax.jit, static_argnames=("n_components",))
def pca_fit(
    X: Float[ArrayLike, "models benchmarks"],
    train: Bool[ArrayLike, " models"],
    n_components: int,
) -> PCA:
    """Fit a PCA basis on the train rows of a complete score matrix.

    Args:
        X: scores on the raw scale, shape (models, benchmarks); impute first (train rows must
            have no NaN; other rows are ignored).
        train: rows to fit on, shape (models,); at least ``n_components`` of them (and 2 for a
            finite ddof-1 variance).
        n_components: number of components K, a Python int in 1..min(models, benchmarks).

    Returns:
        A `PCA`; scores are ``pca_transform(pca, X)``.

    Raises:
        ValueError: if ``n_components`` is out of range.
    """
    x = jnp.asarray(X)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    train = jnp.asarray(train, dtype=bool)
    n_models, n_bench = x.shape
    if not 1 <= n_components <= min(n_models, n_bench):
        raise ValueError(
            f"n_components must be in 1..{min(n_models, n_bench)} "
            f"(min of models, benchmarks), got {n_components}"
        )
    n = train.sum().astype(x.dtype)
    mean = jnp.where(train[:, None], x, 0.0).sum(axis=0) / n
    # Non-train rows become zero rows: they change neither the singular values nor the axes.
    d = jnp.where(train[:, None], x - mean[None, :], 0.0)
    _, s, vt = jnp.linalg.svd(d, full_matrices=False)
    var = s**2
    return PCA(
        mean=mean,
        components=sign_normalise(vt[:n_components]),
        explained_variance=var[:n_components] / (n - 1),
        explained_variance_ratio=var[:n_components] / var.sum(),
    )


@in_float64
def pca_transform(pca: PCA, X: Float[ArrayLike, "models benchmarks"]) -> Float[Array, "models pcs"]:
    """Project scores on a fitted basis: ``(X - mean) @ components.T``.

    Args:
        pca: a fitted `PCA`.
        X: scores on the raw scale, shape (models, benchmarks); any rows (test rows use the
            train basis).

    Returns:
        PC scores, shape (models, pcs); column j is "PC-(j+1)".
    """
    return (jnp.asarray(X) - pca.mean[None, :]) @ pca.components.T


@in_float64
def pca_inverse_transform(
    pca: PCA, scores: Float[ArrayLike, "models pcs"]
) -> Float[Array, "models benchmarks"]:
    """Map PC scores back to raw scores: ``scores @ components + mean``.

    Args:
        pca: a fitted `PCA`.
        scores: PC scores, shape (models, pcs).

    Returns:
        Reconstructed scores, shape (models, benchmarks); exact (to rounding) when ``pcs`` is
        the rank of the centred train matrix.
    """
    return jnp.asarray(scores) @ pca.components + pca.mean[None, :]
