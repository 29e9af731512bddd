"""`make demo`: which pretrained model should we fine-tune? The whole job, end to end, on a CPU.

Nothing is downloaded. The demo

1. pre-trains four small candidate language models (GPT-2, GPT-NeoX, Llama and Qwen2 shapes,
   0.1-0.5M parameters) for a few hundred steps on the Python standard library's own source,
   with a byte-level BPE tokenizer trained on it, and saves each as a Hugging Face checkpoint;
2. generates the target task locally: Python REPL examples (``>>> sorted('bca')`` ->
   ``['a', 'b', 'c']``), which the stdlib's doctests partly taught the candidates already;
3. runs `jaxlaw.sweep.run_sweep`: every candidate LoRA-fine-tuned on nested subsets of 16 ...
   2048 examples, its test loss recorded per cell (the `jaxlaw sweep` table);
4. fits the rectified scaling law to the cells up to a small budget (256 examples), predicts
   the loss at 2048, ranks the candidates with AtS and compares with the truth; writes a plot.

Run: ``python -m jaxlaw.demo [--out DIR] [--smoke]`` (``make demo``). About 4-5 minutes on a
2-core CPU; results go to ``results/demo/`` (models, ``sweep.csv``, ``fits.png``). Finished
work is reused, so delete the folder to start over.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .lora import LoraConfig
from .models import ModelConfig
from .sweep import SweepConfig
from .training import TrainConfig


@dataclass(frozen=True)
class Candidate:
    """A candidate model: its architecture and how long it is pre-trained."""

    name: str
    config: ModelConfig
    pretrain_steps: int


def _candidates(vocab: int, positions: int) -> tuple[Candidate, ...]:
    common = dict(vocab_size=vocab, max_positions=positions)
    return (
        Candidate(
            "gpt2-nano",
            ModelConfig.tiny(
                "gpt2", hidden_size=32, n_layers=1, n_heads=2, intermediate_size=128, **common
            ),
            200,
        ),
        Candidate(
            "pythia-micro",
            ModelConfig.tiny(
                "gpt_neox", hidden_size=48, n_layers=2, n_heads=3, intermediate_size=192, **common
            ),
            250,
        ),
        Candidate(
            "llama-small",
            ModelConfig.tiny(
                "llama",
                hidden_size=64,
                n_layers=2,
                n_heads=4,
                n_kv_heads=2,
                intermediate_size=192,
                **common,
            ),
            300,
        ),
        Candidate(
            "qwen2-base",
            ModelConfig.tiny(
                "qwen2",
                hidden_size=96,
                n_layers=3,
                n_heads=6,
                n_kv_heads=2,
                intermediate_size=256,
                **common,
            ),
            300,
        ),
    )


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does, with the arithmetic behind the sizes.

    Attributes:
        out: output folder (models, table, plot).
        vocab_size: BPE vocabulary trained on the corpus (~2.8 chars/token at 1024).
        corpus_chars: characters of stdlib source to pre-train on (1M chars ~ 350k tokens).
        seq_len: pre-training window (tokens).
        candidates: the models to choose between.
        pretrain: optimiser settings of pre-training (``steps`` per candidate).
        pool: fine-tuning pool size (the largest subset).
        test: test examples every cell is scored on.
        sweep: subset sizes and LoRA fine-tuning settings.
        budget: the small-data budget M the selection may use; the target is the largest size.
        seed: seeds the task, subsets and initialisations.
    """

    out: str = "results/demo"
    vocab_size: int = 1024
    corpus_chars: int = 1_000_000
    seq_len: int = 128
    candidates: tuple[Candidate, ...] = _candidates(1024, 128)
    pretrain: TrainConfig = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=20, log_every=25)
    pool: int = 2048
    test: int = 256
    sweep: SweepConfig = field(
        default_factory=lambda: SweepConfig(
            sizes=(16, 32, 64, 128, 256, 512, 1024, 2048),
            lora=LoraConfig(targets=r"attn\.(qkv|q_proj|v_proj|o_proj)$|mlp\.", rank=8),
            train=TrainConfig(batch_size=16, lr=2e-3, warmup_steps=5),
            epochs=3.0,  # 2048 examples x 3 / 16 per step = 384 steps at most
            min_steps=20,
            max_steps=400,
            seq_len=48,  # doctest rows are <= 47 tokens at vocab 1024
        )
    )
    budget: int = 256
    seed: int = 0

    @classmethod
    def smoke(cls, out: str = "results/demo-smoke") -> "DemoConfig":
        """A seconds-long version for tests: two candidates, tiny corpus, four sizes."""
        cands = tuple(replace(c, pretrain_steps=4) for c in _candidates(300, 64)[:2])
        return cls(
            out=out,
            vocab_size=300,
            corpus_chars=40_000,
            seq_len=64,
            candidates=cands,
            pretrain=replace(cls.pretrain, warmup_steps=1, log_every=2),
            pool=64,
            test=32,
            sweep=replace(cls().sweep, sizes=(8, 16, 32, 64), min_steps=2, max_steps=4, seq_len=64),
            budget=32,
        )


