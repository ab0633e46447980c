"""The geometry of the optimizer actually used: which curvature its stability depends on.

Why: gradient descent with step η on a quadratic of curvature λ is stable while λη < 2, and
training tends to sharpen until it sits at that edge (Cohen et al. 2021). The edge is not λ1 = 2/η
for every optimizer. An optimizer that preconditions (Adam, RMSprop, Adagrad) or uses momentum
moves it; per-group learning rates scale it per parameter. In general, with the preconditioner
frozen at its current value, one step is

    θ ← θ − D ∘ (momentum-filtered ∇L),    D = diag(lr of the parameter's group / its preconditioner)

and on a quadratic with Hessian H (plus wd·I where weight decay is added to the gradient, "L2")
the iteration is stable while λmax(D^½ H D^½) < c, c the optimizer's constant (Cohen et al. 2022,
"Adaptive gradient methods at the edge of stability", for Adam). So a curvature pass records

    edge_ratio = λmax(D^½ (H + L2) D^½) / c        (1 at the edge of stability)

and, for a readable plot, ``sharpness`` = edge_ratio · ``threshold`` with threshold = c₀/η₀ of the
first parameter group: for plain SGD, sharpness = λ1 + wd and threshold = 2/η, as before.

The constants, each derived on the scalar quadratic f = λx²/2 and tested against the real torch
optimizer on one (tests/test_geometry.py):
- SGD, heavy-ball momentum β, dampening τ: buf ← β·buf + (1−τ)g, θ ← θ − η·buf: stable while
  λη(1−τ) < 2 + 2β, so c = (2 + 2β)/(1 − τ).
- SGD, Nesterov (τ = 0): θ ← θ − η(g + β·buf); the companion matrix of (θ_t, buf_{t−1}) has
  trace 1 + β − a(1 + β) and determinant β(1 − a) with a = λη, and Jury's condition
  1 + trace + det > 0 gives a < (2 + 2β)/(1 + 2β): c = (2 + 2β)/(1 + 2β).
- Adam/AdamW (β1, β2, ε): θ ← θ − η/(1 − β1^t) · m / (√v̂ + ε) with m ← β1·m + (1 − β1)g: heavy
  ball on the preconditioned gradient with step η(1 − β1)/(1 − β1^t)/(√v̂ + ε), so with D built
  from η/((1 − β1^t)(√v̂ + ε)) (the step torch takes now), c = (2 + 2β1)/(1 − β1). AMSGrad uses the
  running maximum of v. Adam's weight_decay is L2 (added to H); AdamW's (decoupled) is not.
- RMSprop (α, ε, momentum μ, centered): preconditioner √(v − ḡ² if centered) + ε, then heavy ball
  with μ on the preconditioned gradient: c = 2 + 2μ.
- Adagrad: preconditioner √Σg² + ε and step lr/(1 + (t − 1)·lr_decay): c = 2.
An optimizer this module does not know (or one that maximizes) gets no edge line, and a note
says so: never a wrong line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Geometry:
    """One step of the optimizer as the stability analysis sees it, at its current state.

    ``scale``: (D/c)^½ as one flat vector in the parameters' order (each group's constant c
    folded in, so edge_ratio = λmax(scale·(H + L2)·scale); 0 for a parameter no group holds);
    ``l2``: the weight decay added to the gradient, per parameter (None: none); ``lr`` and
    ``constant``: η₀ and c₀ of the first group, for ``threshold`` = c₀/η₀.
    """

    name: str
    scale: torch.Tensor
    l2: torch.Tensor | None
    lr: float
    constant: float
    line: str  # the threshold in symbols: "(2+2β)/η", "(2+2β1)/((1−β1)η)", ...

    @property
    def threshold(self) -> float:
        return self.constant / self.lr if self.lr > 0 else math.inf

    @property
    def sharpness_name(self) -> str:
        """What ``sharpness`` is: the Hessian's λ1 (+ wd) for plain SGD, else preconditioned."""
        if self.plain:
            return "λ1 + wd" if self.l2 is not None else "λ1"
        return "preconditioned sharpness"

    @property
    def plain(self) -> bool:
        """Whether D^½HD^½ is a multiple of H (one lr, no preconditioner, no L2 per parameter
        beyond one value): then λmax is the curvature pass's λ1, scaled, with no extra work."""
        s = self.scale[self.scale > 0]
        one_scale = bool(s.numel()) and bool(torch.all(s == s[0]))
        one_l2 = self.l2 is None or bool(torch.all(self.l2 == self.l2.flatten()[0]))
        return one_scale and bool(torch.all(self.scale > 0)) and one_l2


def lr_of(optimizer: Any) -> float:
    """The first parameter group's learning rate as a number (NaN: no optimizer, or none)."""
    groups = getattr(optimizer, "param_groups", None)
    value = groups[0].get("lr") if groups else None
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # a number, or a 0-d tensor (a scheduler's)
    except (TypeError, ValueError, RuntimeError):
        return math.nan


class Unknown(Exception):
    """An optimizer whose edge of stability this module does not know; ``str`` says why."""


