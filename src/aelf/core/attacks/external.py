"""Attacks from elsewhere, as aelf attacks: ``attack(model, x, y) -> x_adv``, checked on every call.

Two calling conventions are accepted:

- ``model_first``: any callable ``f(model, x, y) -> x_adv`` (aelf's own convention);
- ``bound``: an object bound to a model when it was built and called as ``attack(x, y)``, as torchattacks'
  attacks are (``torchattacks.PGD(model, eps=8/255)``, then ``atk(images, labels)``); they usually keep the model
  as ``.model``. When it does, the model evaluated must be that very model (else the attack would attack another
  network and the robustness measured would be a transfer attack's), unless ``check_model=False``.

The wrapper runs the attack with the model in eval mode (:func:`aelf.core.modes.evaluating`, every submodule's mode
restored afterwards; the aelf attacks do the same) and checks what comes back: a tensor of x's shape, on x's
device, finite, and in [0, 1] (values within 1e-6 outside are rounding and are clamped); with ``eps``, no pixel
further than eps from x in l-inf (plus the same 1e-6), so a suite can refuse an attack that leaves its budget. A
failed check is an :class:`ExternalAttackError` naming the attack and what it returned.

Example (no other library needed; a torchattacks attack is used the same way)::

    import torch
    from aelf.core.attacks.external import as_attack
    from aelf.workflows.evaluation.robustness import run_suite, suite_attacks

    class SignNoise:  # torchattacks' convention: bound to the model, called with (images, labels)
        def __init__(self, model, eps):
            self.model, self.eps = model, eps
        def __call__(self, images, labels):
            return (images + self.eps * torch.randn_like(images).sign()).clamp(0, 1)

    def uniform_noise(model, x, y):  # aelf's convention: (model, x, y) -> x_adv
        return (x + torch.empty_like(x).uniform_(-0.1, 0.1)).clamp(0, 1)

    attacks = suite_attacks("quick", eps=0.1)
    attacks["sign-noise"] = as_attack(SignNoise(model, 0.1), eps=0.1)
    attacks["uniform-noise"] = as_attack(uniform_noise, eps=0.1)
    result = run_suite(model, x, y, attacks=attacks, eps=0.1)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from aelf.core.checks import check_attack_inputs
from aelf.core.errors import AelfError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier

CONVENTIONS = ("auto", "model_first", "bound")
TOLERANCE = 1e-6  # float rounding of x + delta, then clamp: not a perturbation


class ExternalAttackError(AelfError, ValueError):
    """An attack from elsewhere that cannot be called as an aelf attack, or returned something that is not a valid
    adversarial example (wrong shape or device, not finite, outside [0, 1] or outside the eps budget)."""


def _name(obj: object) -> str:
    kind = obj if inspect.isfunction(obj) or inspect.isclass(obj) else type(obj)
    module = getattr(kind, "__module__", None)
    qualname = getattr(kind, "__qualname__", repr(kind))
    return f"{module}.{qualname}" if module and module != "builtins" else qualname


def _takes(obj: Any, n: int) -> bool:
    """Can ``obj`` be called with n positional arguments? False when its signature cannot be read."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(*range(n))
    except TypeError:
        return False
    return True


def convention_of(obj: object) -> str:
    """``model_first`` or ``bound``: from a ``.model`` that is an nn.Module (bound), else from the signature."""
    if isinstance(getattr(obj, "model", None), nn.Module):
        return "bound"
    takes_three, takes_two = _takes(obj, 3), _takes(obj, 2)
    if takes_three and not takes_two:
        return "model_first"
    if takes_two and not takes_three:
        return "bound"
    raise ExternalAttackError(
        f"{_name(obj)}: cannot tell how to call this attack (as f(model, x, y) or, bound to a model, as "
        "attack(x, y)); pass convention='model_first' or convention='bound'"
    )


