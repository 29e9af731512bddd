"""`make demo`: rank candidate LLMs for fine-tuning from a small data budget.

With the reference data present (``$JAXLAW_DATA`` or ``../shared/data``) it runs
``jaxlaw select flan --budget 204800 --method ats`` on the paper's FLAN table: 30 models,
fine-tuned on subsets up to 1/8 of the full 1,638,400 examples, ranked by their extrapolated
full-data loss and compared with the truth. Without the data it says so and fits a set of
curves it generates from the rectified law itself, then ranks those.
"""

import os
import sys
from pathlib import Path

import numpy as np


def synthetic_demo() -> None:
    import jax.numpy as jnp
    import pandas as pd

    from .cli import main
    from .laws import RectifiedPaper, from_paper, rectified

    rng = np.random.default_rng(0)
    sizes = np.array([0] + [200 * 2**j for j in range(14)])
    rows = {}
    for i in range(8):
        # Bigger "models" pre-learn more (larger D_l) and reach a lower floor E.
        d_l, beta, e = 10 ** rng.uniform(0.5, 2.5), rng.uniform(0.25, 0.6), rng.uniform(0.6, 1.4)
        p = from_paper(RectifiedPaper(*(jnp.asarray(v) for v in (3.0 * d_l, d_l, beta, e))))
        with np.errstate(divide="ignore"):
            log_l = np.asarray(rectified(p, jnp.log(jnp.asarray(sizes, jnp.float64))))
        rows[f"synthetic-{i}"] = np.exp(log_l + rng.normal(0, 2e-3, log_l.shape))
    df = pd.DataFrame(rows, index=[str(s) for s in sizes]).T
    df.index.name = "model"
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "jaxlaw_demo_synthetic.csv"
    df.to_csv(path)
    print(f"Wrote 8 synthetic loss curves to {path}.\n")
    main(["fit", str(path), "--law", "rectified"])
    print()
    main(["select", str(path), "--budget", "25600", "--method", "ats"])


def run() -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .cli import main
    from .data import data_root

    root = data_root()
    print("jaxlaw demo: which pretrained model should we fine-tune?\n")
    if not (root / "rectified" / "flan.csv").exists():
        print(
            f"The paper's loss tables are not at {root} (set JAXLAW_DATA to use them), so this\n"
            "demo generates curves from the rectified scaling law itself and ranks those.\n"
        )
        synthetic_demo()
        return 0
    print(
        "Data: FLAN instruction tuning, 30 models, test loss after fine-tuning on 200 ... "
        "1,638,400 examples (Lin et al., ICML 2024).\nBudget: subsets up to 204,800 examples "
        "(1/8 of the full set). Method: AtS, the paper's Accept-then-Stop extrapolation.\n"
    )
    rc = main(["select", "flan", "--data", str(root), "--budget", "204800", "--method", "ats"])
    print(
        "\nThe same budget with the rectified law fitted to every model (multi-start, with the "
        "zero-shot point):"
    )
    rc |= main(["select", "flan", "--data", str(root), "--budget", "204800", "--method", "ourfit"])
    print("\nNext: `jaxlaw fit flan --plot fits.png`, `jaxlaw reproduce rectified --out results/`.")
    return rc


if __name__ == "__main__":
    sys.exit(run())
