"""Figures (matplotlib, Agg backend): fitted curves on log-log axes and selection summaries.

Entry points: `plot_fits` (points + fitted law per model, like the paper's figure 3) and
`plot_selection` (PearCorr per method and budget ratio, like figure 1a / Table 1).
"""

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fits(
    path: str | Path,
    models: Sequence[str],
    sizes: np.ndarray,
    loss: np.ndarray,
    mask: np.ndarray,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str = "",
    rmsd: dict[str, np.ndarray] | None = None,
) -> Path:
    """Small multiples: observed losses and fitted curves per model, log-log axes.

    Args:
        path: output PNG.
        models: model names, one panel each.
        sizes: subset sizes, shape (points,); a size-0 point is drawn at the left edge.
        loss: observed losses, shape (models, points); NaN = missing.
        mask: points used by the fit, shape (models, points); others are drawn hollow.
        curves: law name -> (grid of D, shape (grid,); fitted loss, shape (models, grid)).
        title: figure title.
        rmsd: law name -> per-model RMSD under log, shown in the legend.

    Returns:
        The written path.
    """
    n = len(models)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    positive = sizes > 0
    left = sizes[positive].min() / 4
    x_obs = np.where(positive, sizes, left)
    styles = ["-", "--", ":", "-."]
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        used = mask[i] & np.isfinite(loss[i])
        ax.scatter(x_obs[used], loss[i, used], s=14, color="C0", zorder=3, label="used")
        # An unfitted zero-shot point (often 10x the fine-tuned losses) would squash the panel.
        unused = ~mask[i] & np.isfinite(loss[i]) & positive
        ax.scatter(
            x_obs[unused],
            loss[i, unused],
            s=14,
            facecolors="none",
            edgecolors="C0",
            zorder=3,
            label="not fitted",
        )
        for j, (law, (grid, fitted)) in enumerate(curves.items()):
            label = law if rmsd is None else f"{law} (RMSD {rmsd[law][i]:.4f})"
            ax.plot(grid, fitted[i], styles[j % 4], color=f"C{j + 1}", lw=1.4, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        ax.set_title(models[i], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
        if i % cols == 0:
            ax.set_ylabel("test loss", fontsize=8)
        if i >= n - cols:
            ax.set_xlabel("fine-tuning examples D", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_selection(path: str | Path, grid: pd.DataFrame, *, metric: str = "PearCorr") -> Path:
    """Bars of ``metric`` per method, one panel per dataset, x = budget ratio 1/gamma.

    Args:
        path: output PNG.
        grid: a `jaxlaw.selection.selection_grid` frame.
        metric: "PearCorr" or "RelAcc".

    Returns:
        The written path.
    """
    g = grid[grid.metric == metric]
    datasets = list(dict.fromkeys(g.dataset))
    methods = list(dict.fromkeys(g.method))
    ratios = sorted(set(g.ratio))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.4), squeeze=False)
    width = 0.8 / len(methods)
    for ax, ds in zip(axes[0], datasets):
        for j, m in enumerate(methods):
            sub = g[(g.dataset == ds) & (g.method == m)].set_index("ratio").reindex(ratios)
            ax.bar(np.arange(len(ratios)) + j * width, 100 * sub.value, width, label=m)
        ax.set_xticks(np.arange(len(ratios)) + 0.4 - width / 2, [f"1/{r}" for r in ratios])
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(ds)
        ax.set_xlabel("budget ratio M/T")
        ax.set_ylabel(f"{metric} (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_observational(path: str | Path, fit, *, title: str = "") -> Path:
    """Observed vs fitted score on the fit's x axis: train and held-out points, the fitted
    curve, its bootstrap band and the split boundary (like the paper's figures).

    Args:
        path: output PNG.
        fit: a `jaxlaw.observational.ObsFit`.
        title: figure title (default: target and test MSE).

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if fit.curve is not None:
        grid, mid, lo, hi = fit.curve
        if lo is not None:
            ax.fill_between(grid, lo, hi, color="C1", alpha=0.2, label="90% bootstrap band")
        ax.plot(grid, mid, color="C1", lw=1.8, label=f"fit: {fit.form}")
    for mask, style, label in (
        (fit.train, dict(color="C0"), "train"),
        (fit.test, dict(color="C3", marker="s"), "held out"),
    ):
        if mask.any():
            ax.scatter(
                fit.x[mask],
                fit.y[mask],
                s=22,
                zorder=3,
                label=f"{label} ({int(mask.sum())})",
                **style,
            )
            if fit.pred_lo is not None and label == "held out":
                ax.errorbar(
                    fit.x[mask],
                    fit.pred[mask],
                    yerr=[fit.pred[mask] - fit.pred_lo[mask], fit.pred_hi[mask] - fit.pred[mask]],
                    fmt="none",
                    ecolor="C3",
                    alpha=0.5,
                    lw=1,
                    label="prediction 90% band",
                )
    if fit.cutoff_x is not None:
        ax.axvline(fit.cutoff_x, color="grey", ls="--", lw=1, label="FLOPs cutoff of the split")
    ax.set_xlabel(fit.x_label)
    ax.set_ylabel(fit.target)
    ax.set_title(
        title
        or f"{fit.target} from {', '.join(fit.predictors)}: "
        f"MSE train {fit.mse_train:.2e}, test {fit.mse_test:.2e}",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
