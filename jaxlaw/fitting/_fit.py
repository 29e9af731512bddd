"""Batched multi-start least-squares fits of a `Law` (Levenberg-Marquardt; BFGS for Huber)."""

from functools import partial

import jax
import jax.numpy as jnp
import jax.random as jr

from .._types import Array, ArrayLike, Bool, Float, Key
from ..laws import RECTIFIED, VANILLA, Law
from . import _lm as lm
from ._reference import fit_rectified_reference, fit_vanilla_reference
from ._result import FitResult, clean_points, huber
from ._x64 import in_float64

# XLA:CPU's default fusion emitters (jaxlib 0.10) take ~2x longer to compile the fit than the
# classic loop emitters, at the same run time (2-core CPU, 30 and 90 curves); compile time is
# most of what a CLI call pays. The option is a field of XLA's DebugOptions, which every
# backend accepts; the others ignore it.
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def residuals(law: Law, p, log_d: Array, log_l: Array, mask: Array) -> Array:
    """Masked log residuals ``predict - log_l`` (zero at masked points)."""
    return jnp.where(mask, law.predict(p, log_d) - log_l, 0.0)


def _solve_one(law, loss, delta, max_steps, rtol, atol, p0, log_d, log_l, mask, active=True):
    """One start: (params, objective, converged, steps); the objective is inf unless finite
    and the solve either met its tolerance or stopped at the step cap. ``active`` (MSE only)
    False leaves the start where it is (`_halving_mse` freezes lanes this way)."""
    n = jnp.maximum(mask.sum(), 1).astype(log_l.dtype)
    if loss == "mse":
        # LM minimises 0.5 * sum(r^2); the 1/sqrt(n) scale makes that half the MSE.
        fn = lambda p: residuals(law, p, log_d, log_l, mask) / jnp.sqrt(n)  # noqa: E731
        sol = lm.least_squares(fn, p0, max_steps=max_steps, rtol=rtol, atol=atol, active=active)
        value_, converged, steps = sol.value, sol.converged, sol.steps
        capped = ~converged & (steps >= max_steps)
    else:
        fn = lambda p, _: huber(residuals(law, p, log_d, log_l, mask), delta).sum()  # noqa: E731
        import optimistix as optx  # only the Huber fits need it (a slow import)

        solver = optx.BFGS(rtol=rtol, atol=atol)
        sol = optx.minimise(fn, solver, p0, max_steps=max_steps, throw=False)
        value_, steps = sol.value, sol.stats["num_steps"]
        converged = sol.result == optx.RESULTS.successful
        capped = sol.result == optx.RESULTS.nonlinear_max_steps_reached
    r = residuals(law, value_, log_d, log_l, mask)
    value = (r**2).sum() / n if loss == "mse" else huber(r, delta).sum()
    # A capped start still competes for the best start (degenerate laws never meet the
    # tolerance); only `converged` makes a fit ok.
    usable = (converged | capped) & jnp.isfinite(value)
    return value_, jnp.where(usable, value, jnp.inf), converged, steps


def _halving(law, loss, delta, starts, data, n_inits, screen_steps, schedule, rtol, atol):
    """Successive halving, one vmapped solve per stage on the ``keep`` best starts."""
    stages = [(n_inits, screen_steps), *schedule]
    value = jnp.zeros(n_inits, data[1].dtype)
    total = jnp.zeros(n_inits, jnp.int32)
    met = jnp.zeros(n_inits, bool)  # met the tolerance in some stage
    init_loss = None
    for keep, steps in stages:
        idx = jnp.argsort(value)[: min(keep, value.shape[0])]
        solve = partial(_solve_one, law, loss, delta, steps, rtol, atol)
        starts, value, converged, taken = jax.vmap(solve, in_axes=(0, None, None, None))(
            jax.tree.map(lambda a: a[idx], starts), *data
        )
        total = total[idx] + taken
        met = met[idx] | converged
        init_loss = value if init_loss is None else init_loss
    return starts, value, met, total, init_loss


