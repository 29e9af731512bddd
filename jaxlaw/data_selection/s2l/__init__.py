"""S2L: data selection from a small proxy's per-example loss trajectories.

Spec: ``shared/specs/s2l.md`` (Yang, Mishra, Chiang, Mirzasoleiman, NeurIPS 2024).
"""

from ._baselines import select_by_score as select_by_score
from ._baselines import select_embedding_kmeans as select_embedding_kmeans
from ._baselines import select_final_loss_clusters as select_final_loss_clusters
from ._baselines import select_random as select_random
from ._baselines import select_stratified as select_stratified
from ._kmeans import KMeansResult as KMeansResult
from ._kmeans import assign as assign
from ._kmeans import kmeans as kmeans
from ._kmeans import kmeans_init as kmeans_init
from ._kmeans import lloyd as lloyd
from ._select import Plan as Plan
from ._select import S2LSelection as S2LSelection
from ._select import balanced_select as balanced_select
from ._select import s2l_select as s2l_select
from ._select import water_fill as water_fill
from ._trajectories import Recording as Recording
from ._trajectories import Trajectories as Trajectories
from ._trajectories import checkpoint_steps as checkpoint_steps
from ._trajectories import load_trajectories as load_trajectories
from ._trajectories import record_trajectories as record_trajectories
from ._trajectories import save_trajectories as save_trajectories
from ._trajectories import stacked_losses as stacked_losses
from ._trajectories import trajectories_from_checkpoints as trajectories_from_checkpoints
