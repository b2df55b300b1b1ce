import pytest
import torch

from aelf.core.attacks import PGD
from aelf.core.config import TrainConfig
from aelf.core.errors import ConfigError
from aelf.core.methods import JT, METHODS, AELFs
from aelf.core.methods.mixed import n_adversarial
from aelf.core.models import CNNb, feature_parameters, head_parameters
from aelf.core.train import make_optimizer, train_step

ATTACK = PGD(eps=0.3, n_steps=2, step_size=0.15)


def method_named(name):
    """The method with a cheap attack of its own kind (PGD, or TRADES' KL maximisation)."""
    cls = METHODS[name]
    if "attack" not in cls.__dataclass_fields__:
        return cls()
    attack_type = type(cls().attack)
    return cls(attack=attack_type(eps=ATTACK.eps, n_steps=ATTACK.n_steps, step_size=ATTACK.step_size))


def batch(n=16):
    return torch.rand(n, 1, 32, 32), torch.arange(n) % 10


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_changes_exactly_the_declared_parameters(name):
    method = method_named(name)
    model = CNNb(width=0.125)
    optimizer = make_optimizer(method, model, TrainConfig())
    declared = {id(p) for p in method.trainable_parameters(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, metrics = train_step(method, model, optimizer, *batch())
    assert torch.isfinite(loss)
    assert all(not v.requires_grad for v in metrics.values())
    for param_name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[param_name])
        assert changed == (id(parameter) in declared), f"{name}: {param_name} changed={changed}"


def test_aelfs_freezes_the_head_bit_for_bit_over_several_steps():
    method = method_named("aelfs")
    model = CNNb(width=0.125)
    head_before = [p.detach().clone() for p in head_parameters(model)]
    features_before = [p.detach().clone() for p in feature_parameters(model)]
    optimizer = make_optimizer(method, model, TrainConfig())
    for _ in range(3):
        train_step(method, model, optimizer, *batch())
    assert all(torch.equal(a, b) for a, b in zip(head_before, head_parameters(model), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(features_before, feature_parameters(model), strict=True))
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in feature_parameters(model)}


@pytest.mark.parametrize("cls", [JT, AELFs])
def test_joint_methods_attack_exactly_the_second_half(cls, monkeypatch):
    method = cls(attack=ATTACK)
    model = CNNb(width=0.125)
    x, y = batch(128)
    attacked = []

    class Spy:
        def __call__(self, model, x_part, y_part):
            attacked.append(x_part.clone())
            return ATTACK(model, x_part, y_part)

    inputs = []
    model.features.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    object.__setattr__(method, "attack", Spy())
    method.loss(model, x, y)
    assert len(attacked) == 1 and torch.equal(attacked[0], x[64:])
    batch_seen = inputs[-1]
    assert batch_seen.shape[0] == 128
    assert torch.equal(batch_seen[:64], x[:64]), "first half stays natural"
    assert not torch.equal(batch_seen[64:], x[64:]), "second half is adversarial"
    assert (batch_seen[64:] - x[64:]).abs().max() <= ATTACK.eps + 1e-6


def test_aelfs_loss_is_eq_10():
    method = AELFs(attack=ATTACK, lambda_nat=0.3, lambda_adv=0.7, beta=0.2)
    model = CNNb(width=0.125).eval()
    x, y = batch(8)
    loss, _ = method.loss(model, x, y)
    x_adv = ATTACK(model, x[4:], y[4:])
    feats = model.forward_features(torch.cat([x[:4], x_adv]))
    logits = model.forward_head(feats)
    ce = torch.nn.functional.cross_entropy
    expected = (
        0.3 * ce(logits[:4], y[:4])
        + 0.7 * ce(logits[4:], y[4:])
        + 0.2 * (feats[:4].norm(dim=1).mean() + feats[4:].norm(dim=1).mean())
    )
    assert torch.allclose(loss, expected, atol=1e-6)


def test_half_of_odd_and_tiny_batches():
    assert n_adversarial(128, 0.5) == 64
    assert n_adversarial(2, 0.5) == 1
    assert n_adversarial(3, 0.9) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lambda_nat": 1.5, "lambda_adv": -0.5}, "lambda_nat must be in"),
        ({"lambda_nat": 0.4, "lambda_adv": 0.4}, "must be 1"),
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"adv_fraction": 1.0}, "adv_fraction"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AELFs(**kwargs)
