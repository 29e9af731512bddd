"""GradEx end to end on the noisy addition task, checked against real fine-tunes (spec §4.4-4.5).

Entry points: `run_gradex` (the whole validation experiment from a `GradexConfig`),
`finetune_subsets` (real LoRA fine-tunes of one model on many subsets at once, the ground
truth) and `subset_losses` (target loss of a stack of LoRA states), plus `compare_estimates`
(the agreement metrics of §4.5)::

    result = run_gradex(GradexConfig.smoke())
    result.summary["pearson"], result.summary["auroc"]

The steps of `run_gradex`, each seeded from ``config.seed``:

1. data: `addition_task` (K sources of 25 samples, the last ``n_noisy`` noisy; V and T clean);
2. stage A: pre-train the base decoder on clean samples (every weight, `jaxlaw.training.train`);
3. stage B: theta* = LoRA multitask fine-tune of the base on all K sources;
4. GradEx features: projected per-sample grads at theta* (``n_projections`` seeds);
5. subsets: N random test subsets, and ``n_calibration`` calibration subsets picked without
   labels to span the range of losses (evenly spaced ranks of the linear-mode estimate on V
   among ``n_candidates`` random subsets);
6. ground truth: `finetune_subsets` from theta* on all of them (and, as the reference does,
   from the base with a fresh LoRA on the test subsets);
7. GradEx estimates: logistic fits with offsets for every subset, lifted estimates on T
   (`estimate_lifted`, the projection seeds averaged in parameter space);
   ``lam`` and ``scale`` chosen by grid search on the calibration subsets against their real
   losses on V (never on T); linear-mode estimates beside them;
8. checks: Taylor errors of the linearised log-odds, random ensemble over ``n_ensemble``
   estimated subsets (scores on V), AUROC of clean vs noisy, top-k selection, and real
   fine-tunes on the selected sources vs all sources.
Timings of the GradEx steps and of the real fine-tunes are kept apart.
"""

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.random as jr
import numpy as np
from flax import nnx
from rich.console import Console
from scipy import stats

from jaxlaw._types import Key
from jaxlaw.data import TokenizedSet, take
from jaxlaw.data_selection.gradex import (
    Projection,
    auroc,
    calibrate_scale,
    compare_estimates,
    estimate_lifted,
    estimate_linear,
    finetune_subsets,
    fit_subsets,
    lora_norm,
    meta_train,
    projected_grads,
    random_ensemble,
    sample_mask,
    select_threshold,
    subset_losses,
    subset_masks,
    taylor_errors,
)
from jaxlaw.lora import LoraConfig, apply_lora, split_lora
from jaxlaw.models import ModelConfig, init_model
from jaxlaw.training import TrainConfig, evaluate, mean_loss
from jaxlaw.training import train as train_model

from .addition import SYMBOLS, AdditionTask, addition_task


def _spearman(a, b) -> float:
    return float(stats.spearmanr(a, b).statistic)


# Spec §4.4: 2 layers, d_model 128, 4 heads, MLP 512, learned positions, tied embeddings, a
# context of 48 (rows are at most 37 tokens). GPT-2 layout: LoRA on the fused qkv projection
# (the reference's GPT-2 ``c_attn``), so rank 4 gives p = 2 x (128x4 + 4x384) = 4,096.
ADDITION_MODEL = ModelConfig.tiny(
    "gpt2",
    vocab_size=len(SYMBOLS),
    hidden_size=128,
    n_heads=4,
    intermediate_size=512,
    max_positions=48,
)


