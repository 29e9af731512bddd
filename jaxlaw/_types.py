"""Array type aliases and the dimension-name glossary shared by every jaxlaw module.

Dimension names used in jaxtyping annotations:

- ``curves``: independent curves fitted at once (models x datasets x budgets, flattened).
- ``points``: points of one curve (subset sizes), padded to a static length and masked.
- ``inits``: starting points of a multi-start fit.
- ``models``: candidate models of a selection problem.
- ``budgets``: data budgets M of a model-selection grid (largest subset a method may read).
- ``params``: flattened parameter vector.
- ``examples``: examples of a tokenised set or batch; ``seq``: token positions (padded);
  ``vocab``: vocabulary entries; ``embed``: model width; ``proj``: random-projection width;
  ``slots``: key/value-cache slots (prompt width plus new tokens); ``new``: generated tokens.
- ``sources``: data sources (tasks, skills, clusters used as selection units); ``subsets``:
  subsets of sources evaluated at once (rows of a bool ``[subsets, sources]`` matrix);
  ``projs``: random projections (seeds) applied to the same gradients.
- ``rows``: rows of a feature matrix being clustered; ``feats``: its columns; ``clusters``:
  k-means centroids; ``restarts``: k-means restarts run at once; ``ckpts``: checkpoints of a
  loss trajectory.
"""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

Scalar: TypeAlias = Float[Array, ""]
Key: TypeAlias = PRNGKeyArray

__all__ = ["Array", "ArrayLike", "Bool", "Float", "Int", "Key", "Scalar"]
