"""Command line: ``jaxlaw fit | select | sweep | observe | reproduce | gradex | s2l``.

    jaxlaw fit flan --law rectified --plot fits.png          # a dataset name or a CSV path
    jaxlaw select flan --budget 204800 --method ats
    jaxlaw sweep --models ckpt/a ckpt/b --train train.jsonl --eval test.jsonl \
        --sizes 200,400,800,1600 --out sweep.csv             # then: jaxlaw select sweep.csv
    jaxlaw observe fit --preset lbv2_math --targets leaderboard_v2 --target leaderboard_math_hard
    jaxlaw reproduce rectified --data ../shared/data --out results/rectified

TABLE is a CSV in the loss-table format (model rows; integer subset-size columns; optional
``size`` and ``family``) or the name of a reference table (flan, wmt19, gigaword) read from
``--data`` / $JAXLAW_DATA / ../shared/data. Bad input ends with one ``jaxlaw: error:`` line.
"""

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

from jaxlaw.data import DATASETS, LossTable, TableError, load_dataset, load_table, take_models
from jaxlaw.laws import LAWS

from ._tables import print_table

METHOD_CHOICES = ("ats", "ourfit", "vanillafit", "zeroshot", "subtuning", "modelsize")
FEATURE_LABEL = {
    "ats": "pred L(T)",
    "ourfit": "pred L(T)",
    "vanillafit": "pred L(T)",
    "zeroshot": "zero-shot L",
    "subtuning": "L(M)",
    "modelsize": "ln size",
}


def _table(arg: str, data: str | None) -> LossTable:
    if Path(arg).exists() or arg.lower() not in DATASETS:
        if not Path(arg).exists():
            raise TableError(f"{arg}: no such file, and not one of {', '.join(DATASETS)}")
        return load_table(arg)
    return load_dataset(arg.lower(), root=data)


