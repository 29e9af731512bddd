"""Flax NNX decoder models and Hugging Face checkpoint I/O.

One `Decoder` covers GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral, Phi-3, Gemma-2, OPT and BLOOM,
switched by a frozen `ModelConfig`.
`load_pretrained` / `save_pretrained` read and write transformers' safetensors layout, so a
checkpoint moves between jaxlaw and PyTorch unchanged; `load_pretrained` also reads llama.cpp's
GGUF files (dequantized to float32, `read_gguf`), and `installed_gguf` finds the optional
SmolLM2-135M-Instruct file. Every projection is a `Linear`, the slot
`jaxlaw.lora` adapts. `generate` decodes with a key/value cache (`KVCache` of `LayerCache`
arrays, filled by `Decoder.init_cache` / `Decoder.extend`): greedy or temperature + top-p
sampling, left- or right-padded prompts, stop tokens, one compiled loop per shape, returning a
`Generation`. No training code lives here.
"""

from ._attention import Attention as Attention
from ._attention import alibi_slopes as alibi_slopes
from ._attention import apply_rotary as apply_rotary
from ._cache import KVCache as KVCache
from ._cache import LayerCache as LayerCache
from ._config import ModelConfig as ModelConfig
from ._decoder import MLP as MLP
from ._decoder import Block as Block
from ._decoder import Decoder as Decoder
from ._decoder import Norm as Norm
from ._decoder import init_model as init_model
from ._generate import Generation as Generation
from ._generate import generate as generate
from ._gguf import SUPPORTED_TYPES as SUPPORTED_TYPES
from ._gguf import GGUFError as GGUFError
from ._gguf import installed_gguf as installed_gguf
from ._gguf import is_gguf as is_gguf
from ._gguf import read_gguf as read_gguf
from ._hf import IGNORED_BUFFERS as IGNORED_BUFFERS
from ._hf import CheckpointError as CheckpointError
from ._hf import load_pretrained as load_pretrained
from ._hf import model_from_tensors as model_from_tensors
from ._hf import save_pretrained as save_pretrained
from ._linear import Linear as Linear
