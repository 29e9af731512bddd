"""``jaxlaw fit`` and ``jaxlaw select``: fine-tuning scaling laws on a loss table."""

import argparse
from pathlib import Path

import numpy as np

from jaxlaw.data import (
    DATASETS,
    MEASURED,
    LossTable,
    TableError,
    load_dataset,
    load_table,
    take_models,
)

from ._tables import human_count, print_table

DATA_HELP = "folder holding rectified/*.csv (default: $JAXLAW_DATA, else the bundled tables)"
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
    if Path(arg).exists() or arg.lower() not in DATASETS + MEASURED:
        if not Path(arg).exists():
            names = ", ".join(DATASETS + MEASURED)
            raise TableError(f"{arg}: no such file, and not one of {names}")
        return load_table(arg)
    return load_dataset(arg.lower(), root=data)


def cmd_fit(a: argparse.Namespace) -> None:
    from jaxlaw.laws import get_law
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
        from jaxlaw.plots import plot_fits

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
    if target <= a.budget:
        raise ValueError(
            f"--predict {target} is at or below the budget {a.budget}: the question is which "
            "model is best at a larger size than the budget (raise --predict or lower --budget)"
        )
    if a.uncertainty or a.json:
        _select_uncertain(a, table, target)
        return
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
            r.append(human_count(table.n_params[i]))
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


def _select_uncertain(a: argparse.Namespace, table: LossTable, target: int) -> None:
    """``select --uncertainty [--json]``: bands, P(best) and the pick's expected regret."""
    import json

    from jaxlaw.selection import display_name, select_uncertain

    laws = {"ourfit": "rectified", "vanillafit": "vanilla"}
    if a.method not in laws:
        raise ValueError(
            f"--uncertainty needs a law-based method (--method ourfit or vanillafit), "
            f"not {a.method}"
        )
    u = select_uncertain(table, a.budget, target, law=laws[a.method], n_boot=a.n_boot, seed=a.seed)
    entries = [
        {"model": m, "pred": p, "lo": lo, "hi": hi, "p_best": pb}
        for m, p, lo, hi, pb in zip(u.models, *(v.tolist() for v in (u.pred, u.lo, u.hi, u.p_best)))
    ]
    if a.json:
        print(json.dumps({
            "models": entries, "chosen": u.models[u.chosen], "expected_regret": u.regret,
            "level": u.level, "budget": a.budget, "target": target, "law": laws[a.method],
            "n_boot": a.n_boot, "dropped_replicates": int(u.dropped.sum()),
        }))  # fmt: skip
        return
    pct = f"{u.level:.0%}"
    header = ["model", f"pred L({target})", f"{pct} lo", f"{pct} hi", "P(best)"]
    order = np.argsort(u.pred, kind="stable")
    rows = [
        [u.models[i], f"{u.pred[i]:.4f}", f"{u.lo[i]:.4f}", f"{u.hi[i]:.4f}", f"{u.p_best[i]:.3f}"]
        for i in order
    ]
    print_table(
        f"{display_name(a.method)} with {a.n_boot} residual-bootstrap replicates on {table.name}: "
        f"budget M = {a.budget}, target T = {target}",
        header,
        rows,
    )
    print(f"chosen: {u.models[u.chosen]} (P(best) {u.p_best[u.chosen]:.3f}, expected regret "
          f"{u.regret:.4f}; {int(u.dropped.sum())} replicates dropped: not converged)")  # fmt: skip


def add_fit(f: argparse.ArgumentParser) -> None:
    from jaxlaw.laws import LAWS

    data_help = DATA_HELP
    f.add_argument("table", help="loss-table CSV, or flan | wmt19 | gigaword | smollm2_gsm8k")
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
    f.set_defaults(float64=True, run=cmd_fit)


def add_select(s: argparse.ArgumentParser) -> None:
    data_help = DATA_HELP
    s.add_argument("table", help="loss-table CSV, or flan | wmt19 | gigaword | smollm2_gsm8k")
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
    s.add_argument(
        "--uncertainty",
        action="store_true",
        help="bootstrap bands on L(T), P(best) per model and the pick's expected regret "
        "(--method ourfit or vanillafit)",
    )
    s.add_argument("--json", action="store_true", help="print the --uncertainty result as JSON")
    s.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates per model")
    s.set_defaults(float64=True, run=cmd_select)
