"""The demo's candidates: one shared tokenizer, then each model pre-trained and saved."""

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import DemoConfig


def prepare_candidates(config: DemoConfig, log=print) -> list[Path]:
    """Train the shared tokenizer, pre-train every candidate and save HF checkpoints.

    Returns:
        The candidate model directories (each with config.json, safetensors, tokenizer.json).
    """
    import jax
    from flax import nnx

    from jaxlaw.data import (
        load_tokenizer,
        pack_texts,
        save_tokenizer,
        stdlib_corpus,
        take,
        train_tokenizer,
    )
    from jaxlaw.models import init_model, save_pretrained
    from jaxlaw.training import evaluate, mean_loss, train

    from .corpus import stdlib_docs

    root = Path(config.out) / "models"
    tok_dir = root / "tokenizer"
    todo = [c for c in config.candidates if not (root / c.name / "config.json").is_file()]
    corpora = {}
    if todo or not (tok_dir / "tokenizer.json").is_file():
        t0 = time.perf_counter()
        corpora["stdlib"] = stdlib_corpus(max_chars=config.corpus_chars)
        if any(c.corpus == "docs" for c in todo):
            corpora["docs"] = stdlib_docs(config.corpus_chars)
        log(f"      Read the corpora ({time.perf_counter() - t0:.1f} s).")
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(tok_dir)
    else:
        tokenizer = train_tokenizer(corpora["stdlib"], vocab_size=config.vocab_size)
        save_tokenizer(tokenizer, tok_dir)
    for i, cand in enumerate(config.candidates):
        path = root / cand.name
        if cand not in todo:
            log(f"      {cand.name}: reusing the pre-trained checkpoint in {path}")
            continue
        windows = pack_texts(tokenizer, corpora[cand.corpus], seq_len=config.seq_len)
        held_out = np.arange(windows.n_examples) % 20 == 0  # 5% of windows for a test loss
        model = init_model(cand.config, key=jax.random.key(config.seed + i))
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        tconf = replace(config.pretrain, steps=cand.pretrain_steps, seed=config.seed + i)
        t0 = time.perf_counter()
        train(model, take(windows, ~held_out), tconf, trainable=nnx.Param,
              description=f"pre-train {cand.name}")  # fmt: skip
        loss = mean_loss(evaluate(model, take(windows, held_out), batch_size=64))
        save_pretrained(model, cand.config, path)
        save_tokenizer(tokenizer, path)
        log(
            f"      {cand.name}: {cand.config.family}, {n / 1e6:.2f}M params, {cand.corpus}, "
            f"{cand.pretrain_steps} steps x {tconf.batch_size * config.seq_len} tokens "
            f"({time.perf_counter() - t0:.0f} s); held-out {cand.corpus} loss {loss:.3f} nats/token"
        )
    return [root / c.name for c in config.candidates]
