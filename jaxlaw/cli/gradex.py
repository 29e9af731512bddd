"""``jaxlaw gradex meta-train | grads | estimate | select``: GradEx from the command line.

A run goes through four commands, each writing a folder or file the next one reads::

    jaxlaw gradex meta-train --model base/ --data pool.jsonl --sources task --out theta/
    jaxlaw gradex grads --model base/ --lora theta/ --data pool.jsonl --sources task --out g/
    jaxlaw gradex estimate --grads g/ --subsets 100 --frac 0.5 --target dev.jsonl \\
        --out est.csv --validate 8 --plot est.png
    jaxlaw gradex select --grads g/ --target dev.jsonl --subsets 200 --top-k 12 --out keep.txt

``--model`` is a Hugging Face-format folder (config.json, *.safetensors, tokenizer.json);
``--lora`` is a folder written by ``meta-train`` (``adapter.safetensors`` + ``adapter.json``:
rank, alpha, targets). Data files are .jsonl/.json/.csv with prompt/response fields and a source
field (``--sources``); every source is a selection unit. ``grads`` stores where model, LoRA and
data came from, so ``estimate`` and ``select`` need only ``--grads`` and ``--target``.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from ._flags import add_config, from_args
from ._tables import print_table

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
RUN_FILE = "gradex_run.json"  # written by `grads` beside the gradient store
TARGETS = r"attn\.(qkv|q_proj|k_proj|v_proj)$"  # GradEx adapts q, k and v (spec 2.1)
# TrainConfig fields the commands set themselves or do not use.
TRAIN_SKIP = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")
FT_SKIP = ("log_every", "checkpoint_every", "keep_checkpoints")  # --ft-steps is a flag

# ------------------------------------------------------------------------ LoRA on disk


def save_adapter(model, lora_config, directory: str | Path, meta: dict | None = None) -> Path:
    """Write ``model``'s LoRA tensors (safetensors, dotted paths) and their config to a folder."""
    from safetensors.numpy import save_file

    from jaxlaw.data_selection.gradex._projection import tree_paths
    from jaxlaw.lora import split_lora

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _, lora, _ = split_lora(model)
    tensors = {path: np.asarray(leaf, np.float32) for path, leaf in tree_paths(lora)}
    save_file(tensors, str(directory / ADAPTER_WEIGHTS))
    config = {
        "format": "jaxlaw.gradex.adapter/1",
        "targets": lora_config.targets,
        "rank": lora_config.rank,
        "alpha": lora_config.alpha,
        "dropout": lora_config.dropout,
    } | (meta or {})
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return directory


def load_adapter(model, directory: str | Path) -> dict:
    """Give ``model`` the adapters saved in ``directory`` (in place); returns their config.

    Raises:
        FileNotFoundError: the folder lacks ``adapter.json`` or ``adapter.safetensors``.
        ValueError: the adapters do not fit the model (paths or shapes differ).
    """
    from flax import nnx
    from safetensors.numpy import load_file

    from jaxlaw.data_selection.gradex._projection import tree_paths
    from jaxlaw.lora import LoraConfig, apply_lora, split_lora

    directory = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: --lora must be a folder written by "
                "`jaxlaw gradex meta-train`"
            )
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    lcfg = LoraConfig(
        targets=config["targets"],
        rank=int(config["rank"]),
        alpha=float(config["alpha"]),
        dropout=float(config.get("dropout", 0.0)),
    )
    apply_lora(model, lcfg, rngs=nnx.Rngs(0))
    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    _, lora, _ = split_lora(model)
    want = tree_paths(lora)
    have = {k: v.shape for k, v in tensors.items()}
    for path, leaf in want:
        if have.get(path) != tuple(np.shape(leaf)):
            raise ValueError(
                f"{directory}: adapter tensor {path!r} has shape {have.get(path)} in the file but "
                f"the model needs {tuple(np.shape(leaf))} (adapters of another model?)"
            )
    if len(have) != len(want):
        extra = sorted(set(have) - {p for p, _ in want})
        raise ValueError(f"{directory}: the file has adapter tensors the model lacks: {extra[:3]}")
    paths = [p for p, _ in want]
    pure = _nest(paths, [tensors[p].astype(np.asarray(leaf).dtype) for p, leaf in want])
    nnx.replace_by_pure_dict(lora, pure)
    nnx.update(model, lora)
    return config


