"""The extension contracts, as :class:`typing.Protocol`\\ s that mypy checks every registered thing against.

- :class:`Classifier`: what an attack needs of a model (any ``nn.Module`` taking pixels in [0, 1] is one).
- :class:`SplitModel`: the model interface every method relies on, ``forward_features(x) -> f`` (N, D) and
  ``forward_head(f) -> logits`` (N, K) through the linear label mapping ``head``, ``model(x)`` being
  ``forward_head(forward_features(x))`` (:mod:`aelf.core.models`).
- :class:`Attack`: ``attack(model, x, y) -> x_adv``, x and x_adv (N, C, H, W) in [0, 1], y (N,).
- :class:`TrainingAttack`: an attack a method may make its adversarial examples with (``method.attack.name``), with
  its registry metadata (:data:`aelf.core.attacks.TRAINING_ATTACKS`).
- :class:`Method`: a training method (:data:`aelf.core.methods.METHODS`), a frozen dataclass of its
  hyper-parameters with its registry metadata.

Registry metadata, the class-level fields every consumer (the model card, the tables, the report, ``--help``) reads
instead of keeping its own copy: ``name`` (the config name), ``label`` (the short name of tables), ``description``
(one line) and ``reference`` (where it comes from).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

LossAndMetrics = tuple[torch.Tensor, dict[str, torch.Tensor]]  # what a method's loss returns


@runtime_checkable
class Classifier(Protocol):
    """A model as the attacks use it: ``model(x) -> logits``, its parameters and submodules (for the mode switch)."""

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def train(self, mode: bool = True) -> object: ...


@runtime_checkable
class SplitModel(Classifier, Protocol):
    """The feature extractor c (``forward_features``) and the linear label mapping W (``head``, ``forward_head``)."""

    @property
    def head(self) -> nn.Module: ...

    def forward_features(self, x: torch.Tensor, /) -> torch.Tensor: ...

    def forward_head(self, feats: torch.Tensor, /) -> torch.Tensor: ...


@runtime_checkable
class Attack(Protocol):
    """``attack(model, x, y) -> x_adv``: runs the model in eval mode and restores its modes afterwards."""

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, /) -> torch.Tensor: ...


@runtime_checkable
class TrainingAttack(Attack, Protocol):
    """A registered training attack. ``family_budget``: which settings of the dataset family's paper attack
    (:mod:`aelf.core.data.families`: ``eps``, ``n_steps``, ``step_size``) become its defaults."""

    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str]
    family_budget: ClassVar[tuple[str, ...]]

    @property
    def eps(self) -> float: ...


@runtime_checkable
class Method(Protocol):
    """A registered training method. It never touches the optimizer, never switches modes, never moves tensors."""

    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str]

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        """What the optimizer may change; every other parameter stays bit-for-bit fixed."""
        ...

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        """``(loss, metrics)`` for the batch x (N, C, H, W) in [0, 1], y (N,); metrics are detached scalars."""
        ...
