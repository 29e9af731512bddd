"""`in_float64`: run a fitting entry point in float64 whatever the global x64 flag says."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _to64(a):
    if isinstance(a, (np.ndarray, jax.Array)) and jnp.issubdtype(a.dtype, jnp.floating):
        return a if a.dtype == np.float64 else a.astype(np.float64)
    return a


def in_float64(fn):
    """Decorate a public fitting entry point so it runs under ``jax.enable_x64(True)`` with
    its floating array arguments (leaves of any pytree) cast to float64.

    Scaling-law and regression tolerances assume float64; without this a user who never sets
    ``jax_enable_x64`` silently gets float32 fits. The flag is part of jit's cache key, so
    every call entering the same scoped state keeps hitting one compiled executable.
    Results are float64 jax arrays; outside x64, further jax ops on them would truncate to
    float32, so convert with ``np.asarray`` first.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            args, kwargs = jax.tree.map(_to64, (args, kwargs))
            return fn(*args, **kwargs)

    if hasattr(fn, "_cache_size"):  # keep jit's introspection for the no-retrace tests
        wrapper._cache_size = fn._cache_size  # type: ignore[attr-defined]
    return wrapper


def x64_scope(fn):
    """Decorate an entry point so it runs under ``jax.enable_x64(True)``, inputs untouched.

    For numerics whose inputs may be large float32 arrays that must stay float32 (per-sample
    gradients, k-means features): numpy float64 input stays float64, integers become float64,
    jax float32 arrays keep their dtype; what the function computes in float64 is float64.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapped
