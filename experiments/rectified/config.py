"""Configuration of the Rectified Scaling Law reproduction (Lin et al., ICML 2024).

Run: ``jaxlaw reproduce rectified --data ../shared/data --out results/rectified``
(or ``python experiments/rectified/run.py --out results/rectified``).
"""

from dataclasses import dataclass, replace

DATASETS = ("flan", "wmt19", "gigaword")
# Budgets M = T / gamma for gamma = 8 .. 512 of T = 1,638,400 (spec §4.1).
BUDGETS = (204800, 102400, 51200, 25600, 12800, 6400, 3200)


@dataclass(frozen=True)
class RectifiedConfig:
    out: str = "results/rectified"
    data: str | None = None  # folder holding rectified/*.csv; None: $JAXLAW_DATA or ../shared/data
    datasets: tuple[str, ...] = DATASETS
    budgets: tuple[int, ...] = BUDGETS
    target: int = 1638400
    max_size: float | None = None  # keep models with fewer parameters (size ablation)
    k: int = 3  # AtS minimum points
    delta: float = 5.0  # AtS threshold in residual standard deviations
    seed: int = 0  # VanillaFit reference-mode starts

    @classmethod
    def smoke(cls, **kw) -> "RectifiedConfig":
        """Two budgets (1/8, 1/512) of every dataset: the same code path in a few seconds."""
        return replace(cls(**kw), budgets=(204800, 3200))
