"""``jaxlaw observe pca | fit | select``: observational scaling laws (Ruan et al. 2024)."""

import argparse

import numpy as np

from ._tables import print_json, print_table


def _obs_table(a: argparse.Namespace, preset=None):
    """The benchmark table of an observe command, with --targets merged onto it."""
    from jaxlaw.observational import load_benchmarks, merge_tables

    name = a.table or (preset.table if preset is not None else "base")
    kw = {}
    if name in ("base", "sub10b"):
        kw = dict(
            include_preregistered=a.include_preregistered
            or (preset is not None and preset.include_preregistered),
            eval_families_only=not a.all_families and (preset is None or preset.eval_families_only),
        )
    df = load_benchmarks(name, root=a.data, **kw)
    if getattr(a, "targets", None):
        df = merge_tables(df, load_benchmarks(a.targets, root=a.data))
    return df


def cmd_observe_pca(a: argparse.Namespace) -> None:
    from jaxlaw.observational import ALL8, INSTRUCT7, NONGSM7, benchmark_matrix, pca_em_impute
    from jaxlaw.observational import pca_fit as fit_pca

    df = _obs_table(a)
    metrics = {"all8": ALL8, "nongsm7": NONGSM7, "instruct7": INSTRUCT7}.get(
        a.metrics.lower(), tuple(m.strip() for m in a.metrics.split(","))
    )
    X = benchmark_matrix(df, metrics)
    train = np.ones(len(df), bool)
    imp = pca_em_impute(X, train)
    pca = fit_pca(imp.filled, train, min(a.components, len(metrics)))
    evr, comps = np.asarray(pca.explained_variance_ratio), np.asarray(pca.components)
    if a.json:
        print_json(
            {
                "n_models": len(df),
                "metrics": list(metrics),
                "explained_variance_ratio": evr.tolist(),
                "cumulative": np.cumsum(evr).tolist(),
                "loadings": {
                    f"PC-{i + 1}": dict(zip(metrics, map(float, c))) for i, c in enumerate(comps)
                },
                "imputed_cells": int(np.isnan(X).sum()),
                "imputation_iterations": int(imp.n_iter),
            }
        )
        return
    header = ["component", "EVR", "cumulative", *metrics]
    rows = [
        [f"PC-{i + 1}", f"{evr[i]:.4f}", f"{np.cumsum(evr)[i]:.4f}", *(f"{v:+.3f}" for v in c)]
        for i, c in enumerate(comps)
    ]
    print_table(
        f"PCA of {len(metrics)} benchmarks over {len(df)} models "
        f"({int(np.isnan(X).sum())} cells imputed in {int(imp.n_iter)} iterations)",
        header,
        rows,
    )


def cmd_observe_fit(a: argparse.Namespace) -> None:
    from jaxlaw.observational import get_preset, observe_fit
    from jaxlaw.plots import plot_observational

    preset = get_preset(a.preset)
    df = _obs_table(a, preset)
    fit = observe_fit(
        df, a.target, a.predictors, preset, bootstrap=a.bootstrap, block=a.block, seed=a.seed
    )
    if a.plot:
        plot_observational(a.plot, fit)
    if a.json:
        print_json(fit.to_dict())
        return
    print(
        f"{fit.target} ~ {', '.join(fit.predictors)}   preset {fit.preset}   "
        f"train {fit.n_train} / test {fit.n_test} models"
    )
    print(
        f"MSE train {fit.mse_train:.3e}   MSE test {fit.mse_test:.3e}   "
        f"(MAE {fit.mae_train:.3e} / {fit.mae_test:.3e}){'' if fit.ok else '   FIT NOT CONVERGED'}"
    )
    print(f"fitted form on x = {fit.x_label}:  y = {fit.form}")
    if preset.y_range is not None or preset.y_transform:
        print(f"(target normalised: range {preset.y_range}, transforms {list(preset.y_transform)})")
    if fit.metric_weights:
        top = sorted(fit.metric_weights.items(), key=lambda kv: -abs(kv[1]))
        print("benchmark weights in the capability: " + ", ".join(f"{m} {w:+.2f}" for m, w in top))
    band = fit.pred_lo is not None
    header = ["model", "family", "x", "true", "predicted"] + (["90% band"] if band else [])
    rows = []
    for i in np.flatnonzero(fit.test)[np.argsort(fit.x[fit.test])]:
        r = [
            fit.models[i],
            fit.families[i],
            f"{fit.x[i]:.2f}",
            f"{fit.y[i]:.4f}",
            f"{fit.pred[i]:.4f}",
        ]
        if band:
            r.append(f"[{fit.pred_lo[i]:.4f}, {fit.pred_hi[i]:.4f}]")
        rows.append(r)
    if rows:
        print_table(f"held-out predictions ({len(rows)} models)", header, rows)
    if a.plot:
        print(f"wrote {a.plot}")