def _nest(paths: list[str], leaves: list) -> dict:
    """Nested pure dict from dotted paths (all-digit parts are list indices, as in NNX)."""
    out: dict = {}
    for path, leaf in zip(paths, leaves):
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf
    return out


# ------------------------------------------------------------------------------ helpers


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(msg, highlight=False)


def _model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
    return path


def _load_model(model_dir: str | Path, lora_dir: str | Path | None):
    from jaxlaw.data import load_tokenizer
    from jaxlaw.models import load_pretrained

    d = _model_dir(model_dir)
    model, _ = load_pretrained(d)
    tokenizer = load_tokenizer(d)
    if lora_dir is not None:
        load_adapter(model, lora_dir)
    return model, tokenizer


def _tokenized(tokenizer, path, fields: dict, seq_len: int | None, *, sources: str | None,
               max_len: int):  # fmt: skip
    """Tokenise a prompt/response file; the default length is a bucket within the model's
    context (``max_len``), so a model with learned positions never sees a longer row."""
    from jaxlaw.data import BUCKETS, load_task, tokenize_examples

    task = load_task(path, source_field=sources, **fields)
    if all(not r for r in task.responses):
        raise ValueError(f"{path}: no response tokens (every response is empty)")
    if seq_len is not None and seq_len > max_len:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's context of {max_len} tokens")
    buckets = sorted({b for b in BUCKETS if b < max_len} | {max_len})
    return tokenize_examples(
        tokenizer,
        task.prompts,
        task.responses,
        seq_len=seq_len,
        sources=task.sources,
        buckets=buckets,
    )


def _fields(a) -> dict:
    return dict(prompt_field=a.prompt_field, response_field=a.response_field)


