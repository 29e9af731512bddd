"""GradEx: first-order estimates of the fine-tuned loss for subsets of data sources.

Spec: ``shared/specs/gradex.md`` (Li, Zhang, Wang, Zhang, Findings of EMNLP 2024).
"""

# -- gradients, projection, storage (_output.py, _projection.py, _grads.py, _store.py)

# -- surrogate fits, estimates, selection (_fit.py, _estimate.py, _select.py)

# -- task, pipeline, validation fine-tunes (_addition.py, _pipeline.py)
