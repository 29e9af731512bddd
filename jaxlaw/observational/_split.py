"""Train/test splits as boolean masks (spec §2 step 3). Entry points: `cutoff_split`, `rank_split`.

Every split is a pair of masks over the rows of the filtered table, computed before any
imputation or PCA. Semantics are the reference's ``split_data``: a cutoff is inclusive and sends
NaN to test; a rank split sorts descending with NaN first; a ``test_limit`` below 1 is a fraction
of the rows, rounded down. Row counts are static, so every function here traces under jit.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Real

from .._types import Array, ArrayLike, Bool, Key


class Split(NamedTuple):
    """Row masks of a split; unpacks as ``train, test = split``.

    Attributes:
        train: rows to fit on, shape (models,).
        test: rows to score, shape (models,).
    """

    train: Bool[Array, " models"]
    test: Bool[Array, " models"]


def n_test_rows(n: int, test_limit: int | float) -> int:
    """Test-set size of a rank or random split, as the reference computes it.

    Args:
        n: number of rows.
        test_limit: a count (an integer >= 1) or, below 1, a fraction of ``n`` (rounded down,
            so 0.1 of 47 rows is 4); 0 means no test set.

    Returns:
        The number of test rows k, 0 <= k < n.

    Raises:
        ValueError: for a negative limit, a non-integer count, or k >= n.
    """
    if isinstance(test_limit, bool) or not isinstance(test_limit, (int, float)):
        raise ValueError(f"test_limit must be a number, got {test_limit!r}")
    if not math.isfinite(test_limit) or test_limit < 0:
        raise ValueError(f"test_limit must be a non-negative number, got {test_limit!r}")
    if test_limit < 1:
        k = math.floor(test_limit * n)
    elif float(test_limit).is_integer():
        k = int(test_limit)
    else:
        raise ValueError(f"test_limit >= 1 is a row count and must be an integer, got {test_limit}")
    if k >= n and k > 0:
        raise ValueError(f"test_limit {test_limit!r} leaves no train rows ({k} of {n} rows)")
    return k


def cutoff_threshold(
    values: Real[ArrayLike, " models"], threshold: Real[ArrayLike, ""] | str
) -> Array:
    """Resolve a cutoff threshold: a number, a numeric string, or ``"ratio_r"``.

    Args:
        values: the split column, shape (models,), NaN allowed.
        threshold: t itself, or ``"ratio_r"`` meaning ``min + r * (max - min)`` over the
            non-NaN values.

    Returns:
        The threshold as a scalar array.

    Raises:
        ValueError: for a string that is neither ``"ratio_<number>"`` nor a number.
    """
    v = jnp.asarray(values)
    if isinstance(threshold, str):
        text = threshold.strip()
        ratio = text.startswith("ratio_")
        try:
            t = float(text[len("ratio_") :] if ratio else text)
        except ValueError:
            raise ValueError(
                f"cutoff threshold must be a number or 'ratio_<r>', got {threshold!r}"
            ) from None
        if ratio:
            lo, hi = jnp.nanmin(v), jnp.nanmax(v)
            return lo + t * (hi - lo)
        return jnp.asarray(t, v.dtype)
    return jnp.asarray(threshold, v.dtype)


def cutoff_split(values: Real[ArrayLike, " models"], threshold: Real[ArrayLike, ""] | str) -> Split:
    """Train on the rows whose value is at most the threshold (inclusive); the rest is test.

    Args:
        values: the split column (e.g. FLOPs in 1E21), shape (models,). NaN rows go to test
            (Mistral-7B has no FLOPs, so a FLOPs cutoff always tests it).
        threshold: see `cutoff_threshold`; ``84`` keeps Llama-2-7B (84) in train.

    Returns:
        The `Split`.
    """
    v = jnp.asarray(values)
    train = v <= cutoff_threshold(v, threshold)  # False for NaN
    return Split(train, ~train)


def rank_split(values: Real[ArrayLike, " models"], test_limit: int | float) -> Split:
    """Test on the ``test_limit`` rows with the largest values (NaN rows first).

    Ties are broken by row order (a stable sort; the reference's pandas sort is unstable, so
    its tie-breaking is arbitrary).

    Args:
        values: the ranking column, shape (models,), NaN allowed.
        test_limit: see `n_test_rows`.

    Returns:
        The `Split`.

    Raises:
        ValueError: for an invalid ``test_limit``.
    """
    v = jnp.asarray(values)
    n = v.shape[0]
    k = n_test_rows(n, test_limit)
    key = jnp.where(jnp.isnan(v), -jnp.inf, -v)  # ascending key = descending value, NaN first
    order = jnp.argsort(key, stable=True)
    rank = jnp.zeros(n, dtype=jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    test = rank < k
    return Split(~test, test)


def random_split(n: int, test_limit: int | float, *, key: Key) -> Split:
    """Test on ``test_limit`` rows drawn uniformly at random without replacement.

    The reference uses ``np.random.RandomState(42)``; this uses a JAX key, so the rows drawn
    differ from the reference's, but the same key gives the same split.

    Args:
        n: number of rows (Python int).
        test_limit: see `n_test_rows`.
        key: PRNG key.

    Returns:
        The `Split`.

    Raises:
        ValueError: for an invalid ``test_limit``.
    """
    k = n_test_rows(n, test_limit)
    perm = jr.permutation(key, n)
    test = jnp.zeros(n, dtype=bool).at[perm[:k]].set(True)
    return Split(~test, test)


def apply_heldout(train: Bool[ArrayLike, " models"], heldout: Bool[ArrayLike, " models"]) -> Split:
    """Remove held-out rows from the train set (the reference's ``heldout_filter``).

    Args:
        train: train mask of a split, shape (models,).
        heldout: rows to hold out, shape (models,); only their train part matters.

    Returns:
        ``Split(train & ~heldout, train & heldout)``: the second mask holds the removed rows,
        which are neither fitted nor scored; OR it into the test mask to score them
        (the reference's ``add_heldout_to_test=True``).
    """
    tr = jnp.asarray(train, dtype=bool)
    held = jnp.asarray(heldout, dtype=bool)
    return Split(tr & ~held, tr & held)
