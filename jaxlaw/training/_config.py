"""`TrainConfig`: every knob of one fine-tuning (or pre-training) run."""

from dataclasses import dataclass

# Batches per length-sorted window of `TrainConfig.group_by_length` (transformers uses 50).
GROUP_WINDOW = 50


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run.

    Attributes:
        steps: optimizer steps.
        batch_size: examples per optimizer step (global, over all devices).
        accum_steps: micro-batches the batch is cut into; gradients are summed over them, so
            the result equals one big batch (memory drops by this factor).
        lr: peak learning rate.
        warmup_steps: linear warmup from 0 to ``lr``.
        end_lr_ratio: the cosine decays to ``lr * end_lr_ratio`` at ``steps``.
        weight_decay: AdamW decoupled weight decay.
        b1, b2: Adam moment decays.
        clip_norm: global gradient-norm clip (None: off).
        seed: seeds the data order and dropout; same seed, same run, bit for bit.
        log_every: steps between metric records (and progress-bar updates).
        checkpoint_every: steps between checkpoints when a checkpoint directory is given
            (0: only at the end).
        keep_checkpoints: how many checkpoints to keep.
        group_by_length: batch examples of similar length and cut each step's batch to a
            length just above its longest row (`jaxlaw.data.trim_length`), so padding stays
            small on data of mixed lengths (real text). Each epoch's shuffled order is cut into
            windows of `GROUP_WINDOW` batches, each window sorted by length, longest first
            (transformers' ``group_by_length``); a trimmed length compiles once.
    """

    steps: int = 100
    batch_size: int = 16
    accum_steps: int = 1
    lr: float = 1e-3
    warmup_steps: int = 10
    end_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    clip_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    group_by_length: bool = False

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.accum_steps < 1:
            raise ValueError("batch_size and accum_steps must be >= 1")
        if self.batch_size % self.accum_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of accum_steps {self.accum_steps}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accum_steps
