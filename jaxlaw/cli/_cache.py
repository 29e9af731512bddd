"""The persistent XLA compilation cache of the command line.

A CLI process compiles the same fits every time it starts; with the cache a repeated command
loads the compiled programs instead. On by default for ``jaxlaw``; ``--no-cache`` or
``JAXLAW_NO_CACHE=1`` turns it off, ``JAXLAW_CACHE_DIR`` moves it (default:
``$XDG_CACHE_HOME/jaxlaw/xla``, else ``~/.cache/jaxlaw/xla``).
"""

import os
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where compiled programs go: $JAXLAW_CACHE_DIR, else the user cache directory."""
    if os.environ.get("JAXLAW_CACHE_DIR"):
        return Path(os.environ["JAXLAW_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxlaw" / "xla"


def _disabled_by_env() -> bool:
    return os.environ.get("JAXLAW_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def enable_compilation_cache(*, disabled: bool = False) -> Path | None:
    """Point jax's persistent compilation cache at `cache_dir` (every program, however quick).

    Returns the directory, or None when the cache is off: asked for, or the directory is not
    writable (then one ``jaxlaw: warning:`` line says so and the command runs uncached).
    """
    if disabled or _disabled_by_env():
        return None
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        print(
            f"jaxlaw: warning: compilation cache off: {path} is not writable "
            f"({e.strerror or e}); set JAXLAW_CACHE_DIR or pass --no-cache",
            file=sys.stderr,
        )
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from jaxlaw.fitting import use_executable_cache

    use_executable_cache(path / "fits")  # and skip tracing and compiling the fits too
    return path
