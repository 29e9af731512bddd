"""Data parallelism on a `jax.sharding.Mesh`: batches split over ``data``, states replicated."""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ._loss import Batch

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Call `jax.distributed.initialize` when launched as one process of a multi-host job.

    Recognised launches: an explicit ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID``), or the environments JAX detects itself (SLURM, Cloud TPU pods,
    Open MPI) signalled by ``JAXLAW_DISTRIBUTED=1``. A single-process run does nothing.
    """
    if jax.distributed.is_initialized():
        return
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif os.environ.get("JAXLAW_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def data_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis mesh named ``data`` over the first ``n_devices`` devices (default: all).

    The axis type is `AxisType.Auto` on purpose: `jax.make_mesh` defaults to explicit axes,
    under which sharding becomes part of every array's type and the unchanged single-device
    step no longer type-checks.
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available")
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh: Mesh | None):
    """Put every leaf of ``tree`` on all devices of ``mesh`` (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Batch, mesh: Mesh | None) -> Batch:
    """Move a host batch to device(s), its examples axis (second to last) split over ``data``.

    On several hosts each process passes its own slice of the global batch (rows
    ``process_index * rows / process_count`` onward); on one host, the whole batch.
    """
    if mesh is None:
        return jax.device_put(batch)
    n = mesh.shape[DATA_AXIS]
    examples = batch.tokens.shape[-2] * jax.process_count()
    if examples % n:
        raise ValueError(f"micro-batch of {examples} examples does not split over {n} devices")
    spec = PartitionSpec(*([None] * (batch.tokens.ndim - 2)), DATA_AXIS, None)
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
