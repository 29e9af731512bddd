"""Subset selection from estimated losses: random ensemble, thresholding, forward selection.

Entry points: `random_ensemble` (source scores from many estimated subsets), `select_threshold`
(keep the best-scored sources) and `forward_selection` (greedy search that calls an estimator
on batches of candidate subsets); `auroc` scores a ranking against known labels::

    scores = random_ensemble(subsets, L_hat)          # [sources], lower = better
    keep = select_threshold(scores, top_k=12)         # [sources] bool
    best = forward_selection(estimate, n_sources=20)  # estimate: Z [rows, sources] -> [rows]

Lower estimated loss is better everywhere.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..._types import Array, ArrayLike, Bool, Float
from ._fit import _host


def random_ensemble(
    subsets: Bool[ArrayLike, "subsets sources"], losses: Float[ArrayLike, " subsets"]
) -> Float[Array, " sources"]:
    """Random-ensemble score of each source: the mean estimated loss of the subsets holding it.

    ``s_k = sum_j z_jk L_j / sum_j z_jk`` (spec 2.8; the reference uses the first m = 800 of
    1000 estimates: pass ``subsets[:m], losses[:m]``). A source that no subset contains has no
    evidence and gets NaN; `select_threshold` never selects a NaN score.

    Args:
        subsets: Z, ``[subsets, sources]`` bool.
        losses: estimated loss of each subset (finite).

    Returns:
        ``[sources]`` scores in the dtype of ``losses`` (float64 input stays float64).

    Raises:
        ValueError: mismatched shapes, a non-bool ``subsets``, or non-finite losses.
    """
    z = jnp.asarray(subsets)
    lo = jnp.asarray(losses)
    if z.ndim != 2 or z.dtype != jnp.bool_:
        raise ValueError(f"subsets must be a 2-d bool matrix, got {z.dtype} {z.shape}")
    if lo.shape != (z.shape[0],):
        raise ValueError(f"losses has shape {lo.shape}; subsets has {z.shape[0]} rows")
    hl = _host(lo)
    if hl is not None and not np.isfinite(hl).all():
        j = int(np.flatnonzero(~np.isfinite(hl))[0])
        raise ValueError(f"loss of subset {j} is not finite ({hl[j]})")
    if not jnp.issubdtype(lo.dtype, jnp.floating):
        lo = lo.astype(jnp.float32)
    zf = z.astype(lo.dtype)
    n = jnp.sum(zf, axis=0)
    return jnp.where(n > 0, (lo @ zf) / jnp.where(n > 0, n, 1.0), jnp.nan)


def select_threshold(
    scores: Float[ArrayLike, " sources"], *, gamma: float | None = None, top_k: int | None = None
) -> Bool[Array, " sources"]:
    """The sources with the lowest scores (estimated losses): ``s_k < gamma`` or the ``top_k``.

    Give exactly one of ``gamma`` (the paper's rule, strict inequality) and ``top_k`` (the
    reference keeps a ratio r of K clusters: ``top_k = int(r * K)``). Ties at the ``top_k``
    boundary go to the lower source index. NaN scores (sources never sampled) are never
    selected, so ``top_k`` may then return fewer than ``top_k`` sources.

    Args:
        scores: ``[sources]``, lower is better (e.g. `random_ensemble`).
        gamma: loss threshold.
        top_k: number of sources to keep, ``1 <= top_k <= sources``.

    Returns:
        ``[sources]`` bool selection.

    Raises:
        ValueError: both or neither of ``gamma``/``top_k``, or ``top_k`` out of range.
    """
    s = jnp.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-d [sources], got shape {s.shape}")
    if (gamma is None) == (top_k is None):
        raise ValueError("give exactly one of gamma= and top_k=")
    finite = ~jnp.isnan(s)
    if gamma is not None:
        return finite & (s < gamma)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ValueError(f"top_k must be an int, got {top_k!r}")
    if not 1 <= top_k <= s.shape[0]:
        raise ValueError(f"top_k must be in [1, {s.shape[0]}], got {top_k}")
    order = jnp.argsort(jnp.where(finite, s, jnp.inf), stable=True)
    rank = jnp.zeros(s.shape[0], jnp.int32).at[order].set(jnp.arange(s.shape[0], dtype=jnp.int32))
    return finite & (rank < top_k)


class ForwardSelection(NamedTuple):
    """Result of `forward_selection`.

    Attributes:
        selected: ``[sources]`` bool, the final set.
        loss: its estimated loss.
        candidates: ``[steps]`` the source decided on at each step (stepwise: the best candidate
            of each round; single pass: the source visited).
        losses: ``[steps]`` the estimate of the current set plus that candidate.
        accepted: ``[steps]`` whether the candidate was added.
        n_estimates: rows passed to the estimator in total (its cost).
    """

    selected: np.ndarray
    loss: float
    candidates: np.ndarray
    losses: np.ndarray
    accepted: np.ndarray
    n_estimates: int


def forward_selection(
    estimate: Callable[[np.ndarray], ArrayLike],
    n_sources: int,
    *,
    variant: str = "stepwise",
    order: Sequence[int] | ArrayLike | None = None,
    max_size: int | None = None,
) -> ForwardSelection:
    """Greedy forward selection of sources against an estimator of the target loss.

    - ``"stepwise"`` (textbook forward stepwise): each round calls ``estimate`` ONCE on a
      fixed ``[K, K]`` batch, row j being the current set plus source j (for a source already
      in the set, the set itself; those rows are ignored), so a jitted estimator sees one shape
      in every round; the best remaining candidate (lowest estimate, ties to the lower index)
      is added if it lowers the current estimate strictly (the first round always adds the
      best single source, as the empty set cannot be estimated). Stops when no candidate
      helps, at ``max_size``, or when all sources are in. At most K * max_size rows.
    - ``"single_pass"`` (the reference's "forward selection", spec 2.8): visit the sources once
      in ``order`` (default 0..K-1), add each and keep it iff the estimate does not rise
      (``<=``; the first one is always kept). K estimates, one row per call; ``max_size`` ends
      the pass early.

    Args:
        estimate: ``Z [rows, sources] bool (numpy) -> [rows]`` estimated losses, e.g. a
            composition of `sample_mask`, `fit_subsets` and `estimate_linear`.
        n_sources: K.
        variant: ``"stepwise"`` or ``"single_pass"``.
        order: visiting order for ``"single_pass"`` (a permutation of ``range(K)``).
        max_size: largest selected set (None: K).

    Returns:
        `ForwardSelection`.

    Raises:
        ValueError: bad ``variant``/``order``/``max_size``/``n_sources``, or an estimator that
            returns the wrong shape or non-finite values.
    """
    if isinstance(n_sources, bool) or not isinstance(n_sources, (int, np.integer)) or n_sources < 1:
        raise ValueError(f"n_sources must be a positive int, got {n_sources!r}")
    if variant not in ("stepwise", "single_pass"):
        raise ValueError(f"unknown variant {variant!r}; choose 'stepwise' or 'single_pass'")
    k = int(n_sources)
    cap = k if max_size is None else max_size
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or not 1 <= cap <= k:
        raise ValueError(f"max_size must be an int in [1, {k}], got {max_size!r}")
    if order is not None and variant != "single_pass":
        raise ValueError("order applies to the single_pass variant only")

    n_calls = [0]

    def call(rows: np.ndarray) -> np.ndarray:
        out = np.asarray(estimate(rows), np.float64)
        n_calls[0] += rows.shape[0]
        if out.shape != (rows.shape[0],):
            raise ValueError(f"estimate returned shape {out.shape} for {rows.shape[0]} subsets")
        if not np.isfinite(out).all():
            raise ValueError(f"estimate returned non-finite losses {out}")
        return out

    sel = np.zeros(k, bool)
    current = np.inf
    cands, losses, acc = [], [], []
    if variant == "stepwise":
        # Every round asks for the same [K, K] batch, one row per source (the current set plus
        # that source), so a jitted estimator compiles once instead of once per round; the rows
        # of sources already in the set (= the current set) are masked out of the argmin.
        while sel.sum() < cap:
            rows = sel[None, :] | np.eye(k, dtype=bool)
            est = np.where(sel, np.inf, call(rows))
            j = int(np.argmin(est))  # ties: the lower source index, as before
            better = bool(est[j] < current)
            cands.append(j)
            losses.append(float(est[j]))
            acc.append(better)
            if not better:
                break
            sel[j] = True
            current = float(est[j])
    else:
        visit = np.arange(k) if order is None else np.asarray(order)
        if visit.shape != (k,) or not np.array_equal(np.sort(visit), np.arange(k)):
            raise ValueError(f"order must be a permutation of range({k}), got {order!r}")
        for src in visit:
            if sel.sum() >= cap:
                break
            row = sel.copy()
            row[src] = True
            est = float(call(row[None, :])[0])
            keep = est <= current
            cands.append(int(src))
            losses.append(est)
            acc.append(bool(keep))
            if keep:
                sel = row
                current = est
    return ForwardSelection(
        selected=sel,
        loss=current,
        candidates=np.asarray(cands, np.int64),
        losses=np.asarray(losses, np.float64),
        accepted=np.asarray(acc, bool),
        n_estimates=n_calls[0],
    )


def auroc(scores: Float[ArrayLike, " sources"], labels: Bool[ArrayLike, " sources"]) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative).

    Ties count one half (the Mann-Whitney U statistic over all positive/negative pairs, exact).
    Higher score means "more positive": to score clean sources by a loss, pass ``-loss``.

    Args:
        scores: ``[n]`` finite scores.
        labels: ``[n]`` bool, True for positives.

    Returns:
        AUROC in [0, 1].

    Raises:
        ValueError: mismatched shapes, non-finite scores, or labels of a single class.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape or y.dtype != np.bool_:
        raise ValueError(f"scores {s.shape} and bool labels {y.dtype} {y.shape} must be [n]")
    if not np.isfinite(s).all():
        raise ValueError("auroc needs finite scores")
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative label")
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))
