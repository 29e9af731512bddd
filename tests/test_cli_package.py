"""The command-line package: lazy imports, flags from the config dataclasses, the compilation
cache, and one-line errors for arguments that make the question meaningless."""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlaw.cli import COMMANDS, build_parser, main
from jaxlaw.cli._flags import add_config, from_args

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout,
    )


def test_top_level_help_imports_nothing_heavy():
    """`jaxlaw --help` must not pay for jax/numpy: it lists the commands only."""
    code = (
        "import sys\n"
        "from jaxlaw.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('jax', 'numpy', 'pandas', 'flax', 'matplotlib', 'transformers')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    for name in COMMANDS:
        assert name in r.stdout


def _options(parser, *path):
    """Option strings of the (sub)parser reached by ``path``."""
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return {s for a in parser._actions for s in a.option_strings}


def test_config_fields_have_the_same_flag_in_every_command():
    """TrainConfig / LoraConfig fields keep one flag name across sweep, gradex and s2l."""
    from jaxlaw.lora import LoraConfig
    from jaxlaw.training import TrainConfig

    p = build_parser(full=True)
    sweep = _options(p, "sweep")
    meta = _options(p, "gradex", "meta-train")
    traj = _options(p, "s2l", "trajectories")
    estimate = _options(p, "gradex", "estimate")
    train_flags = {"--batch-size", "--lr", "--warmup-steps", "--weight-decay", "--clip-norm"}
    lora_flags = {f"--lora-{f.name}" for f in dataclasses.fields(LoraConfig)}
    for opts in (sweep, meta, traj):
        assert train_flags <= opts
        assert lora_flags <= opts
    # The real fine-tunes of `gradex estimate` are a TrainConfig under the ft- prefix.
    ft = {f"--ft-{f.name.replace('_', '-')}" for f in dataclasses.fields(TrainConfig)}
    assert {"--ft-steps", "--ft-batch-size", "--ft-lr"} <= ft & estimate
    # The drifted names are gone.
    for old in ("--rank", "--warmup", "--warmup-ratio", "--alpha", "--targets"):
        assert old not in sweep | meta | traj


def test_flags_round_trip_a_dataclass():
    """from_args(add_config(...)) rebuilds the dataclass, types and Optional included."""
    import argparse

    @dataclasses.dataclass(frozen=True)
    class Inner:
        """Attributes:
        rank: the rank.
        """

        rank: int = 2

    @dataclasses.dataclass(frozen=True)
    class Outer:
        """Attributes:
        sizes: subset sizes. Longer text.
        clip: a clip (None: off).
        flag: a switch.
        lora: nested.
        """

        sizes: tuple[int, ...]
        clip: float | None = 1.0
        flag: bool = False
        lora: Inner = dataclasses.field(default_factory=Inner)

    p = argparse.ArgumentParser()
    add_config(p, Outer)
    ns = p.parse_args(["--sizes", "3,5", "--clip", "none", "--flag", "--lora-rank", "7"])
    assert from_args(ns, Outer) == Outer(sizes=(3, 5), clip=None, flag=True, lora=Inner(7))
    assert from_args(p.parse_args(["--sizes", "1"]), Outer) == Outer(sizes=(1,))
    assert "subset sizes" in p.format_help() and "Longer text" not in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args([])  # --sizes has no default: required


@pytest.mark.parametrize(
    "argv, message",
    [
        (["select", "flan", "--budget", "3200", "--predict", "3200"], "at or below the budget"),
        (["select", "flan", "--budget", "3200", "--predict", "800"], "at or below the budget"),
        (["observe", "fit", "--target", "nope_column"], "nope_column"),
        (["observe", "fit", "--target", "MMLU", "--preset", "nope"], "nope"),
        (["fit", "nope"], "nope: no such file"),
    ],
)
def test_meaningless_arguments_give_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxlaw: error:") and message in err[0], err


def test_compilation_cache_is_written_and_reused(tmp_path):
    """A first `jaxlaw fit` fills the cache folder; a second process finds its entries."""
    env = {"JAXLAW_CACHE_DIR": str(tmp_path / "cache"), "JAXLAW_NO_CACHE": ""}
    code = "import sys\nfrom jaxlaw.cli import main\nsys.exit(main(['fit', 'wmt19']))"
    first = _run(code, env)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert any(n.startswith("fit_curves-") for n in entries) and len(entries) > 2
    second = _run(code, env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout == first.stdout  # the cached program gives the same fit
    assert {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()} == entries


def test_fit_then_select_share_a_cache(tmp_path):
    """`select --method ourfit` runs the executable a `fit` of the same shapes stored. With
    that file gone, jax's persistent cache serves the program; a copy of a served executable
    lacks its kernels ("Function ... not found" on the next run), so nothing is stored then
    (regression)."""
    cache = tmp_path / "cache"
    env = {"JAXLAW_CACHE_DIR": str(cache), "JAXLAW_NO_CACHE": ""}

    def jaxlaw(argv: str) -> str:
        r = _run(f"import sys\nfrom jaxlaw.cli import main\nsys.exit(main({argv}))", env)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    select = "['select', 'flan', '--budget', '3200', '--method', 'ourfit']"
    fit = jaxlaw("['fit', 'flan']")
    stored = sorted((cache / "fits").iterdir())
    assert len(stored) == 1
    assert jaxlaw(select) == jaxlaw(select)
    assert sorted((cache / "fits").iterdir()) == stored  # select found fit's executable
    shutil.rmtree(cache / "fits")
    assert jaxlaw("['fit', 'flan']") == fit  # served by the persistent cache
    assert not (cache / "fits").exists()
    assert jaxlaw("['fit', 'flan']") == fit


def test_unwritable_cache_warns_once_and_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {"JAXLAW_CACHE_DIR": str(blocker / "cache"), "JAXLAW_NO_CACHE": ""}
    r = _run("import sys\nfrom jaxlaw.cli import main\nsys.exit(main(['fit', 'wmt19']))", env)
    assert r.returncode == 0, r.stderr[-2000:]
    warn = [line for line in r.stderr.splitlines() if line.startswith("jaxlaw: warning:")]
    assert len(warn) == 1 and "not writable" in warn[0] and "--no-cache" in warn[0]


def test_no_cache_flag_and_env_leave_no_cache(tmp_path):
    from jaxlaw.cli._cache import enable_compilation_cache

    os.environ["JAXLAW_CACHE_DIR"] = str(tmp_path / "c")
    try:
        assert enable_compilation_cache(disabled=True) is None
        os.environ["JAXLAW_NO_CACHE"] = "1"
        assert enable_compilation_cache() is None
        assert not (tmp_path / "c").exists()
    finally:
        del os.environ["JAXLAW_CACHE_DIR"]
