"""Shared test helpers: the real benchmark curves, read independently of jaxlaw's loader."""

from pathlib import Path

import numpy as np
import pandas as pd

SIZES = np.array([200 * 2**j for j in range(14)], dtype=np.float64)  # 200 .. 1638400


def rmsd_curves(root: Path, dataset: str) -> tuple[list[str], np.ndarray]:
    """Model names and ln(float32(L)) on the 14 fine-tuned points, as the RMSD study fits them."""
    df = pd.read_csv(root / "rectified" / f"{dataset}.csv", index_col=0)
    cols = [str(int(s)) for s in SIZES]
    return list(df.index), np.log(df[cols].to_numpy(np.float32).astype(np.float64))
