"""The demo's verdict: each method's pick and regret, each prediction's error, and the figure."""

from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxlaw.data import LossTable
from jaxlaw.plots import plot_fits
from jaxlaw.selection import display_name, fit_table, fitted_curves, rank_models, select

from .config import DemoConfig

METHODS = tuple(display_name(m) for m in ("zeroshot", "subtuning", "ats", "ourfit"))
PREDICTORS = ("AtS", "OurFit")  # the methods whose feature is a predicted L(T)


def _show(df: pd.DataFrame, title: str) -> None:
    print(title)
    print("      " + df.to_string().replace("\n", "\n      "))
    print()


def report(table: LossTable, config: DemoConfig, out: Path) -> dict:
    """Print the three tables, write ``fits.png`` and return the numbers for results.json."""
    budget, target = config.budget, config.target
    truth = table.loss[:, table.column(target)]
    best = int(np.argmin(truth))
    # Scaling-law fits run in float64; the models were trained in float32 before this point.
    with jax.enable_x64(True):
        picks = {m: select(table, m, budget, target=target) for m in METHODS}
        fit_points = np.where(table.sizes <= budget, table.loss, np.nan)
        fit = fit_table(table._replace(loss=fit_points), "rectified", zero_shot=True,
                        seed=config.seed)  # fmt: skip
        grid = np.geomspace(table.sizes[table.sizes > 0].min() / 4, target, 200)
        curves = fitted_curves(fit, grid)

    ranks = (
        pd.DataFrame(
            {str(d): rank_models(table.loss[:, j]) for j, d in enumerate(table.sizes)},
            index=pd.Index(table.models, name="candidate"),
        )
        .rename_axis(columns="D =")
        .map(lambda r: f"{r:g}")
    )  # ties share their mean rank
    _show(ranks, "Ranks (1 = lowest test loss) after fine-tuning on D examples:")

    rows = {}
    for m, sel in picks.items():
        rows[m] = {
            "pick": table.models[sel.chosen],
            f"L({target}) of pick": truth[sel.chosen],
            "regret": truth[sel.chosen] - truth[best],
            "right": "yes" if sel.chosen == best else "no",
        }
    picks_df = pd.DataFrame(rows).T.rename_axis("method")
    for col in (f"L({target}) of pick", "regret"):
        picks_df[col] = picks_df[col].map(lambda v: f"{v:.4f}")
    _show(picks_df, f"Picks under M = {budget} (best at T = {target}: {table.models[best]}, "
          f"L = {truth[best]:.4f}; regret = L(pick) - L(best), nats/token):")  # fmt: skip

    pred = pd.DataFrame(index=pd.Index(table.models, name="candidate"))
    pred[f"measured L({target})"] = truth
    for m in PREDICTORS:
        pred[f"{m} predicted"] = picks[m].feature
        pred[f"{m} error"] = picks[m].feature - truth
    _show(pred.round(4), f"Predicted vs measured L({target}) (error = predicted - measured):")

    plot_fits(
        out / "fits.png",
        table.models,
        table.sizes,
        table.loss,
        np.broadcast_to(table.sizes <= budget, table.loss.shape),
        {"rectified law (OurFit)": (grid, curves)},
        title=f"Rectified law fitted on the zero-shot loss and D <= {budget}; hollow points "
        "held out",
    )
    return {
        "budget": budget,
        "target": target,
        "models": list(table.models),
        "sizes": table.sizes.tolist(),
        "loss": table.loss.tolist(),
        "best": table.models[best],
        "picks": {m: {"pick": r["pick"], "regret": float(r["regret"])} for m, r in rows.items()},
        "predicted": {m: picks[m].feature.tolist() for m in PREDICTORS},
    }
