"""The `Law` bundle: a functional form, its parameter type and its initial-value sampler."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr

from .._types import Array, ArrayLike, Bool, Float, Key


@dataclass(frozen=True)
class Law:
    """A scaling law as pure functions of an unconstrained parameter NamedTuple.

    Every law is written for ONE curve and broadcasts over points; batching over curves and
    inits is the caller's job (``jax.vmap``), which is what `jaxlaw.fitting.fit_curves` does.
    Parameters are unconstrained (positivity comes from ``exp`` inside ``predict``), so any
    solver may move them freely.

    Attributes:
        name: short name used by the CLI (``rectified``, ``vanilla``, ...).
        params: the NamedTuple class of the unconstrained parameters.
        predict: ``predict(params, log_d) -> log_loss``: natural log of the loss at natural-log
            data size ``log_d`` (``-inf`` means D = 0 where the law is finite there).
        init_grid: ``init_grid(log_d, log_l, mask) -> params`` with a leading ``inits`` axis: the
            law's deterministic, data-dependent starting points (masked points are ignored).
        describe: ``describe(params) -> dict`` of human-readable derived quantities (paper-form
            parameters, D_l, ...) for one curve; used by the CLI and reports.
    """

    name: str
    params: type
    predict: Callable[[Any, Array], Array]
    init_grid: Callable[[Array, Array, Array], Any]
    describe: Callable[[Any], dict]

    @property
    def n_grid(self) -> int:
        """Number of deterministic starts (a static Python int)."""
        x = jnp.zeros(3)
        return int(jax.eval_shape(self.init_grid, x, x, x > -1)[0].shape[0])

    def sample_init(
        self,
        key: Key,
        log_d: Float[ArrayLike, " points"],
        log_l: Float[ArrayLike, " points"],
        mask: Bool[ArrayLike, " points"],
        n_inits: int,
    ):
        """Draw ``n_inits`` starting points for one curve.

        The first ``min(n_inits, n_grid)`` starts are the law's deterministic grid (evenly
        thinned when fewer are asked for); the rest are grid starts jittered by N(0, 0.5) in the
        unconstrained coordinates, drawn from ``key``. Same key, same starts.

        Args:
            key: PRNG key (used only when ``n_inits > n_grid``).
            log_d: natural log of the subset sizes, shape (points,).
            log_l: natural log of the losses, shape (points,); masked entries are ignored.
            mask: which points are observed, shape (points,).
            n_inits: number of starts, a Python int >= 1.

        Returns:
            ``self.params`` NamedTuple whose leaves have shape (n_inits,).
        """
        grid = self.init_grid(log_d, log_l, mask)
        g = grid[0].shape[0]
        if n_inits <= g:
            idx = jnp.round(jnp.linspace(0, g - 1, n_inits)).astype(jnp.int32)
            return jax.tree.map(lambda a: a[idx], grid)
        extra = n_inits - g
        k_pick, k_noise = jr.split(key)
        pick = jr.randint(k_pick, (extra,), 0, g)
        leaves, treedef = jax.tree.flatten(grid)
        noise_keys = jr.split(k_noise, len(leaves))
        jittered = [
            jnp.concatenate([leaf, leaf[pick] + 0.5 * jr.normal(k, (extra,), leaf.dtype)])
            for leaf, k in zip(leaves, noise_keys)
        ]
        return jax.tree.unflatten(treedef, jittered)


def masked_quantiles(x: Array, mask: Array, qs: tuple[float, ...]) -> Array:
    """Linear-interpolation quantiles of ``x[mask]`` (numpy's default method), static ``qs``."""
    n = jnp.maximum(mask.sum(), 1)
    xs = jnp.sort(jnp.where(mask, x, jnp.inf))
    pos = jnp.asarray(qs, x.dtype) * (n - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n - 1)
    frac = pos - lo
    return xs[lo] * (1 - frac) + xs[hi] * frac


def masked_min(x: Array, mask: Array) -> Array:
    return jnp.min(jnp.where(mask, x, jnp.inf))


def masked_max(x: Array, mask: Array) -> Array:
    return jnp.max(jnp.where(mask, x, -jnp.inf))


def finite_or(x: ArrayLike, fill: float) -> Array:
    """Replace -inf (D = 0) by ``fill`` so gradients through the unused branch stay finite."""
    return jnp.where(jnp.isfinite(x), x, fill)
