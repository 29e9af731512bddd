"""Configuration of the Rectified Scaling Law reproduction (Lin et al., ICML 2024).

Run: ``python -m experiments.rectified.run --out results/rectified [--quick]``
(also ``jaxlaw reproduce rectified ...``). The settings live with the reproduction code in
`jaxlaw.selection` so that a pip-installed jaxlaw can run it.
"""

from jaxlaw.selection import RectifiedConfig as RectifiedConfig
