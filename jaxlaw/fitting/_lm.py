"""A small Levenberg-Marquardt solver for laws with a handful of parameters.

Scaling laws have 2-5 parameters, so each step is a ``k x k`` solve, and the cost of a fit is
all in tracing and compiling the solver, not in running it. optimistix's general solver traces
into a program that takes seconds to compile under ``vmap`` (one per schedule stage); this one is
a single ``while_loop`` over a dense step (about a second to compile the whole rectified fit on
a 2-core CPU). The loop carries the residuals and Jacobian of the accepted point, so each step
evaluates the law once, at the trial point.

The method is Marquardt's: solve ``(J^T J + lam * diag(J^T J)) dx = -J^T r``, accept the step if
the cost drops (then ``lam /= 3``), else ``lam *= 4`` and retry from the same point. A start has
converged when an accepted step changes the cost by at most ``rtol * cost + atol`` and moves no
coordinate by more than ``atol + rtol * max|x|`` (optimistix's Cauchy test), or when the
gradient vanishes; it has stalled when ``lam`` reaches its cap (no descent direction left).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

_LAM0 = 1e-3
_LAM_MIN = 1e-15
_LAM_MAX = 1e15


class LMSolution(NamedTuple):
    """Result of one start: ``value`` (params pytree), ``converged``, ``steps`` taken."""

    value: object
    converged: jax.Array
    steps: jax.Array


class _State(NamedTuple):
    x: jax.Array
    r: jax.Array  # residuals at x
    jac: jax.Array  # their Jacobian at x, (residuals, params)
    cost: jax.Array
    lam: jax.Array
    step: jax.Array
    converged: jax.Array
    stalled: jax.Array


def _solve_spd(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^-1 b`` for a small symmetric positive-definite ``a`` by an unrolled Cholesky.

    Written out in scalar ops (``k`` is 2-5), so the solve fuses with the step around it:
    ``jnp.linalg.solve`` lowers to LAPACK calls, a separate kernel per call and per iteration
    of the loop, and loads LAPACK (through scipy) into the process.
    """
    k = a.shape[0]
    chol = [[None] * k for _ in range(k)]
    for j in range(k):
        diag = jnp.sqrt(a[j, j] - sum(chol[j][m] ** 2 for m in range(j)))
        chol[j][j] = diag
        for i in range(j + 1, k):
            chol[i][j] = (a[i, j] - sum(chol[i][m] * chol[j][m] for m in range(j))) / diag
    y = []
    for i in range(k):  # forward: L y = b
        y.append((b[i] - sum(chol[i][m] * y[m] for m in range(i))) / chol[i][i])
    x = [None] * k
    for i in reversed(range(k)):  # backward: L^T x = y
        x[i] = (y[i] - sum(chol[m][i] * x[m] for m in range(i + 1, k))) / chol[i][i]
    return jnp.stack(x)


def least_squares(
    fn: Callable[[object], jax.Array],
    p0,
    *,
    max_steps: int | jax.Array,
    rtol: float,
    atol: float,
    active: bool | jax.Array = True,
) -> LMSolution:
    """Minimise ``0.5 * sum(fn(p)**2)`` from ``p0`` (a pytree of scalars) for one start.

    Written for one problem; ``jax.vmap`` it over starts and curves. ``max_steps`` may be a
    traced integer (one compiled loop serves stages of different lengths); an inactive start
    takes no step and returns ``p0`` (so a vmapped batch can run a subset of its lanes).
    """
    x0, unravel = ravel_pytree(p0)

    def res(x):
        return fn(unravel(x))

    def res_jac(x):
        # One forward pass gives the residuals and their Jacobian; the loop carries both for
        # the accepted point, so each step evaluates the law once (at the trial point).
        basis = jnp.eye(x.shape[0], dtype=x.dtype)
        r, cols = jax.vmap(lambda t: jax.jvp(res, (x,), (t,)), out_axes=(None, 0))(basis)
        return r, cols.T

    def cost(r):
        return 0.5 * jnp.sum(r * r)

    def cond(s: _State):
        return (s.step < max_steps) & ~s.converged & ~s.stalled

    def body(s: _State) -> _State:
        g = s.jac.T @ s.r
        h = s.jac.T @ s.jac
        d = jnp.diag(h)
        d = jnp.maximum(d, 1e-12 * jnp.maximum(jnp.max(d), 1e-300))
        dx = -_solve_spd(h + s.lam * jnp.diag(d), g)
        x_new = s.x + dx
        r_new, jac_new = res_jac(x_new)
        c_new = cost(r_new)
        ok = jnp.isfinite(c_new) & (c_new <= s.cost) & jnp.all(jnp.isfinite(dx))
        small_f = (s.cost - c_new) <= rtol * s.cost + atol
        small_x = jnp.max(jnp.abs(dx)) <= atol + rtol * jnp.max(jnp.abs(s.x))
        flat = jnp.max(jnp.abs(g)) <= atol
        lam = jnp.where(ok, jnp.maximum(s.lam / 3, _LAM_MIN), jnp.minimum(s.lam * 4, _LAM_MAX))
        return _State(
            x=jnp.where(ok, x_new, s.x),
            r=jnp.where(ok, r_new, s.r),
            jac=jnp.where(ok, jac_new, s.jac),
            cost=jnp.where(ok, c_new, s.cost),
            lam=lam,
            step=s.step + 1,
            converged=(ok & small_f & small_x) | flat,
            stalled=lam >= _LAM_MAX,
        )

    r0, jac0 = res_jac(x0)
    c0 = cost(r0)
    init = _State(
        x=x0,
        r=r0,
        jac=jac0,
        cost=c0,
        lam=jnp.asarray(_LAM0, x0.dtype),
        step=jnp.asarray(0, jnp.int32),
        converged=jnp.asarray(False),
        stalled=~jnp.isfinite(c0) | ~jnp.asarray(active),
    )
    out = jax.lax.while_loop(cond, body, init)
    return LMSolution(unravel(out.x), out.converged, out.step)