class _Run:
    """What `estimate` and `select` need: theta*, its gradients, the pool and the target."""

    def __init__(self, a):
        from jaxlaw.data_selection.gradex._store import check_model, load_grads

        grads_dir = Path(a.grads)
        self.pg, self.projections, self.meta = load_grads(grads_dir)
        run = {}
        if (grads_dir / RUN_FILE).is_file():
            run = json.loads((grads_dir / RUN_FILE).read_text())
        model_dir = a.model or run.get("model")
        lora_dir = a.lora or run.get("lora")
        if model_dir is None or lora_dir is None:
            raise ValueError(
                f"{grads_dir} does not say which model it was computed for: pass --model and --lora"
            )
        self.model, self.tokenizer = _load_model(model_dir, lora_dir)
        check_model(self.meta, self.model)
        self.run = run
        self.sources = tuple(self.pg.sources)
        self.fields = {
            "prompt_field": a.prompt_field or run.get("prompt_field", "prompt"),
            "response_field": a.response_field or run.get("response_field", "response"),
        }
        self.max_len = self.model.config.max_positions
        self.target = _tokenized(
            self.tokenizer, a.target, self.fields, a.seq_len, sources=None, max_len=self.max_len
        )
        self.quiet = a.quiet
        self.a = a
        self._pool = None
        self._linear = None  # (projected target grads, L(theta*) on the target), computed once

    def pool(self):
        """The training pool the gradients were computed on (for real fine-tunes)."""
        from jaxlaw.data_selection.gradex._store import data_fingerprint

        if self._pool is None:
            data = self.a.data or self.run.get("data")
            if data is None:
                raise ValueError("real fine-tunes need the pool: pass --data FILE")
            pool = _tokenized(
                self.tokenizer,
                data,
                self.fields,
                self.meta.get("seq_len"),
                sources=self.run.get("sources_field"),
                max_len=self.max_len,
            )
            if data_fingerprint(pool) != self.meta["data_fingerprint"]:
                raise ValueError(f"{data} is not the data the gradients were computed on")
            self._pool = pool
        return self._pool

    def subsets(self, names: list[str] | None, n: int, frac: float, seed: int) -> np.ndarray:
        """``[subsets, sources]`` bool from explicit source lists, else random."""
        import jax.random as jr

        from jaxlaw.data_selection.gradex._fit import subset_masks

        k = len(self.sources)
        if names:
            rows = []
            for spec in names:
                chosen = [s.strip() for s in spec.split(",") if s.strip()]
                if not chosen:
                    raise ValueError(f"empty subset {spec!r}: name at least one source")
                unknown = [s for s in chosen if s not in self.sources]
                if unknown:
                    raise ValueError(
                        f"unknown source {unknown[0]!r}; the sources are: {', '.join(self.sources)}"
                    )
                rows.append(np.isin(self.sources, chosen))
            return np.stack(rows)
        if n < 1:
            raise ValueError(f"--subsets must be >= 1, got {n}")
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"--frac must be in (0, 1], got {frac}")
        size = int(round(frac * k))
        if size < 1:
            raise ValueError(
                f"--frac {frac} of {k} sources gives empty subsets; use a larger --frac"
            )
        return np.asarray(subset_masks(jr.key(seed), k, n, size))

    def estimate(self, Z: np.ndarray, *, scale: float, target=None, mode=None) -> np.ndarray:
        from jaxlaw.data_selection.gradex._estimate import (
            estimate_lifted,
            estimate_linear,
            lora_norm,
        )
        from jaxlaw.data_selection.gradex._fit import fit_subsets, sample_mask
        from jaxlaw.data_selection.gradex._grads import projected_grads

        target = self.target if target is None else target
        a = self.a
        mode = a.mode if mode is None else mode
        mask = np.asarray(sample_mask(Z, self.pg.source_id))
        Ws = np.stack(
            [np.asarray(fit_subsets(g, self.pg.outputs, mask, lam=a.lam)) for g in self.pg.grads]
        )
        theta_norm = float(lora_norm(self.model))
        grams = tuple(p.gram() for p in self.projections)
        if mode == "lifted":
            return estimate_lifted(
                self.model,
                self.projections,
                Ws,
                target,
                scale=scale,
                theta_norm=theta_norm,
                gram=grams,
                batch_size=a.eval_batch,
                progress=not self.quiet,
            )
        if self._linear is None or target is not self.target:
            from jaxlaw.training import evaluate, mean_loss

            tg = projected_grads(
                self.model, target, self.projections, eps=self.meta["eps"], progress=not self.quiet
            )
            self._linear = (tg, mean_loss(evaluate(self.model, target, batch_size=a.eval_batch)))
        tg, anchor = self._linear
        return np.mean(
            [
                np.asarray(
                    estimate_linear(
                        W,
                        tg.grads[k],
                        tg.outputs,
                        gram=grams[k],
                        theta_norm=theta_norm,
                        scale=scale,
                        anchor=anchor,
                    )
                )
                for k, W in enumerate(Ws)
            ],
            axis=0,
        )

    def finetune(self, Z: np.ndarray, seed: int) -> np.ndarray:
        """Real LoRA fine-tunes from theta* on each subset; their target losses."""
        import jax.random as jr

        from jaxlaw.data_selection.gradex._finetune import finetune_subsets, subset_losses
        from jaxlaw.data_selection.gradex._fit import sample_mask
        from jaxlaw.training import TrainConfig

        a = self.a
        pool = self.pool()
        cfg = from_args(a, TrainConfig, prefix="ft-", skip=FT_SKIP)
        mask = np.asarray(sample_mask(Z, pool.source_id))
        ft = finetune_subsets(
            self.model, pool, mask, cfg, key=jr.key(seed), progress=not self.quiet
        )
        return subset_losses(self.model, ft.lora, self.target, batch_size=a.eval_batch)


# ------------------------------------------------------------------------------ commands


