import pytest
import torch
from torch import nn

from aelf.core.attacks import PGD
from aelf.core.config import TrainConfig, load_config
from aelf.core.errors import ConfigError
from aelf.core.methods import AT, ST
from aelf.core.models import (
    MODELS,
    CNNb,
    CNNbOptions,
    InputNormalize,
    PreActOptions,
    PreActResNet18,
    WideResNet,
    WRNOptions,
    as_split_model,
    build_model,
)
from aelf.core.models.preact_resnet import PreActBlock
from aelf.core.models.wrn import WideBasicBlock
from aelf.core.train import make_optimizer, train_step

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

TINY_MODELS = {
    "cnnb": lambda: CNNb(in_channels=3, num_classes=10, width=0.125, mean=CIFAR_MEAN, std=CIFAR_STD),
    "wrn": lambda: WideResNet(depth=10, widen_factor=1, width=0.25, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD),
    "wrn-dropout": lambda: WideResNet(depth=10, widen_factor=2, width=0.25, dropout=0.2, activation="leaky_relu"),
    "preact_resnet18": lambda: PreActResNet18(num_classes=100, width=0.0625, mean=CIFAR_MEAN, std=CIFAR_STD),
}


def cifar_batch(n=8, num_classes=10):
    return torch.rand(n, 3, 32, 32), torch.arange(n) % num_classes


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_split_shapes_and_linear_head(name):
    model = TINY_MODELS[name]().eval()
    x, _ = cifar_batch()
    feats = model.forward_features(x)
    logits = model(x)
    assert feats.shape == (8, model.num_features)
    assert logits.shape == (8, model.head.out_features)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == model.num_features
    assert torch.equal(model.forward_head(feats), logits)
    assert as_split_model(model) is model


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_models_train_one_step(name):
    model = TINY_MODELS[name]()
    x, y = cifar_batch(8, model.head.out_features)
    methods = [ST()]
    if name == "wrn-dropout":
        methods.append(AT(attack=PGD(eps=8 / 255, n_steps=1, step_size=8 / 255)))
    for method in methods:
        optimizer = make_optimizer(method, model, TrainConfig())
        before = [p.detach().clone() for p in model.parameters()]
        loss, _ = train_step(method, model, optimizer, x, y)
        assert torch.isfinite(loss)
        assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("depth,n", [(10, 1), (16, 2), (28, 4)])
def test_wrn_depth_is_6n_plus_4(depth, n):
    model = WideResNet(depth=depth, widen_factor=2, width=0.125)
    blocks = [m for m in model.modules() if isinstance(m, WideBasicBlock)]
    convs_3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(blocks) == 3 * n and len(convs_3x3) == 6 * n + 1
    assert model.num_features == round(64 * 2 * 0.125)


def test_wrn_full_width_and_channels():
    model = WideResNet(depth=10, widen_factor=4)
    assert model.num_features == 256 and model.stem.out_channels == 16
    assert [b.conv1.out_channels for b in model.blocks] == [64, 128, 256]
    assert [b.conv1.stride for b in model.blocks] == [(1, 1), (2, 2), (2, 2)]


def test_wrn_dropout_sits_between_the_two_convolutions():
    model = WideResNet(depth=10, widen_factor=1, dropout=0.3)
    block = model.blocks[0]
    assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.3
    x = torch.rand(2, 16, 32, 32)
    seen = []
    block.conv2.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    block.train()(x)
    assert (seen[0] == 0).float().mean() > 0.2, "dropout zeroes the input of the second conv in training"
    assert isinstance(WideResNet(depth=10, widen_factor=1).blocks[0].dropout, nn.Identity)


def test_preact_resnet18_structure():
    model = PreActResNet18(num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8 and model.num_features == 512
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=0.01)


@pytest.mark.parametrize("activation,expected", [("leaky_relu", nn.LeakyReLU), ("relu", nn.ReLU)])
def test_activation_is_selectable(activation, expected):
    for model in (WideResNet(depth=10, widen_factor=1, activation=activation), PreActResNet18(activation=activation)):
        kinds = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}
        assert kinds == {expected}
        if expected is nn.LeakyReLU:
            assert all(m.negative_slope == 0.1 for m in model.modules() if isinstance(m, nn.LeakyReLU))


def test_build_model_passes_each_model_its_settings():
    wrn = build_model(
        WRNOptions(depth=16, widen_factor=2, dropout=0.2, width=0.5, activation="relu"),
        3,
        100,
        CIFAR_MEAN,
        CIFAR_STD,
    )
    assert isinstance(wrn, WideResNet) and isinstance(wrn.normalize, InputNormalize)
    assert len(wrn.blocks) == 6 and wrn.num_features == 64 and wrn.head.out_features == 100
    assert wrn.blocks[0].dropout.p == 0.2
    preact = build_model(PreActOptions(width=0.25), 3, 10, CIFAR_MEAN, CIFAR_STD)
    assert isinstance(preact, PreActResNet18) and preact.num_features == 128
    cnnb = build_model(CNNbOptions(width=0.25), 1, 10)
    assert isinstance(cnnb, CNNb) and cnnb.num_features == 128
    assert set(MODELS) >= {"cnnb", "wrn", "preact_resnet18"}


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.depth=30", r"model.depth must be 6n\+4"),
        ("model.depth=4", r"model.depth must be 6n\+4"),
        ("model.widen_factor=0", "model.widen_factor must be at least 1"),
        ("model.dropout=1", r"model.dropout must be in \[0, 1\)"),
        ("model.dropout=-0.1", r"model.dropout must be in \[0, 1\)"),
    ],
)
def test_bad_model_settings(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["model.name=wrn", override])


def test_dropout_only_for_wrn_and_wrn_checks_its_own_arguments():
    with pytest.raises(ConfigError, match="unknown setting model.dropout"):
        load_config(None, ["model.name=preact_resnet18", "model.dropout=0.2"])
    config = load_config(None, ["model.name=wrn", "model.depth=40", "model.dropout=0.2"])
    assert (config.model.depth, config.model.widen_factor, config.model.dropout) == (40, 10, 0.2)
    with pytest.raises(ConfigError, match="WRN depth must be 6n\\+4"):
        WideResNet(depth=22 + 1)
