"""TRADES, AELF (Algorithm 1), JT* and the AELFs options: the formulas, the gradients and the ratio parser."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from aelf.apps.cli import parse_ratio
from aelf.core.attacks import PGD, TradesKL
from aelf.core.config import TrainConfig, config_from_json, to_dict
from aelf.core.errors import ConfigError
from aelf.core.methods import AELF, TRADES, AELFs, JTStar
from aelf.core.models import CNNb, feature_parameters, head_parameters
from aelf.core.modes import evaluating, training
from aelf.core.train import check_ready, make_optimizer, train, train_step

from conftest import tiny_config

ATTACK = PGD(eps=0.3, n_steps=2, step_size=0.15)


def batch(n=16):
    return torch.rand(n, 1, 32, 32), torch.arange(n) % 10


def kl_rows(logits_p, logits_q):
    """KL(softmax(logits_p) || softmax(logits_q)) per row, written out."""
    log_p, log_q = F.log_softmax(logits_p, dim=1), F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# TRADES


def test_trades_kl_ascent_raises_the_kl_and_stays_in_the_ball():
    model = CNNb(width=0.125).eval()
    x, y = batch()
    attack = TradesKL(eps=0.3, n_steps=5, step_size=0.05)
    with torch.no_grad():
        logits_nat = model(x)
        x_start = x + attack.init_std * torch.randn_like(x)
        kl_start = kl_rows(logits_nat, model(x_start)).mean()
    x_adv = attack(model, x, y)
    with torch.no_grad():
        kl_adv = kl_rows(logits_nat, model(x_adv)).mean()
    assert kl_adv > 100 * kl_start
    assert (x_adv - x).abs().max() <= attack.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_trades_kl_target_is_an_eval_mode_output_and_modes_are_restored():
    model = CNNb(width=0.125).train()
    x, y = batch()
    attack = TradesKL(eps=0.3, n_steps=2, step_size=0.15)
    torch.manual_seed(1)
    x_adv = attack(model, x, y)
    assert all(module.training for module in model.modules())
    with evaluating(model), torch.no_grad():
        probs_nat = F.softmax(model(x), dim=1)
    torch.manual_seed(1)
    with evaluating(model):
        expected = attack.perturb(model, x, probs_nat)
    assert torch.equal(x_adv, expected)


def test_trades_loss_is_eq_5_on_a_fixed_adversarial_batch():
    model = CNNb(width=0.125)
    x, y = batch()
    x_fixed = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    method = TRADES(beta=2.5)
    object.__setattr__(method, "attack", lambda model, x, y: x_fixed)
    with training(model):
        loss, metrics = method.loss(model, x, y)
        logits_nat, logits_adv = model(x), model(x_fixed)
    expected = F.cross_entropy(logits_nat, y) + 2.5 * kl_rows(logits_nat, logits_adv).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(metrics["kl"], kl_rows(logits_nat, logits_adv).mean(), atol=1e-6)
    # the KL's gradient flows through both distributions, as in the TRADES code
    params = list(model.parameters())
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params), strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_trades_defaults_and_validation():
    assert TRADES().beta == 6.0
    assert TRADES().attack == TradesKL(eps=0.031, n_steps=10, step_size=0.007, init_std=0.001)
    with pytest.raises(ConfigError, match="must be a TradesKL"):
        TRADES(attack=PGD(eps=0.3, n_steps=2, step_size=0.15))  # a run of it could not be read back
    with pytest.raises(ConfigError, match="method.beta must be >= 0"):
        TRADES(beta=-1)
    with pytest.raises(ConfigError, match="init_std"):
        TradesKL(init_std=-0.1)


# ---------------------------------------------------------------------------------------------------------------------
# AELF (Algorithm 1)


def capture_training_forwards(model):
    """Outputs of model.features and model.head in train mode with autograd on (the attack's eval forwards skipped)."""
    seen = {"features": [], "head": []}
    for key in seen:

        def hook(module, args, output, key=key):
            if module.training and torch.is_grad_enabled():
                seen[key].append(output)

        getattr(model, key).register_forward_hook(hook)
    return seen


def test_aelf_natural_features_are_a_constant_target_and_the_head_learns_from_l1_only():
    model = CNNb(width=0.125)
    seen = capture_training_forwards(model)
    x, y = batch()
    with training(model):
        loss, metrics = AELF(attack=ATTACK, lambda_feat=0.8).loss(model, x, y)
    (feats, feats_adv), (logits,) = seen["features"], seen["head"]
    assert feats.shape == feats_adv.shape == (16, model.num_features), "x and x' are whole batches, separate passes"
    loss_1 = F.cross_entropy(logits, y)
    assert torch.equal(metrics["ce_nat"], loss_1.detach())
    wrt = [feats, *head_parameters(model)]
    for got, want in zip(
        torch.autograd.grad(loss, wrt, retain_graph=True),
        torch.autograd.grad(loss_1, wrt, retain_graph=True),
        strict=True,
    ):
        assert torch.equal(got, want), "L2 sends no gradient to f or to the head"
    (grad_adv,) = torch.autograd.grad(loss, feats_adv)
    assert grad_adv.abs().sum() > 0, "L2 reaches c through f'"


def test_aelf_attacks_the_whole_batch():
    x, y = batch()
    attacked = []

    def spy(model, x_part, y_part):
        attacked.append(x_part)
        return ATTACK(model, x_part, y_part)

    method = AELF()
    object.__setattr__(method, "attack", spy)
    method.loss(CNNb(width=0.125), x, y)
    assert len(attacked) == 1 and torch.equal(attacked[0], x)


DISTANCES = {
    "l2": lambda diff: diff.norm(dim=1).mean(),
    "squared_l2": lambda diff: (diff**2).sum(dim=1).mean(),
    "l1": lambda diff: diff.abs().sum(dim=1).mean(),
}


def algorithm_1_step(model, opt_w, opt_c, x, y, lambda_feat, distance):
    """Algorithm 1, lines 3-9, literally: two optimizers, w updated before f' is computed and c is updated."""
    params_w, params_c = list(head_parameters(model)), list(feature_parameters(model))
    with training(model):
        x_adv = ATTACK(model, x, y)  # line 3
        feats = model.forward_features(x)  # line 4
        loss_1 = F.cross_entropy(model.forward_head(feats), y)  # line 5
        # dL1/dc is the derivative of line 5's L1: taken now, before line 6 changes w in place
        grads_1 = torch.autograd.grad(loss_1, params_w + params_c)
        for parameter, grad in zip(params_w, grads_1[: len(params_w)], strict=True):
            parameter.grad = grad
        opt_w.step()  # line 6
        feats_adv = model.forward_features(x_adv)  # line 7
        loss_2 = DISTANCES[distance](feats_adv - feats.detach())  # line 8: f is a constant
        grads_2 = torch.autograd.grad(lambda_feat * loss_2, params_c)
        for parameter, grad_1, grad_2 in zip(params_c, grads_1[len(params_w) :], grads_2, strict=True):
            parameter.grad = grad_1 + grad_2
        opt_c.step()  # line 9


@pytest.mark.parametrize(
    "distance,momentum,weight_decay", [("l2", 0.0, 0.0), ("squared_l2", 0.0, 0.0), ("l1", 0.0, 0.0), ("l2", 0.9, 5e-4)]
)
def test_aelf_single_loss_equals_the_alternating_updates_of_algorithm_1(distance, momentum, weight_decay):
    method = AELF(attack=ATTACK, lambda_feat=0.7, distance=distance)
    model = CNNb(width=0.125)
    reference = copy.deepcopy(model)
    tc = TrainConfig(lr=0.05, momentum=momentum, weight_decay=weight_decay)
    optimizer = make_optimizer(method, model, tc)
    opt_w, opt_c = (
        torch.optim.SGD(params, lr=tc.lr, momentum=momentum, weight_decay=weight_decay)
        for params in (head_parameters(reference), feature_parameters(reference))
    )
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        x, y = batch()
        train_step(method, model, optimizer, x, y)
        algorithm_1_step(reference, opt_w, opt_c, x, y, method.lambda_feat, distance)
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(got.float(), want.float(), atol=1e-6, rtol=0), name
    assert all(not torch.equal(p, q) for p, q in zip(start, model.parameters(), strict=True)), "every parameter moved"


def test_aelf_validation():
    with pytest.raises(ConfigError, match="method.lambda_feat must be >= 0"):
        AELF(lambda_feat=-1)
    with pytest.raises(ConfigError, match="method.distance must be one of l2, squared_l2, l1"):
        AELF(distance="cosine")


# ---------------------------------------------------------------------------------------------------------------------
# AELFs options and JT*


def eq_10_by_hand(model, x, y, lambda_nat, beta_nat, beta_adv, square=False):
    x_adv = ATTACK(model, x[8:], y[8:])
    feats = model.forward_features(torch.cat([x[:8], x_adv]))
    logits = model.forward_head(feats)
    norms = feats.norm(dim=1) ** (2 if square else 1)
    return (
        lambda_nat * F.cross_entropy(logits[:8], y[:8])
        + (1 - lambda_nat) * F.cross_entropy(logits[8:], y[8:])
        + beta_nat * norms[:8].mean()
        + beta_adv * norms[8:].mean()
    )


@pytest.mark.parametrize("cls", [AELFs, JTStar])
@pytest.mark.parametrize("penalty", ["l2", "squared_l2"])
def test_separate_betas_for_f_and_f_adv(cls, penalty):
    method = cls(attack=ATTACK, lambda_nat=0.4, lambda_adv=0.6, beta=9.0, beta_nat=0.1, beta_adv=0.3, penalty=penalty)
    model = CNNb(width=0.125).eval()
    x, y = batch()
    loss, _ = method.loss(model, x, y)
    expected = eq_10_by_hand(model, x, y, 0.4, 0.1, 0.3, square=penalty == "squared_l2")
    assert torch.allclose(loss, expected, atol=1e-5)


def test_one_beta_set_apart_the_other_defaults_to_beta():
    model = CNNb(width=0.125).eval()
    x, y = batch()
    loss, _ = AELFs(attack=ATTACK, beta=0.2, beta_adv=0.7).loss(model, x, y)
    assert torch.allclose(loss, eq_10_by_hand(model, x, y, 0.5, 0.2, 0.7), atol=1e-6)


def test_aelfs_default_loss_is_unchanged_bit_for_bit():
    model = CNNb(width=0.125).eval()
    x, y = batch()
    loss, _ = AELFs(attack=ATTACK, beta=0.3).loss(model, x, y)
    x_adv = ATTACK(model, x[8:], y[8:])
    feats = model.forward_features(torch.cat([x[:8], x_adv]))
    logits = model.forward_head(feats)
    norms = feats.norm(dim=1)
    ce = F.cross_entropy
    before = 0.5 * ce(logits[:8], y[:8]) + 0.5 * ce(logits[8:], y[8:]) + 0.3 * (norms[:8].mean() + norms[8:].mean())
    assert torch.equal(loss, before)


@pytest.mark.parametrize("cls", [AELFs, JTStar])
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta_nat": -1.0}, "method.beta_nat must be >= 0"),
        ({"beta_adv": -0.5}, "method.beta_adv must be >= 0"),
        ({"penalty": "l1"}, "method.penalty must be one of l2, squared_l2"),
    ],
)
def test_penalty_validation(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_jt_star_needs_an_st_run_and_trains_the_head():
    assert JTStar.needs_init
    with pytest.raises(ConfigError, match="starts from a trained run"):
        check_ready(tiny_config("jt_star"))
    method = JTStar(attack=ATTACK)
    model = CNNb(width=0.125)
    assert {id(p) for p in method.trainable_parameters(model)} == {id(p) for p in model.parameters()}
    head_before = [p.detach().clone() for p in head_parameters(model)]
    train_step(method, model, make_optimizer(method, model, TrainConfig()), *batch())
    assert all(not torch.equal(a, b) for a, b in zip(head_before, head_parameters(model), strict=True))


# ---------------------------------------------------------------------------------------------------------------------
# Configs, runs and the ratio parser


@pytest.mark.parametrize("name", ["trades", "aelf", "jt_star"])
def test_configs_round_trip(name):
    config = tiny_config(name)
    assert config_from_json(json.dumps(to_dict(config))) == config


def test_trades_config_builds_its_kl_attack():
    method = tiny_config("trades").method
    assert isinstance(method, TRADES) and method.attack == TradesKL(eps=0.3, n_steps=2, step_size=0.15)


def test_trades_aelf_and_jt_star_runs(tmp_path):
    st = train(tiny_config("st"), tmp_path / "st", progress=False)
    for name, extra in (("trades", {}), ("aelf", {}), ("jt_star", {"train": {"init": str(st)}})):
        run = train(tiny_config(name, **extra), tmp_path / name, progress=False)
        assert (run / "config.json").is_file()


def test_parse_ratio():
    assert parse_ratio("0.4:0.6") == (0.4, 0.6)
    assert parse_ratio(" 0.5 : 0.5 ") == (0.5, 0.5)
    assert parse_ratio("1:0") == (1.0, 0.0)


@pytest.mark.parametrize(
    "text,match",
    [
        ("0.4", "two numbers"),
        ("0.4:0.6:0", "two numbers"),
        ("a:b", "two numbers"),
        ("", "two numbers"),
        ("0.4:0.4", "must be 1"),
        ("-0.5:1.5", "lambda_nat must be in"),
    ],
)
def test_parse_ratio_rejects(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_ratio(text)
