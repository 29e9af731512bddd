"""Data budgets: which subset sizes a selection method may read under a budget M."""

import numpy as np
from jaxtyping import ArrayLike, Bool, Int

from ..data import TableError


def budget_grid(
    sizes: Int[ArrayLike, " points"], budget: int, *, smallest: int | None = None
) -> list[int]:
    """The doubling grid D_j = M / 2^j, j = floor(log2(M / smallest)) .. 0, ascending.

    Args:
        sizes: subset sizes of a table, shape (points,).
        budget: the budget M, a subset size present in ``sizes``.
        smallest: smallest subset on the grid; default the smallest positive size (200 in
            the reference tables).

    Returns:
        The grid sizes, ascending (e.g. 200, 400, ..., 204800 for M = 204800).

    Raises:
        TableError: if ``budget`` or a grid size is not a column of the table.
    """
    sizes = np.asarray(sizes)
    budget = int(budget)
    have = ", ".join(map(str, sizes))
    if budget not in sizes:
        raise TableError(f"budget {budget} is not a subset size of the table (sizes: {have})")
    positive = sizes[sizes > 0]
    smallest = int(positive.min()) if smallest is None else int(smallest)
    if smallest <= 0 or budget < smallest:
        raise TableError(f"budget {budget} is below the smallest subset size {smallest}")
    # The reference builds the grid as int(M / 2**j) for j = int(log2(M / smallest)) .. 0.
    top = int(np.log2(budget / smallest))
    grid = [int(budget / 2**j) for j in range(top, -1, -1)]
    missing = [d for d in grid if d not in sizes]
    if missing:
        raise TableError(
            f"budget {budget}: grid sizes {', '.join(map(str, missing))} are not columns of the "
            f"table (sizes: {have})"
        )
    return grid


def budget_mask(
    sizes: Int[ArrayLike, " points"],
    budget: int,
    *,
    include_zero: bool = False,
    smallest: int | None = None,
) -> Bool[np.ndarray, " points"]:
    """Mask of the subset sizes a budget-M method reads: the doubling grid up to M.

    The grid is D_j = M / 2^j for j = log2(M / smallest) .. 0 (200, 400, ..., M on the
    reference tables: 11 points for M = 204800, 5 for M = 3200), plus the zero-shot column
    (size 0) when ``include_zero``.

    Args:
        sizes: subset sizes of a table, shape (points,).
        budget: the budget M in examples; must be a column of the table.
        include_zero: also select the size-0 (zero-shot) column, if present.
        smallest: smallest grid size; default the smallest positive size.

    Returns:
        Boolean mask, shape (points,).

    Raises:
        TableError: if ``budget`` (or a grid size) is not a column of the table.
    """
    sizes = np.asarray(sizes)
    mask = np.isin(sizes, budget_grid(sizes, budget, smallest=smallest))
    if include_zero:
        mask = mask | (sizes == 0)
    return mask
