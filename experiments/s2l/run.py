"""Validate S2L end to end: the spec pilot's multi-skill toy and the real-text mixture.

Run: ``python experiments/s2l/run.py --out DIR [--data DIR] [--settings base,k8,...] [--smoke]``.
Per setting and seed: draw the task, train the proxy on the whole pool while sweeping it at T
checkpoints (`record_trajectories`: `jaxlaw.training.train` with an inline sweep), select every
arm's subset (same budget), fine-tune the target on each (same steps, one `train` call per arm),
score on the held-out sets.
Writes DIR/summary.json (one entry per setting, metric and arm: mean, paired difference to
random with its 95 % t-interval, purity, per-source allocation, the pilot's numbers) and
DIR/seeds.json (every seed's raw numbers).
"""

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import jax
import jax.random as jr
import numpy as np
from flax import nnx

from jaxlaw.data_selection.s2l import record_trajectories
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import TrainConfig, evaluate

from . import config as C
from . import toy as toys


def adam(steps: int, batch: int, lr: float, seed: int, **kw) -> TrainConfig:
    """The pilot's optimiser: Adam (0.9, 0.999), constant rate, no decay, no clipping."""
    kw = dict(warmup_steps=0, end_lr_ratio=1.0, clip_norm=None) | kw
    return TrainConfig(steps=steps, batch_size=batch, lr=lr, seed=seed, log_every=10**9, **kw)


def skill_seed(s, seed: int, cache: dict) -> dict:
    toy = toys.make_skill_toy(s.toy, key=jr.fold_in(jr.key(seed), 0))
    pkey = (s.toy, s.proxy, seed)
    if pkey not in cache:
        g, p = s.toy.n_skills, s.proxy
        proxy = toys.SkillMLP(g, s.toy.vocab, p.embed, p.hidden, rngs=nnx.Rngs(seed))
        spe = s.toy.n_pool // p.batch  # checkpoint every half epoch, as the pilot
        cfg = adam(p.epochs * spe, p.batch, p.lr, seed)
        rec = record_trajectories(
            proxy, toy.pool, cfg, checkpoints=2 * p.epochs, batch_size=2048, progress=False
        )
        cache[pkey] = (rec.trajectories, toys.prompt_embeddings(proxy, toy.pool))
    traj, emb = cache[pkey]
    sels = toys.select_arms(
        s.arms,
        traj,
        s.budget,
        key=jr.fold_in(jr.key(seed), 1),
        k=s.k,
        embeddings=emb,
        transform=s.transform,
        init=s.init,
        max_points_per_centroid=s.max_points_per_centroid,
    )
    g, t = s.toy.n_skills, s.target
    target = toys.SkillMLP(g, s.toy.vocab, t.embed, t.hidden, rngs=nnx.Rngs(100 + seed))

    def score(m):
        bal = toys.source_means(toys.example_accuracy(m, toy.test), toy.test.source_id, g)
        ce = evaluate(m, toy.test, batch_size=1024)
        return dict(
            balanced=float(bal.mean()),
            per_source=bal.tolist(),
            iid=float(toys.example_accuracy(m, toy.test_iid).mean()),
            balanced_ce=float(np.mean(ce.total / np.maximum(ce.count, 1))),
        )

    cfg = adam(t.steps, t.batch, t.lr, seed)
    out = toys.score_arms(target, toy.pool, sels, cfg, score, cache=cache, tag=(s.toy, t, seed))
    final = toys.source_means(traj.mean()[:, -1], traj.source_id, g)
    return dict(arms=out, proxy_final_loss_per_source=final.tolist())


