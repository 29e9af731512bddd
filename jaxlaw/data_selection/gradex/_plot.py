"""GradEx figures (matplotlib, Agg backend): estimated vs real loss, and source scores.

Entry points: `plot_estimates` (one point per subset: GradEx estimate against the loss of a
real fine-tune, with the identity line), `plot_scores` (random-ensemble score of every source,
coloured by a known label and marking the selected ones) and `plot_taylor` (first- vs
zeroth-order error of the linearised log-odds against the step size).
"""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman (average ranks; ties are rare for real-valued losses)."""

    def ranks(x):
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        return r

    def pearson(x, y):
        x, y = x - x.mean(), y - y.mean()
        d = np.sqrt((x @ x) * (y @ y))
        return float(x @ y / d) if d > 0 else float("nan")

    return pearson(a, b), pearson(ranks(a), ranks(b))


def plot_estimates(
    path: str | Path,
    estimate: np.ndarray,
    truth: np.ndarray,
    *,
    color: np.ndarray | None = None,
    color_label: str = "",
    constant: float | None = None,
    title: str = "GradEx estimate vs real fine-tuning",
) -> Path:
    """Scatter of estimated against real fine-tuned losses, one point per subset.

    Args:
        path: output PNG.
        estimate: ``[subsets]`` GradEx estimates (nats/token).
        truth: ``[subsets]`` losses after real fine-tuning on the same subsets.
        color: optional ``[subsets]`` values that colour the points (e.g. number of noisy
            sources in the subset).
        color_label: colour-bar label.
        constant: the constant predictor L(theta*), drawn as a horizontal line.
        title: figure title; Pearson r and Spearman rho are appended.

    Returns:
        The written path.

    Raises:
        ValueError: mismatched or too short inputs.
    """
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    if e.shape != t.shape or e.ndim != 1 or e.size < 2:
        raise ValueError(f"estimate {e.shape} and truth {t.shape} must be [subsets], >= 2")
    r, rho = _corr(e, t)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    sc = ax.scatter(
        t,
        e,
        c=color,
        cmap="viridis" if color is not None else None,
        s=28,
        edgecolor="k",
        linewidth=0.4,
    )
    if color is not None:
        fig.colorbar(sc, ax=ax, label=color_label)
    lo = min(e.min(), t.min())
    hi = max(e.max(), t.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", lw=1, label="y = x")
    if constant is not None:
        ax.axhline(constant, color="tab:red", lw=1, ls=":", label="L(theta*) (constant)")
    ax.set_xlabel("real fine-tuned loss (nats/token)")
    ax.set_ylabel("GradEx estimate (nats/token)")
    ax.set_title(
        f"{title}\nPearson r = {r:.3f}, Spearman = {rho:.3f}, {e.size} subsets", fontsize=9
    )
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_scores(
    path: str | Path,
    sources: Sequence[str],
    scores: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: tuple[str, str] = ("clean", "noisy"),
    selected: np.ndarray | None = None,
    title: str = "random-ensemble scores (mean estimated loss of subsets holding the source)",
) -> Path:
    """Bar chart of per-source scores (lower = better), optionally coloured by a known label.

    Args:
        path: output PNG.
        sources: source names, ``[sources]``.
        scores: ``[sources]`` scores (NaN for sources no subset contained: drawn empty).
        labels: optional ``[sources]`` bool; True bars use the second colour/name.
        label_names: legend names of False and True labels.
        selected: optional ``[sources]`` bool; selected bars get a hatched edge and a star.
        title: figure title.

    Returns:
        The written path.

    Raises:
        ValueError: mismatched lengths.
    """
    s = np.asarray(scores, float)
    if s.shape != (len(sources),):
        raise ValueError(f"{len(sources)} sources but scores of shape {s.shape}")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.34 * len(sources) + 1.5), 3.8))
    x = np.arange(len(sources))
    colors = ["tab:blue"] * len(sources)
    if labels is not None:
        colors = ["tab:orange" if b else "tab:blue" for b in np.asarray(labels, bool)]
    finite = np.isfinite(s)
    base = np.nanmin(s) if finite.any() else 0.0
    span = (np.nanmax(s) - base) if finite.any() else 1.0
    bottom = base - 0.1 * (span or 1.0)
    ax.bar(x[finite], s[finite] - bottom, bottom=bottom, color=np.array(colors)[finite])
    if selected is not None:
        sel = np.asarray(selected, bool) & finite
        ax.scatter(
            x[sel], s[sel] + 0.03 * (span or 1.0), marker="*", color="k", s=40, label="selected"
        )
    if labels is not None:
        for name, col in zip(label_names, ("tab:blue", "tab:orange")):
            ax.bar([0], [0], bottom=bottom, color=col, label=name)
    ax.set_xticks(x, list(sources), rotation=70, fontsize=7)
    ax.set_ylabel("score (estimated loss)")
    ax.set_title(title, fontsize=9)
    if labels is not None or selected is not None:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_taylor(path: str | Path, rows: Sequence[dict]) -> Path:
    """Log-log MSRE of the first- and zeroth-order predictions of the log-odds against rho.

    Args:
        path: output PNG.
        rows: dicts with ``rho``, ``direction`` (one line pair per kind), ``first_order`` and
            ``zeroth_order`` (as `jaxlaw.data_selection.gradex.GradexResult.taylor`).

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, name in enumerate(dict.fromkeys(r["direction"] for r in rows)):
        sub = sorted((r for r in rows if r["direction"] == name), key=lambda r: r["rho"])
        rho = [r["rho"] for r in sub]
        marker = "os^v"[i % 4]
        ax.loglog(rho, [r["first_order"] for r in sub], marker + "-", label=f"{name}: 1st order")
        ax.loglog(rho, [r["zeroth_order"] for r in sub], marker + "--", label=f"{name}: 0th")
    ax.axhline(1e-2, color="grey", lw=0.8)
    ax.set_xlabel("rho = ||D|| / ||theta*_LoRA||")
    ax.set_ylabel("MSRE of the log-odds")
    ax.set_title("Taylor check (spec 4.5 item 1)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
