"""GradEx: first-order estimates of the fine-tuned loss for subsets of data sources.

Spec: ``shared/specs/gradex.md`` (Li, Zhang, Wang, Zhang, Findings of EMNLP 2024).
"""

from ._estimate import ScaleCalibration as ScaleCalibration
from ._estimate import TaylorErrors as TaylorErrors
from ._estimate import calibrate_scale as calibrate_scale
from ._estimate import estimate_first_order as estimate_first_order
from ._estimate import estimate_lifted as estimate_lifted
from ._estimate import estimate_linear as estimate_linear
from ._estimate import lora_norm as lora_norm
from ._estimate import rescale as rescale
from ._estimate import target_loss_grad as target_loss_grad
from ._estimate import taylor_errors as taylor_errors
from ._finetune import FineTunes as FineTunes
from ._finetune import compare_estimates as compare_estimates
from ._finetune import finetune_subsets as finetune_subsets
from ._finetune import meta_train as meta_train
from ._finetune import subset_losses as subset_losses
from ._fit import fit_subsets as fit_subsets
from ._fit import sample_mask as sample_mask
from ._fit import subset_masks as subset_masks
from ._grads import auto_chunk_size as auto_chunk_size
from ._grads import example_grads as example_grads
from ._grads import projected_grads as projected_grads
from ._output import output_logodds as output_logodds
from ._output import sample_outputs as sample_outputs
from ._plot import plot_estimates as plot_estimates
from ._plot import plot_scores as plot_scores
from ._plot import plot_taylor as plot_taylor
from ._projection import Projection as Projection
from ._select import ForwardSelection as ForwardSelection
from ._select import auroc as auroc
from ._select import forward_selection as forward_selection
from ._select import random_ensemble as random_ensemble
from ._select import select_threshold as select_threshold
from ._store import ProjectedGrads as ProjectedGrads
from ._store import check_model as check_model
from ._store import grads_meta as grads_meta
from ._store import load_grads as load_grads
from ._store import save_grads as save_grads
