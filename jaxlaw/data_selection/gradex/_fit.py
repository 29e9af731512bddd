"""Surrogate fits of the fine-tuning update for many subsets of sources at once.

Entry point: `fit_subsets`. Fine-tuning theta* on the samples of a subset S is replaced by a
regression on the projected per-sample gradients ``g_i`` (``[examples, proj]``) and outputs
``f*_i`` (log-odds at theta*), one row of a sample mask per subset, all rows in one vmapped call::

    subsets = subset_masks(key, n_sources=20, n_subsets=200, size=10)   # [subsets, sources]
    mask = sample_mask(subsets, pg.source_id)                            # [subsets, examples]
    W = fit_subsets(pg.grads[0], pg.outputs, mask)                       # [subsets, proj]

The fitted ``w_S`` lives in projected space; ``P w_S`` (`Projection.lift`) is the LoRA update,
whose size `jaxlaw.data_selection.gradex.rescale` then sets (only its direction matters).
Fits run in float64 whether or not the process enables x64: the entry points switch it on
around their own numerics only (`jax.enable_x64`), the model and its gradients stay float32.
"""

import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ..._types import Array, ArrayLike, Bool, Float, Int, Key
from ...fitting import x64_scope

METHODS = ("logistic", "ridge", "one_step")
PARITIES = ("paper", "reference")
LAM_RULES = ("relative", "absolute")

# Step sizes the damped Newton step tries (1, 1/2, ..., 1/128), all evaluated at once: they
# share the direction's image G @ step, so the 8 trials cost 8 softplus passes over the rows,
# small next to the Hessian.
_N_HALVINGS = 8
# Bytes of float scratch one vmapped chunk of subsets may use (its Hessians and factors,
# [chunk, proj, proj], and a few [chunk, examples] vectors).
_CHUNK_BYTES = 64 * 2**20
# Bytes of the shared table of products g_ia g_ib (a <= b), [rows, proj (proj + 1) / 2]; beyond
# it the table is rebuilt block by block of rows in every Newton iteration.
_PAIRS_BYTES = 256 * 2**20


