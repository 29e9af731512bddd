"""LoRA on jaxlaw models as tree surgery (after levanter's ``lora.py``).

Every projection of a `jaxlaw.models` model is a `jaxlaw.models.Linear` with an empty ``lora``
slot. `apply_lora` fills the slots whose module path matches a regex with a `LoraAdapter`
(``a``: Kaiming-uniform, ``b``: zeros, both `nnx.LoRAParam`), so the adapted model starts equal
to the base model. `split_lora` separates the adapter weights from everything else, which is
what a pure train step differentiates; `merge_lora` folds ``scale * a @ b`` back into the
kernels for export::

    model, config = load_pretrained("ckpt/")
    apply_lora(model, LoraConfig(targets=r"attn\\.qkv$", rank=8, alpha=16), rngs=nnx.Rngs(0))
    graphdef, lora, frozen = split_lora(model)          # lora: only the adapters
    ...                                                 # train `lora` with jaxlaw.training
    save_pretrained(merge_lora(nnx.merge(graphdef, lora, frozen)), config, "out/")
"""

from ._lora import DEFAULT_TARGETS as DEFAULT_TARGETS
from ._lora import LoraAdapter as LoraAdapter
from ._lora import LoraConfig as LoraConfig
from ._lora import apply_lora as apply_lora
from ._lora import linear_paths as linear_paths
from ._lora import lora_paths as lora_paths
from ._lora import merge_lora as merge_lora
from ._lora import seed_dropout as seed_dropout
from ._lora import split_lora as split_lora