def prepare_candidates(config: DemoConfig, log=print) -> list[Path]:
    """Train the tokenizer, pre-train every candidate on stdlib source and save checkpoints.

    Returns:
        The candidate model directories (each with config.json, safetensors, tokenizer.json).
    """
    import jax
    from flax import nnx

    from .data import (
        load_tokenizer,
        pack_texts,
        save_tokenizer,
        stdlib_corpus,
        take,
        train_tokenizer,
    )
    from .models import init_model, save_pretrained
    from .training import evaluate, mean_loss, train

    root = Path(config.out) / "models"
    tok_dir = root / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(tok_dir)
    else:
        t0 = time.perf_counter()
        corpus = stdlib_corpus(max_chars=config.corpus_chars)
        tokenizer = train_tokenizer(corpus, vocab_size=config.vocab_size)
        save_tokenizer(tokenizer, tok_dir)
        log(
            f"Trained a {config.vocab_size}-token BPE tokenizer on {len(corpus)} stdlib files "
            f"({config.corpus_chars:,} chars) in {time.perf_counter() - t0:.1f} s."
        )
    corpus = stdlib_corpus(max_chars=config.corpus_chars)
    windows = pack_texts(tokenizer, corpus, seq_len=config.seq_len)
    held_out = np.arange(windows.n_examples) % 20 == 0  # 5% of windows to report a test loss
    pre_train, pre_test = take(windows, ~held_out), take(windows, held_out)
    dirs = []
    for i, cand in enumerate(config.candidates):
        path = root / cand.name
        dirs.append(path)
        if (path / "config.json").is_file():
            log(f"{cand.name}: reusing the pre-trained checkpoint in {path}")
            continue
        model = init_model(cand.config, key=jax.random.key(config.seed + i))
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        tconf = replace(config.pretrain, steps=cand.pretrain_steps, seed=config.seed + i)
        t0 = time.perf_counter()
        train(model, pre_train, tconf, trainable=nnx.Param, description=f"pre-train {cand.name}")
        loss = mean_loss(evaluate(model, pre_test, batch_size=64))
        save_pretrained(model, cand.config, path)
        save_tokenizer(tokenizer, path)
        log(
            f"{cand.name}: {cand.config.family}, {n / 1e6:.2f}M params, pre-trained "
            f"{cand.pretrain_steps} steps x {tconf.batch_size * config.seq_len} tokens in "
            f"{time.perf_counter() - t0:.0f} s; held-out stdlib loss {loss:.3f} nats/token"
        )
    return dirs


def run(config: DemoConfig) -> int:
    """Run the demo end to end; returns a process exit code."""
    import jax

    jax.config.update("jax_enable_x64", True)  # for the scaling-law fits; models stay float32
    from .cli import main as cli_main
    from .data import Examples, doctest_task
    from .plots import plot_fits
    from .selection import fit_table, fitted_curves
    from .sweep import run_sweep

    t_start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    print("jaxlaw demo: which pretrained model should we fine-tune?\n")
    print(f"[1/4] Pre-training {len(config.candidates)} candidate models on Python stdlib source")
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

    target = max(sizes)
    print(
        f"\n[4/4] Selection with a budget of M = {config.budget} examples "
        f"(the true losses at {target} are used only to score the prediction)\n"
    )
    rc = cli_main(["select", str(csv), "--budget", str(config.budget), "--method", "ats"])
    print()
    rc |= cli_main(["select", str(csv), "--budget", str(config.budget), "--method", "ourfit"])
    # The plot shows OurFit's fit: the rectified law on the zero-shot point and D <= M.
    fit_points = table.loss.copy()
    fit_points[:, table.sizes > config.budget] = np.nan
    fit = fit_table(table._replace(loss=fit_points), "rectified", zero_shot=True, seed=config.seed)
    grid = np.geomspace(min(s for s in sizes if s > 0) / 4, target, 200)
    mask = table.sizes <= config.budget
    png = plot_fits(
        out / "fits.png",
        table.models,
        table.sizes,
        table.loss,
        np.broadcast_to(mask, table.loss.shape),
        {"rectified law": (grid, fitted_curves(fit, grid))},
        title=f"Rectified law fitted on the zero-shot loss and D <= {config.budget}; "
        "hollow points held out",
    )
    print(f"\nWrote {csv} and {png} in {time.perf_counter() - t_start:.0f} s.")
    print("Next: `jaxlaw sweep --help` to run this on your own checkpoints and task files.")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxlaw.demo", description=__doc__.split("\n\n")[0]
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
