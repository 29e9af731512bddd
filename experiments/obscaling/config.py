"""Configuration of the observational-scaling reproduction (Ruan et al., NeurIPS 2024).

Run: ``jaxlaw reproduce obscaling --data ../shared/data --out results/obscaling``
(or ``python experiments/obscaling/run.py --out results/obscaling``).
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ObscalingConfig:
    out: str = "results/obscaling"
    data: str | None = None  # folder holding obscaling/*.csv; None: $JAXLAW_DATA or ../shared/data
    bootstrap: int = 1000  # model-bootstrap replicates for the leaderboard-v2 bands
    budgets: tuple[int, ...] = (4, 8, 12, 16, 20, 24, 28, 32, 36)
    n_random: int = 5  # random family sets per budget (selection baseline)
    seed: int = 0

    @classmethod
    def smoke(cls, **kw) -> "ObscalingConfig":
        """Every output, 50 bootstrap replicates: the same code path in seconds."""
        return replace(cls(**kw), bootstrap=50)
