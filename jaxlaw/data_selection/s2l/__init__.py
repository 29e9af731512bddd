"""S2L: data selection from a small proxy's per-example loss trajectories.

Spec: ``shared/specs/s2l.md`` (Yang, Mishra, Chiang, Mirzasoleiman, NeurIPS 2024).
"""

# -- k-means, balanced selection, baselines (_kmeans.py, _select.py, _baselines.py)

# -- trajectories, toy tasks (_trajectories.py, _toy.py)
