"""Benchmark: S2L's k-means (jaxlaw vs scikit-learn vs faiss-cpu) and trajectory recording.

Run from the repo root (standalone; never collected by pytest)::

    python benchmark/bench_s2l.py [--sizes 100000 1000000] [--blocks N] [--quick] [--no-proxy]
                                  [--no-save]

Part 1, k-means on N x T = 12 float32 synthetic loss trajectories (400 groups of exp-decay
curves 2.5·exp(-r_g·t) + floor_g with their own rate and floor, Zipf group sizes, N(0, 0.05²)
noise: the spec §3.3 A positive control at scale), K = 100, 20 Lloyd iterations, then every row
assigned. Two settings:

- **full data, same init**: the same K rows (seeded numpy draw) start all three.
  jaxlaw ``lloyd(x, c0, iters=20)``; scikit-learn ``KMeans(init=c0, n_init=1, max_iter=20,
  tol=0, algorithm="lloyd").fit`` (+ ``labels_``); faiss ``Kmeans(12, 100, niter=20,
  max_points_per_centroid=N)`` ``.train(x, init_centroids=c0)`` + ``index.search(x, 1)``.
- **subsample-train-then-assign** (the reference's faiss defaults): centroids trained on a seeded
  25,600-row (256·K) subsample from their own random init, then all rows assigned. jaxlaw
  ``kmeans(x, 100, key=..., max_points_per_centroid=256)`` vs faiss ``Kmeans(12, 100,
  niter=20, seed=1234)`` (default ``max_points_per_centroid=256``) + search.

Every objective (sum of squared distances of all rows to their nearest centroid) is recomputed
here in float64 from each method's final centroids, so all are measured the same way; each
worker's own figure is kept in the JSON. jaxlaw is called through its public entry points only:
the first call (compile + run) is timed apart from the steady state, and ``compile_est_s`` is
their difference.

Part 2, trajectory recording throughput for a tiny proxy (``ModelConfig.tiny("gpt_neox")``,
2 layers, hidden 64, vocab 100; pool of 2,048 examples x 64 tokens, 16 prompt + 48 response):
``jaxlaw.data_selection.s2l`` ``record_trajectories`` (train 120 steps of batch 32 and sweep the
pool inline at T = 12 checkpoints; examples·checkpoints per second of sweeping), one pool sweep
with `jaxlaw.training.evaluate` (the recording primitive) and ``stacked_losses`` (all T states in
one vmapped pass), vs the reference's way (HF ``GPT2LMHeadModel`` of the same size in torch,
eval mode, no grad, batch size 1, HF loss with the prompt masked) and torch batched (256).

Method (/work/shared/benchmarking.md): every method runs in its own worker process (this file
with ``--worker``), one at a time for setup and compile, then timed runs alternate ABBA
(forward order, then reversed) between the workers; figures are medians over the timed runs.
Workers get ``OMP_WAIT_POLICY=PASSIVE`` and JAX is pinned to the CPU (benchmark/_harness.py).
One JSON line per run is appended to benchmark/results/bench_s2l.jsonl. The full run takes ~4-6
minutes on the 2-core dev machine; ``--quick`` (N = 1e5 only, 2 blocks, smaller proxy sweep)
about 1.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _harness import (
    Worker,
    abba,
    close_all,
    contention_note,
    finish,
    one_shot,
    serve,
    start,
    summarize,
)

RESULTS = Path(__file__).resolve().parent / "results" / "bench_s2l.jsonl"
T, K, ITERS, GROUPS = 12, 100, 20, 400
SUBSAMPLE = 256  # faiss's default max_points_per_centroid
SEED = 0
KM_METHODS = ("jaxlaw_full", "sklearn_full", "faiss_full", "jaxlaw_sub", "faiss_sub")
PROXY = dict(n=2048, seq=64, prompt=16, ckpts=12, train_steps=120, train_batch=32, batch=256)
QUICK_PROXY = dict(n=512, train_steps=24)


def trajectories(n: int, seed: int = SEED) -> np.ndarray:
    """Synthetic loss trajectories: GROUPS exp-decay curves, Zipf sizes, N(0, 0.05²) noise."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 1.5, GROUPS)
    floors = rng.uniform(0.1, 2.0, GROUPS)
    p = 1.0 / np.arange(1, GROUPS + 1)
    group = rng.choice(GROUPS, n, p=p / p.sum())
    steps = np.arange(1, T + 1)
    curves = 2.5 * np.exp(-rates[:, None] * steps[None]) + floors[:, None]
    return (curves[group] + rng.normal(0.0, 0.05, (n, T))).astype(np.float32)