def cmd_observe_select(a: argparse.Namespace) -> None:
    from jaxlaw.observational import SELECTION_PRESETS, observe_select

    df = _obs_table(a)
    budgets = [int(b) for b in a.budgets.split(",")]
    kw = dict(include=(), max_size=None, max_families=10)
    if a.preset:
        if a.preset not in SELECTION_PRESETS:
            choices = ", ".join(SELECTION_PRESETS)
            raise ValueError(f"unknown selection preset {a.preset!r}; choose one of {choices}")
        kw.update(SELECTION_PRESETS[a.preset])
    if a.include:
        kw["include"] = tuple(a.include)
    if a.max_size is not None:
        kw["max_size"] = a.max_size
    if a.max_families is not None:
        kw["max_families"] = a.max_families
    sel = observe_select(df, budgets, method=a.method, n_random=a.random, seed=a.seed, **kw)
    if a.json:
        print_json(
            {
                "n_pool": sel.n_pool,
                "n_combinations": sel.n_combinations,
                "method": a.method,
                "include": list(kw["include"]),
                "budgets": sel.table.to_dict(orient="records"),
            }
        )
        return
    header = ["budget", "J", "models", "families"] + (["random J (mean)"] if a.random else [])
    rows = [
        [str(r.budget), f"{r.J:.2f}", str(r.n_models), r.families]
        + ([f"{r.random_J:.2f}"] if a.random else [])
        for r in sel.table.itertuples()
    ]
    total = "" if sel.n_combinations is None else f", {sel.n_combinations} family sets searched"
    print_table(
        f"V-optimal families to evaluate ({a.method}; pool {sel.n_pool} models{total})",
        header,
        rows,
    )


def add_arguments(o: argparse.ArgumentParser) -> None:
    osub = o.add_subparsers(dest="observe_command", required=True)

    def obs_common(q):
        q.add_argument(
            "--table",
            default=None,
            help="benchmark table: base | sub10b | instruct | a CSV with a Model column "
            "(default: the preset's)",
        )
        q.add_argument(
            "--data",
            help="folder holding obscaling/*.csv (default: $JAXLAW_DATA, else the bundled tables)",
        )
        q.add_argument(
            "--include-preregistered",
            action="store_true",
            help="keep the 20 pre-registered models of the base table",
        )
        q.add_argument(
            "--all-families",
            action="store_true",
            help="keep every family of the base table, not only the evaluated ones",
        )
        q.add_argument(
            "--json", action="store_true", help="print the whole result as one JSON object"
        )

    op = osub.add_parser("pca", help="explained variance and loadings of the capability PCs")
    obs_common(op)
    op.add_argument("--metrics", default="all8", help="all8 | nongsm7 | instruct7 | col,col,...")
    op.add_argument("--components", type=int, default=5)
    op.set_defaults(float64=True, run=cmd_observe_pca)

    of = osub.add_parser(
        "fit", help="fit a target from capability PCs or compute, predict held-out models"
    )
    obs_common(of)
    of.add_argument("--target", required=True, help="column to predict")
    of.add_argument(
        "--targets",
        default=None,
        help="task table merged onto --table by Model (e.g. leaderboard_v2, emergent, a CSV)",
    )
    of.add_argument("--predictors", default="pc", help="pc | pc:K | flops | size")
    of.add_argument(
        "--preset", default="readme", help="analysis preset (see jaxlaw.observational.PRESETS)"
    )
    of.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates for bands")
    of.add_argument(
        "--block",
        default="model",
        choices=("model", "family"),
        help="bootstrap models or whole families",
    )
    of.add_argument("--seed", type=int, default=0)
    of.add_argument("--plot", help="write points, fitted curve, band and cutoff to this PNG")
    of.set_defaults(float64=True, run=cmd_observe_fit)

    os_ = osub.add_parser("select", help="choose which model families to evaluate (V-optimal)")
    obs_common(os_)
    os_.add_argument("--budgets", default="4,8,12,16,20,24,28,32,36", help="budgets in models")
    os_.add_argument("--include", action="append", help="family always selected (repeatable)")
    os_.add_argument(
        "--max-size",
        type=float,
        default=None,
        help="pool: models of at most this many billion parameters",
    )
    os_.add_argument("--max-families", type=int, default=None, help="largest set (default 10)")
    os_.add_argument("--preset", default=None, help="selection setting: guide | guide_7b")
    os_.add_argument("--method", default="exhaustive", choices=("exhaustive", "greedy", "exchange"))
    os_.add_argument("--random", type=int, default=0, help="random baseline sets per budget")
    os_.add_argument("--seed", type=int, default=0)
    os_.set_defaults(float64=True, run=cmd_observe_select)
