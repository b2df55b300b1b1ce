"""The split every method relies on: feature extractor c (f = M_c(x)) and linear label mapping W (``model.head``)."""

from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

from aelf.core.errors import AelfError
from aelf.core.protocols import SplitModel


class LinearHeadSplit(nn.Module):
    """Wraps a user's model whose last layer is an ``nn.Linear`` applied to the final features.

    The last ``nn.Linear`` found in ``model.named_modules()`` becomes ``self.head`` and is replaced inside the wrapped
    model by ``nn.Identity``, so ``self.body(x)`` returns the features f. This is exact when the model's output is that
    layer's output (``resnet.fc``, a ``Sequential`` ending in ``Linear``); pass ``example_input`` to have it checked.
    Note that the wrapped model is changed in place.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None):
        super().__init__()
        linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linear_names:
            raise AelfError(f"{type(model).__name__} has no nn.Linear layer to use as the label-mapping head")
        head_name = linear_names[-1]
        reference = None
        if example_input is not None:
            with torch.no_grad():
                reference = model(example_input)
        parent = model.get_submodule(head_name.rpartition(".")[0]) if "." in head_name else model
        leaf = head_name.rpartition(".")[2]
        self.head = getattr(parent, leaf)
        setattr(parent, leaf, nn.Identity())
        self.body = model
        self.num_features = self.head.in_features
        if reference is not None:
            with torch.no_grad():
                if not torch.allclose(self(example_input), reference, atol=1e-5, rtol=1e-4):
                    setattr(parent, leaf, self.head)
                    raise AelfError(
                        f"{type(model).__name__}: its output is not the output of its last nn.Linear "
                        f"({head_name}); give it forward_features/forward_head methods instead"
                    )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def as_split_model(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """``model`` itself if it has ``forward_features``, ``forward_head`` and a linear ``head``; else a wrapper."""
    if (
        hasattr(model, "forward_features")
        and hasattr(model, "forward_head")
        and isinstance(getattr(model, "head", None), nn.Linear)
    ):
        return model
    return LinearHeadSplit(model, example_input)


def split_interface(model: nn.Module) -> SplitModel:
    """``model`` as the :class:`~aelf.core.protocols.SplitModel` it is: what :func:`build_model` builds and
    :func:`as_split_model` returns has the split, which the static type ``nn.Module`` cannot say (no runtime work)."""
    return cast("SplitModel", model)


def head_parameters(model: SplitModel) -> Iterator[nn.Parameter]:
    """The parameters of the label mapping W."""
    return model.head.parameters()


def feature_parameters(model: SplitModel) -> Iterator[nn.Parameter]:
    """Every parameter that is not in the head: the feature extractor c."""
    head_ids = {id(p) for p in model.head.parameters()}
    return (p for p in model.parameters() if id(p) not in head_ids)
