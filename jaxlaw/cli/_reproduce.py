"""``jaxlaw reproduce rectified | obscaling``: the papers' tables from the bundled data.

The reproductions are library code (`jaxlaw.selection.reproduce_rectified`,
`jaxlaw.observational.reproduce_obscaling`); this command maps their config dataclasses to
flags, writes every table and figure into ``--out`` and prints the checks against the papers.
"""

import argparse

from ._flags import add_config, from_args

STUDIES = {
    "rectified": ("jaxlaw.selection", "RectifiedConfig", "reproduce_rectified", "write_rectified"),
    "obscaling": (
        "jaxlaw.observational",
        "ObscalingConfig",
        "reproduce_obscaling",
        "write_obscaling",
    ),
}


def _study(name: str):
    import importlib

    module, config, run, write = STUDIES[name]
    m = importlib.import_module(module)
    return getattr(m, config), getattr(m, run), getattr(m, write)


def cmd_reproduce(a: argparse.Namespace) -> None:
    from ._tables import print_table

    config_cls, run, write = _study(a.study)
    config = from_args(a, config_cls)
    if a.quick:
        config = config_cls.smoke(
            **{f: getattr(config, f) for f in config.__dataclass_fields__ if f != "budgets"}
        )
    result = run(config, log=print)
    paths = write(result, a.out)
    checks = result.checks
    failed = checks[~checks.passed.astype(bool)]
    rows = [[str(v) for v in r] for r in failed.itertuples(index=False)]
    if rows:
        print_table(f"checks that missed the paper ({len(rows)})", list(failed.columns), rows)
    print(f"{int(checks.passed.sum())} of {len(checks)} checks against the paper pass")
    print(f"wrote {len(paths)} files to {a.out}")


def add_arguments(r: argparse.ArgumentParser) -> None:
    sub = r.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name in STUDIES:
        config_cls, run, _ = _study(name)
        s = sub.add_parser(name, help=(run.__doc__ or "").split("\n")[0])
        s.add_argument("--out", required=True, help="output folder (tables, figures, checks)")
        s.add_argument(
            "--quick",
            action="store_true",
            help="smoke settings: the same code path on fewer budgets / bootstrap replicates",
        )
        add_config(s, config_cls)
        s.set_defaults(float64=True, run=cmd_reproduce)
