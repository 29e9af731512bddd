"""Configuration of the real fine-tuning scaling table: SmolLM2-135M-Instruct on GSM8K (issue 13).

Run: ``python -m experiments.gsm8k_scaling.run --out DIR`` (CPU grid) or ``--full`` (the GPU
grid). Every cell is a fresh LoRA fine-tune of the same pretrained weights from the same adapter
initialisation on the first ``size`` examples of one seeded permutation of GSM8K train (so the
subsets are nested), scored on one fixed set of GSM8K test questions.

The rule for the length of a run, written here and not tuned on the test set: ``epochs`` passes
over the subset, batches of ``min(batch_size, size)`` examples, so ``steps(size) =
ceil(epochs * size / batch)``; the learning rate warms up over the first tenth of the steps and
decays by a cosine to a tenth of its peak at the last step. Everything else (LoRA rank/alpha/
targets, AdamW settings, clipping, sequence length, prompt format) is the same for every cell.
"""

import math
from dataclasses import dataclass, replace

# The prompt is the instruct model's own chat format with the question as the user turn (no
# system prompt beyond the template's default); the response is GSM8K's solution, which ends in
# "#### <number>". Loss is on the response tokens (and the end-of-turn token) only.
PROMPT_FORMAT = "chat template, user turn = GSM8K question; response = GSM8K solution"


@dataclass(frozen=True)
class ScalingConfig:
    """One grid of fine-tuning cells and how each is trained and scored.

    Attributes:
        sizes: training-subset sizes, ascending; 0 is the zero-shot model.
        fit_fraction: the laws are fitted on cells up to ``fit_fraction * max(sizes)`` and
            predict the larger ones.
        test_examples: fixed GSM8K test questions the loss is measured on (the first ones).
        em_examples: test questions greedy exact match is measured on, at zero-shot and at
            the largest cell.
        max_new_tokens: greedy decoding length for exact match.
        epochs: passes over each subset (the steps rule, see the module docstring).
        batch_size: examples per step (``min(batch_size, size)`` for smaller subsets).
        lr: peak AdamW learning rate of the adapters.
        warmup_frac: share of the steps spent warming up (at least 0 steps, rounded down).
        end_lr_ratio: final learning rate as a share of the peak.
        lora_rank, lora_alpha, lora_targets: the adapters (query and value projections).
        seq_len: tokenisation width (every GSM8K example fits in 512 tokens with the template);
            batches are cut to their longest row (length grouping).
        eval_batch: examples per evaluation / generation batch.
        seed: the train permutation, the adapters' initialisation and the data order.
    """

    sizes: tuple[int, ...] = (0, 2, 4, 8, 16, 32, 64, 128, 256)
    fit_fraction: float = 1 / 8
    test_examples: int = 64
    em_examples: int = 64
    max_new_tokens: int = 256
    epochs: int = 2
    batch_size: int = 4
    lr: float = 5e-4
    warmup_frac: float = 0.1
    end_lr_ratio: float = 0.1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = r"attn\.(q_proj|v_proj)$"
    seq_len: int = 512
    eval_batch: int = 16
    seed: int = 0

    def __post_init__(self):
        if list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] != 0:
            raise ValueError(f"sizes must start at 0 and increase strictly, got {self.sizes}")
        if len(self.fit_sizes) < 4:
            raise ValueError(
                f"only {len(self.fit_sizes)} cells at or below {self.fit_fraction} of "
                f"{max(self.sizes)}: the rectified law needs at least 4"
            )

    def batch(self, size: int) -> int:
        """Examples per step for a subset of ``size`` examples."""
        return min(self.batch_size, size)

    def steps(self, size: int) -> int:
        """Optimizer steps for a subset of ``size`` examples (0 for zero-shot)."""
        return 0 if size == 0 else math.ceil(self.epochs * size / self.batch(size))

    @property
    def fit_sizes(self) -> tuple[int, ...]:
        """The cells the laws are fitted on (zero-shot included; the vanilla law skips it)."""
        return tuple(s for s in self.sizes if s <= self.fit_fraction * max(self.sizes))

    @property
    def em_sizes(self) -> tuple[int, ...]:
        return (0, max(self.sizes))


# The CPU grid above: 254 optimizer steps over 508 examples x 2 epochs (about 200k tokens);
# fitted on 2..32 plus zero-shot, predicting 64, 128 and 256 (8x beyond the fit).
CPU = ScalingConfig()
# The GPU grid (--full): nested subsets up to 4096 examples, 500 test questions, 200 for exact
# match, batches of 16; fitted on 16..512 (6 cells plus zero-shot), predicting 1024..4096.
FULL = replace(
    CPU,
    sizes=(0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    test_examples=500,
    em_examples=200,
    batch_size=16,
    eval_batch=64,
)
