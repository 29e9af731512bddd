"""``jaxlaw convert MODEL.gguf OUT_DIR``: a GGUF file -> a Hugging Face checkpoint folder.

The folder holds ``config.json``, ``model.safetensors`` (float32 unless ``--dtype``; quantised
blocks are dequantized, llama's q/k permutation undone), ``tokenizer.json`` and
``tokenizer_config.json`` with the special tokens and the chat template, so both
``transformers.AutoModelForCausalLM`` / ``AutoTokenizer`` and `jaxlaw.models.load_pretrained` /
`jaxlaw.data.load_tokenizer` read it offline.
"""

import argparse
import json
from pathlib import Path


def cmd_convert(a: argparse.Namespace) -> None:
    from jaxlaw.data import load_tokenizer, save_tokenizer
    from jaxlaw.models import GGUFError, is_gguf, load_pretrained, save_pretrained

    src, out = Path(a.model), Path(a.out_dir)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such GGUF file")
    if not is_gguf(src):
        raise GGUFError(f"{src}: not a GGUF file (no GGUF magic bytes at the start)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    # The tokenizer first: it is cheap and checks the vocabulary against the model's.
    tokenizer = load_tokenizer(src)
    model, config = load_pretrained(src, dtype=a.dtype)
    save_pretrained(model, config, out)
    save_tokenizer(tokenizer, out)
    # Generation in transformers reads the special ids from config.json.
    hf = json.loads((out / "config.json").read_text())
    hf |= {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    hf |= {"pad_token_id": tokenizer.pad_id}
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(
        f"wrote {out}: {files} ({config.family}, {config.n_layers} layers, "
        f"vocab {config.vocab_size}, {config.param_dtype})"
    )


def add_arguments(w: argparse.ArgumentParser) -> None:
    w.description = (
        "Convert a llama.cpp GGUF file (llama or qwen2; F32/F16/BF16 and Q4_0 ... Q8_0, "
        "K-quants) into a Hugging Face folder: config.json, model.safetensors, tokenizer.json "
        "and tokenizer_config.json (with the chat template), loadable by transformers and jaxlaw."
    )
    w.add_argument("model", metavar="MODEL.gguf", help="GGUF file to convert")
    w.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if needed)")
    w.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="parameter dtype of model.safetensors (default: float32)",
    )
    w.set_defaults(run=cmd_convert)
