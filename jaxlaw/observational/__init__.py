"""Observational scaling laws (Ruan, Maddison, Hashimoto, NeurIPS 2024).

Predict a benchmark score of held-out (larger) models from a low-dimensional capability
measure: PCA of standard benchmark scores over public models (after PCA-EM imputation),
fitted to the target through a sigmoid link. Entry points::

    from jaxlaw.observational import load_benchmarks, merge_tables, observe_fit, PRESETS
    df = merge_tables(load_benchmarks("base", include_preregistered=True,
                                      eval_families_only=False),
                      load_benchmarks("leaderboard_v2"))
    fit = observe_fit(df, "leaderboard_math_hard", "pc:3", PRESETS["lbv2_math"], bootstrap=1000)
    fit.mse_test, fit.form, fit.pred_lo, fit.pred_hi

`observe_grid` fits targets x predictor sets x bootstrap replicates in one vmapped call;
`v_optimal` chooses which model families to evaluate (V-optimal design).
`reproduce_obscaling(ObscalingConfig())` recomputes the paper's analyses with checks against the
reference numbers; `write_obscaling(result, out)` writes the CSVs, summary.md and figures.
"""

from ._compute import EquivFlops as EquivFlops
from ._compute import FamilyR2 as FamilyR2
from ._compute import family_r2 as family_r2
from ._compute import fit_equiv_flops as fit_equiv_flops
from ._compute import from_equiv as from_equiv
from ._compute import to_equiv as to_equiv
from ._constants import ALL8 as ALL8
from ._constants import EVAL_BASE_MODEL_FAMILIES as EVAL_BASE_MODEL_FAMILIES
from ._constants import INSTRUCT7 as INSTRUCT7
from ._constants import NONGSM7 as NONGSM7
from ._constants import PREREGISTERED_MODELS as PREREGISTERED_MODELS
from ._impute import Imputation as Imputation
from ._impute import pca_em_impute as pca_em_impute
from ._links import LINKS as LINKS
from ._links import Link as Link
from ._links import LinkParams as LinkParams
from ._links import get_link as get_link
from ._pca import PCA as PCA
from ._pca import pca_fit as pca_fit
from ._pca import pca_transform as pca_transform
from ._pipeline import Grid as Grid
from ._pipeline import ObsFit as ObsFit
from ._pipeline import Prepared as Prepared
from ._pipeline import Selection as Selection
from ._pipeline import observe_fit as observe_fit
from ._pipeline import observe_grid as observe_grid
from ._pipeline import observe_select as observe_select
from ._pipeline import prepare as prepare
from ._presets import LBV2_TARGETS as LBV2_TARGETS
from ._presets import PRESETS as PRESETS
from ._presets import SELECTION_PRESETS as SELECTION_PRESETS
from ._presets import Preset as Preset
from ._presets import get_preset as get_preset
from ._regression import RegressionFit as RegressionFit
from ._regression import fit_link as fit_link
from ._regression import fit_links as fit_links
from ._reproduce import ObscalingConfig as ObscalingConfig
from ._reproduce import ObscalingResult as ObscalingResult
from ._reproduce import obscaling_markdown as obscaling_markdown
from ._reproduce import reproduce_obscaling as reproduce_obscaling
from ._reproduce import write_obscaling as write_obscaling
from ._split import Split as Split
from ._split import apply_heldout as apply_heldout
from ._split import cutoff_split as cutoff_split
from ._split import random_split as random_split
from ._split import rank_split as rank_split
from ._subset import RandomSubsets as RandomSubsets
from ._subset import SearchResult as SearchResult
from ._subset import VOptimal as VOptimal
from ._subset import exchange_select as exchange_select
from ._subset import greedy_select as greedy_select
from ._subset import random_subsets as random_subsets
from ._subset import v_optimal as v_optimal
from ._tables import benchmark_matrix as benchmark_matrix
from ._tables import family_codes as family_codes
from ._tables import load_benchmarks as load_benchmarks
from ._tables import merge_tables as merge_tables
from ._tables import select_base_models as select_base_models
