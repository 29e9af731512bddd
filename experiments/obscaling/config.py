"""Configuration of the observational-scaling reproduction (Ruan et al., NeurIPS 2024).

Run: ``python -m experiments.obscaling.run --out results/obscaling [--quick]``
(also ``jaxlaw reproduce obscaling ...``). The settings live with the reproduction code in
`jaxlaw.observational` so that a pip-installed jaxlaw can run it.
"""

from jaxlaw.observational import ObscalingConfig as ObscalingConfig
