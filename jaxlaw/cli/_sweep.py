"""``jaxlaw sweep``: LoRA fine-tunes of candidate models on nested subsets -> a loss table."""

import argparse

from ._flags import add_config, from_args
from ._tables import human_count, print_table

# TrainConfig fields a sweep sets per cell or does not use: the steps of a cell come from
# --epochs / --min-steps / --max-steps, the seed is the sweep's own --seed.
SKIP = (
    "train.steps",
    "train.seed",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
)


def cmd_sweep(a: argparse.Namespace) -> None:
    from jaxlaw.data import load_task
    from jaxlaw.sweep import SweepConfig, run_sweep
    from jaxlaw.training import data_mesh, maybe_initialize_distributed

    maybe_initialize_distributed()  # a no-op unless launched as one process of a multi-host job
    fields = dict(prompt_field=a.prompt_field, response_field=a.response_field)
    train_task, eval_task = load_task(a.train, **fields), load_task(a.eval, **fields)
    config = from_args(a, SweepConfig, skip=SKIP)
    mesh = data_mesh() if a.data_parallel else None
    table = run_sweep(
        a.models, train_task, eval_task, config, out=a.out, progress=not a.quiet, mesh=mesh
    )
    header = ["model", "params", *[str(s) for s in table.sizes]]
    rows = [
        [m, human_count(n), *[f"{v:.4f}" for v in row]]
        for m, n, row in zip(table.models, table.n_params, table.loss)
    ]
    print_table(f"{a.out}: test loss (nats/token) by fine-tuning subset size", header, rows)
    budget = table.sizes[table.sizes > 0][len(table.sizes[table.sizes > 0]) // 2]
    print(f"wrote {a.out}; rank the models with: jaxlaw select {a.out} --budget {budget}")


def add_arguments(w: argparse.ArgumentParser) -> None:
    from jaxlaw.sweep import SweepConfig

    w.description = (
        "For every model directory (config.json + *.safetensors + tokenizer.json): the "
        "zero-shot test loss and the test loss after LoRA fine-tuning on nested random subsets "
        "of each size, written as a loss table (column 0 = zero-shot) that `jaxlaw select` "
        "reads. Cells already in --out are kept, so a stopped sweep resumes."
    )
    w.add_argument("--models", nargs="+", required=True, metavar="DIR", help="model directories")
    w.add_argument("--train", required=True, help="fine-tuning pool (.jsonl/.json/.csv)")
    w.add_argument("--eval", required=True, help="test set every cell is scored on")
    w.add_argument("--out", required=True, help="loss-table CSV to write (and resume from)")
    w.add_argument("--prompt-field", default="prompt")
    w.add_argument("--response-field", default="response")
    w.add_argument("--quiet", action="store_true", help="no progress bars")
    w.add_argument(
        "--data-parallel",
        action="store_true",
        help="split every batch over all devices (a 'data' mesh axis; multi-host launches too)",
    )
    add_config(w, SweepConfig, skip=SKIP)
    w.set_defaults(run=cmd_sweep)
