"""The observational-scaling pipeline: table -> split -> impute -> PCA -> link fit -> bands.

Entry points: `observe_fit` (one target, one predictor set, with bootstrap bands) and
`observe_grid` (targets x predictor sets x bootstrap replicates in ONE vmapped fit). Host
code only builds arrays and masks; every numerical stage is a jitted pure function.
"""

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.random as jr
import numpy as np
import pandas as pd

from ..data import TableError
from ..fitting import in_float64
from ._compute import fit_equiv_flops
from ._constants import FAMILY, FLOPS, MODEL, SIZE
from ._impute import pca_em_impute
from ._links import Link, LinkParams, get_link
from ._pca import pca_fit, pca_transform
from ._presets import Preset
from ._regression import fit_links, fit_links_reference
from ._split import apply_heldout, cutoff_split, random_split, rank_split
from ._tables import benchmark_matrix

QUANTILES = (0.05, 0.95)


class Prepared(NamedTuple):
    """One target's arrays over the rows of a table (rows without a target are masked out).

    Attributes:
        models, families: row labels.
        y: transformed target, NaN where missing, shape (models,).
        train, test: split masks (both False where y is missing).
        scores: capability PC scores of every row, shape (models, n_components).
        components: PCA loadings (n_components, metrics); evr: explained-variance ratios.
        flops, size: metadata columns (NaN if absent).
    """

    models: tuple[str, ...]
    families: tuple[str, ...]
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    scores: np.ndarray
    components: np.ndarray
    evr: np.ndarray
    flops: np.ndarray
    size: np.ndarray


def transform_target(y: np.ndarray, preset: Preset) -> np.ndarray:
    """Min-max normalisation by ``preset.y_range``, then the ``y_transform`` steps in order."""
    if preset.y_range is not None:
        lo, hi = preset.y_range
        y = (y - lo) / (hi - lo)
    for step in preset.y_transform:
        if step == "log":
            y = np.log(y + 1e-9)
        elif step == "logit":
            y = np.log((y + 1e-9) / (1 - y + 1e-9))
        else:
            raise ValueError(f"unknown y_transform {step!r}; choose 'log' or 'logit'")
    return y


@in_float64
def prepare(df: pd.DataFrame, target: str, preset: Preset, *, key=None) -> Prepared:
    """Filter, transform, split, impute and decompose, as the reference does (spec §2, 1-5).

    Args:
        df: a validated table holding the preset's metrics, ``target`` and metadata.
        target: the column to predict.
        preset: analysis settings.
        key: PRNG key for ``split="random"``.

    Returns:
        `Prepared` arrays over the rows of ``df`` after the family filter.

    Raises:
        TableError: missing columns, or fewer than 3 train rows.
    """
    return prepare_many(df, [(target, preset)], key=key)[0]


