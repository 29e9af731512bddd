"""``jaxlaw reproduce rectified | obscaling``: the papers' tables from the bundled data."""

import argparse


def cmd_reproduce(a: argparse.Namespace) -> None:
    raise NotImplementedError  # wired to the library reproductions in the next commit


def add_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("study", choices=("rectified", "obscaling"))
    r.set_defaults(float64=True, run=cmd_reproduce)
