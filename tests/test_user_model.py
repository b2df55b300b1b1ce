"""A user's own network (last layer an nn.Linear) goes through the same API as the built-in CNNb."""

import pytest
import torch
from torch import nn

import aelf
from aelf.core.errors import AelfError, ConfigError

from conftest import tiny_config


def user_net() -> nn.Module:
    """What a user writes: no forward_features/forward_head, just layers ending in a Linear label mapping."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


class Doubled(nn.Module):
    """A model whose output is NOT the output of its last Linear: the split would change what it computes."""

    def __init__(self):
        super().__init__()
        self.net = user_net()

    def forward(self, x):
        return 2 * self.net(x)


def test_split_of_a_user_model_computes_the_same_function():
    net = user_net()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        reference = net(x)
    model = aelf.as_split_model(net, example_input=x)
    feats = model.forward_features(x)
    assert feats.shape == (3, 64)
    assert torch.allclose(model.forward_head(feats), reference, atol=1e-6)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10


def test_a_model_whose_output_is_not_its_last_linear_is_refused():
    with pytest.raises(AelfError, match="not the output of its last nn.Linear"):
        aelf.as_split_model(Doubled(), example_input=torch.rand(2, 1, 32, 32))


def test_train_st_then_aelfs_on_a_user_model_and_load_it_back(tmp_path):
    st = aelf.train(tiny_config("st"), tmp_path / "st", model=user_net(), progress=False)
    aelfs = aelf.train(
        tiny_config("aelfs", train={"init": str(st)}), tmp_path / "aelfs", model=user_net(), progress=False
    )
    assert aelf.read_config(aelfs).model.name == "custom"
    head_st = aelf.load_model(st, model=user_net()).head
    model = aelf.load_model(aelfs, model=user_net())
    assert not model.training
    assert torch.equal(head_st.weight, model.head.weight), "AELFs keeps the user's head W frozen"
    x, y = aelf.load_dataset(aelfs, "test")
    result = aelf.evaluate_run(aelfs, attack=aelf.PGD(eps=0.3, n_steps=1, step_size=0.3), model=user_net())
    assert set(result["natural"]) == {"N", "N(L)", "N(R)", "N(U)", "N(D)"}
    assert result["natural"]["N"] == pytest.approx(aelf.accuracy(model, x, y), abs=0.01)


def test_a_custom_run_needs_its_model_to_load(tmp_path):
    run = aelf.train(tiny_config("st"), tmp_path / "st", model=user_net(), progress=False)
    with pytest.raises(ConfigError, match="user's own model"):
        aelf.load_model(run)
