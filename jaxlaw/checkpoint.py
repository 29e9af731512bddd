"""Checkpoints with orbax: training state (trainable weights, optimizer state, step, data position,
key) through a `CheckpointManager`, so that a killed run resumes exactly.

Entry point: `TrainCheckpointer`. The state pytrees are saved as their flat list of leaves and
rebuilt with the tree structure of a freshly initialised run, which keeps the on-disk format
independent of NNX/optax container classes.
"""

from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp


class Restored(NamedTuple):
    """A restored training state: ``state`` has the structure of the template given."""

    state: Any
    meta: dict


class TrainCheckpointer:
    """Save and restore ``(state pytree, JSON metadata)`` pairs by step.

    Args:
        directory: checkpoint folder (created if missing); one subfolder per step.
        keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Write ``state`` (any pytree of arrays) and ``meta`` (JSON-able) at ``step``; blocks."""
        leaves = jax.device_get(jax.tree.leaves(state))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(leaves),
            meta=ocp.args.JsonSave(dict(meta, step=step, n_leaves=len(leaves))),
        )
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> Restored | None:
        """The checkpoint at ``step`` (default: the latest) shaped like ``template``; None if none.

        Raises:
            ValueError: when the checkpoint's arrays do not fit ``template`` (another model,
                LoRA config or optimizer), naming the first mismatch.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        leaves, treedef = jax.tree.flatten(template)
        abstract = [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        saved_meta = meta["meta"]
        n_saved = saved_meta.get("n_leaves")
        if n_saved is not None and n_saved != len(leaves):
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not fit this run: it holds {n_saved} "
                f"arrays, this run has {len(leaves)} (another model, LoRA or optimizer setup?)"
            )
        try:
            out = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not fit this run: {e}"
            ) from None
        restored = out["state"]
        for i, (got, want) in enumerate(zip(restored, abstract, strict=True)):
            if got.shape != want.shape:
                raise ValueError(
                    f"checkpoint {self.directory}/{step} does not fit this run: array {i} has "
                    f"shape {got.shape}, this run expects {want.shape}"
                )
        return Restored(jax.tree.unflatten(treedef, list(restored)), saved_meta)

    def close(self) -> None:
        self._manager.close()
