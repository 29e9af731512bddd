"""``jaxlaw s2l trajectories | select``: record a proxy's loss trajectories, then choose a subset.

    jaxlaw s2l trajectories --model ckpt/pythia-70m --data pool.jsonl --checkpoints 12 \\
        --epochs 3 --out traj/                         # train the proxy, sweep inline
    jaxlaw s2l trajectories --model ckpt/pythia-70m --data pool.jsonl \\
        --from-checkpoints run/ckpt --stacked --out traj/   # offline, from orbax checkpoints
    jaxlaw s2l select --trajectories traj/ --k 100 --budget 30000 --out ids.txt --plot s2l.png

``--model`` is a Hugging Face-style folder (config.json, safetensors, tokenizer.json); ``--data``
a .jsonl/.json/.csv file with prompt and response fields (`jaxlaw.data.load_task`). Bad input
raises ValueError / FileNotFoundError, which ``jaxlaw`` prints as one ``jaxlaw: error:`` line.
"""

import argparse
import dataclasses
import json
import math
from pathlib import Path

from ._flags import add_config, from_args

# TrainConfig fields `s2l trajectories` sets itself (--steps/--epochs, --warmup-steps, checkpoints).
TRAIN_SKIP = ("steps", "warmup_steps", "log_every", "checkpoint_every", "keep_checkpoints")
METHODS = ("s2l", "random", "stratified", "high-loss", "low-loss", "final-loss-clusters")


def _checkpoints(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int T or comma-separated steps, got {text!r}"
        )
    if not values:
        raise argparse.ArgumentTypeError("no checkpoints given")
    return values[0] if len(values) == 1 and "," not in text else tuple(values)