def _halving_mse(law, starts, data, n_inits, screen_steps, schedule, rtol, atol):
    """The same successive halving for the MSE, with ONE compiled Levenberg-Marquardt loop.

    Every stage runs the same loop over ``w`` = max(keep) lanes, inside a ``fori_loop`` over
    stages: the screen in chunks of ``w`` starts, then each polishing stage on the ``w`` best
    starts with the lanes outside its ``keep`` best frozen. The program holds one copy of the
    solver (compiling a copy is most of what a CLI process pays), and a vmapped loop costs per
    lane and step, so running the screen in chunks costs about what one wide loop does. Frozen
    lanes keep their value and a polished start only improves, so the ``keep`` best of the
    ``w`` best are the ``keep`` best of the previous stage's survivors, as in `_halving`.
    """
    width = min(max((k for k, _ in schedule), default=n_inits), n_inits)
    chunks = -(-n_inits // width)
    padded = chunks * width  # the last chunk's spare lanes are frozen copies of start 0
    params = jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[:1], padded - n_inits)]), starts
    )
    stages = [(c * width, width, screen_steps) for c in range(chunks)]
    stages += [(-1, min(k, width), s) for k, s in schedule]  # -1: the best ``width`` lanes
    first, keeps, lengths = (jnp.asarray(col, jnp.int32) for col in zip(*stages))
    lane = jnp.arange(width)

    def stage(i, carry):
        params, value, met, total, screened = carry
        screen = first[i] >= 0
        best = jnp.argsort(value, stable=True)[:width]
        sel = jnp.where(screen, first[i] + lane, best)
        active = jnp.where(screen, sel < n_inits, lane < keeps[i])
        new, new_value, converged, taken = jax.vmap(
            lambda p0, on: _solve_one(law, "mse", 0.0, lengths[i], rtol, atol, p0, *data, active=on)
        )(jax.tree.map(lambda a: a[sel], params), active)
        new_value = jnp.where(active, new_value, value[sel])
        return (
            jax.tree.map(lambda a, b: a.at[sel].set(b), params, new),
            value.at[sel].set(new_value),
            met.at[sel].set(met[sel] | (active & converged)),
            total.at[sel].add(jnp.where(active, taken, 0)),
            screened.at[sel].set(jnp.where(screen, new_value, screened[sel])),
        )

    inf = jnp.full(padded, jnp.inf, data[1].dtype)
    carry = (params, inf, jnp.zeros(padded, bool), jnp.zeros(padded, jnp.int32), inf)
    out = jax.lax.fori_loop(0, len(stages), stage, carry)
    params, value, met, total, screened = jax.tree.map(lambda a: a[:n_inits], out)
    return params, value, met, total, screened


@in_float64
def fit_curve(
    law: Law,
    log_d: Float[ArrayLike, " points"],
    log_l: Float[ArrayLike, " points"],
    mask: Bool[ArrayLike, " points"] | None = None,
    *,
    key: Key,
    n_inits: int | None = None,
    loss: str = "mse",
    delta: float = 1e-3,
    screen_steps: int = 30,
    schedule: tuple[tuple[int, int], ...] = ((4, 100), (1, 400)),
    rtol: float = 1e-10,
    atol: float = 1e-12,
    faithful: bool = False,
) -> FitResult:
    """Fit ``law`` to one curve from ``n_inits`` starts and keep the best one.

    Successive halving keeps the vmapped while-loops short (each runs as long as its slowest
    member, and costs per member): every start takes ``screen_steps`` solver steps, then each
    ``(keep, steps)`` stage of ``schedule`` continues the ``keep`` best starts of the previous
    stage for ``steps`` more. The default polishes the best 4 for 100 steps and the best one
    for 400 more, so the long tail of a degenerate fit (D_l -> 0 creeps on for hundreds of
    steps) is paid by one lane, not sixty. ``schedule=()`` runs every start for
    ``screen_steps`` only.

    Args:
        law: the functional form (see `jaxlaw.laws`).
        log_d: natural log of the subset sizes, shape (points,); ``-inf`` encodes D = 0.
        log_l: natural log of the losses, shape (points,); NaN cells count as missing.
        mask: which points to fit, shape (points,); default all finite ``log_l``.
        key: PRNG key for the starts beyond the law's deterministic grid.
        n_inits: number of starts (Python int); default the law's grid size.
        loss: "mse" (Levenberg-Marquardt on log residuals) or "huber" (BFGS on the summed
            Huber loss of the log residuals with threshold ``delta``).
        delta: Huber threshold in log-loss units.
        screen_steps: solver steps every start takes (static).
        schedule: polishing stages ``(keep, steps)`` (static); ``keep`` is capped at the number
            of starts left.
        rtol, atol: solver tolerances.
        faithful: run the reference code's own procedure instead (Lin et al. 2024,
            `src/fit_law.py`), for reproducing the paper: the single-start two-stage relaxation
            for `RECTIFIED` (``n_inits``, ``loss`` and the schedule are ignored), the summed
            Huber fit (``delta``) from ``n_inits`` (default 10) uniform starts for `VANILLA`.

    Returns:
        `FitResult` with scalar leaves (``init_loss`` has shape (inits,)).

    Raises:
        ValueError: ``faithful`` with a law the reference never fitted, or an unknown ``loss``.
    """
    if loss not in ("mse", "huber"):
        raise ValueError(f"unknown loss {loss!r}; choose 'mse' or 'huber'")
    if faithful:
        if law == RECTIFIED:
            return fit_rectified_reference(log_d, log_l, mask)
        if law == VANILLA:
            return fit_vanilla_reference(
                log_d, log_l, mask, key=key, n_inits=n_inits or 10, delta=delta
            )
        raise ValueError(
            f"faithful mode exists for the rectified and vanilla laws, not {law.name!r}"
        )
    log_d, log_l, mask = clean_points(log_d, log_l, mask)
    n_inits = law.n_grid if n_inits is None else n_inits
    if n_inits < 1 or screen_steps < 1 or any(k < 1 or s < 1 for k, s in schedule):
        raise ValueError(
            f"n_inits ({n_inits}), screen_steps ({screen_steps}) and every (keep, steps) of "
            f"schedule {schedule} must be >= 1"
        )
    starts = law.sample_init(key, log_d, log_l, mask, n_inits)
    data = (log_d, log_l, mask)
    if loss == "mse":
        starts, value, met, total, init_loss = _halving_mse(
            law, starts, data, n_inits, screen_steps, schedule, rtol, atol
        )
    else:
        starts, value, met, total, init_loss = _halving(
            law, loss, delta, starts, data, n_inits, screen_steps, schedule, rtol, atol
        )
    params = starts
    best = jnp.argmin(value)
    best_params = jax.tree.map(lambda a: a[best], params)
    r = residuals(law, best_params, *data)
    return FitResult(
        params=best_params,
        loss=value[best],
        rmsd=jnp.sqrt((r**2).sum() / jnp.maximum(mask.sum(), 1)),
        ok=met[best] & jnp.isfinite(value[best]),
        converged=met[best],
        steps=total[best],
        init_loss=init_loss,
    )