def cmd_meta_train(a: argparse.Namespace) -> None:
    import jax.random as jr

    from jaxlaw.data_selection.gradex._finetune import meta_train
    from jaxlaw.lora import LoraConfig
    from jaxlaw.training import TrainConfig, evaluate, mean_loss

    base, tokenizer = _load_model(a.model, None)
    data = _tokenized(tokenizer, a.data, _fields(a), a.seq_len, sources=a.sources,
                      max_len=base.config.max_positions)  # fmt: skip
    lcfg = from_args(a, LoraConfig, prefix="lora-")
    n = data.tokens.shape[0]
    steps = a.steps or max(1, int(round(a.epochs * n / a.batch_size)))
    cfg = from_args(a, TrainConfig, skip=TRAIN_SKIP, steps=steps)
    theta = meta_train(base, lcfg, data, cfg, key=jr.key(a.seed), progress=not a.quiet)
    loss = mean_loss(evaluate(theta, data, batch_size=a.batch_size))
    save_adapter(
        theta,
        lcfg,
        a.out,
        {
            "base_model": str(Path(a.model).resolve()),
            "data": str(Path(a.data).resolve()),
            "steps": steps,
            "train_loss": loss,
        },
    )
    print(
        f"meta-trained theta* on {n} examples from {len(data.sources)} sources "
        f"({steps} steps): train loss {loss:.4f}"
    )
    print(
        f"wrote {a.out}; next: jaxlaw gradex grads --model {a.model} --lora {a.out} "
        f"--data {a.data} --sources {a.sources} --out GRADS_DIR"
    )