def cmd_trajectories(a: argparse.Namespace) -> None:
    from flax import nnx

    from jaxlaw.data import load_task, load_tokenizer, tokenize_examples
    from jaxlaw.data_selection.s2l._trajectories import (
        checkpoint_steps,
        record_trajectories,
        save_trajectories,
        trajectories_from_checkpoints,
    )
    from jaxlaw.lora import LoraConfig, apply_lora
    from jaxlaw.models import load_pretrained
    from jaxlaw.training import TrainConfig, data_mesh, maybe_initialize_distributed

    maybe_initialize_distributed()
    model_dir = Path(a.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json)")
    if not Path(a.data).is_file():
        raise FileNotFoundError(f"{a.data}: no such data file")
    task = load_task(
        a.data,
        prompt_field=a.prompt_field,
        response_field=a.response_field,
        source_field=a.source_field,
    )
    model, mconfig = load_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    pool = tokenize_examples(
        tokenizer, task.prompts, task.responses, seq_len=a.seq_len, sources=task.sources
    )
    trainable = nnx.Param
    if a.lora_rank:
        apply_lora(model, from_args(a, LoraConfig, prefix="lora-"), rngs=nnx.Rngs(a.seed))
        trainable = nnx.LoRAParam
    mesh = data_mesh() if a.data_parallel else None
    meta = dict(
        model=str(model_dir),
        data=str(a.data),
        family=mconfig.family,
        prompt_field=a.prompt_field,
        response_field=a.response_field,
        source_field=a.source_field,
        seq_len=int(pool.seq_len),
    )
    if a.from_checkpoints:
        steps = None if isinstance(a.checkpoints, int) else a.checkpoints
        traj = trajectories_from_checkpoints(
            model,
            a.from_checkpoints,
            pool,
            steps=steps,
            stacked=a.stacked,
            trainable=trainable,
            batch_size=a.eval_batch,
            mesh=mesh,
            progress=not a.quiet,
        )
        meta |= dict(mode="offline", checkpoint_dir=str(a.from_checkpoints), stacked=a.stacked)
    else:
        n = pool.n_examples
        steps = a.steps or max(1, math.ceil(a.epochs * n / a.batch_size))
        t = a.checkpoints if isinstance(a.checkpoints, int) else len(a.checkpoints)
        warmup = int(math.ceil(0.03 * steps)) if a.warmup_steps is None else a.warmup_steps
        config = from_args(
            a,
            TrainConfig,
            skip=TRAIN_SKIP,
            steps=steps,
            warmup_steps=warmup,
            checkpoint_every=max(1, steps // t) if a.save_checkpoints else 0,
            keep_checkpoints=t + 1,
        )
        checkpoint_steps(steps, a.checkpoints)  # bad T or steps: fail before loading anything
        rec = record_trajectories(
            model,
            pool,
            config,
            checkpoints=a.checkpoints,
            trainable=trainable,
            batch_size=a.eval_batch,
            mesh=mesh,
            checkpoint_dir=a.save_checkpoints,
            progress=not a.quiet,
        )
        traj = rec.trajectories
        meta |= dict(
            mode="inline",
            train_seconds=rec.train.seconds,
            sweep_seconds=rec.sweep_seconds,
            train_config=dataclasses.asdict(config),
        )
        print(
            f"proxy: {steps} steps in {rec.train.seconds:.1f}s, of which {rec.sweep_seconds:.1f}s "
            f"sweeping {n} examples at {traj.n_ckpts} checkpoints"
        )
    save_trajectories(a.out, traj, meta)
    empty = int(traj.empty_rows().sum())
    print(
        f"wrote {a.out}: {traj.n_rows} examples x {traj.n_ckpts} checkpoints "
        f"(steps {', '.join(map(str, traj.steps))})"
        + (f"; {empty} examples have no response token (loss filled with 0)" if empty else "")
    )


def cmd_select(a: argparse.Namespace) -> None:
    import jax.random as jr
    import numpy as np

    from jaxlaw.data_selection.s2l._baselines import (
        select_by_score,
        select_random,
        select_stratified,
    )
    from jaxlaw.data_selection.s2l._select import s2l_select
    from jaxlaw.data_selection.s2l._trajectories import load_trajectories

    traj, meta = load_trajectories(a.trajectories)
    if a.drop_empty:
        traj = traj.drop_empty()
    n = traj.n_rows
    if a.budget < 0 or a.budget > n:
        raise ValueError(f"--budget {a.budget} must be in 0..{n} (the pool has {n} examples)")
    if a.method in ("s2l", "final-loss-clusters") and not 1 <= a.k <= n:
        raise ValueError(f"--k {a.k} must be in 1..{n} (the number of examples)")
    key = jr.key(a.seed)
    strata = np.asarray(traj.source_id) if a.stratify_by_source else None
    losses = traj.mean(a.fill)
    labels = None
    if a.method in ("s2l", "final-loss-clusters"):
        x = traj.features(a.transform, fill=a.fill)
        if a.method == "final-loss-clusters":
            x = x[:, -1:]
        sel = s2l_select(
            x,
            a.budget,
            key=key,
            k=a.k,
            strata=strata,
            transform="raw",
            init=a.init,
            per_stratum_kmeans=strata is not None,
        )
        idx, labels = np.asarray(sel.indices), np.asarray(sel.labels)
        if strata is not None:  # cluster ids are per source: make them distinct
            labels = strata.astype(np.int64) * (a.k + 1) + labels
    elif a.method == "random":
        idx = np.asarray(select_random(n, a.budget, key=key))
    elif a.method == "stratified":
        idx = np.asarray(select_stratified(np.asarray(traj.source_id), a.budget, key=key))
    else:
        idx = np.asarray(select_by_score(losses[:, -1], a.budget, highest=a.method == "high-loss"))
    ids = np.asarray(traj.example_id)[idx]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{i}\n" for i in ids))
    src = np.asarray(traj.source_id)
    pool_n = np.bincount(src, minlength=len(traj.sources))
    took = np.bincount(src[idx], minlength=len(traj.sources))
    for s, name in enumerate(traj.sources):
        print(f"  {name}: {took[s]} of {pool_n[s]}")
    if labels is not None:
        sizes = np.unique(labels, return_counts=True)[1]
        print(f"{len(sizes)} clusters of {sizes.min()}..{sizes.max()} examples")
    print(f"wrote {out}: {len(ids)} example ids ({a.method}) of {n}")
    if a.subset_out:
        _write_subset(a, meta, ids)
    if a.plot:
        if labels is None:
            labels = src  # no clusters: show the sources
        from jaxlaw.data_selection.s2l._plot import plot_selection

        plot_selection(
            a.plot,
            losses,
            labels,
            idx,
            np.asarray(traj.steps),
            title=f"{a.method}: {len(ids)} of {n} examples",
        )
        print(f"wrote {a.plot}")


def _write_subset(a: argparse.Namespace, meta: dict, ids) -> None:
    """The chosen records of the pool file, in id order, as JSON lines."""
    from jaxlaw.data import load_records

    data = a.data or meta.get("data")
    if not data or not Path(data).is_file():
        raise FileNotFoundError(f"--subset-out needs the pool file (--data); {data!r} not found")
    records = load_records(data)
    if int(max(ids, default=-1)) >= len(records):
        raise ValueError(
            f"the trajectories hold example id {int(max(ids))} but {data} has {len(records)} "
            "records: trajectories and data file do not match"
        )
    with open(a.subset_out, "w") as f:
        for i in sorted(int(i) for i in ids):
            f.write(json.dumps(records[i]) + "\n")
    print(f"wrote {a.subset_out}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``jaxlaw s2l`` subcommands."""
    from jaxlaw.lora import LoraConfig
    from jaxlaw.training import TrainConfig

    p.description = __doc__.split("\n\n")[0].replace("``", "")
    ssub = p.add_subparsers(dest="s2l_command", required=True)
    t = ssub.add_parser(
        "trajectories",
        help="train a proxy on the pool, record every example's loss at T checkpoints",
        description="Fine-tune the proxy on the whole pool (spec defaults: 3 epochs, AdamW lr "
        "2e-5, cosine, 3% warmup, wd 0) and sweep the pool at T evenly spaced steps; or, with "
        "--from-checkpoints, sweep the orbax checkpoints of an earlier jaxlaw run.",
    )
    t.add_argument("--model", required=True, help="proxy model directory (HF format)")
    t.add_argument("--data", required=True, help="pool file (.jsonl/.json/.csv)")
    t.add_argument("--out", required=True, help="folder for trajectories.npz + meta.json")
    t.add_argument(
        "--checkpoints",
        type=_checkpoints,
        default=12,
        help="T evenly spaced checkpoints, or comma-separated steps (default 12)",
    )
    t.add_argument("--prompt-field", default="prompt")
    t.add_argument("--response-field", default="response")
    t.add_argument("--source-field", default=None, help="field naming each example's source")
    t.add_argument("--seq-len", type=int, default=None, help="default: smallest bucket that fits")
    t.add_argument("--epochs", type=float, default=3.0, help="passes over the pool")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    t.add_argument(
        "--warmup-steps", type=int, default=None, help="linear warmup (default: 3%% of the steps)"
    )
    add_config(
        t,
        TrainConfig,
        skip=TRAIN_SKIP,
        defaults=dict(batch_size=32, lr=2e-5, end_lr_ratio=0.0),
    )
    add_config(
        t,
        LoraConfig,
        prefix="lora-",
        defaults=dict(rank=0),
        title="LoraConfig (--lora-rank 0: full fine-tuning of the proxy)",
    )
    t.add_argument("--eval-batch", type=int, default=64, help="examples per sweep batch")
    t.add_argument("--save-checkpoints", default=None, help="also write orbax checkpoints here")
    t.add_argument(
        "--from-checkpoints",
        default=None,
        help="sweep the checkpoints of this run folder instead of training",
    )
    t.add_argument(
        "--stacked",
        action="store_true",
        help="offline: evaluate all checkpoints in one vmapped pass",
    )
    t.add_argument("--data-parallel", action="store_true", help="split batches over all devices")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(run=cmd_trajectories)

    s = ssub.add_parser("select", help="choose a subset from recorded trajectories")
    s.add_argument("--trajectories", required=True, help="folder written by `s2l trajectories`")
    s.add_argument("--budget", type=int, required=True, help="examples to select")
    s.add_argument("--out", required=True, help="text file: one selected example id per line")
    s.add_argument("--method", default="s2l", choices=METHODS)
    s.add_argument("--k", type=int, default=100, help="k-means clusters")
    s.add_argument(
        "--stratify-by-source",
        action="store_true",
        help="split the budget over sources first, k-means per source (reference)",
    )
    s.add_argument("--transform", default="raw", choices=("raw", "log", "zscore"))
    s.add_argument(
        "--init",
        default="kmeans++",
        choices=("kmeans++", "random"),
        help="k-means initialisation (random: the reference code's; default kmeans++)",
    )
    s.add_argument(
        "--fill",
        type=float,
        default=0.0,
        help="loss of examples without response tokens (reference: 0)",
    )
    s.add_argument("--drop-empty", action="store_true", help="drop examples without targets")
    s.add_argument("--plot", default=None, help="PNG: cluster-mean trajectories and allocation")
    s.add_argument("--data", default=None, help="pool file (default: the one recorded)")
    s.add_argument("--subset-out", default=None, help="write the selected records as JSONL")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=cmd_select)
