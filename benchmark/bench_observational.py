"""Benchmark: the leaderboard-v2 grid and its bootstrap, jaxlaw vs the reference's scipy procedure.

Run from the repo root (standalone; never collected by pytest)::

    python benchmark/bench_observational.py [--data DIR] [--bootstrap 1000] [--baseline-boot 50]

Grid = 3 targets (GPQA, MATH Lvl 5, BBH; spec obscaling.md §4.3) x 3 predictor sets (ln size,
ln FLOPs, 3 capability PCs) on the 47 leaderboard models, each target with its own cutoff,
imputation and PCA as the reference fits them.

1. jaxlaw: `observe_grid` (whole pipeline) for the grid; then the same grid call for PC-3
   with ``--bootstrap`` model-bootstrap refits per target, all fits in one vmapped call.
   First calls (with compiles) are timed apart from steady state (median of 3).
2. baseline: written below from spec §2: PCA-EM imputation with the reference's stopping test
   (which never fires: 1000 PCA fits per call, train and test), numpy-SVD PCA, then
   `scipy.optimize.minimize` (BFGS, finite differences) of the summed Huber loss (delta = 1)
   of a plain sigmoid from w0 = 0, slopes 0.03. Its bootstrap refits the same way on
   ``--baseline-boot`` resamples per target, extrapolated linearly to ``--bootstrap``.

Both sides print test MSEs; one JSON line goes to benchmark/results/bench_observational.jsonl.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import jax
import numpy as np
import scipy
from scipy.optimize import minimize

jax.config.update("jax_enable_x64", True)

from jaxlaw.observational import (  # noqa: E402
    LBV2_TARGETS,
    PRESETS,
    load_benchmarks,
    merge_tables,
    observe_grid,  # noqa: E402
)
from jaxlaw.observational._pipeline import _split_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_observational.jsonl"
PREDICTORS = ("size", "flops", "pc:3")


# ---------------------------------------------------------------------------------- baseline
def ref_impute(X, train, max_iter=1000):
    """Spec §2.4 with the reference's never-firing stop test: always max_iter PCA fits."""
    mu = np.nanmean(X[train], 0)
    sd = np.nanstd(X[train], 0)
    Z = (X - mu) / sd
    miss = np.isnan(Z)
    Z[miss] = 0.0

    def fit(zt):
        c = zt.mean(0)
        v = np.linalg.svd(zt - c, full_matrices=False)[2][:1]
        return c, v

    zt, mt = Z[train], miss[train]
    for _ in range(max_iter):
        c, v = fit(zt)
        rec = c + (zt - c) @ v.T @ v
        if np.allclose(zt, rec, atol=1e-4, rtol=1e-5):
            break
        zt[mt] = rec[mt]
    Z[train] = zt
    ze, me = Z[~train], miss[~train]
    for _ in range(max_iter):
        ze[me] = (c + (ze - c) @ v.T @ v)[me]
    Z[~train] = ze
    out = np.where(miss, np.clip(Z * sd + mu, 0, 1), X)
    return out


def ref_fit(x, y):
    """BFGS with finite differences on sum Huber(delta=1) of a plain sigmoid, reference start."""

    def obj(p):
        r = 1 / (1 + np.exp(-(p[0] + x @ p[1:]))) - y
        a = np.abs(r)
        return np.sum(np.where(a <= 1.0, 0.5 * r**2, a - 0.5))

    return minimize(obj, np.r_[0.0, np.full(x.shape[1], 0.03)], method="BFGS").x


def ref_predictors(df, target, preset, pred):
    """Rows, target and split from jaxlaw's host-side table code (no jitted numerics); the
    predictors computed the reference way in numpy."""
    rows, mat, col, train, test, y = _split_rows(df, target, preset)
    if pred == "size":
        x = np.log(col["Model Size (B)"])[:, None]
    elif pred == "flops":
        x = np.log(col["FLOPs (1E21)"])[:, None]
    else:
        X = ref_impute(mat[:, : len(preset.metrics)], train)
        mean = X[train].mean(0)
        vt = np.linalg.svd(X[train] - mean, full_matrices=False)[2][:3]
        x = (X - mean) @ vt.T
    return x, train, test, y