def cmd_grads(a: argparse.Namespace) -> None:
    from jaxlaw.data_selection.gradex._grads import projected_grads
    from jaxlaw.data_selection.gradex._projection import Projection
    from jaxlaw.lora import split_lora

    if a.projections < 1:
        raise ValueError(f"--projections must be >= 1, got {a.projections}")
    model, tokenizer = _load_model(a.model, a.lora)
    data = _tokenized(tokenizer, a.data, _fields(a), a.seq_len, sources=a.sources,
                      max_len=model.config.max_positions)  # fmt: skip
    _, lora, _ = split_lora(model)
    projections = [
        Projection.for_tree(lora, dim=a.dim, seed=a.seed + k) for k in range(a.projections)
    ]
    pg = projected_grads(
        model,
        data,
        projections,
        eps=a.eps,
        chunk_size=a.chunk_size,
        progress=not a.quiet,
        store=a.out,
    )
    run = {
        "model": str(Path(a.model).resolve()),
        "lora": str(Path(a.lora).resolve()),
        "data": str(Path(a.data).resolve()),
        "sources_field": a.sources,
        "prompt_field": a.prompt_field,
        "response_field": a.response_field,
        "seq_len": int(data.tokens.shape[1]),
    }
    (Path(a.out) / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    counts = np.bincount(pg.source_id, minlength=len(pg.sources))
    print(
        f"projected gradients of {pg.grads.shape[1]} examples from {len(pg.sources)} sources "
        f"({a.projections} x d={a.dim}, p={projections[0].n_params:,} LoRA parameters)"
    )
    print("examples per source: " + ", ".join(f"{s} {c}" for s, c in zip(pg.sources, counts)))
    print(f"wrote {a.out}")


def _subset_names(Z: np.ndarray, sources) -> list[str]:
    return ["|".join(s for s, z in zip(sources, row) if z) for row in Z]


def cmd_estimate(a: argparse.Namespace) -> None:
    import pandas as pd

    r = _Run(a)
    Z = r.subsets(a.subset, a.subsets, a.frac, a.seed)
    scale = a.scale
    if a.calibrate:
        from jaxlaw.data_selection.gradex._estimate import calibrate_scale

        # Calibration subsets that span the range of losses, picked without labels: evenly
        # spaced ranks of the cheap linear-mode estimate among 16x as many random subsets.
        cand = r.subsets(None, 16 * a.calibrate, a.frac, a.seed + 1)
        grid = [float(s) for s in a.scales.split(",")]
        rank = np.argsort(r.estimate(cand, scale=float(np.median(grid)), mode="linear"))
        Zc = cand[rank[np.round(np.linspace(0, len(cand) - 1, a.calibrate)).astype(int)]]
        truth_c = r.finetune(Zc, a.seed + 1)
        cal = calibrate_scale(lambda s: r.estimate(Zc, scale=s), truth_c, grid)
        scale = cal.scale
        _log(
            a.quiet,
            f"calibrated scale {scale:g} on {a.calibrate} held-out subsets "
            f"(msre {dict(zip(grid, np.round(cal.errors, 5)))})",
        )
    est = r.estimate(Z, scale=scale)
    df = pd.DataFrame(
        {
            "subset": np.arange(len(Z)),
            "n_sources": Z.sum(axis=1),
            "sources": _subset_names(Z, r.sources),
            "estimate": est,
        }
    )
    if a.validate:
        from jaxlaw.data_selection.gradex._finetune import compare_estimates
        from jaxlaw.training import evaluate, mean_loss

        n_val = min(a.validate, len(Z))
        truth = r.finetune(Z[:n_val], a.seed)
        df["true_loss"] = np.concatenate([truth, np.full(len(Z) - n_val, np.nan)])
        if n_val >= 3:
            import jax.random as jr

            const = mean_loss(evaluate(r.model, r.target, batch_size=a.eval_batch))
            m = compare_estimates(est[:n_val], truth, const, key=jr.key(a.seed), n_bootstrap=1000)
            print(
                f"validation on {n_val} real fine-tunes ({a.ft_steps} steps each): "
                f"Pearson {m['pearson']:.3f} [95% CI {m['pearson_ci_low']:.3f}, "
                f"{m['pearson_ci_high']:.3f}], Spearman {m['spearman']:.3f}, "
                f"MSRE {m['msre']:.2e} (constant L(theta*) {m['msre_constant']:.2e})"
            )
    if a.true_losses:
        given = pd.read_csv(a.true_losses)
        if "true_loss" not in given.columns or len(given) != len(df):
            raise ValueError(f"{a.true_losses}: needs a true_loss column with {len(df)} rows")
        df["true_loss"] = given["true_loss"].to_numpy()
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    else:
        print(df.to_string(index=False, max_colwidth=60))
    print(
        f"{len(Z)} subsets, {a.mode} estimates at scale {scale:g}: mean {est.mean():.4f}, "
        f"min {est.min():.4f}, max {est.max():.4f}"
    )
    if a.plot:
        if "true_loss" not in df.columns:
            raise ValueError("--plot draws estimates against real losses: add --validate N")
        from jaxlaw.data_selection.gradex._plot import plot_estimates

        ok = df["true_loss"].notna().to_numpy()
        if ok.sum() < 2:
            raise ValueError("--plot needs at least 2 subsets with a real loss")
        plot_estimates(a.plot, est[ok], df["true_loss"].to_numpy()[ok])
        print(f"wrote {a.plot}")


def cmd_select(a: argparse.Namespace) -> None:
    from jaxlaw.data_selection.gradex._select import (
        forward_selection,
        random_ensemble,
        select_threshold,
    )

    if (a.top_k is None) == (a.gamma is None) and a.method == "ensemble":
        raise ValueError("give exactly one of --top-k and --gamma")
    r = _Run(a)
    k = len(r.sources)
    scores = counts = None
    if a.method == "ensemble":
        Z = r.subsets(None, a.subsets, a.frac, a.seed)
        est = r.estimate(Z, scale=a.scale)
        scores = np.asarray(random_ensemble(Z, est))
        counts = Z.sum(axis=0)
        selected = np.asarray(select_threshold(scores, top_k=a.top_k, gamma=a.gamma))
        title = (
            f"random-ensemble scores of {k} sources from {len(Z)} estimated subsets "
            f"({a.mode}, scale {a.scale:g}); lower is better"
        )
    else:
        variant = "stepwise" if a.method == "forward" else "single_pass"
        fs = forward_selection(
            lambda rows: r.estimate(rows, scale=a.scale), k, variant=variant, max_size=a.top_k
        )
        selected = fs.selected
        title = (
            f"forward selection ({variant}, {fs.n_estimates} estimates): estimated loss "
            f"{fs.loss:.4f}"
        )
    if not selected.any():
        raise ValueError("no source selected (is --gamma below every score?)")
    order = np.argsort(scores) if scores is not None else np.argsort(~selected, kind="stable")
    header = ["rank", "source", "selected"] + (
        ["score", "in subsets"] if scores is not None else []
    )
    rows = []
    for i, s in enumerate(order):
        row = [str(i + 1), r.sources[s], "yes" if selected[s] else ""]
        if scores is not None:
            row += [f"{scores[s]:.4f}", str(int(counts[s]))]
        rows.append(row)
    print_table(title, header, rows)
    names = [r.sources[s] for s in np.flatnonzero(selected)]
    print(f"selected {len(names)} of {k} sources")
    if a.validate:
        sel_all = np.stack([selected, np.ones(k, bool)])
        losses = r.finetune(sel_all, a.seed)
        print(
            f"real fine-tune ({a.ft_steps} steps): selected {losses[0]:.4f}, "
            f"all sources {losses[1]:.4f}"
        )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("".join(n + "\n" for n in names))
        print(f"wrote {a.out}")
    if a.plot and scores is not None:
        from jaxlaw.data_selection.gradex._plot import plot_scores

        plot_scores(a.plot, r.sources, scores, selected=selected)
        print(f"wrote {a.plot}")


# ------------------------------------------------------------------------------- parser


def _common_data(p: argparse.ArgumentParser, default: bool = True) -> None:
    p.add_argument("--prompt-field", default="prompt" if default else None)
    p.add_argument("--response-field", default="response" if default else None)
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="padded length (default: smallest bucket that fits)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _common_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grads", required=True, help="folder written by `jaxlaw gradex grads`")
    p.add_argument(
        "--target",
        required=True,
        help="target file (prompt/response); estimates are its mean token CE",
    )
    p.add_argument("--model", default=None, help="model folder (default: the one of --grads)")
    p.add_argument("--lora", default=None, help="theta* adapters (default: those of --grads)")
    p.add_argument(
        "--data", default=None, help="the pool, for real fine-tunes (default: the file of --grads)"
    )
    p.add_argument("--subsets", type=int, default=100, help="random subsets to estimate")
    p.add_argument("--frac", type=float, default=0.5, help="share of the sources per subset")
    p.add_argument(
        "--mode",
        default="linear",
        choices=("linear", "lifted"),
        help="linear (default): first-order log-odds of the target examples, one matmul for "
        "all subsets (the paper's estimate; as accurate as lifted in experiments/gradex, "
        "100x+ cheaper per subset in benchmark/bench_gradex.py); lifted: run the model at "
        "theta* + D_S, one pass over the target per subset",
    )
    p.add_argument(
        "--lam",
        type=float,
        default=100.0,
        help="penalty of the logistic fit, relative to the data curvature (100: the value the "
        "addition experiment calibrates to; the fit is then close to one gradient step)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=0.2,
        help="||D_S|| / ||theta*_LoRA|| (calibrate it on held-out subsets)",
    )
    p.add_argument("--eval-batch", type=int, default=32, help="target rows per forward pass")
    p.add_argument("--seed", type=int, default=0)
    from jaxlaw.training import TrainConfig

    add_config(
        p,
        TrainConfig,
        prefix="ft-",
        skip=FT_SKIP,
        defaults=dict(steps=40, batch_size=32, warmup_steps=0),
        title="real fine-tunes (--validate, --calibrate): TrainConfig",
    )
    _common_data(p, default=False)


