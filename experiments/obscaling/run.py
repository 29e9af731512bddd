"""Reproduce the observational-scaling analyses (PCA, leaderboard v2, selection, R²) with jaxlaw.

Run: ``python -m experiments.obscaling.run --out DIR [--data DIR] [--quick]`` (also
``jaxlaw reproduce obscaling ...``). Writes to DIR: pca.csv (table, component, evr, loadings),
lbv2.csv (target, predictor, n_train, n_test, mse_train, mse_test, 90% bootstrap band of
mse_test), selection.csv (setting, budget, J, n_models, families, random_J), rsq.csv (family,
r2, n_models), checks.csv (each number against the reference's), lbv2_*.png, selection.png,
rsq.png, summary.md and config.json. The work is `jaxlaw.observational.reproduce_obscaling`
(which filters the loader's expected BTLM-3B data-error warning by its message); this script
parses flags and prints.
"""

import argparse
import time

from jaxlaw.observational import ObscalingConfig, reproduce_obscaling, write_obscaling


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--quick", action="store_true", help="smoke config: 50 bootstrap replicates")
    a = p.parse_args(argv)
    cfg = ObscalingConfig.smoke(data=a.data) if a.quick else ObscalingConfig(data=a.data)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    res = reproduce_obscaling(cfg, log=log)
    write_obscaling(res, a.out)
    print(res.lbv2.round(6).to_string(index=False))
    checks = res.checks
    print(f"checks against the reference: {int(checks.passed.sum())} of {len(checks)} passed")
    if not checks.passed.all():
        print(checks[~checks.passed].to_string(index=False))
    log(f"wrote {a.out}/: pca.csv lbv2.csv selection.csv rsq.csv checks.csv summary.md *.png")


if __name__ == "__main__":
    main()
