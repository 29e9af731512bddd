"""Scaling-law functional forms (`Law` bundles): rectified, vanilla, power, rectified_alpha,
loglinear.

Each law is a pure function ``predict(params, log_d) -> log_loss`` of an unconstrained
parameter NamedTuple, plus its deterministic initial-value grid. Look laws up by name with
`get_law`.
"""

from ._law import Law as Law
from ._power import LOGLINEAR as LOGLINEAR
from ._power import POWER as POWER
from ._power import VANILLA as VANILLA
from ._power import LineParams as LineParams
from ._power import PowerParams as PowerParams
from ._power import VanillaCode as VanillaCode
from ._power import VanillaParams as VanillaParams
from ._power import loglinear as loglinear
from ._power import power_law as power_law
from ._power import vanilla as vanilla
from ._power import vanilla_code as vanilla_code
from ._power import vanilla_from_code as vanilla_from_code
from ._power import vanilla_to_code as vanilla_to_code
from ._rectified import RECTIFIED as RECTIFIED
from ._rectified import RECTIFIED_ALPHA as RECTIFIED_ALPHA
from ._rectified import RectifiedAlphaParams as RectifiedAlphaParams
from ._rectified import RectifiedCode as RectifiedCode
from ._rectified import RectifiedPaper as RectifiedPaper
from ._rectified import RectifiedParams as RectifiedParams
from ._rectified import from_code as from_code
from ._rectified import from_paper as from_paper
from ._rectified import pre_learned_examples as pre_learned_examples
from ._rectified import rectified as rectified
from ._rectified import rectified_alpha as rectified_alpha
from ._rectified import rectified_code as rectified_code
from ._rectified import to_code as to_code
from ._rectified import to_paper as to_paper

LAWS: dict[str, Law] = {
    law.name: law for law in (RECTIFIED, VANILLA, POWER, RECTIFIED_ALPHA, LOGLINEAR)
}


def get_law(name: str) -> Law:
    """The law called ``name``; raises ValueError listing the known names otherwise."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}") from None
