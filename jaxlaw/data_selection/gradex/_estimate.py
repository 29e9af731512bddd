"""Estimates of the fine-tuned target loss from fitted surrogate directions.

Entry points: `estimate_lifted` (faithful: run the model at ``theta* + D_S`` for every subset)
and `estimate_linear` (cheap: the first-order model of the log-odds, one matmul for all
subsets), both after the rescaling rule `rescale` sets ``||D_S|| = scale * ||theta*_LoRA||``
(spec 2.5 item 6); `estimate_first_order` is the first-order Taylor estimate of the token
cross-entropy itself. `calibrate_scale` picks ``scale`` on held-out subsets and
`taylor_errors` measures how well the linearisation holds (spec 2.9)::

    W = fit_subsets(pg.grads[0], pg.outputs, mask)                 # [subsets, proj]
    L_hat = estimate_lifted(model, proj, W, target, scale=0.05)     # [subsets]
    L_lin = estimate_linear(W, tg.grads[0], tg.outputs, gram=proj.gram(),
                            theta_norm=lora_norm(model), scale=0.05)
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..._types import Array, ArrayLike, Float
from ...fitting import x64_scope
from ...lora import split_lora
from ...training import Batch, example_losses
from ._fit import _fit_dtype, _host
from ._output import output_logodds
from ._projection import BLOCKS_IN_MEMORY_BYTES, Projection, all_blocks


@x64_scope
def lora_norm(lora: Any) -> Float[Array, ""]:
    """L2 norm over every LoRA tensor (A and B of all adapted layers): ``||theta*_LoRA||``.

    Args:
        lora: a model with adapters (its `split_lora` state is used), an `nnx.State`, or any
            pytree of arrays.

    Returns:
        The norm, a float64 scalar (x64 is enabled inside this call).

    Raises:
        ValueError: the tree has no leaves (e.g. a model without adapters).
    """
    if isinstance(lora, nnx.Module):
        lora = split_lora(lora)[1]
    if isinstance(lora, nnx.State):
        lora = nnx.to_pure_dict(lora)
    leaves = jax.tree.leaves(lora)
    if not leaves:
        raise ValueError("lora_norm: no LoRA tensors (apply_lora first, or pass the LoRA state)")
    dtype = _fit_dtype()
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(x, dtype))) for x in leaves))
    # On the host: a few small arrays, and no device program to compile on a cold start.
    total = sum(np.sum(np.square(np.asarray(x, np.float64))) for x in leaves)
    return jnp.asarray(np.sqrt(total), dtype)


def _check_scale(scale: float, theta_norm) -> None:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    t = _host(theta_norm)
    if t is not None and (t.shape != () or not np.isfinite(t) or t < 0):
        raise ValueError(f"theta_norm must be a finite scalar >= 0, got {theta_norm!r}")


@x64_scope
def rescale(
    W: Float[ArrayLike, "*projs subsets proj"],
    gram: Float[ArrayLike, "*projs proj proj"],
    theta_norm: Float[ArrayLike, ""] | float,
    scale: float,
) -> Float[Array, "*projs subsets"]:
    """Coefficients ``c_S`` with ``||P (c_S w_S)|| = scale * theta_norm`` (the rescaling rule).

    The reference sets the LoRA update to ``D_S = scale * ||theta*_LoRA|| * P w / ||P w||``
    (spec 2.5 item 6): only the direction of the fit survives, its size is a relative distance
    ``scale = ||D|| / ||theta*_LoRA||``. ``||P w||^2 = w^T (P^T P) w`` is computed from the
    ``d x d`` Gram matrix (`Projection.gram`), so ``P`` is never formed. A zero row (``P w = 0``)
    gets ``c_S = 0``, i.e. no update.

    Args:
        W: fitted directions in projected space (`fit_subsets`), ``[subsets, proj]``, or
            ``[projs, subsets, proj]`` with one ``gram`` per projection.
        gram: ``P^T P`` (``[projs, proj, proj]`` for a stack of projections).
        theta_norm: ``||theta*_LoRA||`` (`lora_norm`).
        scale: relative size of the update, ``>= 0`` (reference values 0.02-0.5; calibrate it
            with `calibrate_scale`).

    Returns:
        ``[subsets]`` (or ``[projs, subsets]``) float64 coefficients.

    Raises:
        ValueError: mismatched shapes, or a negative or non-finite ``scale``/``theta_norm``.
    """
    _check_scale(scale, theta_norm)
    w_shape, g_shape = jnp.shape(W), jnp.shape(gram)
    lead = w_shape[:-2]
    if len(w_shape) not in (2, 3) or g_shape != (*lead, w_shape[-1], w_shape[-1]):
        raise ValueError(
            f"W {w_shape} and gram {g_shape} must be [subsets, d] and [d, d] (or both with a "
            "leading projection axis)"
        )
    return _rescale(W, gram, theta_norm, scale, _fit_dtype())


@functools.partial(jax.jit, static_argnums=4)
def _rescale(W, gram, theta_norm, scale, dtype):
    W = jnp.asarray(W, dtype)
    quad = jnp.einsum("...md,...de,...me->...m", W, jnp.asarray(gram, dtype), W)
    norm = jnp.sqrt(jnp.maximum(quad, 0.0))
    target = scale * jnp.asarray(theta_norm, dtype)
    return jnp.where(norm > 0, target / jnp.where(norm > 0, norm, 1.0), 0.0)


@x64_scope
def estimate_linear(
    W: Float[ArrayLike, "*projs subsets proj"],
    target_grads: Float[ArrayLike, "*projs examples proj"],
    target_outputs: Float[ArrayLike, " examples"],
    *,
    gram: Float[ArrayLike, "*projs proj proj"],
    theta_norm: Float[ArrayLike, ""] | float,
    scale: float,
    weights: Float[ArrayLike, " examples"] | None = None,
    anchor: float | None = None,
) -> Float[Array, "*projs subsets"]:
    """Linear-mode estimate: ``L^(S) = mean_t softplus(-(f*_t + c_S g_t . w_S))`` (spec 5.5).

    The target examples' log-odds move to first order by ``<g_t, P c_S w_S> = c_S (P^T g_t) .
    w_S``, exactly computable from the projected target gradients; the loss of an example is
    the logistic loss of its log-odds. All subsets in one ``[examples, d] x [d, subsets]``
    matmul. With a leading projection axis on ``W``, ``target_grads`` and ``gram`` (one fit
    per projection seed), every projection is estimated in the same call (vmapped), giving
    ``[projs, subsets]``; average over axis 0 for the ensemble.

    Jensen gap: an example's token cross-entropy is ``mean_tok softplus(-m_tok)``, while this
    uses ``softplus(-mean_tok m_tok)``, which is smaller (softplus(-x) is convex), so the level
    is biased low, more so for long or mixed-confidence targets. ``anchor`` (the true target loss
    at theta*, e.g. ``mean_loss(evaluate(model, target))``) removes the level bias at D = 0:
    the result is shifted so that a zero update gives ``anchor``. For the token CE itself to
    first order, see `estimate_first_order`.

    Args:
        W: fitted directions (`fit_subsets`), ``[subsets, proj]`` or ``[projs, subsets,
            proj]``.
        target_grads: projected log-odds gradients of the target examples at theta*, same
            projection(s) as ``W``: ``[examples, proj]`` or ``[projs, examples, proj]``.
        target_outputs: their log-odds f* at theta*.
        gram: ``P^T P`` of that projection (``[projs, proj, proj]`` for several).
        theta_norm: ``||theta*_LoRA||``.
        scale: relative update size (see `rescale`).
        weights: per-example weights of the mean (e.g. target-token counts to mimic a
            token-weighted mean); None: uniform.
        anchor: if given, the estimate at D = 0 is moved to this value.

    Returns:
        ``[subsets]`` (or ``[projs, subsets]``) estimated target losses (nats), float64.

    Raises:
        ValueError: mismatched shapes, negative or all-zero weights, bad ``scale``.
    """
    dtype = _fit_dtype()
    c = rescale(W, gram, theta_norm, scale)
    w_shape = jnp.shape(W)
    g_shape, f_shape, d = jnp.shape(target_grads), jnp.shape(target_outputs), w_shape[-1]
    lead = w_shape[:-2]
    if g_shape[:-2] != lead or len(g_shape) != len(w_shape) or g_shape[-1] != d:
        raise ValueError(
            f"target_grads {g_shape} must be [examples, {d}] with W's leading axes {lead} "
            f"(W {w_shape})"
        )
    if f_shape != g_shape[-2:-1]:
        raise ValueError(f"target_outputs {f_shape} must be [examples] = [{g_shape[-2]}]")
    wts = _weights(weights, g_shape[-2], dtype)
    fn = _linear if len(w_shape) == 2 else _linear_projs
    return fn(W, target_grads, target_outputs, c, wts, anchor, dtype)


def _linear_one(W, G, f0, c, wts, anchor, dtype):
    W, G, f0 = (jnp.asarray(x, dtype) for x in (W, G, f0))
    z = f0[:, None] + (G @ W.T) * c[None, :]  # (examples, subsets)
    est = wts @ jax.nn.softplus(-z)
    if anchor is not None:
        est = est + (anchor - wts @ jax.nn.softplus(-f0))
    return est


_linear = jax.jit(_linear_one, static_argnums=6)


@functools.partial(jax.jit, static_argnums=6)
def _linear_projs(W, G, f0, c, wts, anchor, dtype):
    one = functools.partial(_linear_one, f0=f0, wts=wts, anchor=anchor, dtype=dtype)
    return jax.vmap(lambda w, g, cc: one(w, g, c=cc))(W, G, c)


def _weights(weights, n: int, dtype):
    if weights is None:
        return np.full((n,), 1.0 / n, np.dtype(dtype))  # host: no device op to compile
    w = jnp.asarray(weights, dtype)
    hw = _host(w)
    if w.shape != (n,):
        raise ValueError(f"weights has shape {w.shape}; expected ({n},)")
    if hw is not None and (np.any(hw < 0) or not np.any(hw > 0) or not np.isfinite(hw).all()):
        raise ValueError("weights must be finite, >= 0, and not all zero")
    return w / jnp.sum(w)


@x64_scope
def estimate_first_order(
    W: Float[ArrayLike, "subsets proj"],
    loss_grad: Float[ArrayLike, " proj"],
    loss0: float,
    *,
    gram: Float[ArrayLike, "proj proj"],
    theta_norm: Float[ArrayLike, ""] | float,
    scale: float,
) -> Float[Array, " subsets"]:
    """First-order Taylor estimate of the target token CE: ``L0 + c_S <P^T grad L, w_S>``.

    Unlike `estimate_linear` this linearises the reported metric (token-weighted mean CE)
    directly, so it has no Jensen gap and is exact at D = 0; it is linear in ``scale``, so it
    only holds while the update is small. Inputs come from `target_loss_grad`.

    Args:
        W: fitted directions, ``[subsets, proj]``.
        loss_grad: projected gradient of the target loss at theta*, ``[proj]``.
        loss0: target loss at theta* (nats/token).
        gram: ``P^T P``.
        theta_norm: ``||theta*_LoRA||``.
        scale: relative update size.

    Returns:
        ``[subsets]`` estimates, float64.

    Raises:
        ValueError: mismatched shapes or a bad ``scale``.
    """
    dtype = _fit_dtype()
    c = rescale(W, gram, theta_norm, scale)
    g = jnp.asarray(loss_grad, dtype)
    W = jnp.asarray(W, dtype)
    if g.shape != (W.shape[1],):
        raise ValueError(f"loss_grad has shape {g.shape}; expected ({W.shape[1]},)")
    return jnp.asarray(loss0, dtype) + c * (W @ g)


def _check_target(target, what: str = "target set") -> None:
    if target.tokens.shape[0] == 0:
        raise ValueError(f"the {what} is empty")
    if not np.any(np.asarray(target.loss_mask)[:, 1:]):
        raise ValueError(f"the {what} has no response tokens (its loss_mask is empty)")


def _stacked_batches(data, batch_size: int) -> Batch:
    """All of ``data`` as ``[batches, batch_size, seq]`` numpy arrays, padding rows masked."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n, seq = data.tokens.shape
    nb = -(-n // batch_size)
    pad = nb * batch_size - n

    def stack(x, fill):
        x = np.asarray(x)
        x = np.concatenate([x, np.full((pad, seq), fill, x.dtype)]) if pad else x
        return x.reshape(nb, batch_size, seq)

    return Batch(
        stack(data.tokens, 0), stack(data.attention_mask, False), stack(data.loss_mask, False)
    )


def _progress(enabled: bool, description: str) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _shifted_model(graphdef, lora, frozen, projection: Projection, v):
    """The model at theta* + P v (eval mode); base weights shared, only the LoRA leaves move."""
    pure = jax.tree.map(jnp.add, nnx.to_pure_dict(lora), projection.lift(v))
    state = jax.tree.map(lambda x: x, lora)  # a fresh State to fill, not the caller's
    nnx.replace_by_pure_dict(state, pure)
    model = nnx.merge(graphdef, state, frozen)
    model.eval()
    return model


@functools.lru_cache(maxsize=16)
def _lifted_fn(graphdef, projections: tuple[Projection, ...]):
    def fn(U, lora, frozen, batches: Batch, size, blocks: tuple):
        pure = nnx.to_pure_dict(lora)

        def one(u):  # u: (projs, d), each row scaled so that ||P_k u_k|| = 1
            parts = [p.lift(u[k], blocks[k]) for k, p in enumerate(projections)]
            mean = jax.tree.map(lambda *x: sum(x) / len(x), *parts)
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(mean)))
            coef = jnp.where(norm > 0, size / jnp.where(norm > 0, norm, 1.0), 0.0)
            state = jax.tree.map(lambda x: x, lora)  # a fresh State to fill, not the caller's
            nnx.replace_by_pure_dict(state, jax.tree.map(lambda a, d: a + coef * d, pure, mean))
            model = nnx.merge(graphdef, state, frozen)
            model.eval()

            def body(acc, b):
                return acc + jnp.sum(example_losses(model, b).total), None

            total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), batches)
            return total

        return jax.vmap(one)(U)

    return jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _outputs_fn(graphdef, projection: Projection, eps: float):
    def fn(V, lora, frozen, batches: Batch):
        def one(v):
            model = _shifted_model(graphdef, lora, frozen, projection, v)

            def body(_, b):
                logits = model(b.tokens, b.attention_mask)
                return None, output_logodds(logits, b.tokens, b.loss_mask, eps)

            _, out = jax.lax.scan(body, None, batches)
            return out.reshape(-1)

        return jax.vmap(one)(V)

    return jax.jit(fn)


