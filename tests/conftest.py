"""Shared test setup: float64 everywhere, rank-promotion errors, the data root."""

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
DATA = Path(os.environ.get("JAXLAW_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def key():
    return jr.key(0)


@pytest.fixture
def strict_dtypes():
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "rectified" / "flan.csv").exists():
        pytest.skip(f"reference data not found at {DATA} (set JAXLAW_DATA)")
    return DATA