def add_arguments(g: argparse.ArgumentParser) -> None:
    """The ``jaxlaw gradex`` subcommands."""
    from jaxlaw.lora import LoraConfig
    from jaxlaw.training import TrainConfig

    g.description = __doc__
    g.formatter_class = argparse.RawDescriptionHelpFormatter
    gsub = g.add_subparsers(dest="gradex_command", required=True)

    m = gsub.add_parser(
        "meta-train",
        help="train theta*: LoRA on all sources of a pool; save the adapters",
        description="LoRA multitask fine-tuning of --model on every example of --data (spec "
        "2.1); writes adapter.safetensors and adapter.json into --out, the --lora of the "
        "other commands.",
    )
    m.add_argument("--model", required=True, help="base model folder (HF format + tokenizer)")
    m.add_argument("--data", required=True, help="the pool (.jsonl/.json/.csv)")
    m.add_argument("--sources", required=True, help="field naming each example's source")
    m.add_argument("--out", required=True, help="adapter folder to write")
    m.add_argument("--epochs", type=float, default=10.0, help="passes over the pool")
    m.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    add_config(m, LoraConfig, prefix="lora-", defaults=dict(rank=4, alpha=8.0, targets=TARGETS))
    add_config(m, TrainConfig, skip=TRAIN_SKIP, defaults=dict(batch_size=32))
    _common_data(m)
    m.set_defaults(run=cmd_meta_train)

    gr = gsub.add_parser(
        "grads",
        help="projected per-example gradients at theta* (resumable store)",
        description="Per-example gradients of the mean log-odds of the response tokens w.r.t. "
        "the LoRA parameters of theta*, randomly projected to --dim (one slice per projection "
        "seed), saved in --out with the outputs f* and the source of every example. An "
        "interrupted run resumes from --out.",
    )
    gr.add_argument("--model", required=True, help="base model folder (HF format + tokenizer)")
    gr.add_argument("--lora", required=True, help="theta* adapters (from `gradex meta-train`)")
    gr.add_argument("--data", required=True, help="the pool (.jsonl/.json/.csv)")
    gr.add_argument("--sources", required=True, help="field naming each example's source")
    gr.add_argument("--out", required=True, help="gradient store folder")
    gr.add_argument("--dim", type=int, default=128, help="projection width d")
    gr.add_argument("--projections", type=int, default=3, help="projection seeds (averaged)")
    gr.add_argument("--seed", type=int, default=0, help="seed of the first projection")
    gr.add_argument("--eps", type=float, default=1e-3, help="probability guard of the log-odds")
    gr.add_argument("--chunk-size", type=int, default=None, help="examples per jitted call")
    _common_data(gr)
    gr.set_defaults(run=cmd_grads)

    e = gsub.add_parser(
        "estimate",
        help="estimated target loss after fine-tuning on subsets of sources (CSV)",
        description="Fits the first-order surrogate of fine-tuning for each subset and "
        "estimates the target loss of theta* + D_S. Subsets are random (--subsets, --frac) or "
        "named (--subset a,b,c, repeatable). --validate N fine-tunes the first N subsets for "
        "real and reports the agreement; --plot draws estimated vs real loss.",
    )
    _common_query(e)
    e.add_argument(
        "--subset",
        action="append",
        default=None,
        metavar="NAMES",
        help="comma-separated source names of one subset (repeatable)",
    )
    e.add_argument("--out", default=None, help="CSV of subsets and estimates")
    e.add_argument("--validate", type=int, default=0, help="real fine-tunes of the first N subsets")
    e.add_argument(
        "--true-losses",
        default=None,
        help="CSV with a true_loss column (one row per subset) to compare with",
    )
    e.add_argument(
        "--calibrate",
        type=int,
        default=0,
        help="choose --scale from --scales on N extra real fine-tunes (subsets picked to span "
        "the range of linear-mode estimates)",
    )
    e.add_argument("--scales", default="0.05,0.1,0.15,0.2,0.3,0.5")
    e.add_argument("--plot", default=None, help="PNG of estimated vs real loss")
    e.set_defaults(run=cmd_estimate)

    s = gsub.add_parser(
        "select",
        help="choose sources: random ensemble over estimated subsets, or forward selection",
        description="Random ensemble (default): score every source by the mean estimated "
        "loss of the subsets that hold it, keep the --top-k best (or those below --gamma). "
        "forward / forward-single-pass: greedy selection against the estimator.",
    )
    _common_query(s)
    s.add_argument(
        "--method", default="ensemble", choices=("ensemble", "forward", "forward-single-pass")
    )
    s.add_argument("--top-k", type=int, default=None, help="sources to keep")
    s.add_argument("--gamma", type=float, default=None, help="keep sources scoring below this")
    s.add_argument("--out", default=None, help="text file: selected source names, one a line")
    s.add_argument("--plot", default=None, help="PNG of the scores by source")
    s.add_argument(
        "--validate",
        action="store_true",
        help="fine-tune theta* for real on the selection and on all sources",
    )
    s.set_defaults(run=cmd_select)
