"""Start-up of the command line: wall time of fresh processes, as a user pays it.

Issue 12's targets, each the median of ``--runs`` (default 5) fresh processes:
- ``jaxlaw --help`` < 0.5 s;
- ``jaxlaw fit flan`` < 5 s on a first run (empty compilation cache) and < 2.5 s on a repeat;
- ``jaxlaw select flan --budget 3200 --method ourfit`` the same.
The baseline is the same job as a plain scipy loop in a fresh process: the rectified law
``L(D) = B / (D_l + D^beta) + E`` fitted under log to each of the 30 flan curves with
``scipy.optimize.least_squares`` (Levenberg-Marquardt) from a 3 x 3 x 3 grid of starts, the
loop a user writes in place of ``jaxlaw fit`` (the paper's own script fits this way, with more
starts and a Huber loss). Both print their mean RMSD so the work can be compared.

Cold runs get a fresh ``JAXLAW_CACHE_DIR``; warm runs share one that a first run filled. Runs
alternate jaxlaw / scipy so drifting load hits both. The console script runs with this
checkout first on ``PYTHONPATH``, so a git worktree times its own jaxlaw, not the copy the
virtual environment was installed from. One JSON line per run goes to
``benchmark/results/bench_cli.jsonl``.

    python benchmark/bench_cli.py [--runs 5]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmark" / "results" / "bench_cli.jsonl"
JAXLAW = [str(Path(sys.executable).with_name("jaxlaw"))]  # the console script users run

SCIPY_FIT = r"""
import itertools, sys
import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from importlib.resources import files

df = pd.read_csv(files("jaxlaw.data") / "tables" / "rectified" / "flan.csv")
sizes = np.array([int(c) for c in df.columns if c.isdigit()])
loss = df[[str(s) for s in sizes]].to_numpy(float)
keep = sizes > 0
d, y = sizes[keep].astype(float), np.log(loss[:, keep])

def model(p, d):  # p = log B, log E, log D_l, log beta
    b, e, dl, beta = np.exp(p)
    return np.log(b / (dl + d**beta) + e)

np.seterr(over="ignore", invalid="ignore")  # wild starts overflow; least_squares copes
rmsd = []
for row in y:
    m = np.isfinite(row)
    best = None
    for lb, le, ldl in itertools.product((1.0, 4.0, 8.0), (-3.0, -1.0, 0.0), (0.0, 4.0, 8.0)):
        p0 = np.array([lb, le, ldl, np.log(0.5)])
        try:
            r = least_squares(lambda p: model(p, d[m]) - row[m], p0, method="lm", max_nfev=2000)
        except ValueError:
            continue
        if np.all(np.isfinite(r.fun)) and (best is None or r.cost < best.cost):
            best = r
    rmsd.append(np.sqrt(np.mean(best.fun**2)))
print(f"mean RMSD under log: {np.mean(rmsd):.5f}")
"""


def _time(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return wall, r.stdout


def _rmsd(out: str) -> str:
    return next((line for line in out.splitlines() if "RMSD" in line), "").strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="fresh processes per measurement")
    a = p.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAXLAW_")}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [base.get("PYTHONPATH")])])
    jobs = {
        "help": ["--help"],
        "fit flan": ["fit", "flan"],
        "select flan ourfit": ["select", "flan", "--budget", "3200", "--method", "ourfit"],
    }
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    warm_dir = Path(tempfile.mkdtemp(prefix="jaxlaw-bench-warm-"))
    warm_env = {**base, "JAXLAW_CACHE_DIR": str(warm_dir)}
    for args in jobs.values():  # fill the warm cache (not timed)
        _time(JAXLAW + args, warm_env)
    for i in range(a.runs):
        for name, args in jobs.items():
            cold_dir = Path(tempfile.mkdtemp(prefix="jaxlaw-bench-cold-"))
            try:
                kinds = {"first": {**base, "JAXLAW_CACHE_DIR": str(cold_dir)}, "repeat": warm_env}
                if name == "help":
                    kinds = {"": warm_env}
                for kind, env in kinds.items():
                    wall, out = _time(JAXLAW + args, env)
                    label = f"{name} {kind}".strip()
                    times.setdefault(label, []).append(wall)
                    notes.setdefault(label, _rmsd(out))
            finally:
                shutil.rmtree(cold_dir, ignore_errors=True)
        wall, out = _time([sys.executable, "-c", SCIPY_FIT], base)
        times.setdefault("scipy loop (fit flan)", []).append(wall)
        notes.setdefault("scipy loop (fit flan)", _rmsd(out))
        print(f"run {i + 1}/{a.runs} done", file=sys.stderr)
    shutil.rmtree(warm_dir, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    targets = {
        "help": 0.5,
        "fit flan first": 5.0,
        "fit flan repeat": 2.5,
        "select flan ourfit first": 5.0,
        "select flan ourfit repeat": 2.5,
    }
    scipy = med["scipy loop (fit flan)"]
    print(f"{'command':32s} {'median s':>9s} {'min':>7s} {'max':>7s} {'target':>7s}  note")
    for k, v in times.items():
        target = targets.get(k)
        flag = "" if target is None else ("ok" if med[k] < target else "MISSED")
        print(
            f"{k:32s} {med[k]:9.2f} {min(v):7.2f} {max(v):7.2f} "
            f"{'' if target is None else f'< {target:g}':>7s}  {flag} {notes.get(k, '')}"
        )
    for kind in ("first", "repeat"):
        print(
            f"scipy loop / jaxlaw fit flan ({kind}): {scipy / med[f'fit flan {kind}']:.2f}x "
            f"({scipy:.2f} s vs {med[f'fit flan {kind}']:.2f} s)"
        )
    record = {
        "bench": "cli",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "devices": subprocess.run(
            [sys.executable, "-c", "import jax; print(jax.devices())"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "jaxlaw": subprocess.run(
            [sys.executable, "-c", "import jaxlaw; print(jaxlaw.__file__)"],
            capture_output=True,
            text=True,
            env=base,
            cwd="/",
        ).stdout.strip(),
        "runs": a.runs,
        "median_s": med,
        "all_s": times,
        "targets_s": targets,
        "ratio_scipy_over_fit_first": scipy / med["fit flan first"],
        "ratio_scipy_over_fit_repeat": scipy / med["fit flan repeat"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
