"""Attacks from elsewhere (aelf.core.attacks.external): both calling conventions, the checks, and joining a suite."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import PGD
from aelf.core.attacks.external import (
    ExternalAttack,
    ExternalAttackError,
    as_attack,
    check_adversarial,
    external_attacks,
)
from aelf.core.errors import AelfError
from aelf.workflows.evaluation.robustness import run_suite, suite_attacks

EPS = 0.1


class FakeTorchattacksPGD:
    """torchattacks' convention, without torchattacks: bound to a model at construction, called as atk(x, y);
    it records the model's mode during the attack."""

    def __init__(self, model, eps=EPS, alpha=0.05, steps=5):
        self.model, self.eps, self.alpha, self.steps = model, eps, alpha, steps
        self.seen_training = None

    def forward(self, images, labels):
        self.seen_training = self.model.training
        adv = images.clone().detach()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(self.model(adv), labels), adv)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv

    def __call__(self, images, labels=None, *args, **kwargs):  # torchattacks' Attack.__call__ signature
        return self.forward(images, labels)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def batch(n=12):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=generator), torch.arange(n) % 3


def test_bound_attack_runs_in_eval_mode_on_its_model_and_matches_a_direct_call():
    model = tiny_model().train()
    x, y = batch()
    fake = FakeTorchattacksPGD(model)
    attack = as_attack(fake, eps=EPS)
    assert isinstance(attack, ExternalAttack) and attack.convention == "bound"
    x_adv = attack(model, x, y)
    assert fake.seen_training is False and model.training  # eval inside the attack, the caller's mode restored
    assert torch.equal(x_adv, fake(x, y))
    with torch.no_grad():
        assert (x_adv - x).abs().max() <= EPS + 1e-6
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert attack.describe() == {
        "name": "ExternalAttack",
        "wraps": f"{__name__}.FakeTorchattacksPGD",
        "convention": "bound",
        "eps": EPS,
    }


def test_plain_function_and_aelf_attack_are_model_first():
    model = tiny_model()
    x, y = batch()

    def noise(model, x, y):
        return (x + 0.05).clamp(0, 1)

    wrapped = as_attack(noise, eps=EPS)
    assert wrapped.convention == "model_first"
    assert torch.equal(wrapped(model, x, y), (x + 0.05).clamp(0, 1))
    pgd = PGD(eps=EPS, n_steps=3, step_size=0.05)
    assert torch.equal(as_attack(pgd, eps=EPS)(model, x, y), pgd(model, x, y))
    assert as_attack(wrapped) is wrapped
    assert as_attack(wrapped, eps=0.01).eps == 0.01


def test_a_two_argument_callable_without_model_attribute_is_bound():
    model = tiny_model()
    x, y = batch()
    wrapped = as_attack(lambda images, labels: images.flip(0))
    assert wrapped.convention == "bound"
    assert torch.equal(wrapped(model, x, y), x.flip(0))


def test_bound_to_another_model_is_refused_unless_asked_for():
    x, y = batch()
    other = FakeTorchattacksPGD(tiny_model())
    with pytest.raises(ExternalAttackError, match="bound to another model"):
        as_attack(other)(tiny_model(), x, y)
    transfer = as_attack(other, check_model=False)(tiny_model(), x, y)
    assert transfer.shape == x.shape


@pytest.mark.parametrize(
    "returned, phrase",
    [
        (lambda x: x[:-1], "returned shape (11, 1, 4, 4) for inputs of shape (12, 1, 4, 4)"),
        (lambda x: x.numpy(), "returned ndarray, expected a tensor"),
        (lambda x: torch.where(x > 0.5, torch.nan, x), "NaN or infinite"),
        (lambda x: x * 255, "outside [0, 1]"),
        (lambda x: x - 0.5, "outside [0, 1]"),
        (lambda x: (x + 0.3).clamp(0, 1), "more than the l-inf budget eps = 0.1"),
        (lambda x: torch.empty(x.shape, device="meta"), "on meta"),
    ],
)
def test_invalid_adversarial_examples_are_refused(returned, phrase):
    model = tiny_model()
    x, y = batch()
    with pytest.raises(ExternalAttackError) as info:
        as_attack(lambda model, x, y: returned(x), eps=EPS)(model, x, y)
    assert phrase in str(info.value) and "test_external_attacks" in str(info.value)
    assert isinstance(info.value, AelfError)


def test_rounding_at_the_edges_is_clamped_not_refused():
    x = torch.tensor([[0.0, 1.0, 0.5]])
    out = check_adversarial(torch.tensor([[-5e-7, 1 + 5e-7, 0.5 + EPS + 5e-7]]), x, eps=EPS)
    assert out.min() == 0 and out.max() == 1
    with pytest.raises(ExternalAttackError):
        check_adversarial(torch.tensor([[0.0, 1.0, 0.5 + EPS + 1e-4]]), x, eps=EPS)
    far = torch.tensor([[0.9, 0.2, 0.0]])
    assert torch.equal(check_adversarial(far, x), far)  # no eps: the distance is not checked


def test_settings_and_calls_that_cannot_work():
    with pytest.raises(ExternalAttackError, match="not callable"):
        as_attack(42)
    with pytest.raises(ExternalAttackError, match="cannot tell how to call"):
        as_attack(lambda *args: args[0])
    assert as_attack(lambda *args: args[1], convention="model_first").convention == "model_first"
    with pytest.raises(ExternalAttackError, match="convention must be"):
        as_attack(lambda m, x, y: x, convention="torchattacks")
    with pytest.raises(ExternalAttackError, match="eps must be"):
        as_attack(lambda m, x, y: x, eps=-1)


def test_external_attacks_join_a_suite():
    """The module's example: a bound attack and a function next to the quick suite, one worst case over all."""
    model = tiny_model()
    x, y = batch(30)

    class SignNoise:
        def __init__(self, model, eps):
            self.model, self.eps = model, eps

        def __call__(self, images, labels):
            return (images + self.eps * torch.randn_like(images).sign()).clamp(0, 1)

    def uniform_noise(model, x, y):
        return (x + torch.empty_like(x).uniform_(-0.1, 0.1)).clamp(0, 1)

    attacks = suite_attacks("quick", eps=EPS)
    attacks.update(external_attacks({"sign-noise": SignNoise(model, EPS), "uniform-noise": uniform_noise}, eps=EPS))
    attacks["fake-torchattacks-pgd"] = as_attack(FakeTorchattacksPGD(model, steps=10), eps=EPS)
    result = run_suite(model, x, y, attacks=attacks, eps=EPS, batch_size=7, individual=True)
    assert list(result.correct) == [
        "clean",
        "FGSM",
        "PGD-CE-20",
        "PGD-margin-20-rs",
        "sign-noise",
        "uniform-noise",
        "fake-torchattacks-pgd",
    ]
    x_fake = FakeTorchattacksPGD(model, steps=10)(x, y)
    with torch.no_grad():
        fooled = model(x_fake).argmax(1) != y
    assert torch.equal(result.correct["fake-torchattacks-pgd"], result.correct["clean"] & ~fooled)
    assert result.worst_case <= min(result.alone.values())
    json.dumps(result.to_dict())


def test_a_suite_stops_at_an_attack_that_leaves_its_budget():
    model = tiny_model()
    x, y = batch()
    attacks = {"too-far": as_attack(lambda m, x, y: (x + 0.5).clamp(0, 1), eps=EPS)}
    with pytest.raises(ExternalAttackError, match="more than the l-inf budget"):
        run_suite(model, x, y, attacks=attacks, eps=EPS)