def init_rows(n: int) -> np.ndarray:
    return np.random.default_rng(SEED + 1).choice(n, K, replace=False)


def objective64(x: np.ndarray, c: np.ndarray, chunk: int = 200_000) -> float:
    """Sum over rows of the squared distance to the nearest centroid, in float64."""
    c = c.astype(np.float64)
    cc = (c * c).sum(1)
    total = 0.0
    for lo in range(0, len(x), chunk):
        xb = x[lo : lo + chunk].astype(np.float64)
        d = cc[None] - 2.0 * xb @ c.T
        total += float((d.min(1) + (xb * xb).sum(1)).clip(min=0).sum())
    return total


# ------------------------------------------------------------------------------ k-means workers
class KMeansRunner:
    """One k-means method on one N; ``run()`` does a whole fit + assignment."""

    def __init__(self, method: str, n: int):
        self.method, self.n = method, n
        self.x = trajectories(n)
        self.c0 = self.x[init_rows(n)]
        self.info: dict = {}
        self.runs = 0
        getattr(self, f"_setup_{method.split('_')[0]}")()

    # -- jaxlaw
    def _setup_jaxlaw(self):
        import jax
        import jax.numpy as jnp

        from jaxlaw.data_selection.s2l import kmeans, lloyd

        # Public entry points only: their compile is the first call's excess over a steady
        # call (``first_run_s - median_s``), reported as ``compile_est_s``.
        self.jax = jax
        x = jax.block_until_ready(jnp.asarray(self.x))
        c0 = jnp.asarray(self.c0)
        if self.method == "jaxlaw_full":
            self.fit = lambda: lloyd(x, c0, iters=ITERS)
        else:
            key = jax.random.key(SEED)
            self.fit = lambda: kmeans(
                x, K, key=key, init="random", iters=ITERS, max_points_per_centroid=SUBSAMPLE
            )

    def _run_jaxlaw(self):
        res = self.jax.block_until_ready(self.fit())
        return np.asarray(res.centroids), float(res.objective), int(res.n_iter)

    # -- scikit-learn
    def _setup_sklearn(self):
        from sklearn.cluster import KMeans

        self.make = lambda: KMeans(
            K, init=self.c0, n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd"
        )

    def _run_sklearn(self):
        km = self.make().fit(self.x)
        _ = km.labels_
        return km.cluster_centers_, float(km.inertia_), int(km.n_iter_)

    # -- faiss
    def _setup_faiss(self):
        import faiss

        self.faiss = faiss
        self.info = {"faiss_threads": faiss.omp_get_max_threads()}

    def _run_faiss(self):
        full = self.method == "faiss_full"
        mp = self.n if full else SUBSAMPLE  # n >= n/K: no subsampling in the full setting
        km = self.faiss.Kmeans(T, K, niter=ITERS, seed=1234, max_points_per_centroid=mp)
        km.train(self.x, init_centroids=self.c0 if full else None)
        dist, _ = km.index.search(self.x, 1)
        return km.centroids.copy(), float(dist.sum()), ITERS

    def run(self) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        centroids, own_obj, n_iter = getattr(self, f"_run_{self.method.split('_')[0]}")()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.runs += 1
        out = {"wall": wall, "cpu": cpu, "own_objective": own_obj, "n_iter": n_iter}
        if self.runs == 1:
            out["centroids"] = np.asarray(centroids, np.float64).tolist()
        return out


# ---------------------------------------------------------------------------- proxy workers
def proxy_pool(spec: dict):
    from jaxlaw.data import TokenizedSet

    rng = np.random.default_rng(SEED)
    n, seq = spec["n"], spec["seq"]
    tokens = rng.integers(0, 100, (n, seq)).astype(np.int32)
    loss_mask = np.zeros((n, seq), bool)
    loss_mask[:, spec["prompt"] :] = True
    return TokenizedSet(
        tokens,
        np.ones((n, seq), bool),
        loss_mask,
        np.arange(n, dtype=np.int32),
        np.zeros(n, np.int32),
        ("all",),
    )