def _params(n: float) -> str:
    """A parameter count for people: 1.6B, 124M, 23K."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:,.1f}{unit}" if unit == "B" else f"{n / scale:,.0f}{unit}"
    return f"{n:.0f}"


def cmd_fit(a: argparse.Namespace) -> None:
    from jaxlaw.laws import get_law
    from jaxlaw.plots import plot_fits
    from jaxlaw.selection import fit_table, fitted_curves

    table = _table(a.table, a.data)
    fit = fit_table(
        table,
        a.law,
        zero_shot=a.zero_shot,
        faithful=a.faithful,
        loss=a.loss,
        delta=a.delta,
        n_inits=a.n_inits,
        seed=a.seed,
    )
    law = get_law(a.law)
    described = []
    for i in range(len(table.models)):
        p = type(fit.params)(*(leaf[i] for leaf in fit.params))
        described.append(law.describe(p))
    keys = list(described[0])
    header = ["model", "points", *keys, "rmsd_log", "ok"]
    rows = [
        [
            m,
            str(int(fit.mask[i].sum())),
            *(f"{d[k]:.4g}" for k in keys),
            f"{fit.rmsd[i]:.5f}",
            "yes" if fit.ok[i] else "NO",
        ]
        for i, (m, d) in enumerate(zip(table.models, described))
    ]
    mode = "reference procedure" if a.faithful else "multi-start"
    print_table(
        f"{a.law} law, {mode} fit on {table.name} ({len(table.models)} models)", header, rows
    )
    print(f"mean RMSD under log: {fit.rmsd.mean():.5f}")
    if a.law in ("rectified", "rectified_alpha"):
        print(
            "D_l is in units of D^beta; D_l_examples = D_l^(1/beta) is the pre-learned data "
            "size in examples."
        )
    if a.out:
        import pandas as pd

        out = pd.DataFrame(described, index=pd.Index(table.models, name="model"))
        out["rmsd_log"], out["ok"], out["points"] = fit.rmsd, fit.ok, fit.mask.sum(1)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(a.out)
        print(f"wrote {a.out}")
    if a.plot:
        pos = table.sizes[table.sizes > 0]
        grid = np.geomspace(pos.min() / 4 if a.zero_shot else pos.min(), pos.max(), 200)
        curves = {a.law: (grid, fitted_curves(fit, grid))}
        plot_fits(
            a.plot,
            table.models,
            table.sizes,
            table.loss,
            fit.mask,
            curves,
            title=f"{table.name}: {a.law} law ({mode})",
            rmsd={a.law: fit.rmsd},
        )
        print(f"wrote {a.plot}")


def cmd_select(a: argparse.Namespace) -> None:
    from jaxlaw.selection import display_name, pearson, rel_acc, select

    table = _table(a.table, a.data)
    if a.max_size is not None:
        if table.n_params is None:
            raise TableError(f"{table.name}: --max-size needs a 'size' column")
        table = take_models(
            table, [m for m, s in zip(table.models, table.n_params) if s < a.max_size]
        )
        if len(table.models) < 2:
            raise TableError(f"{table.name}: fewer than 2 models below --max-size {a.max_size:g}")
    target = int(a.predict if a.predict is not None else table.sizes.max())
    options = {}
    if a.method == "ats":
        options = dict(k=a.k, delta=a.delta, faithful=not a.fixed)
    elif a.method in ("ourfit", "vanillafit"):
        options = dict(mode=a.mode, seed=a.seed)
    elif a.method == "modelsize":
        options = dict(sign=a.sign)
    sel = select(table, a.method, a.budget, target=target, **options)
    truth = None
    if target in table.sizes.tolist():
        col = table.loss[:, table.sizes.tolist().index(target)]
        truth = col if np.isfinite(col).all() else None
    order = np.argsort(sel.rank, kind="stable")
    true_rank = None if truth is None else np.argsort(np.argsort(truth, kind="stable")) + 1
    header = ["rank", "model", FEATURE_LABEL[a.method]]
    if table.n_params is not None:
        header.insert(2, "params")
    if truth is not None:
        header += [f"true L({target})", "true rank"]
    rows = []
    for i in order:
        r = [f"{sel.rank[i]:g}", table.models[i]]
        if table.n_params is not None:
            r.append(_params(table.n_params[i]))
        r.append(f"{sel.feature[i]:.4f}")
        if truth is not None:
            r += [f"{truth[i]:.4f}", str(true_rank[i])]
        rows.append(r)
    print_table(
        f"{display_name(a.method)} ranking of {len(table.models)} models on {table.name}: "
        f"budget M = {a.budget}, target T = {target} (1/{target // a.budget})",
        header,
        rows,
    )
    print(f"chosen: {table.models[sel.chosen]}")
    if truth is not None:
        best = int(np.argmin(truth))
        print(f"truly best at T: {table.models[best]} (L = {truth[best]:.4f})")
        print(
            f"RelAcc {rel_acc(sel.chosen, truth):.4f}   "
            f"PearCorr {pearson(sel.feature.astype(np.float32), truth.astype(np.float32)):.4f}"
        )


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


def _print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2, allow_nan=False))


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
        _print_json(
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
        _print_json(fit.to_dict())
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
        _print_json(
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


def _experiment(name: str) -> Path:
    script = Path(__file__).resolve().parents[1] / "experiments" / name / "run.py"
    if not script.exists():
        raise FileNotFoundError(
            f"{script} not found: `jaxlaw reproduce` runs the experiment "
            "scripts of a jaxlaw source checkout"
        )
    return script


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def cmd_sweep(a: argparse.Namespace) -> None:
    from jaxlaw.data import load_task
    from jaxlaw.lora import DEFAULT_TARGETS, LoraConfig
    from jaxlaw.sweep import SweepConfig, run_sweep
    from jaxlaw.training import TrainConfig, data_mesh, maybe_initialize_distributed

    maybe_initialize_distributed()  # a no-op unless launched as one process of a multi-host job
    fields = dict(prompt_field=a.prompt_field, response_field=a.response_field)
    train_task, eval_task = load_task(a.train, **fields), load_task(a.eval, **fields)
    config = SweepConfig(
        sizes=a.sizes,
        lora=LoraConfig(
            targets=a.targets or DEFAULT_TARGETS, rank=a.rank, alpha=a.alpha, dropout=a.lora_dropout
        ),
        train=TrainConfig(
            batch_size=a.batch_size,
            accum_steps=a.accum_steps,
            lr=a.lr,
            warmup_steps=a.warmup,
            weight_decay=a.weight_decay,
        ),
        epochs=a.epochs,
        min_steps=a.min_steps,
        max_steps=a.max_steps,
        seq_len=a.seq_len,
        seed=a.seed,
    )
    mesh = data_mesh() if a.data_parallel else None
    table = run_sweep(
        a.models, train_task, eval_task, config, out=a.out, progress=not a.quiet, mesh=mesh
    )
    header = ["model", "params", *[str(s) for s in table.sizes]]
    rows = [
        [m, _params(n), *[f"{v:.4f}" for v in row]]
        for m, n, row in zip(table.models, table.n_params, table.loss)
    ]
    print_table(f"{a.out}: test loss (nats/token) by fine-tuning subset size", header, rows)
    budget = table.sizes[table.sizes > 0][len(table.sizes[table.sizes > 0]) // 2]
    print(f"wrote {a.out}; rank the models with: jaxlaw select {a.out} --budget {budget}")


def cmd_reproduce(a: argparse.Namespace) -> None:
    args = ["--out", a.out]
    if a.data:
        args += ["--data", a.data]
    if a.study == "rectified":
        args += ["--k", str(a.k), "--delta", str(a.delta)]
        if a.max_size is not None:
            args += ["--max-size", str(a.max_size)]
    if a.quick:
        args.append("--quick")
    module = runpy.run_path(str(_experiment(a.study)))
    module["main"](args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxlaw",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    data_help = "folder holding rectified/*.csv (default $JAXLAW_DATA, else ../shared/data)"

    f = sub.add_parser("fit", help="fit a scaling law to every model of a loss table")
    f.add_argument("table", help="loss-table CSV, or flan | wmt19 | gigaword")
    f.add_argument("--data", help=data_help)
    f.add_argument("--law", default="rectified", choices=sorted(LAWS))
    f.add_argument(
        "--faithful",
        action="store_true",
        help="the reference's own fitting procedure (rectified, vanilla)",
    )
    f.add_argument(
        "--zero-shot",
        action="store_true",
        help="also fit the size-0 column at D = 0 (rectified laws)",
    )
    f.add_argument("--loss", default="mse", choices=("mse", "huber"))
    f.add_argument("--delta", type=float, default=1e-3, help="Huber threshold (log space)")
    f.add_argument("--n-inits", type=int, default=None, help="starts per curve (default: grid)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", help="write parameters, D_l and RMSD per model to this CSV")
    f.add_argument("--plot", help="write points and fitted curves (log-log) to this PNG")
    f.set_defaults(run=cmd_fit)

    s = sub.add_parser("select", help="rank candidate models from a small-data budget")
    s.add_argument("table", help="loss-table CSV, or flan | wmt19 | gigaword")
    s.add_argument("--data", help=data_help)
    s.add_argument("--budget", type=int, required=True, help="budget M: largest subset size used")
    s.add_argument(
        "--predict",
        type=int,
        default=None,
        help="target size T whose loss is predicted (default: largest size)",
    )
    s.add_argument("--method", default="ats", choices=METHOD_CHOICES)
    s.add_argument(
        "--max-size", type=float, default=None, help="keep models with fewer parameters than this"
    )
    s.add_argument("--k", type=int, default=3, help="AtS minimum points")
    s.add_argument("--delta", type=float, default=5.0, help="AtS threshold (residual sds)")
    s.add_argument(
        "--fixed",
        action="store_true",
        help="AtS without the reference's off-by-one (keep all points if none rejected)",
    )
    s.add_argument(
        "--mode",
        default="multistart",
        choices=("multistart", "reference"),
        help="OurFit/VanillaFit fitting procedure",
    )
    s.add_argument(
        "--sign",
        default="loss",
        choices=("loss", "reference"),
        help="ModelSize feature: -ln size (comparable) or the reference's +ln size",
    )
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=cmd_select)

    w = sub.add_parser(
        "sweep",
        help="LoRA-fine-tune candidate models on nested subsets; write a loss table",
        description="For every model directory (config.json + *.safetensors + tokenizer.json): "
        "the zero-shot test loss and the test loss after LoRA fine-tuning on nested random "
        "subsets of each size, written as a loss table (column 0 = zero-shot) that "
        "`jaxlaw select` reads. Cells already in --out are kept, so a stopped sweep resumes.",
    )
    w.add_argument("--models", nargs="+", required=True, metavar="DIR", help="model directories")
    w.add_argument("--train", required=True, help="fine-tuning pool (.jsonl/.json/.csv)")
    w.add_argument("--eval", required=True, help="test set every cell is scored on")
    w.add_argument("--sizes", type=_sizes, required=True, help="subset sizes, e.g. 200,400,800")
    w.add_argument("--out", required=True, help="loss-table CSV to write (and resume from)")
    w.add_argument("--prompt-field", default="prompt")
    w.add_argument("--response-field", default="response")
    w.add_argument(
        "--targets",
        default=None,
        help="regex over module paths (blocks.N.attn.qkv ...) choosing the LoRA projections "
        "(default: query and value, or the fused qkv)",
    )
    w.add_argument("--rank", type=int, default=8)
    w.add_argument("--alpha", type=float, default=16.0)
    w.add_argument("--lora-dropout", type=float, default=0.0)
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--batch-size", type=int, default=16)
    w.add_argument("--accum-steps", type=int, default=1)
    w.add_argument("--warmup", type=int, default=10, help="warmup steps")
    w.add_argument("--weight-decay", type=float, default=0.0)
    w.add_argument("--epochs", type=float, default=3.0, help="passes over each subset")
    w.add_argument("--min-steps", type=int, default=20)
    w.add_argument("--max-steps", type=int, default=1000)
    w.add_argument("--seq-len", type=int, default=None, help="default: smallest bucket that fits")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--quiet", action="store_true", help="no progress bars")
    w.add_argument(
        "--data-parallel",
        action="store_true",
        help="split every batch over all devices (a 'data' mesh axis; multi-host launches too)",
    )
    w.set_defaults(run=cmd_sweep)

    o = sub.add_parser("observe", help="observational scaling laws (Ruan et al. 2024)")
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
            help="folder holding obscaling/*.csv (default $JAXLAW_DATA, else ../shared/data)",
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
    op.set_defaults(run=cmd_observe_pca)

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
    of.set_defaults(run=cmd_observe_fit)

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
    os_.set_defaults(run=cmd_observe_select)

    r = sub.add_parser("reproduce", help="reproduce a paper's tables and figures")
    r.add_argument("study", choices=("rectified", "obscaling"))
    r.add_argument("--data", help=data_help)
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument(
        "--max-size", type=float, default=None, help="keep models with fewer parameters than this"
    )
    r.add_argument("--k", type=int, default=3, help="AtS minimum points")
    r.add_argument("--delta", type=float, default=5.0, help="AtS threshold")
    r.add_argument(
        "--quick", action="store_true", help="skip the slow reference-procedure VanillaFit seeds"
    )
    r.set_defaults(run=cmd_reproduce)

    from .gradex import add_parser as add_gradex
    from .s2l import add_parser as add_s2l

    add_gradex(sub)
    add_s2l(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (TableError, ValueError, FileNotFoundError, KeyError) as e:
        print(f"jaxlaw: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
