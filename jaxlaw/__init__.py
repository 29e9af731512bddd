"""jaxlaw: scaling laws for fine-tuning in JAX.

Which pretrained model to fine-tune (Rectified Scaling Law, AtS), fitted as batched
multi-start least squares, and how capabilities scale (observational scaling laws). Fitting
half: `jaxlaw.laws`, `jaxlaw.fitting`, `jaxlaw.selection`, `jaxlaw.observational`; model half:
`jaxlaw.models`, `jaxlaw.lora`, `jaxlaw.training`, `jaxlaw.sweep`; data selection:
`jaxlaw.data_selection.gradex`, `jaxlaw.data_selection.s2l`; host I/O: `jaxlaw.data`,
`jaxlaw.checkpoint`. The command line is `jaxlaw.cli`. Fits run in float64 on their own (scoped
``jax.enable_x64``); models stay float32/bfloat16.

The names below are imported on first use, so ``import jaxlaw`` stays cheap (no jax until needed).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "LossTable": "data",
    "load_dataset": "data",
    "load_table": "data",
    "FitResult": "fitting",
    "fit_curve": "fitting",
    "fit_curves": "fitting",
    "Law": "laws",
    "get_law": "laws",
    "fit_table": "selection",
    "select": "selection",
    "selection_grid": "selection",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
