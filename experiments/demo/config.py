"""The demo's configuration: the candidate models, their pre-training and the fine-tuning sweep.

Run: ``python -m experiments.demo.run [--out DIR] [--smoke]`` (``make demo``).
"""

from dataclasses import dataclass, field, replace

from jaxlaw.lora import LoraConfig
from jaxlaw.models import ModelConfig
from jaxlaw.sweep import SweepConfig
from jaxlaw.training import TrainConfig

CORPORA = ("stdlib", "docs")
"""Pre-training corpora: ``stdlib`` is the standard library's source as it is (code, docstrings
and comments); ``docs`` is its docstrings alone (English prose, with the stdlib's doctests)."""


@dataclass(frozen=True)
class Candidate:
    """A candidate model: its architecture, its pre-training corpus and how long it trains."""

    name: str
    config: ModelConfig
    corpus: str
    pretrain_steps: int

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"{self.name}: unknown corpus {self.corpus!r}; one of {CORPORA}")


def _shape(family: str, vocab: int, positions: int, **kw) -> ModelConfig:
    return ModelConfig.tiny(family, vocab_size=vocab, max_positions=positions, **kw)


def candidates(vocab: int, positions: int, steps: float = 1.0) -> tuple[Candidate, ...]:
    """Five candidates with about the same pre-training compute, spent differently.

    Compute per token is roughly the multiply-adds of the layers plus the output head
    (vocab x hidden): ~45k (nano), ~105k (micro), ~165k (small), ~430k (base) at vocab 1024,
    so 600 / 300 / 150 / 75 steps cost about the same: small models see more tokens, big ones
    fewer (the Chinchilla trade-off). ``llama-docs`` is ``llama-small`` pre-trained on the
    docstrings instead of the whole source. ``steps`` scales every step count (smoke tests).
    """

    def n(s: int) -> int:
        return max(1, round(s * steps))

    nano = _shape("gpt2", vocab, positions, hidden_size=32, n_layers=1, n_heads=2,
                  intermediate_size=128)  # fmt: skip
    micro = _shape("gpt_neox", vocab, positions, hidden_size=48, n_layers=2, n_heads=3,
                   intermediate_size=192)  # fmt: skip
    small = _shape("llama", vocab, positions, hidden_size=64, n_layers=2, n_heads=4,
                   n_kv_heads=2, intermediate_size=192)  # fmt: skip
    base = _shape("qwen2", vocab, positions, hidden_size=96, n_layers=3, n_heads=6,
                  n_kv_heads=2, intermediate_size=256)  # fmt: skip
    return (
        Candidate("gpt2-nano", nano, "stdlib", n(600)),
        Candidate("pythia-micro", micro, "stdlib", n(300)),
        Candidate("llama-small", small, "stdlib", n(150)),
        Candidate("qwen2-base", base, "stdlib", n(75)),
        Candidate("llama-docs", small, "docs", n(150)),
    )


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does, with the arithmetic behind the sizes.

    Attributes:
        out: output folder (models, table, results, figure).
        vocab_size: BPE vocabulary shared by every candidate, trained on the stdlib corpus
            (~2.8 chars/token at 1024); one tokenizer, so losses per token compare.
        corpus_chars: characters of each pre-training corpus (1M chars ~ 350k tokens).
        seq_len: pre-training window (tokens).
        candidates: the models to choose between.
        pretrain: optimiser settings of pre-training (``steps`` per candidate).
        pool: fine-tuning pool size (the largest subset, the target size T).
        test: test examples every cell is scored on.
        sweep: subset sizes and LoRA fine-tuning settings.
        budget: the small-data budget M the selection may use; the target is the largest size.
        seed: seeds the task, subsets and initialisations.
    """

    out: str = "results/demo"
    vocab_size: int = 1024
    corpus_chars: int = 1_000_000
    seq_len: int = 128
    candidates: tuple[Candidate, ...] = candidates(1024, 128)
    pretrain: TrainConfig = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=20, log_every=25)
    pool: int = 2048
    test: int = 256
    sweep: SweepConfig = field(
        default_factory=lambda: SweepConfig(
            sizes=(16, 32, 64, 128, 256, 512, 1024, 2048),
            lora=LoraConfig(targets=r"attn\.(qkv|q_proj|v_proj|o_proj)$|mlp\.", rank=8),
            train=TrainConfig(batch_size=16, lr=2e-3, warmup_steps=5),
            epochs=2.0,  # 2048 examples x 2 / 16 per step = 256 steps at most
            min_steps=20,
            max_steps=256,
            seq_len=48,  # doctest rows are <= 47 tokens at vocab 1024
        )
    )
    budget: int = 256
    seed: int = 0

    @property
    def target(self) -> int:
        """The target size T whose loss the methods predict: the largest subset."""
        return max(self.sweep.sizes)

    @classmethod
    def smoke(cls, out: str = "results/demo-smoke") -> "DemoConfig":
        """A seconds-long version for tests: two candidates (one per corpus), tiny corpora,
        a few steps and four sizes."""
        nano, *_, docs = candidates(300, 64, steps=0.01)
        return cls(
            out=out,
            vocab_size=300,
            corpus_chars=40_000,
            seq_len=64,
            candidates=(nano, docs),
            pretrain=replace(cls.pretrain, warmup_steps=1, log_every=2),
            pool=64,
            test=32,
            sweep=replace(cls().sweep, sizes=(8, 16, 32, 64), min_steps=2, max_steps=4, seq_len=64),
            budget=32,
        )
