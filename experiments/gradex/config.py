"""Configuration of the GradEx validation experiment (Li et al., Findings of EMNLP 2024; spec §4.4).

Run: ``python experiments/gradex/run.py --out results/gradex`` (about 2 minutes on 2 idle CPU
cores, 6-10 minutes when other jobs share them); ``--smoke`` for the tests' small copy;
``--variant real_text`` for the GSM8K / Shakespeare / stdlib mix (reads ``$JAXLAW_DATA/text``).
"""

from dataclasses import dataclass, field, replace

from .pipeline import GradexConfig


@dataclass(frozen=True)
class GradexExperiment:
    out: str = "results/gradex"
    variant: str = "addition"  # "addition" (spec 4.4, pass bars) or "real_text" (reported only)
    data: str | None = None  # folder holding text/gsm8k and text/tinyshakespeare (real_text)
    gradex: GradexConfig = field(default_factory=GradexConfig)

    @classmethod
    def smoke(cls, **kw) -> "GradexExperiment":
        """The tests' copy (K=8, N=12, 20-step fine-tunes): every output in about a minute."""
        return replace(cls(**kw), gradex=GradexConfig.smoke())
