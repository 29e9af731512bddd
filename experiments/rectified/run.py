"""Reproduce the Rectified Scaling Law paper's Tables 1-3 and figures with jaxlaw.

Run: ``python experiments/rectified/run.py --out DIR [--data DIR] [--max-size N] [--k K]
[--delta D] [--quick]`` (also ``jaxlaw reproduce rectified ...``). Writes to DIR:
rmsd.csv (dataset, model, law, rmsd_log), selection.csv (the paper's procedures: AtS,
reference-mode OurFit/VanillaFit, ModelSize with the reference sign), selection_multistart.csv
(jaxlaw's multi-start OurFit/VanillaFit, ModelSize with the loss sign), tables.md, fits_*.png,
rmsd.png, selection.png and config.json.
"""

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxlaw.data import load_dataset
from jaxlaw.plots import plot_fits, plot_selection
from jaxlaw.selection import fit_table, fitted_curves, selection_grid

from .config import RectifiedConfig

LAWS = {  # name in rmsd.csv -> (law, faithful)
    "rectified": ("rectified", False),
    "rectified_reference": ("rectified", True),
    "vanilla": ("vanilla", False),
    "vanilla_reference": ("vanilla", True),
}
METHODS = ["AtS", "OurFit", "VanillaFit", "ZeroShot", "SubTuning", "ModelSize"]
FIG3_MODELS = (
    "cerebras/Cerebras-GPT-111M",
    "cerebras/Cerebras-GPT-256M",
    "cerebras/Cerebras-GPT-1.3B",
    "MBZUAI/LaMini-GPT-124M",
    "gpt2",
    "google/mt5-large",
)


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def rmsd_study(tables, out: Path, cfg: RectifiedConfig, t0: float) -> pd.DataFrame:
    rows = []
    for name, table in tables.items():
        fits = {}
        for label, (law, faithful) in LAWS.items():
            fits[label] = fit_table(table, law, faithful=faithful, seed=cfg.seed)
            rows += [
                {"dataset": name.upper(), "model": m, "law": label, "rmsd_log": r}
                for m, r in zip(table.models, fits[label].rmsd)
            ]
        keep = [i for i, m in enumerate(table.models) if m in FIG3_MODELS] or list(range(6))
        grid = np.geomspace(200, cfg.target, 200)
        curves = {
            lab: (grid, fitted_curves(fits[lab], grid)[keep]) for lab in ("rectified", "vanilla")
        }
        plot_fits(
            out / f"fits_{name}.png",
            [table.models[i] for i in keep],
            table.sizes,
            table.loss[keep],
            fits["rectified"].mask[keep],
            curves,
            title=f"{name.upper()}: rectified vs vanilla law (multi-start fits)",
            rmsd={lab: fits[lab].rmsd[keep] for lab in curves},
        )
        log(f"{name}: fitted {len(LAWS)} laws x {len(table.models)} models", t0)
    return pd.DataFrame(rows)


def plot_rmsd(df: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    wide = df.pivot_table(index=["dataset", "model"], columns="law", values="rmsd_log")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (x, y) in zip(
        axes, [("vanilla_reference", "rectified_reference"), ("vanilla", "rectified")]
    ):
        for ds, sub in wide.groupby(level="dataset"):
            ax.scatter(sub[x], sub[y], s=18, alpha=0.7, label=ds)
        lim = [0, max(wide[x].max(), wide[y].max()) * 1.05]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel(f"RMSD under log, vanilla law ({x.replace('_', ' ')})")
        ax.set_ylabel(f"RMSD under log, rectified law ({y.replace('_', ' ')})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(df: pd.DataFrame, title: str) -> str:
    lines = [f"### {title}", ""]
    for metric in ("PearCorr", "RelAcc"):
        sub = df[df.metric == metric]
        wide = sub.pivot_table(
            index=["dataset", "method"], columns="ratio", values="value", sort=False
        )
        wide = (100 * wide).round(1)
        wide.columns = [f"1/{c}" for c in wide.columns]
        lines += [f"**{metric}** (x100)", "", wide.reset_index().to_markdown(index=False), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--max-size", type=float, default=None)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--delta", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="smoke config: budgets 1/8 and 1/512 only")
    a = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    kw = dict(out=a.out, data=a.data, max_size=a.max_size, k=a.k, delta=a.delta)
    cfg = RectifiedConfig.smoke(**kw) if a.quick else RectifiedConfig(**kw)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables = {name: load_dataset(name, root=cfg.data) for name in cfg.datasets}
    log(f"loaded {', '.join(f'{n} ({len(t.models)} models)' for n, t in tables.items())}", t0)

    rmsd = rmsd_study(tables, out, cfg, t0)
    rmsd.to_csv(out / "rmsd.csv", index=False)
    plot_rmsd(rmsd, out / "rmsd.png")
    means = rmsd.pivot_table(index="dataset", columns="law", values="rmsd_log", sort=False)

    common = dict(
        budgets=cfg.budgets,
        target=cfg.target,
        max_size=cfg.max_size,
        k=cfg.k,
        delta=cfg.delta,
        seed=cfg.seed,
    )
    paper = selection_grid(tables, METHODS, mode="reference", sign="reference", **common)
    paper.to_csv(out / "selection.csv", index=False)
    log("selection grid, the paper's procedures", t0)
    ours = selection_grid(tables, METHODS, mode="multistart", sign="loss", **common)
    ours.to_csv(out / "selection_multistart.csv", index=False)
    log("selection grid, jaxlaw's multi-start fits", t0)
    plot_selection(out / "selection.png", paper)

    md = [
        "# Rectified Scaling Law reproduction",
        "",
        "### Mean RMSD under log (14 fine-tuned points per curve)",
        "",
        means.round(5).reset_index().to_markdown(index=False),
        "",
        markdown(paper, "Selection, the paper's procedures (Tables 1 and 2)"),
        markdown(ours, "Selection, multi-start OurFit/VanillaFit, ModelSize with the loss sign"),
    ]
    (out / "tables.md").write_text("\n".join(md))
    (out / "config.json").write_text(
        json.dumps({"config": asdict(cfg), "devices": [str(d) for d in jax.devices()]}, indent=2)
    )
    print(means.round(5).to_string())
    print(markdown(paper, "Selection, the paper's procedures"))
    log(f"wrote {out}/: rmsd.csv selection.csv selection_multistart.csv tables.md *.png", t0)


if __name__ == "__main__":
    main()