def _run_chunks(fn, V: np.ndarray, lora, frozen, batches, chunk: int, progress, label, *args):
    """fn over subset chunks of a fixed size (the last padded with zero directions)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"subset_chunk must be a positive int, got {chunk!r}")
    m = V.shape[0]
    chunk = min(chunk, m)
    out = []
    with _progress(progress, label) as bar:
        task = bar.add_task(label, total=m)
        for lo in range(0, m, chunk):
            vc = V[lo : lo + chunk]
            k = vc.shape[0]
            if k < chunk:
                vc = np.concatenate([vc, np.zeros((chunk - k, *V.shape[1:]), vc.dtype)])
            out.append(np.asarray(jax.device_get(fn(vc, lora, frozen, batches, *args)))[:k])
            bar.update(task, advance=k)
    return np.concatenate(out)


def _lift_setup(model, projection, W, theta_norm, gram, scale):
    graphdef, lora, frozen = split_lora(model)
    if not jax.tree.leaves(lora):
        raise ValueError("the model has no LoRA adapters (apply_lora and meta-train it first)")
    projection.check_tree(lora)
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] != projection.dim:
        raise ValueError(f"W must be [subsets, {projection.dim}], got shape {W.shape}")
    if theta_norm is None:
        theta_norm = lora_norm(lora)
    if gram is None:
        gram = projection.gram()
    c = rescale(W, gram, theta_norm, scale)
    V = np.asarray(c)[:, None] * W
    return graphdef, lora, frozen, V.astype(np.float32)


def estimate_lifted(
    model: nnx.Module,
    projections: Projection | Sequence[Projection],
    W: Float[ArrayLike, "subsets proj"] | Float[ArrayLike, "projs subsets proj"],
    target,
    *,
    scale: float,
    theta_norm: Float[ArrayLike, ""] | float | None = None,
    gram: Float[ArrayLike, "proj proj"] | Sequence[Float[ArrayLike, "proj proj"]] | None = None,
    batch_size: int = 32,
    subset_chunk: int = 2,
    progress: bool = True,
) -> Float[np.ndarray, " subsets"]:
    """Lifted-mode estimate: the real target loss of ``theta* + D_S`` for every subset.

    With one projection, ``D_S = P (c_S w_S)`` (`Projection.lift`, size set by `rescale`:
    ``||D_S|| = scale * ||theta*_LoRA||``). With several (independent projection seeds, each
    with its own fit), each lift ``P_k w_kS`` is normalised to unit length, the unit lifts are
    averaged in parameter space (their JL noise, independent across seeds, partly cancels) and
    the average is rescaled to the same size: one model evaluation per subset, whatever the
    number of seeds. ``D_S`` is added to the model's LoRA tensors; the loss is the
    token-weighted mean response-token CE over the whole target set, as
    `jaxlaw.training.mean_loss` of `jaxlaw.training.evaluate` computes it, in eval mode (no
    dropout). ``subset_chunk`` subsets run at once: the eval step is vmapped over a stack of
    LoRA states (the base weights are shared, not copied) and scans over the target batches;
    one compilation per chunk shape, a progress bar over subsets.

    Args:
        model: the meta-trained model theta* with its LoRA adapters (not modified).
        projections: the projection ``W`` was fitted in (built on this model's LoRA state), or
            a sequence of them.
        W: fitted directions (`fit_subsets`): ``[subsets, proj]`` for one projection,
            ``[projs, subsets, proj]`` for a sequence (one fit per projection, same subsets).
        target: a `jaxlaw.data.TokenizedSet`.
        scale: relative update size ``||D_S|| / ||theta*_LoRA||``.
        theta_norm: ``||theta*_LoRA||`` (None: `lora_norm` of ``model``).
        gram: ``projection.gram()`` (one per projection for a sequence) if already computed;
            None: computed here.
        batch_size: target examples per forward pass.
        subset_chunk: subsets evaluated at once (memory grows linearly with it; on a 2-core
            CPU 2 ran ~2x faster per subset than 8).
        progress: show a progress bar on stderr.

    Returns:
        Numpy float64 ``[subsets]`` estimated target losses (nats/token).

    Raises:
        ValueError: an empty target or one without response tokens, a model without adapters,
            a projection that does not match its LoRA state, mismatched ``W`` or ``gram``,
            bad sizes.
    """
    _check_target(target)
    single = isinstance(projections, Projection)
    projs = (projections,) if single else tuple(projections)
    if not projs or not all(isinstance(p, Projection) for p in projs):
        raise ValueError("projections must be a Projection or a non-empty sequence of them")
    shape = np.shape(W)
    W = np.asarray(W)[None] if single else np.asarray(W)
    if W.ndim != 3 or W.shape[0] != len(projs) or W.shape[2] != projs[0].dim:
        want = f"[subsets, {projs[0].dim}]" if single else f"[{len(projs)}, subsets, proj]"
        raise ValueError(f"W must be {want}, got shape {shape}")
    if gram is not None:
        gram = (gram,) if single else tuple(gram)
        if len(gram) != len(projs):
            raise ValueError(f"gram must hold one matrix per projection ({len(projs)})")
    # Unit lifts per projection; the size is applied after averaging (in the jitted step).
    units, graphdef, lora, frozen = [], None, None, None
    for k, p in enumerate(projs):
        graphdef, lora, frozen, u = _lift_setup(
            model, p, W[k], 1.0, None if gram is None else gram[k], 1.0
        )
        units.append(u)
    if theta_norm is None:
        theta_norm = lora_norm(lora)
    _check_scale(scale, theta_norm)
    size = jnp.float32(scale * float(_host(theta_norm)))
    batches = _stacked_batches(target, batch_size)
    count = float(np.sum(np.asarray(target.loss_mask)[:, 1:]))
    totals = _run_chunks(
        _lifted_fn(graphdef, projs),
        np.stack(units, axis=1),  # (subsets, projs, d)
        lora,
        frozen,
        batches,
        subset_chunk,
        progress,
        "gradex lifted",
        size,
        # P in memory when small (generated once here, not in every chunk's step).
        tuple(
            all_blocks(p) if 4 * p.n_params * p.dim <= BLOCKS_IN_MEMORY_BYTES else None
            for p in projs
        ),
    )
    return totals.astype(np.float64) / count


def target_loss_grad(
    model: nnx.Module, projection: Projection, target, *, batch_size: int = 32
) -> tuple[Float[Array, " proj"], float]:
    """Projected gradient and value of the target's token-weighted mean CE at theta*.

    The inputs of `estimate_first_order`: ``P^T grad_LoRA L(theta*)`` (float32 ``[proj]``) and
    ``L(theta*)`` (nats/token), accumulated over target batches in eval mode.

    Raises:
        ValueError: an empty target or one without response tokens, a model without adapters,
            or a projection that does not match its LoRA state.
    """
    _check_target(target)
    graphdef, lora, frozen = split_lora(model)
    if not jax.tree.leaves(lora):
        raise ValueError("the model has no LoRA adapters (apply_lora and meta-train it first)")
    projection.check_tree(lora)
    batches = _stacked_batches(target, batch_size)
    count = float(np.sum(np.asarray(target.loss_mask)[:, 1:]))

    @jax.jit
    def summed(lora, frozen, batches):
        def loss(lora):
            model = nnx.merge(graphdef, lora, frozen)
            model.eval()

            def body(acc, b):
                return acc + jnp.sum(example_losses(model, b).total), None

            total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), batches)
            return total

        total, grad = jax.value_and_grad(loss)(lora)
        return total, projection.project(grad)

    total, g = summed(lora, frozen, batches)
    return g / count, float(total) / count


class TaylorErrors(NamedTuple):
    """Mean squared relative errors of the linearised log-odds, one per direction (spec 2.9).

    Attributes:
        first_order: ``mean_i e_i^2`` with ``e_i = (f*_i + <g_i, D> - f(theta*+D; x_i)) /
            max(|f(theta*+D; x_i)|, |f*_i|)``.
        zeroth_order: the same without the gradient term (``f*_i`` as the prediction).
    """

    first_order: Float[np.ndarray, " subsets"]
    zeroth_order: Float[np.ndarray, " subsets"]


def taylor_errors(
    model: nnx.Module,
    projection: Projection,
    grads: Float[ArrayLike, "examples proj"],
    outputs: Float[ArrayLike, " examples"],
    directions: Float[ArrayLike, "subsets proj"],
    data,
    *,
    rho: float,
    eps: float = 1e-3,
    theta_norm: Float[ArrayLike, ""] | float | None = None,
    gram: Float[ArrayLike, "proj proj"] | None = None,
    batch_size: int = 32,
    subset_chunk: int = 8,
    progress: bool = False,
) -> TaylorErrors:
    """How well ``f*_i + <g_i, D>`` predicts the log-odds at ``theta* + D`` (spec 2.9 / 4.5.1).

    Each direction ``w`` (a row of ``directions``, in projected space, e.g. the fit of a random
    subset) becomes ``D = P (c w)`` with ``||D|| = rho * ||theta*_LoRA||``. The first-order
    prediction uses the projected gradients only: ``<g_i, P c w> = c (P^T g_i) . w`` holds
    exactly, so no full-size gradient is needed. Directions as full LoRA trees are not
    supported for that reason. Examples without target tokens are left out of the means.

    Args:
        model: theta* with adapters (not modified).
        projection: the projection of ``grads``.
        grads: projected log-odds gradients of ``data``'s examples at theta*, in its order.
        outputs: their log-odds f* at theta* (same ``eps``).
        directions: ``[subsets, proj]``, one direction per row.
        data: the `jaxlaw.data.TokenizedSet` the gradients were taken on.
        rho: relative size of ``D``.
        eps: probability guard of `output_logodds`.
        theta_norm, gram: as in `estimate_lifted`.
        batch_size, subset_chunk, progress: as in `estimate_lifted`.

    Returns:
        `TaylorErrors` of numpy ``[subsets]`` arrays.

    Raises:
        ValueError: mismatched shapes, no response tokens, or the errors of `estimate_lifted`.
    """
    _check_target(data, "data")
    n = data.tokens.shape[0]
    g = np.asarray(grads, np.float64)
    f0 = np.asarray(outputs, np.float64)
    if g.shape != (n, projection.dim) or f0.shape != (n,):
        raise ValueError(
            f"grads {g.shape} and outputs {f0.shape} must be [{n}, {projection.dim}] and [{n}] "
            "(one row per example of data)"
        )
    graphdef, lora, frozen, V = _lift_setup(model, projection, directions, theta_norm, gram, rho)
    batches = _stacked_batches(data, batch_size)
    actual = _run_chunks(
        _outputs_fn(graphdef, projection, float(eps)),
        V,
        lora,
        frozen,
        batches,
        subset_chunk,
        progress,
        "gradex taylor",
    )[:, :n].astype(np.float64)
    pred = f0[None, :] + V.astype(np.float64) @ g.T
    has = np.asarray(data.loss_mask)[:, 1:].any(axis=1)
    den = np.maximum(np.maximum(np.abs(actual), np.abs(f0)[None, :]), np.finfo(np.float64).tiny)
    e1 = ((pred - actual) / den)[:, has]
    e0 = ((f0[None, :] - actual) / den)[:, has]
    return TaylorErrors(np.mean(e1**2, axis=1), np.mean(e0**2, axis=1))


class ScaleCalibration(NamedTuple):
    """Result of `calibrate_scale`.

    Attributes:
        scale: the grid value with the smallest error.
        grid: the candidate scales, as given.
        errors: the criterion at every grid value.
    """

    scale: float
    grid: np.ndarray
    errors: np.ndarray


def calibrate_scale(
    estimate_fn: Callable[[float], ArrayLike],
    true_losses: Float[ArrayLike, " subsets"],
    grid: Sequence[float],
    *,
    criterion: str = "msre",
) -> ScaleCalibration:
    """Grid search for the ``scale`` that best matches real fine-tuned losses.

    ``scale`` sets the level of every estimate (spec 5.6), so it must be chosen on calibration
    subsets whose true fine-tuned loss is known and which are not used for reporting.

    Args:
        estimate_fn: ``scale -> [subsets]`` estimates for the calibration subsets, e.g.
            ``lambda s: estimate_lifted(model, proj, W_cal, target, scale=s)``.
        true_losses: the real fine-tuned losses of those subsets.
        grid: candidate scales (>= 0).
        criterion: ``"msre"``, mean squared relative error ``mean((L^ - L)/L)^2`` (the
            authors' metric, spec 2.9), or ``"mse"``.

    Returns:
        `ScaleCalibration`; ties go to the first grid value.

    Raises:
        ValueError: empty grid, unknown criterion, non-finite estimates, or shape mismatch.
    """
    if criterion not in ("msre", "mse"):
        raise ValueError(f"unknown criterion {criterion!r}; choose 'msre' or 'mse'")
    grid_a = np.asarray(list(grid), np.float64)
    if grid_a.ndim != 1 or grid_a.size == 0:
        raise ValueError("calibrate_scale needs a non-empty 1-d grid of scales")
    truth = np.asarray(true_losses, np.float64)
    if truth.ndim != 1 or truth.size == 0 or not np.isfinite(truth).all():
        raise ValueError(f"true_losses must be a non-empty finite 1-d array, got {truth.shape}")
    if criterion == "msre" and np.any(truth == 0):
        raise ValueError("msre needs non-zero true losses")
    errors = []
    for s in grid_a:
        est = np.asarray(estimate_fn(float(s)), np.float64)
        if est.shape != truth.shape:
            raise ValueError(f"estimate_fn returned shape {est.shape}; true_losses {truth.shape}")
        if not np.isfinite(est).all():
            raise ValueError(f"estimate_fn returned non-finite estimates at scale {s}")
        r = (est - truth) / truth if criterion == "msre" else est - truth
        errors.append(float(np.mean(r**2)))
    errs = np.asarray(errors)
    return ScaleCalibration(float(grid_a[int(np.argmin(errs))]), grid_a, errs)