def proxy_jaxlaw(spec: dict) -> dict:
    import jax
    from flax import nnx

    from jaxlaw.data_selection.s2l import record_trajectories, stacked_losses
    from jaxlaw.models import ModelConfig, init_model
    from jaxlaw.training import TrainConfig, evaluate

    pool = proxy_pool(spec)
    n, t, bs = spec["n"], spec["ckpts"], spec["batch"]
    model = init_model(ModelConfig.tiny("gpt_neox"), key=jax.random.key(SEED))
    out = {"n_params": sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model)))}

    t0 = time.perf_counter()
    evaluate(model, pool, batch_size=bs)
    out["evaluate_first_s"] = time.perf_counter() - t0  # includes the compile
    sweeps = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        evaluate(model, pool, batch_size=bs)
        sweeps.append(time.perf_counter() - t0)
    out["evaluate_s"] = sweeps
    out["evaluate_examples_per_s"] = n / float(np.median(sweeps))

    states = [nnx.state(model, nnx.Param)] * t
    t0 = time.perf_counter()
    stacked_losses(model, states, pool, batch_size=bs)
    out["stacked_first_s"] = time.perf_counter() - t0
    st = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        stacked_losses(model, states, pool, batch_size=bs)
        st.append(time.perf_counter() - t0)
    out["stacked_s"] = st
    out["stacked_example_ckpts_per_s"] = n * t / float(np.median(st))

    config = TrainConfig(
        steps=spec["train_steps"], batch_size=spec["train_batch"], lr=1e-3, warmup_steps=5
    )
    t0 = time.perf_counter()
    rec = record_trajectories(model, pool, config, checkpoints=t, batch_size=bs, progress=False)
    out["record_total_s"] = time.perf_counter() - t0
    out["record_sweep_s"] = rec.sweep_seconds
    out["record_train_s"] = rec.train.seconds - rec.sweep_seconds
    out["record_sweep_example_ckpts_per_s"] = n * t / rec.sweep_seconds
    out["record_shape"] = list(rec.trajectories.total.shape)
    return out


