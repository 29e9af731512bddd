"""Multi-start least-squares fitting of scaling laws (the only optimistix user in jaxlaw).

Entry point: `fit_curves`, one jitted call fitting B curves x K starts::

    import jax, jax.numpy as jnp
    from jaxlaw.laws import RECTIFIED
    from jaxlaw.fitting import fit_curves
    fit = fit_curves(RECTIFIED, jnp.log(sizes), jnp.log(losses), key=jax.random.key(0))
    fit.params, fit.rmsd, fit.ok   # best start per curve

Each start is solved by Levenberg-Marquardt (MSE in log space) or BFGS (Huber), with
``throw=False`` so failures become flags; the best successful start per curve is kept by a
masked argmin. ``faithful=True`` runs the reference code's own procedures, for parity.
`predict_interval` puts a Laplace (delta-method) or bootstrap band around a fit's predictions.
"""

from ._aot import cached_fit_curves as cached_fit_curves
from ._aot import use_executable_cache as use_executable_cache
from ._fit import fit_curve as fit_curve
from ._fit import fit_curves as fit_curves
from ._fit import predict as predict
from ._interval import Interval as Interval
from ._interval import bootstrap_predictions as bootstrap_predictions
from ._interval import predict_interval as predict_interval
from ._reference import fit_rectified_reference as fit_rectified_reference
from ._reference import fit_vanilla_reference as fit_vanilla_reference
from ._result import FitResult as FitResult
from ._result import huber as huber
from ._x64 import in_float64 as in_float64
from ._x64 import x64_scope as x64_scope