class ExternalAttack:
    """An attack from elsewhere behind aelf's ``(model, x, y) -> x_adv``, with its output checked on every call."""

    def __init__(self, attack: Any, convention: str = "auto", eps: float | None = None, check_model: bool = True):
        if not callable(attack):
            raise ExternalAttackError(f"{_name(attack)}: not callable, so not an attack")
        if convention not in CONVENTIONS:
            raise ExternalAttackError(f"convention must be one of {', '.join(CONVENTIONS)} (got {convention!r})")
        if eps is not None and not (isinstance(eps, int | float) and eps >= 0):
            raise ExternalAttackError(f"eps must be a number >= 0 or None (got {eps!r})")
        self.attack = attack
        self.convention = convention_of(attack) if convention == "auto" else convention
        self.eps = None if eps is None else float(eps)
        self.check_model = check_model
        self.name = _name(attack)

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_attack_inputs(model, x, y)
        with evaluating(model):
            if self.convention == "bound":
                bound = getattr(self.attack, "model", None)
                if self.check_model and isinstance(bound, nn.Module) and bound is not model:
                    raise ExternalAttackError(
                        f"{self.name}: bound to another model than the one evaluated; build it with that model "
                        "(or pass check_model=False to measure a transfer attack)"
                    )
                x_adv = self.attack(x, y)
            else:
                x_adv = self.attack(model, x, y)
        return check_adversarial(x_adv, x, self.eps, self.name)

    def describe(self) -> dict[str, Any]:
        """JSON-able: what was wrapped, how it is called, and the budget checked."""
        return {"name": "ExternalAttack", "wraps": self.name, "convention": self.convention, "eps": self.eps}

    def __repr__(self) -> str:
        return f"ExternalAttack({self.name}, convention={self.convention!r}, eps={self.eps})"


def as_attack(
    obj: object, eps: float | None = None, convention: str = "auto", check_model: bool = True
) -> ExternalAttack:
    """``obj`` as an aelf attack ``(model, x, y) -> x_adv`` whose output is checked (see the module's text).

    ``eps``: the l-inf budget in pixel units of [0, 1] images, refused when exceeded (None: not checked).
    ``convention``: ``auto`` (a ``.model`` attribute or a two-argument call means bound), ``model_first`` or
    ``bound``. An :class:`ExternalAttack` is returned as it is, unless new settings are given.
    """
    if isinstance(obj, ExternalAttack) and eps is None and convention == "auto" and check_model:
        return obj
    if isinstance(obj, ExternalAttack):
        obj = obj.attack
    return ExternalAttack(obj, convention, eps, check_model)


def is_factory(obj: object) -> bool:
    """Whether ``obj`` builds an attack for a model: a callable taking exactly one positional argument, such as
    ``lambda model: torchattacks.PGD(model, eps=8/255)``."""
    return callable(obj) and not isinstance(obj, ExternalAttack) and _takes(obj, 1) and not _takes(obj, 2)


def external_attacks(
    attacks: dict[str, Any], eps: float | None = None, model: nn.Module | None = None
) -> dict[str, ExternalAttack]:
    """``{name: as_attack(attack, eps)}``, for joining a suite: ``run_suite(..., attacks={**suite, **these})``.

    With ``model``, a value that builds an attack for a model (:func:`is_factory`) is called with it first: how a
    bound attack joins the evaluation of a model that aelf loads itself (a run's).
    """
    built = {
        name: attack(model) if model is not None and is_factory(attack) else attack for name, attack in attacks.items()
    }
    return {str(name): as_attack(attack, eps) for name, attack in built.items()}


def check_adversarial(x_adv: object, x: torch.Tensor, eps: float | None = None, name: str = "attack") -> torch.Tensor:
    """``x_adv`` detached and clamped to [0, 1] when it is a valid adversarial version of x, else
    ExternalAttackError: a tensor of x's shape and device, finite, in [0, 1] and within l-inf ``eps`` of x (each up
    to 1e-6)."""
    if not isinstance(x_adv, torch.Tensor):
        raise ExternalAttackError(f"{name}: returned {type(x_adv).__name__}, expected a tensor of adversarial images")
    if x_adv.shape != x.shape:
        raise ExternalAttackError(
            f"{name}: returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}; an attack must keep "
            "the shape"
        )
    if x_adv.device != x.device:
        raise ExternalAttackError(f"{name}: returned images on {x_adv.device} for inputs on {x.device}")
    x_adv = x_adv.detach().to(x.dtype)
    if x_adv.numel() == 0:
        return x_adv
    if not torch.isfinite(x_adv).all():
        raise ExternalAttackError(f"{name}: returned NaN or infinite pixel values")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        raise ExternalAttackError(
            f"{name}: returned pixels in [{low:.4g}, {high:.4g}], outside [0, 1] (aelf models take pixels in "
            "[0, 1]: an attack that normalises its inputs must get an aelf model, which normalises itself)"
        )
    x_adv = x_adv.clamp(0.0, 1.0)
    if eps is not None:
        distance = float((x_adv - x.detach()).abs().max())
        if distance > eps + TOLERANCE:
            raise ExternalAttackError(
                f"{name}: moved a pixel by {distance:.4g}, more than the l-inf budget eps = {eps:.4g}"
            )
    return x_adv
