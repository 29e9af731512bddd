"""`make demo`: which pretrained model should we fine-tune? The whole job, end to end, on a CPU.

Nothing is downloaded. The demo

1. pre-trains five small candidate language models (GPT-2, GPT-NeoX, Llama and Qwen2 shapes,
   0.08-0.45M parameters) with about the same compute each, spent on different trade-offs
   (small and long, big and short) and on two corpora made from the Python standard library
   (its source, or its docstrings alone), with one byte-level BPE tokenizer shared by all;
2. generates the target task locally: Python REPL examples (``>>> sorted('bca')`` ->
   ``['a', 'b', 'c']``);
3. LoRA-fine-tunes every candidate on nested subsets of 16 ... 2048 examples
   (`jaxlaw.sweep.run_sweep`) and records each cell's test loss;
4. lets each method (ZeroShot, SubTuning, AtS, OurFit) pick a candidate from the cells up to
   the budget M = 256 examples (`jaxlaw.selection.select`), then scores the pick against the
   measured losses at the target T = 2048: its regret, and each prediction's error.

Run: ``python -m experiments.demo.run [--out DIR] [--smoke]`` (``make demo``). Results go to
``results/demo/``: ``models/``, ``sweep.csv``, ``results.json`` and ``fits.png``. Finished work
(checkpoints, sweep cells) is reused when the folder was written with the same configuration;
delete the folder to start over.
"""

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import DemoConfig


def _check_out(config: DemoConfig) -> None:
    """Record the config in the out folder; refuse to mix results of two configurations."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dataclasses.asdict(replace(config, out="")), indent=1, default=str)
    path = out / "config.json"
    if path.is_file() and path.read_text() != text:
        raise SystemExit(
            f"{out} holds a demo run with another configuration; delete it or pass --out DIR"
        )
    path.write_text(text)


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
            f"({time.perf_counter() - t0:.0f} s); held-out loss {loss:.3f} nats/token"
        )
    return [root / c.name for c in config.candidates]


def run(config: DemoConfig) -> int:
    """Run the demo end to end; returns a process exit code."""
    import jax

    from jaxlaw.data import Examples
    from jaxlaw.sweep import run_sweep

    from .corpus import doctest_task
    from .report import METHODS, report

    t_start = time.perf_counter()
    _check_out(config)
    out = Path(config.out)
    print("jaxlaw demo: which pretrained model should we fine-tune?\n")
    print(f"[1/4] Pre-training {len(config.candidates)} candidate models on the Python stdlib")
    dirs = prepare_candidates(config)

    print("\n[2/4] Target task: Python REPL examples, e.g.")
    task = doctest_task(config.pool + config.test, key=jax.random.key(config.seed))
    for p, r in list(zip(task.prompts, task.responses))[:3]:
        print(f"      {p.rstrip()}  ->  {r}")
    pool = Examples(task.prompts[: config.pool], task.responses[: config.pool])
    test = Examples(task.prompts[config.pool :], task.responses[config.pool :])

    sizes = config.sweep.sizes
    print(
        f"\n[3/4] Sweep: LoRA fine-tuning every candidate on nested subsets of "
        f"{', '.join(map(str, sizes))} examples; test loss on {config.test} held-out examples"
    )
    csv = out / "sweep.csv"
    table = run_sweep(dirs, pool, test, config.sweep, out=csv, log=lambda s: print("      " + s))

    print(
        f"\n[4/4] Selection by {', '.join(METHODS)} from the cells D <= M = {config.budget}; "
        f"the measured losses at T = {config.target} only score the picks\n"
    )
    results = report(table, config, out)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["devices"] = [str(d) for d in jax.devices()]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nWrote {csv}, {out / 'results.json'} and {out / 'fits.png'} "
          f"in {results['seconds']:.0f} s.")  # fmt: skip
    print("Next: `jaxlaw sweep --help` to run this on your own checkpoints and task files.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default=None, help="output folder (default results/demo)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long version (tests)")
    a = parser.parse_args(argv)
    config = DemoConfig.smoke() if a.smoke else DemoConfig()
    if a.out is not None:
        config = replace(config, out=a.out)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
