"""Issue 15: bad images, labels and models at the public API are one ValueError naming the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aelf.core.accuracy import accuracy, count_correct
from aelf.core.attacks import FGSM, PGD, TradesKL
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.attacks.external import as_attack
from aelf.core.checks import InputError
from aelf.core.errors import AelfError
from aelf.core.models import CNNb
from aelf.core.train import train
from aelf.workflows.evaluation.masking import check_model
from aelf.workflows.evaluation.robustness import evaluate_model

from conftest import tiny_config

N = 6


def good() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(N, 1, 32, 32), torch.randint(0, 10, (N,))


def bad_inputs():
    """(x, y, the phrase the error must contain) for each kind of mistake."""
    x, y = good()
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        (x * 255, y, "must hold pixels in [0, 1]"),
        (x - 0.5, y, "must hold pixels in [0, 1]"),
        (nan, y, "NaN or infinite"),
        (x[:, 0], y, "4 dimensions; got shape (6, 32, 32)"),
        ((x * 255).to(torch.uint8), y, "floating-point pixels"),
        (x.numpy(), y, "must be a torch.Tensor"),
        (x, y.float(), "integer class labels"),
        (x, y[:, None], "1 dimension"),
        (x, y[:4], "4 labels for 6 images"),
        (x, torch.full((N,), 10), "label 10, but the model gives 10 classes"),
        (x, torch.full((N,), -1), "negative label"),
    ]


ENTRY_POINTS = {
    "accuracy": lambda model, x, y: accuracy(model, x, y),
    "count_correct": lambda model, x, y: count_correct(model, x, y, PGD(0.1, 1, 0.1)),
    "evaluate_model": lambda model, x, y: evaluate_model(model, x, y, eps=0.1),
    "check_model": lambda model, x, y: check_model(model, x, y, eps=0.1, n_steps=1, n_restarts=2, n_queries=2),
    "PGD": lambda model, x, y: PGD(0.1, 1, 0.1)(model, x, y),
    "FGSM": lambda model, x, y: FGSM(0.1)(model, x, y),
    "AutoAttack": lambda model, x, y: AutoAttack(eps=0.1)(model, x, y),
    "external": lambda model, x, y: as_attack(lambda m, a, b: a, eps=0.1)(model, x, y),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_names_each_kind_of_bad_input(entry):
    model = CNNb(width=0.125).eval()
    call = ENTRY_POINTS[entry]
    x, y = good()
    call(model, x, y)  # good input passes
    for bad_x, bad_y, phrase in bad_inputs():
        with pytest.raises(ValueError) as raised:
            call(model, bad_x, bad_y)
        assert isinstance(raised.value, InputError) and isinstance(raised.value, AelfError)
        assert phrase in str(raised.value), (entry, phrase, str(raised.value))


MEASURING = ("accuracy", "count_correct", "evaluate_model", "check_model")


@pytest.mark.parametrize("entry", MEASURING)
def test_no_images_and_channels_last_images_are_input_errors(entry):
    """0 images once gave an accuracy of 0.0, and (N, H, W, C) images a raw convolution error."""
    call = ENTRY_POINTS[entry]
    x, y = good()
    with pytest.raises(InputError, match=r"holds no images \(shape \(0, 1, 32, 32\)\)"):
        call(CNNb(width=0.125).eval(), x[:0], y[:0])
    rgb = CNNb(in_channels=3, width=0.125).eval()
    nhwc = torch.rand(N, 32, 32, 3)
    with pytest.raises(InputError, match=r"looks channels-last.*x.permute\(0, 3, 1, 2\)"):
        call(rgb, nhwc, y)
    call(rgb, nhwc.permute(0, 3, 1, 2), y)  # permuted as the message says: accepted
    call(rgb, nhwc.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last), y)  # a memory format is fine


def test_an_attack_still_takes_an_empty_remainder():
    """A suite attacks only the images still robust, which may be none."""
    x, y = good()
    assert PGD(0.1, 1, 0.1)(CNNb(width=0.125).eval(), x[:0], y[:0]).shape == (0, 1, 32, 32)


def test_trades_kl_attack_checks_images_without_labels():
    model = CNNb(width=0.125).eval()
    x, _ = good()
    TradesKL(eps=0.1, n_steps=1, step_size=0.1)(model, x)
    with pytest.raises(InputError, match=r"pixels in \[0, 1\]"):
        TradesKL(eps=0.1, n_steps=1, step_size=0.1)(model, x * 2)


class WrongHead(nn.Module):
    """A user's network with 7 outputs, for a 10-class data set."""

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(32 * 32, 7)

    def forward(self, x):
        return self.head(self.body(x))


def test_train_with_a_users_model_of_the_wrong_output_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="the model gives 7 classes; the dataset has 10"):
        train(tiny_config("st"), tmp_path / "run", progress=False, model=WrongHead())
    assert not (tmp_path / "run").exists()


class WrongInput(nn.Module):
    """A user's network for 28 x 28 images, given the 32 x 32 ones of the data set."""

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_train_with_a_users_model_of_the_wrong_input_size_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"cannot take the dataset's images of 1 x 32 x 32"):
        train(tiny_config("st"), tmp_path / "run", progress=False, model=WrongInput())
    assert not (tmp_path / "run").exists()
