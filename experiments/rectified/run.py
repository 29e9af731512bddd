"""Reproduce the Rectified Scaling Law paper's Tables 1-3 and figures with jaxlaw.

Run: ``python -m experiments.rectified.run --out DIR [--data DIR] [--max-size N] [--k K]
[--delta D] [--quick]`` (also ``jaxlaw reproduce rectified ...``). Writes to DIR:
rmsd.csv (dataset, model, law, rmsd_log), selection.csv (the paper's procedures: AtS,
reference-mode OurFit/VanillaFit, ModelSize with the reference sign), selection_multistart.csv
(jaxlaw's multi-start OurFit/VanillaFit, ModelSize with the loss sign), checks.csv (each
number against the paper's), tables.md, fits_*.png, rmsd.png, selection.png and config.json.
The work is `jaxlaw.selection.reproduce_rectified`; this script parses flags and prints.
"""

import argparse
import time

from jaxlaw.selection import (
    RectifiedConfig,
    rectified_markdown,
    reproduce_rectified,
    write_rectified,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--max-size", type=float, default=None)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--delta", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="smoke config: budgets 1/8 and 1/512 only")
    a = p.parse_args(argv)
    kw = dict(data=a.data, max_size=a.max_size, k=a.k, delta=a.delta)
    cfg = RectifiedConfig.smoke(**kw) if a.quick else RectifiedConfig(**kw)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    res = reproduce_rectified(cfg, log=log)
    write_rectified(res, a.out)
    print(res.rmsd_means.round(5).to_string())
    print(rectified_markdown(res))
    log(f"wrote {a.out}/: rmsd.csv, selection*.csv, checks.csv, tables.md, *.png")


if __name__ == "__main__":
    main()
