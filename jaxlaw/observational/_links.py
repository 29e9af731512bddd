"""Link functions of observational scaling laws: capability predictors -> a benchmark score.

Every link maps the linear "aggregated capability" g = w0 + w . x through a fixed shape:
linear, sigmoid, sigmoid with a floor b in [0, width] (the paper's default,
"sigmoid-parametric" in the reference), and exp. Parameters live in one unconstrained
`LinkParams` (the floor is ``width * sigmoid(u)``) so any solver can move them freely.
"""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._types import Array, ArrayLike, Float


class LinkParams(NamedTuple):
    """Parameters of a link fit for one target and one predictor set.

    Attributes:
        w0: intercept of g, scalar.
        w: slopes of g, shape (predictors,) (padded predictors carry 0).
        u: floor parameter, ``b = width * sigmoid(u)`` (unused by links without a floor).
    """

    w0: Array
    w: Array
    u: Array


@dataclass(frozen=True)
class Link:
    """A link shape. ``floor_width > 0`` gives ``(1 - b) sigmoid(g) + b`` with b in [0, width].

    Attributes:
        name: "linear", "sigmoid", "sigmoid_floor" or "exp".
        shape: "linear" | "sigmoid" | "exp".
        floor_width: width of the floor's range (0 = no floor).
    """

    name: str
    shape: str
    floor_width: float = 0.0

    def floor(self, p: LinkParams) -> Array:
        """The floor b (0 for links without one)."""
        if self.floor_width == 0.0:
            return jnp.zeros_like(p.w0)
        return self.floor_width * jax.nn.sigmoid(p.u)

    def capability(self, p: LinkParams, x: Float[ArrayLike, "*models predictors"]) -> Array:
        """The linear predictor g = w0 + w . x ("aggregated capability")."""
        return p.w0 + jnp.asarray(x) @ p.w

    def predict(self, p: LinkParams, x: Float[ArrayLike, "*models predictors"]) -> Array:
        """Predicted score for predictor rows ``x``.

        Math: linear g; sigmoid 1/(1+e^-g); sigmoid_floor (1-b) sigmoid(g) + b with
        b = width sigmoid(u) (Ruan et al. 2024, eq. 5: ceiling fixed at 1); exp e^g.
        """
        return self.apply(p, self.capability(p, x))

    def apply(self, p: LinkParams, g: ArrayLike) -> Array:
        """The link's shape at capability values ``g`` (``predict`` = ``apply`` of ``g(x)``)."""
        g = jnp.asarray(g)
        if self.shape == "linear":
            return g
        if self.shape == "exp":
            return jnp.exp(g)
        b = self.floor(p)
        return (1.0 - b) * jax.nn.sigmoid(g) + b

    def init(self, n_predictors: int, dtype=jnp.float64) -> LinkParams:
        """The reference's start: w0 = 0, every slope 0.03, floor b ~ 0."""
        # b = width * sigmoid(-8) = 3e-4 * width: the reference starts at b = 0 on the bound.
        return LinkParams(
            w0=jnp.zeros((), dtype),
            w=jnp.full((n_predictors,), 0.03, dtype),
            u=jnp.full((), -8.0, dtype),
        )


LINEAR = Link("linear", "linear")
SIGMOID = Link("sigmoid", "sigmoid")
SIGMOID_FLOOR = Link("sigmoid_floor", "sigmoid", floor_width=0.2)
EXP = Link("exp", "exp")
LINKS = {link.name: link for link in (LINEAR, SIGMOID, SIGMOID_FLOOR, EXP)}


def get_link(name: str) -> Link:
    """The link called ``name`` ("sigmoid-parametric" is accepted for sigmoid_floor)."""
    key = {"sigmoid-parametric": "sigmoid_floor"}.get(name, name)
    if key not in LINKS:
        raise ValueError(f"unknown link {name!r}; choose one of {', '.join(LINKS)}")
    return LINKS[key]
