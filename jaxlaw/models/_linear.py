"""The projection layer every model uses, with a slot that `jaxlaw.lora` fills."""

import jax
import jax.numpy as jnp
from flax import nnx

from .._types import Array, Float


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with an optional low-rank adapter added to the output.

    The kernel is stored ``[in_features, out_features]`` (the layout of GPT-2's ``Conv1D``; a
    PyTorch ``nn.Linear`` weight is its transpose). ``lora`` is ``None`` until
    `jaxlaw.lora.apply_lora` puts a module there that maps ``x`` to a ``[..., out_features]``
    update; the base weights never change.

    Args:
        in_features: input width.
        out_features: output width.
        use_bias: whether to add a bias.
        dtype: compute dtype (inputs and the kernel are cast to it).
        param_dtype: storage dtype of the kernel and bias.
        init_std: standard deviation of the normal kernel init.
        rngs: random streams; ``rngs.params`` draws the kernel.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        kernel = init_std * jax.random.normal(rngs.params(), (in_features, out_features))
        self.kernel = nnx.Param(kernel.astype(param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.lora = nnx.data(None)

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        x = x.astype(self.dtype)
        y = x @ self.kernel[...].astype(self.dtype)
        if self.bias is not None:
            # Explicit leading axes: the bias broadcast must pass rank-promotion="raise".
            y = y + self.bias[...].astype(self.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
        if self.lora is not None:
            y = y + self.lora(x).astype(self.dtype)
        return y
