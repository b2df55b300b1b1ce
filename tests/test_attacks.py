import pytest
import torch

from aelf.core.accuracy import accuracy
from aelf.core.attacks import FGSM, PGD
from aelf.core.errors import ConfigError
from aelf.core.models import CNNb
from aelf.core.run import load_dataset, load_model


def small_model():
    return CNNb(width=0.125).eval()


@pytest.mark.parametrize(
    "attack",
    [
        FGSM(eps=0.1),
        PGD(eps=0.1, n_steps=3, step_size=0.05),
        PGD(eps=8 / 255, n_steps=2, step_size=0.01, random_start=True),
    ],
)
def test_attack_stays_in_box_and_ball(attack):
    model = small_model()
    x = torch.rand(16, 1, 32, 32)
    x[:4] = 0.0  # pixels on the border of [0, 1] exercise the clamp
    x[4:8] = 1.0
    y = torch.randint(0, 10, (16,))
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() <= attack.eps + 1e-6
    assert not x_adv.requires_grad


def test_attack_restores_modes_and_leaves_no_gradients():
    model = small_model().train()
    model.features[1].eval()  # a mixed state must come back as it was
    before = [m.training for m in model.modules()]
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 10, (8,))
    PGD(eps=0.1, n_steps=2, step_size=0.05)(model, x, y)
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())


def test_attack_runs_in_eval_mode():
    model = small_model().train()
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    PGD(eps=0.1, n_steps=2, step_size=0.05)(model, torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))
    assert seen == [False, False]


def test_pgd_without_random_start_is_deterministic():
    model = small_model()
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 10, (8,))
    attack = PGD(eps=0.1, n_steps=3, step_size=0.05)
    assert torch.equal(attack(model, x, y), attack(model, x, y))


@pytest.mark.parametrize(
    "kwargs",
    [{"eps": -0.1}, {"n_steps": 0}, {"step_size": 0.0}],
)
def test_bad_attack_settings_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        PGD(**kwargs)


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model(trained_st_run):
    model = load_model(trained_st_run)
    x, y = load_dataset(trained_st_run, "test")
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, x, y, FGSM(eps=0.1))
    pgd = accuracy(model, x, y, PGD(eps=0.1, n_steps=10, step_size=0.02))
    assert clean > 60.0, "the fixture model should have learned something"
    assert fgsm < clean
    assert pgd <= fgsm
