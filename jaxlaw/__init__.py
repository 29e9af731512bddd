"""jaxlaw: scaling laws for fine-tuning in JAX.

Which pretrained model to fine-tune (Rectified Scaling Law, AtS), fitted as batched
multi-start least squares, and how capabilities scale (observational scaling laws). Fitting
half: `jaxlaw.laws`, `jaxlaw.fitting`, `jaxlaw.selection`, `jaxlaw.observational`; model half:
`jaxlaw.models`, `jaxlaw.lora`, `jaxlaw.training`, `jaxlaw.sweep`; host I/O: `jaxlaw.data`,
`jaxlaw.checkpoint`. The command line is `jaxlaw.cli`. Enable ``jax_enable_x64`` for fits; models
stay float32/bfloat16.
"""

from .data import LossTable as LossTable
from .data import load_dataset as load_dataset
from .data import load_table as load_table
from .fitting import FitResult as FitResult
from .fitting import fit_curve as fit_curve
from .fitting import fit_curves as fit_curves
from .laws import Law as Law
from .laws import get_law as get_law
from .selection import fit_table as fit_table
from .selection import select as select
from .selection import selection_grid as selection_grid

__version__ = "0.1.0"
