"""The "which model to fine-tune" sweep: LoRA fine-tunes of every candidate on nested subsets.

`run_sweep` writes the loss table (rectified format: zero-shot column ``0``, one column per
subset size, ``size`` and ``family``) that `jaxlaw.selection.select` ranks::

    table = run_sweep(["ckpt/a", "ckpt/b"], train_task, eval_task,
                      SweepConfig(sizes=(50, 100, 200, 400)), out="sweep.csv")
    select(table, "ats", budget=200, target=400)
"""

from ._sweep import SweepConfig as SweepConfig
from ._sweep import cell_steps as cell_steps
from ._sweep import nested_subsets as nested_subsets
from ._sweep import run_sweep as run_sweep
from ._sweep import sweep_fingerprint as sweep_fingerprint