def geometry(optimizer: Any, params: Sequence[nn.Parameter]) -> Geometry:
    """The geometry of ``optimizer`` over ``params`` (the model's, in the flat vector's order),
    at its current state. Raises ``Unknown``."""
    kind = type(optimizer).__name__
    groups = getattr(optimizer, "param_groups", None)
    if kind not in _KINDS or not groups:
        raise Unknown(f"{kind}: its edge of stability is not known to sgdwalk (SGD, Adam, AdamW, "
                      "RMSprop and Adagrad are)")  # fmt: skip
    index = {id(p): i for i, p in enumerate(params)}
    sizes = [p.numel() for p in params]
    ref = params[0]
    scale = torch.zeros(sum(sizes), dtype=ref.dtype, device=ref.device)
    l2 = torch.zeros_like(scale)
    offsets = [0]
    for n in sizes[:-1]:
        offsets.append(offsets[-1] + n)
    constants, lines = [], []
    for group in groups:
        if group.get("maximize"):
            raise Unknown(f"{kind} with maximize=True climbs the loss: no edge of stability")
        step, c, wd = _KINDS[kind](group, optimizer.state)
        constants.append(c)
        lines.append(_line(kind, group))
        for p in group["params"]:
            i = index.get(id(p))
            if i is None:
                continue
            d = step(p)  # the step per unit (preconditioned, filtered) gradient, D
            part = slice(offsets[i], offsets[i] + sizes[i])
            scale[part] = (d / c).reshape(-1).to(scale).clamp_min(0).sqrt()
            l2[part] = wd
    first = groups[0]
    return Geometry(kind, scale, l2 if bool(torch.any(l2 != 0)) else None, float(first["lr"]),
                    constants[0], lines[0])  # fmt: skip


def _line(kind: str, group: dict[str, Any]) -> str:
    """The first group's threshold c/η in symbols."""
    if kind in ("Adam", "AdamW"):
        return "(2+2β1)/((1−β1)η)"
    if kind == "Adagrad" or not group.get("momentum"):
        return "2/η"
    if group.get("nesterov"):
        return "(2+2β)/((1+2β)η)"
    if kind == "SGD" and group.get("dampening"):
        return "(2+2β)/((1−τ)η)"
    return "(2+2β)/η"


Step = Any  # (param) -> the per-element step D (a tensor or a float)


def _sgd(group: dict[str, Any], state: Any) -> tuple[Step, float, float]:
    beta, damp = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
    lr = float(group["lr"])
    if group.get("nesterov"):
        c = (2 + 2 * beta) / (1 + 2 * beta)
    elif beta > 0:
        if damp >= 1:
            raise Unknown("SGD with dampening 1 takes no step")
        c = (2 + 2 * beta) / (1 - damp)
    else:
        c = 2.0
    return (lambda p: torch.full_like(p, lr)), c, float(group.get("weight_decay", 0.0))


def _adam(group: dict[str, Any], state: Any) -> tuple[Step, float, float]:
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, eps = float(group["lr"]), float(group["eps"])
    amsgrad = bool(group.get("amsgrad"))

    def step(p: torch.Tensor) -> torch.Tensor:
        s = state.get(p, {})
        t = float(s.get("step", 0))
        key = "max_exp_avg_sq" if amsgrad else "exp_avg_sq"
        if t < 1 or key not in s:  # before its first step: Adam's first move is ±lr, sign-like
            return torch.full_like(p, math.nan)
        v_hat = s[key].detach() / (1 - beta2**t)  # the bias-corrected second moment
        return lr / (1 - beta1**t) / (v_hat.sqrt() + eps)

    decoupled = bool(group.get("decoupled_weight_decay"))
    wd = 0.0 if decoupled else float(group.get("weight_decay", 0.0))
    return step, (2 + 2 * beta1) / (1 - beta1), wd


def _adamw(group: dict[str, Any], state: Any) -> tuple[Step, float, float]:
    step, c, _ = _adam(group, state)
    return step, c, 0.0  # decoupled weight decay shrinks θ; it is not part of H


def _rmsprop(group: dict[str, Any], state: Any) -> tuple[Step, float, float]:
    lr, eps, mu = float(group["lr"]), float(group["eps"]), float(group.get("momentum", 0.0))

    def step(p: torch.Tensor) -> torch.Tensor:
        s = state.get(p, {})
        if "square_avg" not in s:
            return torch.full_like(p, math.nan)
        v = s["square_avg"].detach()
        if group.get("centered"):
            v = v - s["grad_avg"].detach() ** 2
        return lr / (v.clamp_min(0).sqrt() + eps)

    return step, 2 + 2 * mu, float(group.get("weight_decay", 0.0))


def _adagrad(group: dict[str, Any], state: Any) -> tuple[Step, float, float]:
    lr, eps, decay = float(group["lr"]), float(group["eps"]), float(group.get("lr_decay", 0.0))

    def step(p: torch.Tensor) -> torch.Tensor:
        s = state.get(p, {})
        t = float(s.get("step", 0))
        if "sum" not in s or t < 1:
            return torch.full_like(p, math.nan)
        return lr / (1 + (t - 1) * decay) / (s["sum"].detach().sqrt() + eps)

    return step, 2.0, float(group.get("weight_decay", 0.0))


_KINDS = {"SGD": _sgd, "Adam": _adam, "AdamW": _adamw, "RMSprop": _rmsprop, "Adagrad": _adagrad}