_STATIC = (
    "law",
    "n_inits",
    "loss",
    "delta",
    "screen_steps",
    "schedule",
    "rtol",
    "atol",
    "faithful",
)


def _fit_curves(law, log_d, log_l, mask, *, key, **options):
    log_l = jnp.asarray(log_l)
    if mask is None:
        mask = jnp.isfinite(log_l)
    batch = log_l.shape[:-1]
    n = log_l.shape[-1]
    log_d = jnp.broadcast_to(jnp.asarray(log_d, log_l.dtype), log_l.shape).reshape(-1, n)
    flat_l, flat_m = log_l.reshape(-1, n), jnp.broadcast_to(mask, log_l.shape).reshape(-1, n)
    keys = jr.split(key, flat_l.shape[0])
    one = partial(fit_curve, law, **options)
    out = jax.vmap(lambda x, y, m, k: one(x, y, m, key=k))(log_d, flat_l, flat_m, keys)
    return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), out)


# jit refuses compiler options on a nested jit, so a call from inside a trace (the caller's
# jit or vmap) gets the same function without them.
_fit_curves_top = jax.jit(_fit_curves, static_argnames=_STATIC, compiler_options=COMPILER_OPTIONS)
_fit_curves_nested = jax.jit(_fit_curves, static_argnames=_STATIC)


@in_float64
def fit_curves(
    law: Law,
    log_d: Float[ArrayLike, "*#curves points"],
    log_l: Float[ArrayLike, "*curves points"],
    mask: Bool[ArrayLike, "*#curves points"] | None = None,
    *,
    key: Key,
    n_inits: int | None = None,
    loss: str = "mse",
    delta: float = 1e-3,
    screen_steps: int = 30,
    schedule: tuple[tuple[int, int], ...] = ((4, 100), (1, 400)),
    rtol: float = 1e-10,
    atol: float = 1e-12,
    faithful: bool = False,
) -> FitResult:
    """Fit ``law`` to a batch of curves (curves x inits in one jitted, vmapped call).

    Same arguments as `fit_curve`, with a leading ``curves`` axis on ``log_l`` and ``mask``
    (``log_d`` may be shared, shape (points,), or per curve). Each curve gets its own key,
    ``jr.split(key, n_curves)``, so results do not depend on batching for a given key.

    Returns:
        `FitResult` whose leaves have the leading ``curves`` axis.
    """
    traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((log_d, log_l, mask, key)))
    return (_fit_curves_nested if traced else _fit_curves_top)(
        law,
        log_d,
        log_l,
        mask,
        key=key,
        n_inits=n_inits,
        loss=loss,
        delta=delta,
        screen_steps=screen_steps,
        schedule=schedule,
        rtol=rtol,
        atol=atol,
        faithful=faithful,
    )


fit_curves._cache_size = _fit_curves_top._cache_size  # type: ignore[attr-defined]


@in_float64
@partial(jax.jit, static_argnames="law")
def predict(law: Law, params, log_d: Array) -> Array:
    """Evaluate ``law`` for batched ``params`` (leading axes) at ``log_d`` (broadcast).

    Jitted: one compiled call instead of an eager dispatch (and, in a fresh process, a
    compile) per operation of the law.
    """
    lead = jax.tree.leaves(params)[0].ndim
    fn = law.predict
    for _ in range(lead):
        fn = jax.vmap(fn, in_axes=(0, 0 if jnp.ndim(log_d) > 1 else None))
    return fn(params, log_d)