def proxy_torch(spec: dict) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    torch.set_num_threads(os.cpu_count() or 1)
    pool = proxy_pool(spec)
    cfg = GPT2Config(
        vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(cfg).eval()
    tokens = torch.from_numpy(pool.tokens.astype(np.int64))
    labels = tokens.clone()
    labels[torch.from_numpy(~pool.loss_mask)] = -100
    n = spec["n"]
    n1 = min(n, spec["batch1_examples"])
    out = {
        "n_params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }
    with torch.no_grad():
        model(tokens[:1], labels=labels[:1])  # warm-up
        t0 = time.perf_counter()
        for i in range(n1):  # the reference: one example at a time, HF's mean response loss
            model(tokens[i : i + 1], labels=labels[i : i + 1]).loss.item()
        out["batch1_s"] = time.perf_counter() - t0
        out["batch1_examples"] = n1
        out["batch1_examples_per_s"] = n1 / out["batch1_s"]
        bs = spec["batch"]

        def sweep():
            res = []
            for lo in range(0, n, bs):
                logits = model(tokens[lo : lo + bs]).logits[:, :-1]
                tgt = labels[lo : lo + bs, 1:]
                nll = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none"
                )
                res.append(nll.sum(1) / (tgt != -100).sum(1))
            return torch.cat(res)

        sweep()
        times = []
        for _ in range(spec["reps"]):
            t0 = time.perf_counter()
            sweep()
            times.append(time.perf_counter() - t0)
    out["batched_s"] = times
    out["batched_examples_per_s"] = n / float(np.median(times))
    return out


# --------------------------------------------------------------------------------- plumbing
class _KMeansWorker:
    def __init__(self, method: str, n: int):
        t0 = time.perf_counter()
        self.runner = KMeansRunner(method, n)
        first = self.runner.run()  # warm-up (jaxlaw: includes the compile)
        self.info = self.runner.info | {"setup_s": time.perf_counter() - t0, "first_run": first}


def worker_main(args) -> None:
    spec = json.loads(args.spec)
    if args.worker == "proxy_jaxlaw":
        serve(lambda: proxy_jaxlaw(spec), None)
    elif args.worker == "proxy_torch":
        serve(lambda: proxy_torch(spec), None)
    else:
        serve(lambda: _KMeansWorker(args.worker, spec["n"]), lambda w, cmd: w.runner.run())


def bench_kmeans(n: int, blocks: int, log_dir: Path) -> dict:
    print(
        f"\n[k-means N={n:,} x T={T}, K={K}, {ITERS} iterations] {blocks} timed runs per method, "
        "ABBA order"
    )
    x = trajectories(n)
    workers: dict[str, Worker] = {}
    try:
        for m in KM_METHODS:  # setup + compile + a warm-up fit, one worker at a time
            workers[m] = Worker(__file__, m, {"n": n}, log_dir=log_dir)
        replies = abba(workers, blocks, {"op": "run"})
    finally:
        final = close_all(workers)
    stats = {}
    for m in KM_METHODS:
        setup = workers[m].setup
        times = [r["wall"] for r in replies[m]]
        s = summarize(times, [r["cpu"] for r in replies[m]])
        stats[m] = (
            {k: s[k] for k in ("median_s", "min_s", "max_s", "cpu_over_wall")}
            | {
                "objective": objective64(x, np.asarray(setup["first_run"]["centroids"])),
                "own_objective": replies[m][0]["own_objective"],
                "n_iter": setup["first_run"]["n_iter"],
                "first_run_s": setup["first_run"]["wall"],
                "wall_s": times,
                "peak_rss_mb": final[m]["peak_rss_mb"],
            }
            | {k: v for k, v in setup.items() if k != "first_run"}
        )
        if m.startswith("jaxlaw"):
            stats[m]["compile_est_s"] = stats[m]["first_run_s"] - stats[m]["median_s"]
    base = stats["sklearn_full"]["objective"]
    print(
        f"{'method':13s} {'median s (min-max)':>22s} {'objective (f64)':>17s} {'obj/sklearn':>11s} "
        f"{'iters':>5s} {'cpu/wall':>8s} {'compile':>8s} {'RSS MB':>7s}"
    )
    for m in KM_METHODS:
        s = stats[m]
        comp = f"{s['compile_est_s']:.2f}s" if "compile_est_s" in s else "-"
        print(
            f"{m:13s} {s['median_s']:9.3f} ({s['min_s']:.3f}-{s['max_s']:.3f}) "
            f"{s['objective']:17,.1f} {s['objective'] / base:11.4f} {s['n_iter']:5d} "
            f"{s['cpu_over_wall']:8.2f} {comp:>8s} {s['peak_rss_mb']:7,.0f}"
        )
    ratios = {
        "full_jaxlaw_over_faiss_time": stats["jaxlaw_full"]["median_s"]
        / stats["faiss_full"]["median_s"],
        "full_jaxlaw_over_sklearn_time": stats["jaxlaw_full"]["median_s"]
        / stats["sklearn_full"]["median_s"],
        "sub_jaxlaw_over_faiss_time": stats["jaxlaw_sub"]["median_s"]
        / stats["faiss_sub"]["median_s"],
        "full_jaxlaw_over_sklearn_objective": stats["jaxlaw_full"]["objective"] / base,
        "sub_jaxlaw_over_faiss_objective": stats["jaxlaw_sub"]["objective"]
        / stats["faiss_sub"]["objective"],
    }
    print(
        "time ratios (jaxlaw / other; < 1 = jaxlaw faster): full data vs faiss "
        f"{ratios['full_jaxlaw_over_faiss_time']:.2f}, vs sklearn "
        f"{ratios['full_jaxlaw_over_sklearn_time']:.2f}; subsample vs faiss "
        f"{ratios['sub_jaxlaw_over_faiss_time']:.2f}. objective ratios: full vs sklearn "
        f"{ratios['full_jaxlaw_over_sklearn_objective']:.5f}, subsample vs faiss "
        f"{ratios['sub_jaxlaw_over_faiss_objective']:.4f}"
    )
    return {"n": n, "blocks": blocks, "methods": stats, "ratios": ratios}


def bench_proxy(spec: dict, log_dir: Path) -> dict:
    print(
        f"\n[trajectory recording] tiny proxy, pool {spec['n']} x {spec['seq']} tokens "
        f"({spec['seq'] - spec['prompt']} response), T={spec['ckpts']}"
    )
    out = {
        kind: one_shot(__file__, kind, spec, log_dir=log_dir)
        for kind in ("proxy_jaxlaw", "proxy_torch")
    }
    j, t = out["proxy_jaxlaw"], out["proxy_torch"]
    print(
        f"  jaxlaw evaluate (one sweep, batch {spec['batch']}): "
        f"{j['evaluate_examples_per_s']:,.0f} examples/s (first call with compile "
        f"{j['evaluate_first_s']:.2f} s)\n"
        f"  jaxlaw stacked_losses (T={spec['ckpts']} states, one pass): "
        f"{j['stacked_example_ckpts_per_s']:,.0f} example-checkpoints/s\n"
        f"  jaxlaw record_trajectories: {j['record_total_s']:.1f} s total = train "
        f"{j['record_train_s']:.1f} s ({spec['train_steps']} steps) + sweeps "
        f"{j['record_sweep_s']:.1f} s = {j['record_sweep_example_ckpts_per_s']:,.0f} "
        "example-checkpoints/s\n"
        f"  torch (HF GPT-2 same size, eval, no grad): batch 1 (reference loop) "
        f"{t['batch1_examples_per_s']:,.0f} examples/s; batch {spec['batch']} "
        f"{t['batched_examples_per_s']:,.0f} examples/s\n"
        f"  ratios: jaxlaw evaluate / torch batch-1 "
        f"{j['evaluate_examples_per_s'] / t['batch1_examples_per_s']:.1f}x; / torch batched "
        f"{j['evaluate_examples_per_s'] / t['batched_examples_per_s']:.2f}x"
    )
    return out


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", help="k-means row counts")
    ap.add_argument("--blocks", type=int, help="timed runs per method (ABBA)")
    ap.add_argument("--quick", action="store_true", help="smoke test")
    ap.add_argument("--no-proxy", action="store_true", help="skip the recording part")
    ap.add_argument("--no-save", action="store_true", help="do not append to the results file")
    ap.add_argument(
        "--worker",
        choices=(*KM_METHODS, "proxy_jaxlaw", "proxy_torch"),
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    record = start("bench_s2l")
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    kmeans_results = []
    for n in sizes:
        blocks = args.blocks or (2 if args.quick else (6 if n <= 200_000 else 4))
        kmeans_results.append(bench_kmeans(n, blocks, log_dir))
    proxy = None
    if not args.no_proxy:
        spec = dict(PROXY) | (QUICK_PROXY if args.quick else {})
        spec |= {"reps": 2 if args.quick else 5, "batch1_examples": 256 if args.quick else 512}
        proxy = bench_proxy(spec, log_dir)
    verdicts = []
    for r in kmeans_results:
        q = r["ratios"]
        verdicts.append(
            f"N={r['n']:,}: full-data jaxlaw {q['full_jaxlaw_over_faiss_time']:.2f}x faiss's time "
            f"(target <= 2: {'met' if q['full_jaxlaw_over_faiss_time'] <= 2 else 'NOT met'}), "
            f"{q['full_jaxlaw_over_sklearn_time']:.2f}x sklearn's (target < 1: "
            f"{'met' if q['full_jaxlaw_over_sklearn_time'] < 1 else 'NOT met'}); subsample mode "
            f"{q['sub_jaxlaw_over_faiss_time']:.2f}x faiss's "
            f"({'met' if q['sub_jaxlaw_over_faiss_time'] <= 2 else 'NOT met'})"
        )
    print("\ninterpretation: " + "; ".join(verdicts) + ". " + contention_note(record))
    record |= {
        "setup": {"T": T, "K": K, "iters": ITERS, "groups": GROUPS, "subsample": SUBSAMPLE},
        "kmeans": kmeans_results,
        "proxy": proxy,
    }
    packages = ("jax", "jaxlib", "flax", "scikit-learn", "faiss-cpu", "torch", "numpy")
    return finish(record, RESULTS, save=not args.no_save, packages=packages)


if __name__ == "__main__":
    main()