def _fit_dtype():
    """float64 inside the `x64_scope` entry points."""
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def _as_array(x, dtype) -> Array:
    """``x`` as a jax array of ``dtype``; host data is converted by numpy, so that no device
    conversion has to be compiled on a cold start (each costs ~20 ms on CPU)."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return jnp.asarray(np.asarray(x, dtype))
    return jnp.asarray(x, dtype)


def _host(x) -> np.ndarray | None:
    """``x`` as numpy for validation, or None under a trace (checks then happen upstream)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def subset_masks(
    key: Key, n_sources: int, n_subsets: int, size: int
) -> Bool[Array, "subsets sources"]:
    """Random subsets of sources, each of exactly ``size`` sources, as a bool matrix.

    Row j is uniform over the ``size``-subsets of ``range(n_sources)`` (sampling without
    replacement, as the reference's ``np.random.choice(K, size, replace=False)``), drawn from
    ``jr.split(key, n_subsets)[j]``; rows are independent, so two rows may coincide. The same key
    gives the same matrix, bit for bit (the stream differs from numpy's; parity is not a goal).

    Args:
        key: a `jax.random.key`.
        n_sources: K, number of sources.
        n_subsets: M, number of subsets (rows).
        size: sources per subset, ``1 <= size <= n_sources`` (the paper uses K/2; spec 2.7).

    Returns:
        ``[subsets, sources]`` bool, exactly ``size`` True per row.

    Raises:
        ValueError: non-positive counts, or ``size`` outside ``[1, n_sources]``.
    """
    for name, v in (("n_sources", n_sources), ("n_subsets", n_subsets), ("size", size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if n_sources < 1 or n_subsets < 1:
        raise ValueError(f"need n_sources >= 1 and n_subsets >= 1, got {n_sources}, {n_subsets}")
    if not 1 <= size <= n_sources:
        raise ValueError(f"subset size must be in [1, n_sources={n_sources}], got {size}")

    return _subset_masks(key, int(n_sources), int(n_subsets), int(size))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _subset_masks(key, n_sources: int, n_subsets: int, size: int):
    def one(k):
        # The `size` smallest of K iid uniforms form a uniform size-subset.
        u = jr.uniform(k, (n_sources,))
        rank = jnp.argsort(jnp.argsort(u))
        return rank < size

    return jax.vmap(one)(jr.split(key, n_subsets))


def sample_mask(
    subsets: Bool[ArrayLike, "subsets sources"], source_id: Int[ArrayLike, " examples"]
) -> Bool[Array, "subsets examples"]:
    """Which examples each subset contains: ``subsets[:, source_id]``.

    Args:
        subsets: Z, ``[subsets, sources]`` bool (e.g. from `subset_masks`).
        source_id: source index of each example, ``[examples]`` int in ``[0, sources)``
            (``ProjectedGrads.source_id`` / ``TokenizedSet.source_id``).

    Returns:
        ``[subsets, examples]`` bool.

    Raises:
        ValueError: ``subsets`` not a 2-d bool matrix, a subset with no source, a source id out
            of range, or a subset whose sources hold no example.
    """
    z, sid = _host(subsets), _host(source_id)
    if z is not None:
        if z.ndim != 2 or z.dtype != np.bool_:
            raise ValueError(f"subsets must be a 2-d bool matrix, got {z.dtype} {z.shape}")
        empty = np.flatnonzero(~z.any(axis=1))
        if empty.size:
            raise ValueError(f"subset {int(empty[0])} is empty (no source selected)")
    if sid is not None:
        if sid.ndim != 1 or not np.issubdtype(sid.dtype, np.integer):
            raise ValueError(f"source_id must be a 1-d int array, got {sid.dtype} {sid.shape}")
        k = jnp.shape(subsets)[1]
        bad = np.flatnonzero((sid < 0) | (sid >= k))
        if bad.size:
            raise ValueError(
                f"source_id {int(sid[bad[0]])} of example {int(bad[0])} is out of range for "
                f"{k} sources"
            )
    if z is not None and sid is not None:  # host data: index on the host (nothing to compile)
        out = jnp.asarray(z[:, sid])
    else:
        out = jnp.asarray(subsets)[:, jnp.asarray(source_id)]
    m = _host(out)
    if m is not None:
        hollow = np.flatnonzero(~m.any(axis=1))
        if hollow.size:
            raise ValueError(
                f"subset {int(hollow[0])} contains no example (its sources have no samples)"
            )
    return out


def _triu(d: int):
    a, b = np.triu_indices(d)
    unpack = np.zeros((d, d), np.int32)
    unpack[a, b] = unpack[b, a] = np.arange(a.size)
    return a, b, unpack


def _pair_rows(d: int, itemsize: int) -> int:
    """Rows of the pair table (`_pair_gram`) that fit in `_PAIRS_BYTES`."""
    return max(1, _PAIRS_BYTES // (itemsize * (d * (d + 1) // 2)))


@jax.jit
def _pair_table(G):
    a, b, _ = _triu(G.shape[1])
    return G[:, a] * G[:, b]


def _pair_gram(G, table, rows: int):
    """``h -> G^T diag(h) G`` for one weight vector h ``[examples]``, as a matmul with a table.

    The table holds the products of every pair of columns, ``T[i, (a, b)] = G_ia G_ib`` for
    ``a <= b`` (``[examples, proj (proj + 1) / 2]``, `_pair_table`); ``h @ T`` is then the
    packed upper triangle of the weighted Gram matrix. Under `vmap` over subsets ``h`` gains a
    batch axis and the table, which depends on G only, does not: the Hessians of a whole chunk
    become one ``[chunk, examples] x [examples, pairs]`` GEMM, with no ``[chunk, examples,
    proj]`` scaled copy of G and half the flops of the full product (symmetry). ``table=None``
    (beyond `_PAIRS_BYTES`): the table is built per block of ``rows`` rows inside the call (a
    scan), one multiply per entry against ``2 chunk`` flops for the GEMM.
    """
    n, d = G.shape
    a, b, unpack = _triu(d)
    if table is not None:
        return lambda h: (h @ table)[unpack]
    n_blocks = -(-n // rows)
    Gb = jnp.pad(G, ((0, n_blocks * rows - n), (0, 0))).reshape(n_blocks, rows, d)

    def gram(h):
        hb = jnp.pad(h, (0, n_blocks * rows - n)).reshape(n_blocks, rows)

        def add(acc, blk):
            g, w = blk
            return acc + w @ (g[:, a] * g[:, b]), None

        return jax.lax.scan(add, jnp.zeros(a.size, G.dtype), (Gb, hb))[0][unpack]

    return gram


def _newton(X, o, m, lam, iters: int, hess):
    """Damped Newton on sum_i m_i softplus(-(o_i + X_i w)) + lam/2 ||w||^2 from w = 0.

    ``hess(h)`` returns ``X^T diag(h) X``. Stops once the Newton decrement is at round-off
    level (then takes that last full step) or after ``iters`` steps, whichever comes first.
    """
    d = X.shape[1]
    eye = jnp.eye(d, dtype=X.dtype)
    ts = 2.0 ** -jnp.arange(_N_HALVINGS, dtype=X.dtype)
    tiny = 1e3 * jnp.finfo(X.dtype).eps

    def objective(z, w):
        return jnp.sum(m * jax.nn.softplus(-z)) + 0.5 * lam * jnp.dot(w, w)

    def direction(w):
        z = o + X @ w
        s = jax.nn.sigmoid(-z)  # -d softplus(-z)/dz
        grad = lam * w - X.T @ (m * s)
        factor = jax.lax.linalg.cholesky(hess(m * s * jax.nn.sigmoid(z)) + lam * eye)
        step = jax.scipy.linalg.cho_solve((factor, True), grad)
        j0 = objective(z, w)
        decrement = jnp.dot(grad, step)  # Newton decrement squared, >= 0
        # Once the decrement is at round-off level J can no longer tell steps apart: the full
        # Newton step is taken and the iteration ends (quadratic convergence: the error left
        # is the square of one already at round-off, and further steps only jitter).
        return z, step, j0, decrement, decrement <= tiny * (1.0 + jnp.abs(j0))

    def cond(carry):
        k, _, _, _, _, _, done = carry
        return (k < iters) & ~done

    def body(carry):
        k, w, z, step, j0, decrement, _ = carry
        dz = X @ step
        vals = jax.vmap(lambda t: objective(z - t * dz, w - t * step))(ts)
        # Backtracking (Armijo, slope 1/4): the largest step that decreases J enough; if none
        # does, the best of the tried steps or no step.
        armijo = vals <= j0 - 0.25 * ts * decrement
        best = jnp.where(jnp.min(vals) < j0, ts[jnp.argmin(vals)], 0.0)
        t = jnp.where(jnp.any(armijo), ts[jnp.argmax(armijo)], best)
        w = w - t * step
        return (k + 1, w, *direction(w))

    w0 = jnp.zeros(d, X.dtype)
    k, w, _, step, _, _, done = jax.lax.while_loop(cond, body, (0, w0, *direction(w0)))
    return jnp.where(done & (k < iters), w - step, w)


def _quadratic(G, o, m, lam, hess):
    """Minimiser of the 2nd-order Taylor model at w = 0 of the logistic objective."""
    d = G.shape[1]
    s = jax.nn.sigmoid(-o)
    H = hess(m * s * jax.nn.sigmoid(o)) + lam * jnp.eye(d, dtype=G.dtype)
    factor = jax.lax.linalg.cholesky(H)
    return jax.scipy.linalg.cho_solve((factor, True), G.T @ (m * s))


def _first_rows(m, fraction: float):
    """Keep the first floor(fraction * n) members of a row (dataset order), at least one."""
    n = jnp.sum(m)
    keep = jnp.maximum(jnp.floor(fraction * n), 1.0)
    return m * (jnp.cumsum(m) <= keep).astype(m.dtype)


def _chunk_size(n_examples: int, d: int, itemsize: int) -> int:
    # Hessian, its factor and the line search's temporaries per subset; G and the pair table
    # are shared by the chunk.
    per_subset = itemsize * (3 * (d + 1) ** 2 + 16 * n_examples)
    return max(1, _CHUNK_BYTES // per_subset)


def _fit(
    G, f0, mask, lam, key, table, *, method, parity, iters, fraction, chunk, rows, lam_rule, offsets
):
    """All subsets: lax.map in chunks of `chunk`, each chunk vmapped. ``table``: `_pair_table`
    of G, or None to build it by blocks of ``rows`` rows in every Hessian (`_pair_gram`)."""
    mask = mask.astype(G.dtype)
    if lam_rule == "relative":
        s2 = jnp.mean(jnp.sum(G * G, axis=1)) / G.shape[1]
        lam_s = lam * jnp.sum(mask, axis=1) * s2
    else:
        lam_s = jnp.full(mask.shape[:1], lam, G.dtype)
    o = f0 if offsets else jnp.zeros_like(f0)
    keys = jr.split(key, mask.shape[0])
    if method == "one_step":
        s = jax.nn.sigmoid(-o)
        return (mask * s[None, :]) @ G / lam_s[:, None]
    gram = _pair_gram(G, table, rows)

    def one(args):
        m, lam, k = args
        if parity == "reference":
            m = _first_rows(m, fraction)
            # Labels ~ Bernoulli(0.7) flip the sign of the sample; liblinear's penalised
            # intercept then enters as an extra feature equal to that sign (spec 2.5 item 4).
            sign = jnp.where(jr.bernoulli(k, 0.7, (G.shape[0],)), 1.0, -1.0).astype(G.dtype)
            Ga = jnp.concatenate([G, sign[:, None]], axis=1)

            def hess(h):
                # Ga^T diag(h) Ga bordered: the shared block of G, then the sign column
                # (sign^2 = 1), so the pair table of G still serves.
                border = G.T @ (h * sign)
                top = jnp.concatenate([gram(h), border[:, None]], axis=1)
                bottom = jnp.concatenate([border, jnp.sum(h)[None]])[None, :]
                return jnp.concatenate([top, bottom], axis=0)

            return _newton(Ga, o, m, lam, iters, hess)[:-1]
        if method == "ridge":
            return _quadratic(G, o, m, lam, gram)
        return _newton(G, o, m, lam, iters, gram)

    return jax.lax.map(one, (mask, lam_s, keys), batch_size=chunk)


_FIT_STATIC = ("method", "parity", "iters", "fraction", "chunk", "rows", "lam_rule", "offsets")
_fit_jit = jax.jit(_fit, static_argnames=_FIT_STATIC)


def _fit_projs(G, f0, mask, lam, key, table, **static):
    """`_fit` vmapped over a leading projection axis of ``G`` (and of its pair table)."""
    return jax.vmap(lambda g, t: _fit(g, f0, mask, lam, key, t, **static))(G, table)


_fit_projs_jit = jax.jit(_fit_projs, static_argnames=_FIT_STATIC)


@x64_scope
def fit_subsets(
    grads: Float[ArrayLike, "*projs examples proj"],
    outputs: Float[ArrayLike, " examples"],
    mask: Bool[ArrayLike, "subsets examples"],
    *,
    method: str = "logistic",
    lam: float | None = None,
    lam_rule: str | None = None,
    offsets: bool | None = None,
    parity: str = "paper",
    iters: int = 30,
    fit_fraction: float | None = None,
    key: Key | None = None,
    chunk: int | None = None,
) -> Float[Array, "*projs subsets proj"]:
    """Fit the surrogate of fine-tuning on each subset; all subsets in one vmapped call.

    ``grads`` may carry a leading projection axis (``ProjectedGrads.grads``, one slice per
    projection seed): every projection is then fitted in the same call, vmapped over that axis,
    with the results of one call per projection.

    With ``o_i = f*_i`` (``offsets=True``) or 0, ``m_Si`` the mask and ``lam_S`` the penalty
    (see ``lam_rule``), each row of the result minimises, in projected space:

    - ``"logistic"`` (paper, spec 2.5/5.4): ``J_S(w) = sum_i m_Si softplus(-(o_i + g_i.w))
      + lam_S/2 ||w||^2``, i.e. token cross-entropy linearised at theta* (all samples are
      positives: sigma(log-odds) = p). Damped Newton from w = 0 (each iteration backtracks
      over the steps 1, 1/2, ..., 1/128 with an Armijo test, so J never increases), stopped
      once the Newton decrement ``grad . H^-1 grad`` is at round-off level (``<= 1e3 eps
      (1 + |J|)``; that last full step is then taken) or after ``iters`` iterations. J is
      strictly convex, so convergence is quadratic: 4-7 iterations on well-posed problems, and
      the result equals that of ``iters`` fixed iterations to round-off (check with a larger
      ``iters`` when the penalty is very weak). A chunk of subsets iterates until its slowest
      member stops. Each Hessian ``G^T diag(h) G`` is the packed product of ``h`` with the
      table of column pairs of G (``[examples, proj (proj + 1) / 2]``, shared by all subsets;
      built once while it fits in 256 MiB, else by blocks of rows in every iteration).
    - ``"ridge"``: the minimiser of the second-order Taylor model of J_S at w = 0, i.e. weighted
      ridge regression ``min sum_i m_Si h_i (y_i - g_i.w)^2 / 2 + lam_S/2 ||w||^2`` with
      weights ``h_i = sigma(o_i) sigma(-o_i)`` and working response ``y_i = 1/sigma(o_i) =
      1 + exp(-o_i)`` (the first-order change of log-odds that one Newton step asks for; equal
      to the first undamped Newton iterate of "logistic"). One Cholesky solve per subset.
    - ``"one_step"``: ``w_S = (1/lam_S) sum_i m_Si sigma(-o_i) g_i``, one gradient step and
      the large-``lam`` limit of "logistic" (where the reference operates, spec 2.5 item 5);
      all subsets in one ``[subsets, examples] x [examples, proj]`` matmul.

    ``parity="reference"`` reproduces the authors' code instead (spec 2.5 item 4): no offsets,
    every sample a positive, a penalised intercept entering as an extra feature ``s_i = ±1``
    drawn from Bernoulli(0.7) labels (one key per subset, from ``jr.split(key, subsets)``),
    objective ``(1/2)(||w||^2 + b^2) + C sum_i softplus(-(g_i.w + s_i b))`` with ``C = 1/lam``
    (absolute), fitted on the first ``floor(fit_fraction * |S|)`` samples of S in dataset order
    (the reference takes them in the order of its sampled source list). Matches sklearn's
    ``LogisticRegression(C=C, solver="liblinear")`` on the sign-flipped features; ``b`` is
    dropped from the result.

    Args:
        grads: projected per-sample gradients of the log-odds at theta*, ``[examples, proj]``
            (one projection: ``ProjectedGrads.grads[j]``) or ``[projs, examples, proj]`` (all
            of ``ProjectedGrads.grads``).
        outputs: f*_i, the log-odds at theta*, ``[examples]``.
        mask: which examples each subset holds (`sample_mask`), ``[subsets, examples]``.
        method: ``"logistic"``, ``"ridge"`` or ``"one_step"``.
        lam: penalty strength. Default 1.0 with the relative rule; 1e4 (C = 1e-4, the CoT and
            instruction scripts) in reference parity.
        lam_rule: ``"relative"`` (default in paper parity): ``lam_S = lam * |S| * s2`` with
            ``|S|`` the examples in the row and ``s2 = mean_i ||g_i||^2 / proj`` over all rows of
            ``grads``. This fits the *mean* loss over S with a penalty in units of the typical
            per-direction curvature, so the solution does not depend on |S| or on the scale of
            the gradients (lam = 1 is a moderately strong ridge: about 4x the data curvature of
            one direction at f* = 0). ``"absolute"`` (the only rule in reference parity):
            ``lam_S = lam``, the spec's formula verbatim.
        offsets: use f* as offsets (default True; must be False/None in reference parity).
        parity: ``"paper"`` or ``"reference"`` (logistic only).
        iters: most Newton iterations (logistic and reference; fewer are run once converged).
        fit_fraction: reference parity only, the leading share of S that is fitted (default 0.8,
            the CoT/instruction scripts; 1.0 for the Alpaca script).
        key: random key for the reference's labels (required in reference parity).
        chunk: subsets per vmapped chunk (None: from a 64 MiB scratch budget, shared by the
            projections).

    Returns:
        ``W``, ``[subsets, proj]`` (or ``[projs, subsets, proj]``) float64 (x64 is enabled
        inside this call).

    Raises:
        ValueError: unknown method/parity/rule, mismatched shapes, non-finite inputs, a subset
            with no example, ``lam <= 0``, all-zero gradients under the relative rule, or
            reference-only options used wrongly.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fit method {method!r}; choose from {', '.join(METHODS)}")
    if parity not in PARITIES:
        raise ValueError(f"unknown parity {parity!r}; choose from {', '.join(PARITIES)}")
    ref = parity == "reference"
    if ref:
        if method != "logistic":
            raise ValueError(f"reference parity is a logistic fit; got method {method!r}")
        if lam_rule not in (None, "absolute"):
            raise ValueError("reference parity uses lam = 1/C as is: lam_rule must be 'absolute'")
        if offsets:
            raise ValueError("reference parity drops the offsets f*: pass offsets=False or None")
        if key is None:
            raise ValueError("reference parity draws random labels: pass key=")
        fraction = 0.8 if fit_fraction is None else float(fit_fraction)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fit_fraction must be in (0, 1], got {fit_fraction}")
        lam_rule, offsets = "absolute", False
        lam = 1e4 if lam is None else lam
    else:
        if fit_fraction is not None:
            raise ValueError("fit_fraction applies to reference parity only")
        lam_rule = "relative" if lam_rule is None else lam_rule
        offsets = True if offsets is None else offsets
        lam = 1.0 if lam is None else lam
        fraction = 1.0
    if lam_rule not in LAM_RULES:
        raise ValueError(f"unknown lam_rule {lam_rule!r}; choose from {', '.join(LAM_RULES)}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")

    dtype = _fit_dtype()
    G = _as_array(grads, dtype)
    f0 = _as_array(outputs, dtype)
    mask_a = jnp.asarray(mask)
    if G.ndim not in (2, 3):
        raise ValueError(f"grads must be [examples, proj] or [projs, examples, proj]: {G.shape}")
    n_projs = G.shape[0] if G.ndim == 3 else 1
    n, d = G.shape[-2:]
    if f0.shape != (n,):
        raise ValueError(f"outputs has shape {f0.shape}; grads has {n} examples")
    if mask_a.ndim != 2 or mask_a.shape[1] != n or mask_a.dtype != jnp.bool_:
        raise ValueError(
            f"mask must be bool [subsets, {n}] (one column per example), got "
            f"{mask_a.dtype} {mask_a.shape}"
        )
    hg, ho, hm = _host(G), _host(f0), _host(mask_a)
    if hg is not None and not np.isfinite(hg).all():
        i = int(np.flatnonzero(~np.isfinite(hg).all(axis=-1).reshape(-1, n).all(axis=0))[0])
        raise ValueError(f"grads of example {i} are not finite")
    if ho is not None and not np.isfinite(ho).all():
        i = int(np.flatnonzero(~np.isfinite(ho))[0])
        raise ValueError(f"output f* of example {i} is not finite ({ho[i]})")
    if hm is not None:
        hollow = np.flatnonzero(~hm.any(axis=1))
        if hollow.size:
            raise ValueError(f"subset {int(hollow[0])} contains no example (empty mask row)")

    if lam_rule == "relative" and hg is not None and not np.any(hg):
        raise ValueError("all gradients are zero: the relative lam rule is undefined")
    itemsize = jnp.dtype(dtype).itemsize
    if chunk is None:  # the projections run side by side: they share the scratch budget
        chunk = max(1, _chunk_size(n, d, itemsize) // n_projs)
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    # The pair table is built by its own call: produced inside `_fit_jit`, next to its GEMM,
    # XLA's CPU schedule made the whole fit 5-10x slower (measured; n=500, d=128).
    rows = min(n, _pair_rows(d, itemsize * n_projs))
    fits_table = method != "one_step" and rows == n
    table = None
    if fits_table:
        table = _pair_table(G) if G.ndim == 2 else jax.vmap(_pair_table)(G)
    return (_fit_jit if G.ndim == 2 else _fit_projs_jit)(
        G,
        f0,
        mask_a,
        lam,
        key if key is not None else jr.key(0),
        table,
        method=method,
        parity=parity,
        iters=iters,
        fraction=fraction,
        chunk=min(chunk, mask_a.shape[0]),
        rows=rows,
        lam_rule=lam_rule,
        offsets=offsets,
    )
