"""Curvature of the probe loss: Hessian top-k eigenpairs and gradient–Hessian alignment.

Three parts, so each is tested on its own: an operator (``hvp``: v ↦ H v on a flat vector, on the Evaluator's
shadow model), an algorithm (``lanczos``: top-k of any symmetric operator, tested on plain
matrices), and the measurements built from them (``alignment``, ``measure``). Importing this package
loads torch; ``engine`` itself imports it only when a run has curvature switched on.
"""

from sgdwalk.curvature.hvp import HessianOperator, flat_gradient, hessian_operator
from sgdwalk.curvature.lanczos import LanczosResult, lanczos, lanczos_steps
from sgdwalk.curvature.measure import CurvatureMeter

__all__ = [
    "CurvatureMeter",
    "HessianOperator",
    "LanczosResult",
    "flat_gradient",
    "hessian_operator",
    "lanczos",
    "lanczos_steps",
]
