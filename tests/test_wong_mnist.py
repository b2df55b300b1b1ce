"""Issue 28, item 4: Wong et al.'s MNIST network (``model.name: wong_mnist``) on the original 28 x 28 digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aelf.apps.cli import main
from aelf.core.config import make_config
from aelf.core.data.datasets import load_dataset
from aelf.core.data.mnist5k import read_mnist5k
from aelf.core.models import MODELS, WongMNIST, WongMNISTOptions, as_split_model, build_model
from aelf.core.run import open_run


def test_the_network_is_wong_et_als_layer_for_layer():
    """locuslab/fast_adversarial MNIST/mnist_net.py: Conv(1,16,4,2,1) ReLU Conv(16,32,4,2,1) ReLU Flatten
    Linear(1568,100) ReLU Linear(100,10)."""
    model = build_model(WongMNISTOptions(), 1, 10, mean=(0.1307,), std=(0.3081,))
    layers = [*model.features, model.head]
    kinds = [type(layer) for layer in layers]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    conv1, conv2, fc1, fc2 = layers[0], layers[2], layers[5], layers[7]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (
        1,
        16,
        (4, 4),
        (2, 2),
        (1, 1),
    )
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding) == (
        16,
        32,
        (4, 4),
        (2, 2),
        (1, 1),
    )
    assert (fc1.in_features, fc1.out_features, fc2.in_features, fc2.out_features) == (32 * 7 * 7, 100, 100, 10)
    assert sum(p.numel() for p in model.parameters()) == 166_406
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()), "no BatchNorm"
    x = torch.rand(3, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (3, 100) and (feats >= 0).all(), "f is the hidden layer after its ReLU"
    assert torch.equal(model.forward_head(feats), model(x)) and as_split_model(model) is model
    assert torch.equal(model(x), fc2(torch.relu(fc1(torch.flatten(torch.relu(conv2(torch.relu(conv1(x)))), 1)))))


def test_it_is_registered_with_its_metadata():
    assert MODELS["wong_mnist"] is WongMNISTOptions and WongMNISTOptions.input_size == 28
    assert "mnist_net.py" in WongMNISTOptions.reference
    config = make_config({"model": {"name": "wong_mnist"}, "data": {"image_size": 28}})
    assert config.model == WongMNISTOptions(width=1.0, activation="relu")
    assert isinstance(build_model(config.model, 1, 10), WongMNIST)


def test_image_size_28_gives_the_original_mnist5k_digits():
    x, y = load_dataset("mnist5k", "test", limit=50, size=28)
    images, labels = read_mnist5k("test")
    assert x.shape == (50, 1, 28, 28)
    assert torch.equal(x[:, 0], torch.from_numpy(images[:50].astype(np.float32)) / 255)
    assert torch.equal(y, torch.from_numpy(labels[:50]))


ARGS = [
    "--model",
    "wong_mnist",
    "--method",
    "at",
    "--epochs",
    "1",
    "--no-progress",
    "--set",
    "data.train_limit=200",
    "--set",
    "data.test_limit=50",
    "--set",
    "train.batch_size=100",
    "--set",
    "method.attack.name=fgsm_rs",
]


def test_the_cli_trains_it_on_28_pixel_digits_and_says_what_to_set_otherwise(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "wrong"), *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelf: error:") and "wong_mnist 28 x 28 (--set data.image_size=28)" in err
    assert "\n" not in err and not (tmp_path / "wrong").exists()
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *ARGS, "--set", "data.image_size=28"]) == 0
    with open_run(out, "cpu") as run:
        assert run.x.shape == (50, 1, 28, 28) and isinstance(run.model, WongMNIST)


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_width_scales_every_layer(width):
    model = WongMNIST(width=width)
    assert model.features[0].out_channels == round(16 * width) and model.num_features == round(100 * width)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
