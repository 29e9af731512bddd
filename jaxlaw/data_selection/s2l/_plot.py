"""The S2L selection figure (matplotlib, Agg): cluster-mean loss trajectories and the per-cluster
allocation. Entry point: `plot_selection` (what ``jaxlaw s2l select --plot`` draws)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jaxtyping import Float, Int  # noqa: E402


def plot_selection(
    path: str | Path,
    losses: Float[np.ndarray, "rows ckpts"],
    labels: Int[np.ndarray, " rows"],
    selected: Int[np.ndarray, " selected"],
    steps: Int[np.ndarray, " ckpts"],
    *,
    title: str = "",
    max_lines: int = 100,
) -> Path:
    """Two panels: each cluster's mean trajectory (line width by cluster size, colour by the
    share of the cluster that was taken), and cluster size vs rows taken, clusters sorted by size.

    Args:
        path: output PNG (parent folders are created).
        losses: mean loss per example and checkpoint, ``[rows, ckpts]``.
        labels: cluster of every row.
        selected: chosen row indices.
        steps: checkpoint steps (x axis of the left panel).
        title: figure title.
        max_lines: draw at most this many cluster lines (the largest).

    Returns:
        The written path.
    """
    losses, labels = np.asarray(losses, np.float64), np.asarray(labels)
    ids, inv = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inv, minlength=len(ids))
    taken = np.bincount(inv[np.asarray(selected)], minlength=len(ids))
    means = np.zeros((len(ids), losses.shape[1]))
    np.add.at(means, inv, losses)
    means /= sizes[:, None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis")
    order = np.argsort(-sizes, kind="stable")[:max_lines]
    widths = 0.5 + 4.5 * np.sqrt(sizes / sizes.max())
    for c in order[::-1]:  # largest drawn last, on top
        ax1.plot(steps, means[c], lw=widths[c], color=cmap(taken[c] / sizes[c]), alpha=0.8)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax1, label="share of cluster taken")
    ax1.set(
        xlabel="proxy step",
        ylabel="mean response-token loss (nats)",
        title=f"cluster-mean trajectories ({len(ids)} clusters; width ~ sqrt(size))",
    )
    by_size = np.argsort(sizes, kind="stable")
    x = np.arange(len(ids))
    ax2.bar(x, sizes[by_size], color="0.8", label="cluster size")
    ax2.bar(x, taken[by_size], color="C3", label=f"taken ({int(taken.sum())} rows)")
    ax2.set_yscale("log")
    ax2.set(xlabel="cluster (by size)", ylabel="rows", title="allocation (smallest first)")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