def baseline_grid(df, jobs):
    out = {}
    for target, preset in jobs:
        for pred in PREDICTORS:
            x, train, test, y = ref_predictors(df, target, preset, pred)
            ok = np.isfinite(x).all(1)
            tr, te = train & ok, test & ok
            p = ref_fit(x[tr], y[tr])
            yhat = 1 / (1 + np.exp(-(p[0] + x @ p[1:])))
            out[(target, pred)] = float(np.mean((yhat[te] - y[te]) ** 2))
    return out


def baseline_bootstrap(df, jobs, n, seed=0):
    rng = np.random.default_rng(seed)
    for target, preset in jobs:
        x, train, _, y = ref_predictors(df, target, preset, "pc:3")
        rows = np.flatnonzero(train)
        for _ in range(n):
            idx = rng.choice(rows, len(rows))
            ref_fit(x[idx], y[idx])


def timed(fn, repeats=3):
    t0 = time.perf_counter()
    first = fn()
    t_first = time.perf_counter() - t0
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return first, t_first, statistics.median(walls)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=os.environ.get("JAXLAW_DATA", str(REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="jaxlaw refits per target")
    ap.add_argument("--baseline-boot", type=int, default=50, help="scipy refits per target (timed)")
    a = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BTLM-3B data-error warning
        base = load_benchmarks(
            "base", root=a.data, include_preregistered=True, eval_families_only=False
        )
    df = merge_tables(base, load_benchmarks("leaderboard_v2", root=a.data))
    jobs = [(t, PRESETS[p]) for p, t in LBV2_TARGETS.items()]
    print(f"{len(df)} models | devices {[str(d) for d in jax.devices()]} | cpus {os.cpu_count()}")

    grid, grid_first, grid_steady = timed(lambda: observe_grid(df, jobs, PREDICTORS))
    print(
        f"jaxlaw grid (3 targets x 3 predictor sets): first call {grid_first:.2f} s, "
        f"steady {grid_steady * 1e3:.1f} ms"
    )
    boot, boot_first, boot_steady = timed(
        lambda: observe_grid(df, jobs, ("pc:3",), bootstrap=a.bootstrap)
    )
    print(
        f"jaxlaw PC-3 + {a.bootstrap} bootstrap refits per target ({3 * (a.bootstrap + 1)} fits, "
        f"one call): first {boot_first:.2f} s, steady {boot_steady:.2f} s"
    )

    t0 = time.perf_counter()
    ref = baseline_grid(df, jobs)
    ref_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    baseline_bootstrap(df, jobs, a.baseline_boot)
    ref_boot = (time.perf_counter() - t0) * a.bootstrap / a.baseline_boot
    print(
        f"baseline grid (scipy, reference procedure): {ref_grid:.2f} s; bootstrap "
        f"{ref_boot:.1f} s (extrapolated from {a.baseline_boot} refits per target)"
    )

    print(f"  {'target':24s} {'predictors':10s} {'jaxlaw MSE':>11s} {'scipy MSE':>11s}")
    for _, r in grid.table.iterrows():
        theirs = ref[(r.target, r.predictors)]
        print(f"  {r.target:24s} {r.predictors:10s} {r.mse_test:11.3e} {theirs:11.3e}")
    print(
        f"speed: grid {ref_grid / grid_steady:.0f}x (target >= 20x); bootstrap "
        f"{ref_boot / boot_steady:.0f}x; bootstrap steady {boot_steady:.2f} s (target < 5 s)"
    )

    record = {
        "bench": "bench_observational",
        "timestamp": datetime.now(UTC).isoformat(),
        "argv": sys.argv[1:],
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "jaxlaw_grid_first_s": grid_first,
        "jaxlaw_grid_steady_s": grid_steady,
        "jaxlaw_boot_first_s": boot_first,
        "jaxlaw_boot_steady_s": boot_steady,
        "bootstrap_per_target": a.bootstrap,
        "baseline_grid_s": ref_grid,
        "baseline_boot_s_extrapolated": ref_boot,
        "baseline_boot_measured_per_target": a.baseline_boot,
        "grid_speedup": ref_grid / grid_steady,
        "boot_speedup": ref_boot / boot_steady,
        "mse_test": {
            f"{r.target}/{r.predictors}": {
                "jaxlaw": r.mse_test,
                "scipy": ref[(r.target, r.predictors)],
            }
            for _, r in grid.table.iterrows()
        },
        "loadavg_1min": os.getloadavg()[0],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