def prepare_many(
    df: pd.DataFrame, jobs: Sequence[tuple[str, Preset]], *, key=None
) -> list[Prepared]:
    """`prepare` for several (target, preset) jobs; jobs that share rows and metrics get
    their imputation + PCA in ONE vmapped call over their train masks."""
    filtered: dict = {}  # one family filter per distinct family list
    for _, p in jobs:
        if p.families not in filtered:
            keep = df if p.families is None else df[df[FAMILY].isin(p.families)]
            filtered[p.families] = keep.reset_index(drop=True)
    converted: dict = {}  # one column conversion per family list: the union of the jobs' needs
    for t, p in jobs:
        rows = filtered[p.families]
        if t not in rows.columns:
            _missing(rows, t)
        need = converted.setdefault(p.families, [])
        need += [c for c in _needed(t, p) if c in rows.columns and c not in need]
    matrices = {f: (benchmark_matrix(filtered[f], names), names) for f, names in converted.items()}
    splits = [
        _split_rows(filtered[p.families], t, p, key=key, filtered=True, matrix=matrices[p.families])
        for t, p in jobs
    ]
    out: list[Prepared | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, (_, p) in enumerate(jobs):
        groups.setdefault((p.families, p.metrics), []).append(i)
    for members in groups.values():
        bench = splits[members[0]][1]
        trains = np.stack([splits[i][3] for i in members])
        k = min(
            min(jobs[i][1].n_components for i in members), int(trains.sum(1).min()), bench.shape[1]
        )
        scores, comps, evr = _decompose(bench, trains, k)
        for j, i in enumerate(members):
            rows, _, col, train, test, y = splits[i]
            out[i] = Prepared(
                models=tuple(rows[MODEL]),
                families=tuple(rows[FAMILY]) if FAMILY in rows.columns else ("",) * len(rows),
                y=y,
                train=train,
                test=test,
                scores=np.asarray(scores[j]),
                components=np.asarray(comps[j]),
                evr=np.asarray(evr[j]),
                flops=col[FLOPS],
                size=col[SIZE],
            )
    return out


@partial(jax.jit, static_argnames="k")
def _decompose(bench: jax.Array, trains: jax.Array, k: int):
    """Imputation + PCA fitted on each train mask: (scores, components, evr), leading jobs."""

    def one(train):
        filled = pca_em_impute(bench, train).filled
        pca = pca_fit(filled, train, k)
        return pca_transform(pca, filled), pca.components, pca.explained_variance_ratio

    return jax.vmap(one)(trains)


def _needed(target: str, preset: Preset) -> list[str]:
    """Columns a job reads: the preset's metrics, the target, the split column, FLOPs, size."""
    extra = [c for c in (target, preset.split_column, FLOPS, SIZE) if c != "y"]
    return list(dict.fromkeys([*preset.metrics, *extra]))


def _split_rows(
    df: pd.DataFrame, target: str, preset: Preset, *, key=None, filtered=False, matrix=None
):
    """Host half of `prepare`: rows, metric matrix, named columns, split masks, target.

    ``matrix`` = (converted columns, their names) when the caller converted the table once.
    """
    if preset.families is not None and not filtered:
        df = df[df[FAMILY].isin(preset.families)].reset_index(drop=True)
    if target not in df.columns:
        _missing(df, target)
    if matrix is None:
        names = [c for c in _needed(target, preset) if c in df.columns]
        matrix = (benchmark_matrix(df, names), names)
    mat, names = matrix
    missing = [m for m in preset.metrics if m not in names]
    if missing:  # benchmark_matrix names them, with the columns available
        benchmark_matrix(df, missing)
    col = {
        c: mat[:, names.index(c)] if c in names else np.full(len(df), np.nan)
        for c in (target, preset.split_column, FLOPS, SIZE)
    }
    y = transform_target(col[target], preset)
    rows = np.flatnonzero(np.isfinite(y))
    if preset.split == "cutoff":
        split = cutoff_split(col[preset.split_column][rows], preset.threshold)
    elif preset.split == "rank":
        values = y if preset.split_column == "y" else col[preset.split_column]
        split = rank_split(values[rows], preset.test_limit)
    elif preset.split == "random":
        split = random_split(len(rows), preset.test_limit, key=jr.key(0) if key is None else key)
    elif preset.split == "none":
        split = (np.ones(len(rows), bool), np.zeros(len(rows), bool))
    else:
        raise ValueError(f"unknown split {preset.split!r}; choose cutoff, rank, random or none")
    train, test = np.zeros(len(df), bool), np.zeros(len(df), bool)
    train[rows], test[rows] = np.asarray(split[0]), np.asarray(split[1])
    if preset.heldout_models:
        unknown = sorted(set(preset.heldout_models) - set(df[MODEL]))
        if unknown:
            raise TableError(f"heldout_models not in the table: {', '.join(unknown[:5])}")
        train, removed = apply_heldout(train, np.asarray(df[MODEL].isin(preset.heldout_models)))
        train, removed = np.asarray(train), np.asarray(removed)
        if preset.heldout_to_test:
            test = test | removed
    if train.sum() < 3:
        raise TableError(f"{target}: only {int(train.sum())} train rows after the split")
    bench = mat[:, [names.index(m) for m in preset.metrics]]
    return df, bench, col, train, test, y


def _missing(df: pd.DataFrame, target: str) -> np.ndarray:
    raise TableError(
        f"target column {target!r} not in the table (columns: {', '.join(df.columns)})"
    )


def predictor_matrix(
    prep: Prepared, predictors: str, preset: Preset
) -> tuple[np.ndarray, list[str]]:
    """Predictor rows and names for ``"pc"``, ``"pc:k"``, ``"flops"``, ``"size"``.

    Compute predictors enter as natural logs (the reference's "log", whose labels say log10).
    """
    if predictors == "pc" or predictors.startswith("pc:"):
        k = preset.n_pcs if predictors == "pc" else int(predictors[3:])
        if not 1 <= k <= prep.scores.shape[1]:
            raise ValueError(f"{predictors}: k must be in 1..{prep.scores.shape[1]}")
        return prep.scores[:, :k], [f"PC-{i + 1}" for i in range(k)]
    if predictors == "flops":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(prep.flops)[:, None], ["ln FLOPs (1E21)"]
    if predictors == "size":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(prep.size)[:, None], ["ln size (B)"]
    raise ValueError(f"unknown predictors {predictors!r}; use pc, pc:K, flops or size")


class ObsFit(NamedTuple):
    """One observational fit (see `observe_fit`); host arrays, JSON-friendly via `to_dict`.

    Attributes:
        target, predictors, preset: what was fitted.
        models, families: row labels; train, test: masks of the rows fitted / scored.
        y, pred: transformed target and prediction per model (NaN where not scored).
        pred_lo, pred_hi: 5 % / 95 % bootstrap band per model over the converged replicates
            (None without bootstrap; NaN if no replicate converged).
        x: each model on the plot's x axis (log10 reference-equivalent FLOPs for PCs, the ln
            predictor for compute); x_label names it.
        params: link parameters (w0, slopes, floor b).
        form: the fitted form on the x axis, e.g. "(1-0.03) sigmoid(1.84 x - 7.70) + 0.03".
        mse_train, mse_test, mae_train, mae_test, n_train, n_test: metrics.
        equiv: (alpha, beta) of g = alpha log10 FLOPs + beta over the reference family.
        metric_weights: weight of each benchmark in the fitted capability (PC predictors).
        evr: PCA explained-variance ratios.
        curve: (x grid, fitted curve, band lo, band hi) on the x axis (band None without
            bootstrap).
        cutoff_x: the FLOPs cutoff of the split on the x axis (None when not expressible).
        ok: the fit met the solver's tolerance with a finite loss.
        n_boot_failed: bootstrap replicates left out of the bands because their refit did not
            converge (0 without bootstrap).
    """

    target: str
    predictors: tuple[str, ...]
    preset: str
    models: tuple[str, ...]
    families: tuple[str, ...]
    train: np.ndarray
    test: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    pred_lo: np.ndarray | None
    pred_hi: np.ndarray | None
    x: np.ndarray
    x_label: str
    params: dict
    form: str
    mse_train: float
    mse_test: float
    mae_train: float
    mae_test: float
    n_train: int
    n_test: int
    equiv: tuple[float, float] | None
    metric_weights: dict | None
    evr: np.ndarray
    curve: tuple | None
    cutoff_x: float | None
    ok: bool
    n_boot_failed: int = 0

    def to_dict(self) -> dict:
        """Everything as plain JSON types (NaN -> None)."""

        def clean(v):
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            return v

        rows = []
        for i, m in enumerate(self.models):
            if not (self.train[i] or self.test[i]):
                continue
            row = {
                "model": m,
                "family": self.families[i],
                "split": "train" if self.train[i] else "test",
                "y": clean(float(self.y[i])),
                "pred": clean(float(self.pred[i])),
                "x": clean(float(self.x[i])),
            }
            if self.pred_lo is not None:
                row["pred_lo"], row["pred_hi"] = (
                    clean(float(self.pred_lo[i])),
                    clean(float(self.pred_hi[i])),
                )
            rows.append(row)
        return {
            "target": self.target,
            "predictors": list(self.predictors),
            "preset": self.preset,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "mse_train": clean(self.mse_train),
            "mse_test": clean(self.mse_test),
            "mae_train": clean(self.mae_train),
            "mae_test": clean(self.mae_test),
            "params": {k: clean(v) if isinstance(v, float) else v for k, v in self.params.items()},
            "form": self.form,
            "x_label": self.x_label,
            "equiv": None
            if self.equiv is None
            else {"alpha": self.equiv[0], "beta": self.equiv[1]},
            "metric_weights": self.metric_weights,
            "evr": [float(v) for v in self.evr],
            "ok": self.ok,
            "n_boot_failed": self.n_boot_failed,
            "predictions": rows,
        }


def _cutoff_on_axis(preset: Preset, prep: Prepared, predictors: str, equiv: bool) -> float | None:
    """Where a FLOPs cutoff sits on the plot's x axis (log10 for the equivalent axis, ln for
    a FLOPs predictor); None for other splits and axes."""
    if preset.split != "cutoff" or preset.split_column != FLOPS or preset.threshold is None:
        return None
    from ._split import cutoff_threshold

    t = float(cutoff_threshold(prep.flops[np.isfinite(prep.flops)], preset.threshold))
    if equiv:
        return math.log10(t)
    return math.log(t) if predictors == "flops" else None


def _band(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 5 % / 95 % quantiles over axis 0 of the replicates in ``keep`` (NaN entries of
    kept replicates are skipped too); NaN everywhere if none is kept."""
    if not keep.any():
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    lo, hi = np.nanquantile(values[keep], QUANTILES, axis=0)
    return np.asarray(lo), np.asarray(hi)


def bootstrap_weights(
    train: np.ndarray, families: Sequence[str], n: int, *, key, block: str = "model"
) -> np.ndarray:
    """Bootstrap replicate weights over the train rows, shape (n, models).

    ``block="model"`` resamples models with replacement (multinomial counts);
    ``block="family"`` resamples whole families, each row weighted by its family's count.
    """
    rows = np.flatnonzero(train)
    if block == "model":
        idx = np.asarray(jr.randint(key, (n, len(rows)), 0, len(rows)))
        w = np.zeros((n, len(train)))
        np.add.at(w, (np.arange(n)[:, None], rows[idx]), 1.0)
        return w
    if block == "family":
        fams = sorted({families[i] for i in rows})
        fid = np.array([fams.index(families[i]) if train[i] else -1 for i in range(len(train))])
        idx = np.asarray(jr.randint(key, (n, len(fams)), 0, len(fams)))
        counts = np.zeros((n, len(fams)))
        np.add.at(counts, (np.arange(n)[:, None], idx), 1.0)
        return np.where(fid >= 0, counts[:, np.maximum(fid, 0)], 0.0)
    raise ValueError(f"unknown bootstrap block {block!r}; choose 'model' or 'family'")


def _fit(link: Link, preset: Preset, x, y, w, cols, *, key, n_starts: int = 1):
    """The preset's link fit: `fit_links` (solver "lm") or the notebooks' scipy procedure
    (solver "reference", `fit_links_reference`; one start, no key)."""
    if preset.solver == "lm":
        return fit_links(
            link, x, y, w, cols, key=key, loss=preset.loss, delta=preset.delta, n_starts=n_starts
        )
    if preset.solver == "reference":
        return fit_links_reference(link, x, y, w, cols, loss=preset.loss, delta=preset.delta)
    raise ValueError(f"unknown solver {preset.solver!r}; choose 'lm' or 'reference'")


@jax.jit
def _equiv_many(g, log10_flops, ref):
    """(alpha, beta) per replicate: OLS of g on log10 FLOPs over ``ref`` rows."""
    return jax.vmap(lambda gg: fit_equiv_flops(gg, log10_flops, ref))(g)


@in_float64
def observe_fit(
    df: pd.DataFrame,
    target: str,
    predictors: str = "pc",
    preset: Preset | None = None,
    *,
    bootstrap: int = 0,
    block: str = "model",
    seed: int = 0,
    n_starts: int = 1,
    curve_points: int = 100,
) -> ObsFit:
    """Fit one observational scaling law and predict the held-out models.

    Args:
        df: a validated table with the preset's metrics, ``target`` and the metadata columns
            (merge task tables onto a base table with `merge_tables`).
        target: column to predict.
        predictors: "pc" (the preset's k PCs), "pc:K", "flops" or "size".
        preset: analysis settings (default: the README preset).
        bootstrap: replicates for bands (0 = none); all refits are one vmapped call.
        block: "model" or "family" bootstrap.
        seed: PRNG seed (bootstrap, restarts, random splits).
        n_starts: starts per fit for solver "lm" (1 = the linearised start only; a
            "reference" preset runs the notebooks' single start).
        curve_points: grid size of the fitted curve.

    Returns:
        `ObsFit`.
    """
    from ._presets import PRESETS

    preset = PRESETS["readme"] if preset is None else preset
    key_split, key_boot, key_fit = jr.split(jr.key(seed), 3)
    prep = prepare(df, target, preset, key=key_split)
    x, names = predictor_matrix(prep, predictors, preset)
    valid = np.isfinite(x).all(1)
    train, test = prep.train & valid, prep.test & valid
    if train.sum() < x.shape[1] + 2:
        raise TableError(f"{target}: {int(train.sum())} train rows for {x.shape[1]} predictors")
    weights = train[None].astype(float)
    if bootstrap:
        weights = np.concatenate(
            [weights, bootstrap_weights(train, prep.families, bootstrap, key=key_boot, block=block)]
        )
    link = get_link(preset.link)
    fits = _fit(
        link,
        preset,
        np.where(valid[:, None], x, 0.0),
        np.nan_to_num(prep.y),
        weights,
        None,
        key=key_fit,
        n_starts=n_starts,
    )
    best = jax.tree.map(lambda a: a[0], fits.params)
    boot_ok = np.asarray(fits.ok)[1:]  # replicates that enter the bands
    pred_all = np.asarray(
        jax.vmap(link.predict, in_axes=(0, None))(fits.params, np.where(valid[:, None], x, 0.0))
    )
    pred = np.where(train | test, pred_all[0], np.nan)
    err = pred - prep.y

    def stat(fn, mask):
        return float(fn(err[mask])) if mask.any() else float("nan")

    g = np.asarray(link.capability(best, np.where(valid[:, None], x, 0.0)))
    is_pc = names[0].startswith("PC-")
    equiv, metric_weights = None, None
    b = float(link.floor(best))
    if is_pc:
        ref = np.array([f == preset.ref_family for f in prep.families]) & valid & (train | test)
        ref &= np.isfinite(prep.flops) & (prep.flops > 0)
        log10_flops = np.log10(np.where(ref, prep.flops, 1.0))
        if ref.sum() >= 2:
            eq = fit_equiv_flops(g, log10_flops, ref)
            equiv = (float(eq.alpha), float(eq.beta))
            x_axis = (g - equiv[1]) / equiv[0]
            x_label = f"log10 {preset.ref_family}-equivalent FLOPs (1E21)"
        else:
            x_axis, x_label = g, "capability g = w0 + w.PC"
        k = x.shape[1]
        weights_d = np.asarray(best.w) @ prep.components[:k]
        metric_weights = {m: float(v) for m, v in zip(preset.metrics, weights_d)}
    else:
        x_axis, x_label = x[:, 0], names[0]

    curve = None
    if x.shape[1] == 1 or equiv is not None:
        span = x_axis[train | test]
        grid = np.linspace(
            span.min() - 0.25 * np.ptp(span), span.max() + 0.25 * np.ptp(span), curve_points
        )
        if equiv is not None:
            gs = jax.vmap(link.capability, in_axes=(0, None))(
                fits.params, np.where(valid[:, None], x, 0.0)
            )
            ab = _equiv_many(gs, log10_flops, ref)
            g_grid = ab.alpha[:, None] * grid[None, :] + ab.beta[:, None]
        else:
            g_grid = fits.params.w0[:, None] + fits.params.w[:, :1] * grid[None, :]
        curves = np.asarray(jax.vmap(link.apply)(fits.params, g_grid))
        lo = hi = None
        if bootstrap:
            lo, hi = _band(curves[1:], boot_ok)
        curve = (grid, curves[0], lo, hi)

    pred_lo = pred_hi = None
    if bootstrap:
        lo, hi = _band(pred_all[1:], boot_ok)
        pred_lo, pred_hi = np.where(train | test, lo, np.nan), np.where(train | test, hi, np.nan)

    if equiv is not None:
        slope, icpt = equiv
        form = f"sigmoid({slope:.2f} x {'+' if icpt >= 0 else '-'} {abs(icpt):.2f})"
    else:
        slope, icpt = float(best.w[0]), float(best.w0)
        form = (
            f"sigmoid({slope:.2f} x {'+' if icpt >= 0 else '-'} {abs(icpt):.2f})"
            if x.shape[1] == 1
            else "sigmoid(w0 + w.x)"
        )
    if link.shape == "linear":
        form = form.replace("sigmoid", "")
    elif link.shape == "exp":
        form = form.replace("sigmoid", "exp")
    elif link.floor_width:
        form = f"(1 - {b:.3f}) {form} + {b:.3f}"

    return ObsFit(
        target=target,
        predictors=tuple(names),
        preset=preset.name,
        models=prep.models,
        families=prep.families,
        train=train,
        test=test,
        y=prep.y,
        pred=pred,
        pred_lo=pred_lo,
        pred_hi=pred_hi,
        x=np.where(train | test, x_axis, np.nan),
        x_label=x_label,
        params={"w0": float(best.w0), "w": [float(v) for v in best.w], "b": b},
        form=form,
        mse_train=stat(lambda e: np.mean(e**2), train),
        mse_test=stat(lambda e: np.mean(e**2), test),
        mae_train=stat(lambda e: np.mean(np.abs(e)), train),
        mae_test=stat(lambda e: np.mean(np.abs(e)), test),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        equiv=equiv,
        metric_weights=metric_weights,
        evr=prep.evr,
        curve=curve,
        cutoff_x=_cutoff_on_axis(preset, prep, predictors, equiv is not None),
        ok=bool(fits.ok[0]),
        n_boot_failed=int((~boot_ok).sum()),
    )


class Grid(NamedTuple):
    """Result of `observe_grid`.

    Attributes:
        table: one row per (target, predictors): target, preset, predictors, n_train, n_test,
            mse_train, mse_test, and with bootstrap mse_test_lo / mse_test_hi (5 % / 95 % over
            the converged replicates) and n_boot_failed (replicates left out).
        params: `LinkParams` with leading axes (jobs, predictor sets, 1 + replicates).
        ok: fit flags, same leading axes.
    """

    table: pd.DataFrame
    params: LinkParams
    ok: np.ndarray


@partial(jax.jit, static_argnames="link")
def _predict_grid(link: Link, params: LinkParams, X: jax.Array) -> jax.Array:
    """Predictions of (jobs, sets, replicates) fits on their (jobs, sets) predictor rows."""
    one = jax.vmap(link.predict, in_axes=(0, None))  # replicates share the rows
    return jax.vmap(jax.vmap(one))(params, X)


@in_float64
def observe_grid(
    df: pd.DataFrame,
    jobs: Sequence[tuple[str, Preset]],
    predictor_sets: Sequence[str] = ("size", "flops", "pc"),
    *,
    bootstrap: int = 0,
    block: str = "model",
    seed: int = 0,
) -> Grid:
    """Fit every (target, preset) job with every predictor set, plus bootstrap refits, in one
    vmapped call.

    Each job is prepared on the host (its own split, imputation and PCA, as the reference
    fits them per target); predictor sets are padded to a common width with predictor masks,
    rows to a common length with zero weights, and replicate weights stacked, so a single
    `fit_links` call fits jobs x predictor sets x (1 + bootstrap) problems.

    Args:
        df: the table (see `observe_fit`).
        jobs: (target column, preset) pairs; all presets must share link, loss, delta and
            solver.
        predictor_sets: as in `observe_fit`.
        bootstrap: bootstrap replicates per (job, predictor set).
        block: "model" or "family" bootstrap.
        seed: PRNG seed.

    Returns:
        `Grid`.
    """
    presets = [p for _, p in jobs]
    if len({(p.link, p.loss, p.delta, p.solver) for p in presets}) != 1:
        raise ValueError("observe_grid: every preset must share link, loss, delta and solver")
    link = get_link(presets[0].link)
    key_boot, key_fit = jr.split(jr.key(seed))
    preps = prepare_many(df, jobs)
    n = max(len(p.models) for p in preps)
    mats = [
        [predictor_matrix(prep, ps, p) for ps in predictor_sets]
        for prep, (_, p) in zip(preps, jobs)
    ]
    k = max(m[0].shape[1] for row in mats for m in row)
    shape = (len(jobs), len(predictor_sets))
    X = np.zeros(shape + (n, k))
    cols = np.zeros(shape + (k,), bool)
    W = np.zeros(shape + (1 + bootstrap, n))
    Y = np.zeros((len(jobs), n))
    trains = np.zeros(shape + (n,), bool)
    tests = np.zeros(shape + (n,), bool)
    boot_keys = jr.split(key_boot, len(jobs) * len(predictor_sets)).reshape(shape)
    for i, prep in enumerate(preps):
        m = len(prep.models)
        Y[i, :m] = np.nan_to_num(prep.y)
        for j, (x, _) in enumerate(mats[i]):
            valid = np.isfinite(x).all(1)
            X[i, j, :m, : x.shape[1]] = np.where(valid[:, None], x, 0.0)
            cols[i, j, : x.shape[1]] = True
            trains[i, j, :m], tests[i, j, :m] = prep.train & valid, prep.test & valid
            W[i, j, 0, :m] = trains[i, j, :m]
            if bootstrap:
                W[i, j, 1:, :m] = bootstrap_weights(
                    trains[i, j, :m], prep.families, bootstrap, key=boot_keys[i, j], block=block
                )
    fits = _fit(link, presets[0], X[:, :, None], Y[:, None, None], W, cols[:, :, None], key=key_fit)
    pred = np.asarray(_predict_grid(link, fits.params, X))  # (jobs, sets, 1 + B, n)
    sq = (pred - Y[:, None, None]) ** 2
    ok = np.asarray(fits.ok)
    rows = []
    for i, (target, p) in enumerate(jobs):
        for j, ps in enumerate(predictor_sets):
            tr, te = trains[i, j], tests[i, j]
            row = {
                "target": target,
                "preset": p.name,
                "predictors": ps,
                "n_train": int(tr.sum()),
                "n_test": int(te.sum()),
                "mse_train": float(sq[i, j, 0, tr].mean()),
                "mse_test": float(sq[i, j, 0, te].mean()) if te.any() else float("nan"),
            }
            if bootstrap:
                keep = ok[i, j, 1:]
                row["n_boot_failed"] = int((~keep).sum())
                if te.any():
                    lo, hi = _band(sq[i, j, 1:][:, te].mean(1), keep)
                    row["mse_test_lo"], row["mse_test_hi"] = float(lo), float(hi)
            rows.append(row)
    return Grid(table=pd.DataFrame(rows), params=fits.params, ok=ok)


class Selection(NamedTuple):
    """Result of `observe_select`: one row per budget.

    Attributes:
        table: budget, J, n_models, families (" + "-joined), found; plus ``random_J`` (mean J
            of the random baseline sets) when requested.
        n_pool: models in the pool; n_combinations: family sets enumerated (exhaustive only).
        evr: explained-variance ratios of the pool PCA.
    """

    table: pd.DataFrame
    n_pool: int
    n_combinations: int | None
    evr: np.ndarray


@in_float64
def observe_select(
    df: pd.DataFrame,
    budgets: Sequence[int] = (4, 8, 12, 16, 20, 24, 28, 32, 36),
    *,
    include: Sequence[str] = ("Llama-2",),
    max_size: float | None = None,
    families: Sequence[str] | None = None,
    n_pcs: int = 3,
    max_families: int = 10,
    method: str = "exhaustive",
    n_random: int = 0,
    seed: int = 0,
) -> Selection:
    """Choose which model families to evaluate so the capability fit extrapolates best.

    The pool is ``df`` (optionally models with size <= ``max_size``); its ALL8 scores are
    imputed and decomposed as the reference's default preprocessing, and the first ``n_pcs``
    PC scores P define the V-optimal objective J(S) = -tr(P^T P (P_S^T P_S)^-1) over family
    sets S (spec §3). Families are enumerated in ``families`` order (default: the evaluated
    base families, then any others in table order).

    Args:
        df: a base benchmark table with ALL8 scores and ``Model Family``.
        budgets: budgets in models.
        include: families always in the set.
        max_size: keep models of at most this many billion parameters.
        families: enumeration order of the families.
        n_pcs: PC scores in the design.
        max_families: largest set size (the include families count).
        method: "exhaustive", "greedy" or "exchange" (for pools too large to enumerate).
        n_random: random baseline sets per budget (0 = none).
        seed: PRNG seed of the random baseline.

    Returns:
        `Selection`.
    """
    from ._constants import ALL8, EVAL_BASE_MODEL_FAMILIES
    from ._subset import exchange_select, greedy_select, random_subsets, v_optimal
    from ._tables import family_codes

    if max_size is not None:
        df = df[df[SIZE] <= max_size].reset_index(drop=True)
    order = list(families or EVAL_BASE_MODEL_FAMILIES)
    order += [f for f in dict.fromkeys(df[FAMILY]) if f not in order]
    missing = [f for f in include if f not in set(df[FAMILY])]
    if missing:
        raise TableError(f"include: no model of family {', '.join(map(repr, missing))} in the pool")
    ids, names = family_codes(df, order)
    X = benchmark_matrix(df, ALL8)
    train = np.ones(len(df), bool)
    imputed = pca_em_impute(X, train).filled
    pca = pca_fit(imputed, train, min(5, len(df), len(ALL8)))
    P = np.asarray(pca_transform(pca, imputed))[:, :n_pcs]
    inc = [names.index(f) for f in include]
    search = {"exhaustive": v_optimal, "greedy": greedy_select, "exchange": exchange_select}
    if method not in search:
        raise ValueError(f"unknown method {method!r}; choose exhaustive, greedy or exchange")
    res = search[method](P, ids, len(names), list(budgets), max_families=max_families, include=inc)
    rows = []
    for i, b in enumerate(budgets):
        fams = [names[j] for j in np.asarray(res.families[i]) if j >= 0]
        rows.append(
            {
                "budget": int(b),
                "J": float(res.J[i]),
                "n_models": int(res.n_models[i]),
                "families": " + ".join(fams),
                "found": bool(res.found[i]),
            }
        )
    table = pd.DataFrame(rows)
    if n_random:
        rnd = random_subsets(
            P,
            ids,
            len(names),
            list(budgets),
            key=jr.key(seed),
            n_random=n_random,
            max_families=max_families,
            include=inc,
        )
        J = np.where(np.asarray(rnd.valid), np.asarray(rnd.J), np.nan)
        table["random_J"] = np.nanmean(J, axis=1)
    return Selection(
        table=table,
        n_pool=len(df),
        n_combinations=getattr(res, "n_combinations", None),
        evr=np.asarray(pca.explained_variance_ratio),
    )
