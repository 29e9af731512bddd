"""Reproduce the observational-scaling analyses (PCA, leaderboard v2, selection, R²) with jaxlaw.

Run: ``python experiments/obscaling/run.py --out DIR [--data DIR] [--quick]`` (also
``jaxlaw reproduce obscaling ...``). Writes to DIR: pca.csv (table, component, evr, loadings),
lbv2.csv (target, predictor, n_train, n_test, mse_train, mse_test, 90% bootstrap band of
mse_test), selection.csv (setting, budget, J, n_models, families, random_J), rsq.csv (family,
r2, n_models), lbv2_*.png, selection.png, rsq.png, summary.md and config.json.
"""

import argparse
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlaw.observational import (
    ALL8,
    INSTRUCT7,
    LBV2_TARGETS,
    NONGSM7,
    PRESETS,
    benchmark_matrix,
    family_codes,
    family_r2,
    load_benchmarks,
    merge_tables,
    observe_fit,
    observe_grid,
    observe_select,
    pca_em_impute,
    pca_fit,
    pca_transform,
)
from jaxlaw.plots import plot_observational

from .config import ObscalingConfig

PCA_TABLES = {  # name -> (table, loader kwargs, metrics)
    "base77_all8": ("base", {}, ALL8),
    "base77_nongsm7": ("base", {}, NONGSM7),
    "base148_all8": ("base", dict(include_preregistered=True, eval_families_only=False), ALL8),
    "sub10b92_all8": ("sub10b", dict(include_preregistered=True, eval_families_only=False), ALL8),
    "instruct27": ("instruct", {}, INSTRUCT7),
}


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def pca_rows(cfg, t0):
    rows, scores = [], None
    for name, (table, kw, metrics) in PCA_TABLES.items():
        df = load_benchmarks(table, root=cfg.data, **kw)
        X = benchmark_matrix(df, metrics)
        train = np.ones(len(df), bool)
        filled = pca_em_impute(X, train).filled
        pca = pca_fit(filled, train, 5)
        for i, (evr, comp) in enumerate(zip(pca.explained_variance_ratio, pca.components)):
            rows.append(
                {
                    "table": name,
                    "n_models": len(df),
                    "component": f"PC-{i + 1}",
                    "evr": float(evr),
                    **{m: float(v) for m, v in zip(metrics, comp)},
                }
            )
        if name == "base77_all8":
            scores = (df, np.asarray(pca_transform(pca, filled)))
    log("PCA of five benchmark tables", t0)
    return pd.DataFrame(rows), scores


def rsq(df, scores, out: Path):
    ids, names = family_codes(df)
    with np.errstate(divide="ignore", invalid="ignore"):
        lf = np.log10(df["FLOPs (1E21)"].to_numpy(float))
    res = family_r2(scores[:, 0], lf, ids, n_families=len(names))
    rows = [
        {"family": n, "r2": float(r), "n_models": int(c)}
        for n, r, c, v in zip(names, res.r2, res.count, res.valid)
        if v
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for j, n in enumerate(names):
        m = (ids == j) & np.isfinite(lf)
        if m.sum() >= 3:
            ax.plot(lf[m], scores[m, 0], "o-", ms=3, lw=1, label=n)
    ax.set_xlabel("log10 training FLOPs (1E21)")
    ax.set_ylabel("PC-1 (general capability)")
    ax.set_title(f"PC-1 vs compute within families: mean R² {float(res.mean):.3f}", fontsize=9)
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "rsq.png", dpi=110)
    plt.close(fig)
    return pd.DataFrame(rows + [{"family": "MEAN", "r2": float(res.mean), "n_models": len(rows)}])


def selection(cfg, t0, out: Path):
    base = load_benchmarks("base", root=cfg.data)
    frames = []
    for setting, max_size in (("guide", None), ("guide_7b", 7.0)):
        s = observe_select(
            base,
            cfg.budgets,
            include=("Llama-2",),
            max_size=max_size,
            n_random=cfg.n_random,
            seed=cfg.seed,
        )
        frames.append(s.table.assign(setting=setting, n_combinations=s.n_combinations))
    sel = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for setting, g in sel.groupby("setting"):
        ax.plot(g.budget, -g.J, "o-", label=f"{setting}: V-optimal")
        ax.plot(g.budget, -g.random_J, "x--", label=f"{setting}: random (mean of {cfg.n_random})")
    ax.set_yscale("log")
    ax.set_xlabel("budget (models evaluated)")
    ax.set_ylabel("-J = summed prediction variance / sigma²")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "selection.png", dpi=110)
    plt.close(fig)
    log("V-optimal selection (77 models, and models <= 7B)", t0)
    return sel[["setting", "budget", "J", "n_models", "families", "random_J", "n_combinations"]]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--quick", action="store_true", help="smoke config: 50 bootstrap replicates")
    a = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    cfg = (
        ObscalingConfig.smoke(out=a.out, data=a.data)
        if a.quick
        else ObscalingConfig(out=a.out, data=a.data)
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the BTLM-3B data error, reported by the loader
        pca, (df77, scores) = pca_rows(cfg, t0)
        base148 = load_benchmarks(
            "base", root=cfg.data, include_preregistered=True, eval_families_only=False
        )
    pca.to_csv(out / "pca.csv", index=False)
    rsq(df77, scores, out).to_csv(out / "rsq.csv", index=False)

    lbv2 = merge_tables(base148, load_benchmarks("leaderboard_v2", root=cfg.data))
    jobs = [(t, PRESETS[k]) for k, t in LBV2_TARGETS.items()]
    grid = observe_grid(
        lbv2, jobs, ("size", "flops", "pc:3"), bootstrap=cfg.bootstrap, seed=cfg.seed
    )
    table = grid.table.rename(columns={"predictors": "predictor"})
    table.to_csv(out / "lbv2.csv", index=False)
    for key, target in LBV2_TARGETS.items():
        fit = observe_fit(
            lbv2, target, "pc:3", PRESETS[key], bootstrap=cfg.bootstrap, seed=cfg.seed
        )
        plot_observational(out / f"lbv2_{key.split('_')[1]}.png", fit)
    log(f"leaderboard v2: 3 targets x 3 predictors, {cfg.bootstrap} bootstrap refits each", t0)

    sel = selection(cfg, t0, out)
    sel.to_csv(out / "selection.csv", index=False)
    evr = pca[pca.table == "base77_all8"].evr.round(4).tolist()
    md = [
        "# Observational scaling reproduction",
        "",
        f"PCA (77 models x ALL8) explained variance: {evr}",
        "",
        "## Leaderboard v2 (test MSE)",
        "",
        table.round(6).to_markdown(index=False),
        "",
        "## V-optimal selection",
        "",
        sel.round(2).to_markdown(index=False),
    ]
    (out / "summary.md").write_text("\n".join(md))
    (out / "config.json").write_text(
        json.dumps({"config": asdict(cfg), "devices": [str(d) for d in jax.devices()]}, indent=2)
    )
    print(table.round(6).to_string(index=False))
    log(f"wrote {out}/: pca.csv lbv2.csv selection.csv rsq.csv summary.md *.png", t0)


if __name__ == "__main__":
    main()