@dataclass(frozen=True)
class GradexConfig:
    """Every knob of the GradEx validation experiment (defaults: spec §4.4).

    Attributes:
        seed: one seed for everything (data, init, subsets, data orders, projections).
        n_sources, n_noisy, per_source: K sources of ``per_source`` samples; the last
            ``n_noisy`` are noisy.
        n_pretrain, n_valid, n_test: sizes of the stage-A set, of V (selection and
            calibration) and of T (reporting only).
        seq_len: padded row length (rows have at most 37 tokens).
        model: the decoder.
        pretrain: stage A (every weight trains); 80 steps of 64 reach a test CE of about 0.5.
        lora: adapters of theta* (rank 4, alpha 8, on the fused qkv projection).
        meta: stage B, theta* on all sources (160 steps of 32 = about 10 epochs of 500).
        finetune: every real fine-tune (ground truth and final): 40 steps, batch 32.
        n_subsets: N test subsets; n_calibration: extra subsets for choosing lam and scale.
        n_candidates: random subsets ranked by their linear-mode estimate on V; the
            calibration subsets are those at evenly spaced ranks (a label-free design that
            spans the range of losses).
        subset_size: sources per subset (K/2).
        proj_dim, n_projections: projection width d and number of projection seeds averaged.
        lams: candidate penalties of the logistic fit (relative rule of `fit_subsets`).
        scales: candidate ``||D|| / ||theta*_LoRA||``.
        eps: probability guard of the log-odds.
        taylor_rhos, taylor_directions: the Taylor check's relative sizes and directions.
        n_ensemble, ensemble_size: random-ensemble subsets (m) and their size.
        ensemble_target: the ensemble's estimates are scored on the first this many rows of V
            (its 200 lifted evaluations are the costliest step of the run).
        top_k: sources kept by the selection.
        n_final_seeds: data-order seeds of the final selected-vs-all fine-tunes (averaged).
        base_variant: also fine-tune from the base with a fresh LoRA (ground-truth variant).
        bootstrap: resamples for the confidence interval of the Pearson r.
        fit_iters: Newton iterations of the logistic fits (5 already reach float64 round-off
            on this task; the default leaves a margin).
        eval_batch, eval_chunk: target rows per forward pass and subsets per compiled
            evaluation call (small is fast on CPU: 32 x 1 ran 2.7x faster than 128 x 4).
        subset_chunk: subsets per compiled fine-tuning call.
    """

    seed: int = 0
    n_sources: int = 20
    n_noisy: int = 8
    per_source: int = 25
    n_pretrain: int = 2000
    n_valid: int = 512
    n_test: int = 512
    seq_len: int = 40
    model: ModelConfig = ADDITION_MODEL
    pretrain: TrainConfig = TrainConfig(
        steps=80, batch_size=64, lr=3e-3, warmup_steps=10, weight_decay=1e-4, log_every=20
    )
    lora: LoraConfig = LoraConfig(targets=r"attn\.qkv$", rank=4, alpha=8.0)
    meta: TrainConfig = TrainConfig(steps=160, batch_size=32, lr=1e-3, warmup_steps=10)
    finetune: TrainConfig = TrainConfig(steps=40, batch_size=32, lr=1e-3, warmup_steps=0)
    n_subsets: int = 32
    n_calibration: int = 4
    n_candidates: int = 64
    subset_size: int = 10
    proj_dim: int = 128
    n_projections: int = 3
    lams: tuple[float, ...] = (1.0, 10.0, 100.0)
    scales: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    eps: float = 1e-3
    taylor_rhos: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    taylor_directions: int = 8
    n_ensemble: int = 200
    ensemble_size: int = 10
    top_k: int = 12
    n_final_seeds: int = 3
    base_variant: bool = True
    bootstrap: int = 2000
    fit_iters: int = 10
    eval_batch: int = 32
    eval_chunk: int = 1
    subset_chunk: int = 4
    ensemble_target: int = 256

    def __post_init__(self):
        if not 1 <= self.subset_size <= self.n_sources:
            raise ValueError(f"subset_size must be in 1..{self.n_sources}, got {self.subset_size}")
        if not 1 <= self.ensemble_size <= self.n_sources:
            raise ValueError(
                f"ensemble_size must be in 1..{self.n_sources}, got {self.ensemble_size}"
            )
        if not 1 <= self.top_k <= self.n_sources:
            raise ValueError(f"top_k must be in 1..{self.n_sources}, got {self.top_k}")
        if not 0 < self.n_noisy < self.n_sources:
            raise ValueError("n_noisy must leave both clean and noisy sources")
        for name in ("n_subsets", "n_calibration", "n_projections", "n_ensemble"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lams or not self.scales or not self.taylor_rhos:
            raise ValueError("lams, scales and taylor_rhos need at least one value each")

    @classmethod
    def smoke(cls, **overrides: Any) -> "GradexConfig":
        """The tests' small copy (spec §4.5): K = 8 sources (3 noisy), N = 12 subsets of 4,
        20-step fine-tunes, 2 projections, m = 32 ensemble subsets, a shorter stage A (test
        CE about 0.7), smaller V and T; about a minute on 2 CPU cores."""
        small = dict(
            n_sources=8,
            n_noisy=3,
            n_pretrain=1000,
            n_valid=128,
            n_test=128,
            pretrain=dataclasses.replace(cls.pretrain, steps=40, lr=5e-3),
            finetune=TrainConfig(steps=20, batch_size=32, lr=1e-3, warmup_steps=0),
            meta=TrainConfig(steps=60, batch_size=32, lr=1e-3, warmup_steps=10),
            n_subsets=12,
            n_calibration=3,
            subset_size=4,
            n_projections=2,
            lams=(10.0,),
            scales=(0.1, 0.2, 0.3),
            taylor_rhos=(0.01, 0.05, 0.1),
            taylor_directions=4,
            n_ensemble=32,
            ensemble_size=4,
            top_k=5,
            n_final_seeds=1,
            base_variant=False,
            bootstrap=500,
        )
        return dataclasses.replace(cls(), **(small | overrides))


# ------------------------------------------------------------------------------ pipeline


# One PRNG stream per purpose, ``fold_in(key(seed), index)``: adding a step never shifts another.
_STREAMS = ("data", "init", "lora", "subsets", "finetune", "ensemble", "taylor", "final",
            "bootstrap", "fresh_lora", "calibration")  # fmt: skip


class GradexResult(NamedTuple):
    """Everything `run_gradex` measured.

    Attributes:
        summary: JSON-able metrics (the keys of spec §4.5 and more; see `run_gradex`).
        subsets: ``[subsets, sources]`` bool, the N test subsets.
        true_loss: ``[subsets]`` real fine-tuned loss on T, fine-tuned from theta*.
        true_loss_base: the same from the base with a fresh LoRA (None if not run).
        estimate: ``[subsets]`` GradEx lifted estimates on T.
        estimate_linear: ``[subsets]`` linear-mode estimates on T (mean over projections).
        n_noisy: ``[subsets]`` number of noisy sources in each test subset.
        ensemble_subsets: ``[m, sources]`` the random-ensemble subsets.
        ensemble_estimates: ``[m]`` their lifted estimates on V.
        scores: ``[sources]`` random-ensemble scores (mean estimated loss; lower is better).
        noisy: ``[sources]`` True for the noisy sources.
        selected: ``[sources]`` the top-k selection.
        sources: source names.
        calibration: ``{"lam", "scale", "lams", "scales", "errors" [lams, scales],
            "true_losses_valid", "subsets" (source names), "candidate_rank_estimates"}``.
        taylor: rows ``{"rho", "direction", "first_order", "zeroth_order"}`` (means over the
            directions; ``direction`` is ``"random"`` or ``"subset_fit"``).
        timings: seconds of each step.
    """

    summary: dict
    subsets: np.ndarray
    true_loss: np.ndarray
    true_loss_base: np.ndarray | None
    estimate: np.ndarray
    estimate_linear: np.ndarray
    n_noisy: np.ndarray
    ensemble_subsets: np.ndarray
    ensemble_estimates: np.ndarray
    scores: np.ndarray
    noisy: np.ndarray
    selected: np.ndarray
    sources: tuple[str, ...]
    calibration: dict
    taylor: list
    timings: dict


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        Console(stderr=True).print(msg, highlight=False)


def pretrain_base(
    config: GradexConfig, data: TokenizedSet, *, key: Key, progress: bool = True
) -> nnx.Module:
    """Stage A: a freshly initialised `config.model` trained on ``data`` (every weight)."""
    model = init_model(config.model, key=key)
    train_model(
        model,
        data,
        config.pretrain,
        trainable=nnx.Param,
        progress=progress,
        description="stage A (base)",
    )
    return model


def run_gradex(
    config: GradexConfig, *, task: AdditionTask | None = None, progress: bool = True
) -> GradexResult:
    """The GradEx validation experiment on the noisy addition task (spec §4.4-4.5).

    See the module docstring for the steps. ``summary`` holds, among others: ``pearson``,
    ``spearman``, ``pearson_ci_low`` (95% bootstrap) and ``msre``, ``msre_constant``, ``mse``,
    ``mse_constant`` of the lifted estimates vs the real fine-tunes from theta* on T (and the
    same with suffix ``_linear`` for linear mode, ``_base`` against fine-tunes from the base);
    ``spearman_noisy`` (estimate vs number of noisy sources); ``auroc`` (random-ensemble scores,
    noisy = positive); ``loss_selected`` / ``loss_all`` (real fine-tunes from theta* on the
    top-k sources vs all sources, mean over ``n_final_seeds``; ``*_base`` from the base);
    ``taylor_ok``; the chosen ``lam`` and ``scale``; ``gradex_seconds`` (gradients once + fits +
    lifted evaluations of the N subsets) and ``finetune_seconds`` (the N real fine-tunes and
    their evaluation), and per-subset marginal costs.

    Args:
        config: the experiment.
        task: the data (None: `addition_task` from the config). Any `AdditionTask`-shaped
            splits work (e.g. real text); ``noisy`` marks the sources expected to hurt the
            target, ``config.model`` must fit its vocabulary and lengths, and the data fields
            of the config (``n_sources``, ...) must describe it.
        progress: progress bars and one log line per step (stderr).

    Returns:
        `GradexResult`.

    Raises:
        ValueError: ``task`` does not have ``config.n_sources`` sources.
    """
    c = config
    T: dict[str, float] = {}
    root = jr.key(c.seed)
    keys = {name: jr.fold_in(root, i) for i, name in enumerate(_STREAMS)}

    t = time.perf_counter()
    if task is None:
        task = addition_task(
            key=keys["data"],
            n_sources=c.n_sources,
            n_noisy=c.n_noisy,
            per_source=c.per_source,
            n_pretrain=c.n_pretrain,
            n_valid=c.n_valid,
            n_test=c.n_test,
            seq_len=c.seq_len,
        )
    if len(task.train.sources) != c.n_sources or task.noisy.shape != (c.n_sources,):
        raise ValueError(
            f"the task has {len(task.train.sources)} sources and {task.noisy.shape} labels; "
            f"config.n_sources is {c.n_sources}"
        )
    T["data"] = time.perf_counter() - t

    t = time.perf_counter()
    base = pretrain_base(c, task.pretrain, key=keys["init"], progress=progress)
    loss_base = mean_loss(evaluate(base, task.test, batch_size=c.eval_batch))
    T["stage_a"] = time.perf_counter() - t
    _log(progress, f"stage A: base model, test CE {loss_base:.4f} ({T['stage_a']:.0f}s)")

    t = time.perf_counter()
    theta = meta_train(base, c.lora, task.train, c.meta, key=keys["lora"], progress=progress)
    loss_star = mean_loss(evaluate(theta, task.test, batch_size=c.eval_batch))
    loss_star_v = mean_loss(evaluate(theta, task.valid, batch_size=c.eval_batch))
    T["stage_b"] = time.perf_counter() - t
    _log(progress, f"stage B: theta*, test CE {loss_star:.4f} ({T['stage_b']:.0f}s)")

    source_id = task.train.source_id
    ev = dict(batch_size=c.eval_batch, subset_chunk=c.eval_chunk)

    # ---- GradEx: gradients once, fits, lifted estimates.
    _, lora_star, _ = split_lora(theta)
    projections = tuple(
        Projection.for_tree(lora_star, dim=c.proj_dim, seed=c.seed * 1000 + k)
        for k in range(c.n_projections)
    )
    t = time.perf_counter()
    pg = projected_grads(theta, task.train, projections, eps=c.eps, progress=progress)
    grams = tuple(p.gram() for p in projections)
    theta_norm = float(lora_norm(lora_star))
    T["grads"] = time.perf_counter() - t

    def fits(sample_masks: np.ndarray, lam: float) -> np.ndarray:
        """[projs, subsets, d]; rows go in padded blocks of 32, so one compilation serves
        every call (calibration, test, Taylor and ensemble subsets)."""
        n = sample_masks.shape[0]
        padded = np.concatenate([sample_masks, np.repeat(sample_masks[:1], -n % 32, axis=0)])
        return np.stack(
            [
                np.concatenate(
                    [
                        np.asarray(
                            fit_subsets(
                                g,
                                pg.outputs,
                                padded[lo : lo + 32],
                                lam=lam,
                                iters=c.fit_iters,
                                chunk=32,
                            )
                        )
                        for lo in range(0, len(padded), 32)
                    ]
                )[:n]
                for g in pg.grads
            ]
        )

    def lifted(Ws, target, scale):
        return estimate_lifted(
            theta, projections, Ws, target, scale=scale, theta_norm=theta_norm, gram=grams, **ev
        )

    # Subsets: N random test subsets (reported), and n_calibration subsets that choose lam and
    # scale. Calibration needs subsets whose losses differ: four random draws often have the
    # same mix of good and bad sources, and a scale fitted on them then misses the spread
    # (seen with seeds 0 and 2). So they are designed without labels: n_candidates random
    # subsets are ranked by their cheap linear-mode GradEx estimate on V, and the ones at
    # evenly spaced ranks (lowest to highest) are fine-tuned for real.
    Z = np.asarray(subset_masks(keys["subsets"], c.n_sources, c.n_subsets, c.subset_size))
    t = time.perf_counter()
    Z_cand = np.asarray(
        subset_masks(keys["calibration"], c.n_sources, c.n_candidates, c.subset_size)
    )
    vg = projected_grads(theta, task.valid, projections, eps=c.eps, progress=False)
    W_cand = fits(np.asarray(sample_mask(Z_cand, source_id)), max(c.lams))
    rank_est = np.mean(
        [
            np.asarray(
                estimate_linear(W_cand[k], vg.grads[k], vg.outputs, gram=grams[k],
                                theta_norm=theta_norm, scale=float(np.median(c.scales)))
            )
            for k in range(c.n_projections)
        ],
        axis=0,
    )  # fmt: skip
    order = np.argsort(rank_est, kind="stable")
    picks = order[np.round(np.linspace(0, c.n_candidates - 1, c.n_calibration)).astype(int)]
    Z_cal = Z_cand[picks]
    T["calibration_design"] = time.perf_counter() - t
    mask_cal = np.asarray(sample_mask(Z_cal, source_id))
    mask = np.asarray(sample_mask(Z, source_id))
    n_noisy = Z[:, task.noisy].sum(axis=1)

    # ---- ground truth: real fine-tunes from theta* (calibration first, so that the timed
    # test call reuses the compiled step).
    ft_key = keys["finetune"]
    ft_cal = finetune_subsets(
        theta,
        task.train,
        mask_cal,
        c.finetune,
        key=jr.fold_in(ft_key, 0),
        subset_chunk=c.subset_chunk,
        progress=progress,
    )
    true_cal_v = subset_losses(theta, ft_cal.lora, task.valid, **ev)
    t = time.perf_counter()
    ft = finetune_subsets(
        theta,
        task.train,
        mask,
        c.finetune,
        key=jr.fold_in(ft_key, 1),
        subset_chunk=c.subset_chunk,
        progress=progress,
    )
    true_loss = subset_losses(theta, ft.lora, task.test, **ev)
    T["finetune"] = time.perf_counter() - t
    _log(progress, f"ground truth: {c.n_subsets} fine-tunes from theta* ({T['finetune']:.0f}s)")

    true_base = None
    if c.base_variant:
        t = time.perf_counter()
        fresh = nnx.clone(base)
        apply_lora(fresh, c.lora, rngs=nnx.Rngs(params=keys["fresh_lora"]))
        ft_b = finetune_subsets(
            fresh,
            task.train,
            mask,
            c.finetune,
            key=jr.fold_in(ft_key, 1),
            subset_chunk=c.subset_chunk,
            progress=progress,
        )
        true_base = subset_losses(fresh, ft_b.lora, task.test, **ev)
        T["finetune_base"] = time.perf_counter() - t

    # Calibration: (lam, scale) by grid search on the calibration subsets, scored on V.
    t = time.perf_counter()
    errors = np.zeros((len(c.lams), len(c.scales)))
    for i, lam in enumerate(c.lams):
        W_cal = fits(mask_cal, lam)
        cal = calibrate_scale(
            lambda s, W_cal=W_cal: lifted(W_cal, task.valid, s), true_cal_v, c.scales
        )
        errors[i] = cal.errors
    i_best, j_best = np.unravel_index(int(np.argmin(errors)), errors.shape)
    lam, scale = float(c.lams[i_best]), float(c.scales[j_best])
    T["calibration"] = time.perf_counter() - t
    _log(progress, f"calibration: lam {lam:g}, scale {scale:g} ({T['calibration']:.0f}s)")

    t = time.perf_counter()
    W = fits(mask, lam)
    T["fits"] = time.perf_counter() - t
    t = time.perf_counter()
    estimate = lifted(W, task.test, scale)
    T["estimates"] = time.perf_counter() - t
    gradex_seconds = T["grads"] + T["fits"] + T["estimates"]
    _log(progress, f"GradEx: {c.n_subsets} subsets in {gradex_seconds:.1f}s")

    # Linear mode (spec §5.5) with the same lam and scale, one matmul per projection.
    tg = projected_grads(theta, task.test, projections, eps=c.eps, progress=False)
    # Seed spread: the linear-mode estimate of each projection alone (one matmul each).
    per_projection = np.stack(
        [
            np.asarray(
                estimate_linear(
                    W[k],
                    tg.grads[k],
                    tg.outputs,
                    gram=grams[k],
                    theta_norm=theta_norm,
                    scale=scale,
                    anchor=loss_star,
                )
            )
            for k in range(c.n_projections)
        ]
    )
    estimate_linear_ = per_projection.mean(axis=0)

    # ---- Taylor check (no training): random directions and subset-fit directions.
    t = time.perf_counter()
    taylor_rows = []
    k_dir, k_sub = jr.split(keys["taylor"])
    # The authors' directions are fits on random 75% subsets of the sources (spec §2.9).
    n_taylor = max(1, round(0.75 * c.n_sources))
    Z_taylor = np.asarray(subset_masks(k_sub, c.n_sources, c.taylor_directions, n_taylor))
    directions = {
        "random": np.asarray(jr.normal(k_dir, (c.taylor_directions, c.proj_dim))),
        "subset_fit": fits(np.asarray(sample_mask(Z_taylor, source_id)), lam)[0],
    }
    for name, dirs in directions.items():
        for rho in c.taylor_rhos:
            te = taylor_errors(
                theta,
                projections[0],
                tg.grads[0],
                tg.outputs,
                dirs,
                task.test,
                rho=rho,
                eps=c.eps,
                theta_norm=theta_norm,
                gram=grams[0],
                batch_size=c.eval_batch,
                subset_chunk=c.eval_chunk,
            )
            taylor_rows.append(
                {
                    "rho": rho,
                    "direction": name,
                    "first_order": float(np.mean(te.first_order)),
                    "zeroth_order": float(np.mean(te.zeroth_order)),
                    "first_order_max": float(np.max(te.first_order)),
                }
            )
    T["taylor"] = time.perf_counter() - t
    taylor_ok = _taylor_ok(taylor_rows, "random") and _taylor_ok(taylor_rows, "subset_fit")

    # ---- Random ensemble on V, selection, final fine-tunes.
    t = time.perf_counter()
    Z_re = np.asarray(subset_masks(keys["ensemble"], c.n_sources, c.n_ensemble, c.ensemble_size))
    v_re = take(task.valid, np.arange(min(c.ensemble_target, task.valid.tokens.shape[0])))
    re_est = lifted(fits(np.asarray(sample_mask(Z_re, source_id)), lam), v_re, scale)
    scores = np.asarray(random_ensemble(Z_re, re_est))
    T["ensemble"] = time.perf_counter() - t
    selected = np.asarray(select_threshold(scores, top_k=c.top_k))
    auc = auroc(scores, task.noisy)

    t = time.perf_counter()
    finals = np.repeat(np.stack([selected, np.ones(c.n_sources, bool)]), c.n_final_seeds, axis=0)
    final_masks = np.asarray(sample_mask(finals, source_id))
    ft_final = finetune_subsets(
        theta,
        task.train,
        final_masks,
        c.finetune,
        key=keys["final"],
        subset_chunk=c.subset_chunk,
        progress=progress,
    )
    final = subset_losses(theta, ft_final.lora, task.test, **ev).reshape(2, c.n_final_seeds)
    final_base = None
    if c.base_variant:
        ft_fb = finetune_subsets(
            fresh,
            task.train,
            final_masks,
            c.finetune,
            key=keys["final"],
            subset_chunk=c.subset_chunk,
            progress=progress,
        )
        final_base = subset_losses(fresh, ft_fb.lora, task.test, **ev).reshape(2, c.n_final_seeds)
    T["final"] = time.perf_counter() - t

    # ---- summary.
    kb = jr.split(keys["bootstrap"], 3)
    summary: dict[str, Any] = compare_estimates(
        estimate, true_loss, loss_star, key=kb[0], n_bootstrap=c.bootstrap
    )
    lin = compare_estimates(
        estimate_linear_, true_loss, loss_star, key=kb[1], n_bootstrap=c.bootstrap
    )
    summary |= {f"{k}_linear": v for k, v in lin.items()}
    if true_base is not None:
        base_m = compare_estimates(
            estimate, true_base, loss_star, key=kb[2], n_bootstrap=c.bootstrap
        )
        summary |= {f"{k}_base": v for k, v in base_m.items()}
        summary["spearman_truths"] = _spearman(true_loss, true_base)
    ft_per_subset = T["finetune"] / c.n_subsets
    marginal = (T["fits"] + T["estimates"]) / c.n_subsets
    summary |= {
        "spearman_noisy": _spearman(estimate, n_noisy),
        "spearman_noisy_true": _spearman(true_loss, n_noisy),
        "auroc": auc,
        "loss_selected": float(final[0].mean()),
        "loss_all": float(final[1].mean()),
        "loss_selected_seeds": final[0].tolist(),
        "loss_all_seeds": final[1].tolist(),
        "selected_sources": [task.train.sources[k] for k in np.flatnonzero(selected)],
        "selected_noisy": int(np.sum(selected & task.noisy)),
        "loss_theta_star": loss_star,
        "loss_theta_star_valid": loss_star_v,
        "loss_base_model": loss_base,
        "lam": lam,
        "scale": scale,
        "taylor_ok": bool(taylor_ok),
        "gradex_seconds": gradex_seconds,
        "finetune_seconds": T["finetune"],
        "gradex_seconds_per_subset": marginal,
        "finetune_seconds_per_subset": ft_per_subset,
        "speedup": T["finetune"] / gradex_seconds,
        "marginal_speedup": ft_per_subset / marginal,
        "projection_seed_std_linear": float(np.mean(np.std(per_projection, axis=0))),
        "n_params_lora": int(projections[0].n_params),
        "true_loss_std": float(np.std(true_loss)),
        "estimate_std": float(np.std(estimate)),
        "seeds": {"seed": c.seed, "projection_seeds": [p.seed for p in projections]},
    }
    if final_base is not None:
        summary["loss_selected_base"] = float(final_base[0].mean())
        summary["loss_all_base"] = float(final_base[1].mean())
    return GradexResult(
        summary=summary,
        subsets=Z,
        true_loss=true_loss,
        true_loss_base=true_base,
        estimate=estimate,
        estimate_linear=estimate_linear_,
        n_noisy=n_noisy,
        ensemble_subsets=Z_re,
        ensemble_estimates=re_est,
        scores=scores,
        noisy=task.noisy,
        selected=selected,
        sources=tuple(task.train.sources),
        calibration={
            "lam": lam,
            "scale": scale,
            "lams": list(c.lams),
            "scales": list(c.scales),
            "errors": errors.tolist(),
            "true_losses_valid": true_cal_v.tolist(),
            "subsets": [[task.train.sources[k] for k in np.flatnonzero(row)] for row in Z_cal],
            "candidate_rank_estimates": rank_est[picks].tolist(),
        },
        taylor=taylor_rows,
        timings=T,
    )


def _taylor_ok(rows: list, direction: str) -> bool:
    """Spec §4.5 item 1 on the rows of one direction kind."""
    rows = sorted((r for r in rows if r["direction"] == direction), key=lambda r: r["rho"])
    first = [r["first_order"] for r in rows]
    monotone = all(a <= b for a, b in zip(first, first[1:]))
    small = all(r["first_order"] <= 1e-2 for r in rows if r["rho"] <= 0.05)
    below = all(r["first_order"] < r["zeroth_order"] for r in rows)
    return monotone and small and below
