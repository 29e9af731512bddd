"""`make demo`: which pretrained model should we fine-tune? The whole job, end to end, on a CPU.

Nothing is downloaded. The demo

1. pre-trains five small candidate language models (GPT-2, GPT-NeoX, Llama and Qwen2 shapes,
   0.05-0.39M parameters) with about the same compute each, spent on different trade-offs
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


def run(config: DemoConfig) -> int:
    """Run the demo end to end; returns a process exit code."""
    import jax

    from jaxlaw.data import Examples
    from jaxlaw.sweep import run_sweep

    from .corpus import doctest_task
    from .pretrain import prepare_candidates
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
