"""Fine-tuning model selection: rank candidate models from a small-data budget.

Entry points: `select` (one method, one budget) and `selection_grid` (the paper's
PearCorr/RelAcc tables), dispatching through the `METHODS` registry::

    from jaxlaw.data import load_dataset
    from jaxlaw.selection import select, selection_grid
    sel = select(load_dataset("flan"), "ats", budget=204800)   # Selection(feature, rank, chosen)
    grid = selection_grid({"flan": load_dataset("flan")}, ["AtS", "SubTuning"])
    METHODS["mymethod"] = my_fn   # fn(table, budgets, target, **kw) -> (budgets, models)

`reproduce_rectified(RectifiedConfig())` recomputes the paper's Tables 1-3 with checks against
its numbers; `write_rectified(result, out)` writes the CSVs, tables.md and figures.

AtS (`ats`, `ats_curves`) is the loop-free, vmapped form of the reference's Accept-then-Stop
extrapolation (Lin et al., ICML 2024). Enable ``jax_enable_x64`` for reference parity.
"""

from ._ats import TARGET as TARGET
from ._ats import AtsResult as AtsResult
from ._ats import ats as ats
from ._ats import ats_curves as ats_curves
from ._baselines import ats_table as ats_table
from ._baselines import golden as golden
from ._baselines import model_size as model_size
from ._baselines import subtuning as subtuning
from ._baselines import zero_shot as zero_shot
from ._budget import budget_grid as budget_grid
from ._budget import budget_mask as budget_mask
from ._lawfit import TableFit as TableFit
from ._lawfit import fit_table as fit_table
from ._lawfit import fitted_curves as fitted_curves
from ._lawfit import our_fit as our_fit
from ._lawfit import vanilla_fit as vanilla_fit
from ._methods import COSTS as COSTS
from ._methods import DISPLAY_NAMES as DISPLAY_NAMES
from ._methods import METHODS as METHODS
from ._methods import MethodFn as MethodFn
from ._methods import Scores as Scores
from ._methods import display_name as display_name
from ._methods import examples_used as examples_used
from ._methods import method_key as method_key
from ._methods import per_budget as per_budget
from ._metrics import pearson as pearson
from ._metrics import rank_models as rank_models
from ._metrics import rel_acc as rel_acc
from ._reproduce import RectifiedConfig as RectifiedConfig
from ._reproduce import RectifiedResult as RectifiedResult
from ._reproduce import rectified_markdown as rectified_markdown
from ._reproduce import reproduce_rectified as reproduce_rectified
from ._reproduce import write_rectified as write_rectified
from ._select import BUDGETS as BUDGETS
from ._select import Selection as Selection
from ._select import select as select
from ._select import selection_grid as selection_grid
from ._uncertain import Uncertain as Uncertain
from ._uncertain import select_uncertain as select_uncertain