def text_seed(t, seed: int, root, cache: dict) -> dict:
    mix = toys.make_text_mixture(t.mix, root=root, key=jr.fold_in(jr.key(seed), 0))
    n_src = len(toys.MIXTURE_SOURCES)

    def decoder(hidden, layers, key):
        cfg = ModelConfig.tiny(
            "gpt2",
            vocab_size=257,
            hidden_size=hidden,
            n_layers=layers,
            n_heads=2,
            intermediate_size=2 * hidden,
            max_positions=t.mix.seq_len,
        )
        return init_model(cfg, key=key)

    proxy = decoder(t.proxy_hidden, t.proxy_layers, jr.fold_in(jr.key(seed), 2))
    steps = t.proxy_epochs * t.mix.n_pool // t.batch
    cfg = adam(steps, t.batch, t.lr, seed, warmup_steps=max(1, steps // 33), end_lr_ratio=0.0)
    rec = record_trajectories(
        proxy, mix.pool, cfg, checkpoints=t.checkpoints, batch_size=2048, progress=False
    )
    traj = rec.trajectories
    emb = toys.prompt_embeddings(proxy, mix.pool)
    sels = toys.select_arms(
        t.arms, traj, t.budget, key=jr.fold_in(jr.key(seed), 1), k=t.k, embeddings=emb
    )
    target = decoder(t.target_hidden, t.target_layers, jr.fold_in(jr.key(seed), 3))

    def score(m):
        ev = evaluate(m, mix.test, batch_size=512)
        per = toys.source_means(ev.total / np.maximum(ev.count, 1), mix.test.source_id, n_src)
        return dict(macro_loss=float(per.mean()), per_source=per.tolist())

    tcfg = adam(
        t.target_steps,
        t.batch,
        t.lr,
        seed,
        warmup_steps=max(1, t.target_steps // 33),
        end_lr_ratio=0.0,
    )
    out = toys.score_arms(target, mix.pool, sels, tcfg, score, cache=cache, tag=(t, seed))
    final = toys.source_means(traj.mean()[:, -1], traj.source_id, n_src)
    return dict(arms=out, proxy_final_loss_per_source=final.tolist())


def summarize(name, metric, seeds: list[dict], pilot=None) -> list[dict]:
    """One summary entry per arm; with ``pilot``: the spec's measured numbers and whether
    ours agree within seed noise (|d - d_pilot| <= the two half-widths combined)."""
    entries = []
    for arm, e in toys.summarize_arms([r["arms"] for r in seeds], metric).items():
        e = dict(setting=name, metric=metric, arm=arm, **e)
        if pilot is not None and arm in pilot and arm != "random":
            pm, pd, ph = pilot[arm]
            ok = abs(e["diff_vs_random"] - pd) <= np.hypot((e["ci_high"] - e["ci_low"]) / 2, ph)
            e["pilot"] = dict(mean=pm, diff=pd, half=ph, seeds=pilot["seeds"], agrees=bool(ok))
        entries.append(e)
    return entries


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="folder holding text/ (default: shared data)")
    ap.add_argument("--settings", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--smoke", action="store_true", help="the 30-second variant")
    a = ap.parse_args(argv)
    cfg = (C.S2LConfig.smoke if a.smoke else C.S2LConfig)(out=a.out, data=a.data)
    if a.settings:
        keep = set(a.settings.split(","))
        cfg = replace(
            cfg,
            settings=tuple(s for s in cfg.settings if s.name in keep),
            text=cfg.text if "text" in keep else None,
        )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, cache, raw, entries, info = time.perf_counter(), {}, {}, [], {}
    # Text corpora are not bundled with jaxlaw: --data, else $JAXLAW_DATA, else ../shared/data.
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    root = Path(cfg.data or os.environ.get("JAXLAW_DATA") or shared)
    jobs = [(s, "balanced", lambda seed, s=s: skill_seed(s, seed, cache)) for s in cfg.settings]
    if cfg.text is not None:  # metric: macro-averaged held-out loss, lower is better
        jobs.append((cfg.text, "macro_loss", lambda seed: text_seed(cfg.text, seed, root, cache)))
    for s, metric, run_seed in jobs:
        raw[s.name] = []
        for seed in range(s.seeds):
            raw[s.name].append(run_seed(seed))
            print(f"[{time.perf_counter() - t0:6.1f}s] {s.name} seed {seed}", flush=True)
        final = np.mean([r["proxy_final_loss_per_source"] for r in raw[s.name]], 0)
        info[s.name] = dict(proxy_final_loss_per_source=final.tolist())
        pilot = C.PILOT.get(getattr(s, "pilot", None))
        entries += summarize(s.name, metric, raw[s.name], pilot)
        if metric == "balanced":
            entries += summarize(f"{s.name}_iid", "iid", raw[s.name])
    seconds = time.perf_counter() - t0
    devices = [str(d) for d in jax.devices()]
    summary = dict(entries=entries, settings=info, seconds=seconds, devices=devices)
    (out / "summary.json").write_text(json.dumps(summary | dict(config=asdict(cfg)), indent=1))
    (out / "seeds.json").write_text(json.dumps(raw, indent=1))
    for e in entries:
        p = e.get("pilot")
        p = (
            f"  pilot {p['diff']:+.3f}±{p['half']:.3f} {'ok' if p['agrees'] else 'DIFFERS'}"
            if p
            else ""
        )
        print(
            f"{e['setting']:12s} {e['arm']:15s} {e['mean']:.3f} {e['diff_vs_random']:+.3f} "
            f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] purity {e['purity'] or 0:.2f}{p}"
        )
    print(f"wrote {out / 'summary.json'} ({seconds:.0f}s)")
    return summary


if __name__ == "__main__":
    main()
