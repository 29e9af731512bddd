"""Command line: ``jaxlaw fit | select | sweep | observe | reproduce | gradex | s2l | convert``.

    jaxlaw fit flan --law rectified --plot fits.png          # a bundled table or a CSV path
    jaxlaw select flan --budget 204800 --method ats
    jaxlaw sweep --models ckpt/a ckpt/b --train train.jsonl --eval test.jsonl \\
        --sizes 200,400,800,1600 --out sweep.csv             # then: jaxlaw select sweep.csv
    jaxlaw observe fit --preset lbv2_math --targets leaderboard_v2 --target leaderboard_math_hard
    jaxlaw reproduce rectified --out results/rectified
    jaxlaw convert model.gguf ckpt/model                     # GGUF -> HF folder (+ tokenizer)

TABLE is a CSV in the loss-table format (model rows; integer subset-size columns; optional
``size`` and ``family``) or the name of a table shipped with jaxlaw: the papers' flan, wmt19,
gigaword (``--data`` / $JAXLAW_DATA read another copy) or smollm2_gsm8k (measured by jaxlaw:
SmolLM2-135M LoRA on GSM8K subsets, experiments/gsm8k_scaling). Bad input ends with one
``jaxlaw: error:`` line. Compiled XLA programs are cached in $JAXLAW_CACHE_DIR (default
~/.cache/jaxlaw/xla), so a repeated command skips compilation; ``--no-cache`` or
JAXLAW_NO_CACHE=1 turns that off.
"""

import argparse
import importlib
import sys

# name -> (module, function adding the command's arguments, one-line help). The command's
# module is imported only when that command runs (or asks for --help), so `jaxlaw --help`
# imports neither jax nor numpy.
COMMANDS = {
    "fit": ("_fit", "add_fit", "fit a scaling law to every model of a loss table"),
    "select": ("_fit", "add_select", "rank candidate models from a small-data budget"),
    "sweep": (
        "_sweep",
        "add_arguments",
        "LoRA-fine-tune candidate models on nested subsets; write a loss table",
    ),
    "observe": ("_observe", "add_arguments", "observational scaling laws (Ruan et al. 2024)"),
    "reproduce": ("_reproduce", "add_arguments", "reproduce a paper's tables and figures"),
    "gradex": (
        "gradex",
        "add_arguments",
        "GradEx: estimate fine-tuned losses of data-source subsets from projected gradients",
    ),
    "s2l": (
        "s2l",
        "add_arguments",
        "S2L: select data by clustering a small proxy's loss trajectories",
    ),
    "convert": (
        "_convert",
        "add_arguments",
        "convert a GGUF file into a Hugging Face folder (weights, config, tokenizer)",
    ),
}


def build_parser(command: str | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser; only ``command``'s arguments are built (all of them with ``full``)."""
    p = argparse.ArgumentParser(
        prog="jaxlaw",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the persistent compilation cache (also: JAXLAW_NO_CACHE=1)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, fn, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if full or name == command:
            getattr(importlib.import_module(f".{module}", __name__), fn)(sp)
    return p


def _command(argv: list[str]) -> str | None:
    """The first positional argument, if it names a command."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(_command(argv)).parse_args(argv)
        from ._cache import enable_compilation_cache

        enable_compilation_cache(disabled=args.no_cache)
        if getattr(args, "float64", False):  # fitting-only commands: no model is built
            import jax

            with jax.enable_x64(True):
                args.run(args)
        else:
            args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:  # TableError is a ValueError
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxlaw: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
