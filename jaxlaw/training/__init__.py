"""Training: the response-token loss, pure jitted train/eval steps, and the loop that drives them.

One loss (`example_losses`: summed NLL and target-token count per example) serves training,
evaluation, S2L loss trajectories and GradEx gradients. `make_train_step` is a pure function of
``(trainable, opt_state, frozen, batch, key)`` built from `jaxlaw.lora.split_lora`'s graphdef;
`train` is the one training loop around it (data order drawn on the host per epoch, multi-step
segments compiled once per shape, progress bar, JSONL metrics, orbax checkpoints with exact
resume, data parallelism on a mesh); `train_stack` runs many `train` calls at once, one per row
subset of a pool, vmapped (S2L arms, GradEx's ground-truth fine-tunes)::

    apply_lora(model, LoraConfig(rank=8), rngs=nnx.Rngs(0))
    result = train(model, train_set, TrainConfig(steps=200, lr=1e-3), checkpoint_dir="ckpt/")
    losses = evaluate(model, eval_set)                 # ExampleLoss, per example
    print(mean_loss(losses))

`gsm8k_accuracy` scores greedy generation (`jaxlaw.models.generate`) on GSM8K questions by
exact match of the final number, returning a `GSM8KResult`.
"""

from ._config import TrainConfig as TrainConfig
from ._gsm8k import GSM8KResult as GSM8KResult
from ._gsm8k import gsm8k_accuracy as gsm8k_accuracy
from ._loop import StackResult as StackResult
from ._loop import TrainResult as TrainResult
from ._loop import batch_indices as batch_indices
from ._loop import evaluate as evaluate
from ._loop import host_batch as host_batch
from ._loop import length_batches as length_batches
from ._loop import mean_loss as mean_loss
from ._loop import train as train
from ._loop import train_stack as train_stack
from ._loss import Batch as Batch
from ._loss import ExampleLoss as ExampleLoss
from ._loss import example_losses as example_losses
from ._loss import token_nll as token_nll
from ._optim import learning_rate as learning_rate
from ._optim import make_optimizer as make_optimizer
from ._sharding import DATA_AXIS as DATA_AXIS
from ._sharding import data_mesh as data_mesh
from ._sharding import maybe_initialize_distributed as maybe_initialize_distributed
from ._sharding import replicate as replicate
from ._sharding import shard_batch as shard_batch
from ._step import StepMetrics as StepMetrics
from ._step import make_eval_step as make_eval_step
from ._step import make_train_step as make_train_step
