"""Host-side loading of fine-tuning loss tables (numpy/pandas only; no jax).

Entry points: `load_dataset` for the reference tables and `load_table` for any CSV in the
same format::

    from jaxlaw.data import load_dataset, take_models
    flan = load_dataset("flan")                 # <root>/rectified/flan.csv
    flan.loss.shape, flan.sizes[:3]             # (30, 15), [0, 200, 400]
    giga = take_models(load_dataset("gigaword"), flan.models)   # align rows by name

Malformed input raises `TableError` (a ValueError) with one line naming the culprit.
"""

from ._table import DATASETS as DATASETS
from ._table import LossTable as LossTable
from ._table import TableError as TableError
from ._table import check_fit_points as check_fit_points
from ._table import data_root as data_root
from ._table import load_dataset as load_dataset
from ._table import load_table as load_table
from ._table import read_raw_csv as read_raw_csv
from ._table import table_from_frame as table_from_frame
from ._table import take_models as take_models
