"""Which data should we fine-tune on? Two selectors that never fine-tune the large model per subset.

- `jaxlaw.data_selection.gradex`: first-order (gradient) estimates of the fine-tuned loss for any
  subset of data sources, from projected per-sample gradients at a multitask LoRA fit.
- `jaxlaw.data_selection.s2l`: cluster a small proxy's per-example loss trajectories and sample
  the clusters evenly.
"""
