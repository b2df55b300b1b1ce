"""Split BatchNorm (``method.bn: split``, AdvProp) and AELFs' ``freeze_head``: each BatchNorm set sees only its own
inputs, the adversarial set is the model at test time, runs save, load, start from a plain run and resume exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from aelf.core.attacks import PGD
from aelf.core.checkpoint import latest_checkpoint, read_weights
from aelf.core.config import TrainConfig, make_config
from aelf.core.errors import ConfigError
from aelf.core.methods import JT, AELFs, JTStar
from aelf.core.models import CNNb, SplitBatchNorm, feature_parameters, natural_inputs, split_batchnorm, split_state
from aelf.core.modes import evaluating, training
from aelf.core.run import load_model
from aelf.core.run_folder import WEIGHTS
from aelf.core.train import make_optimizer, train_step
from test_reliability import assert_same_run

from conftest import TINY, TINY_ATTACK, stopped_run, trainer

ATTACK = PGD(eps=0.3, n_steps=2, step_size=0.15)


def config(name: str, options: dict | None = None, **sections):
    """The tiny settings of the suite for method ``name`` with ``options`` in its section."""
    attack = {"attack": TINY_ATTACK} if name != "st" else {}
    small = {"data": {"train_limit": 128, "test_limit": 20}, "train": {"batch_size": 32}}
    return make_config(TINY, small, {"method": {"name": name, **attack, **(options or {})}}, sections)


def batch(n=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=generator), torch.arange(n) % 10


def bn_state(model, which: str) -> dict[str, torch.Tensor]:
    """Every tensor (parameters, running statistics, counters) of one BatchNorm set, and the gradients of its
    parameters under ``grad.``."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, SplitBatchNorm):
            part = getattr(module, which)
            found |= {f"{name}.{k}": v.detach().clone() for k, v in part.state_dict().items()}
            found |= {f"{name}.grad.{k}": p.grad.clone() for k, p in part.named_parameters() if p.grad is not None}
    return found


def one_step_states(method, model, x, y):
    """Both BatchNorm sets of a copy of ``model`` after one forward and backward of ``method`` on (x, y)."""
    model = copy.deepcopy(model)
    with training(model):
        loss, _ = method.loss(model, x, y)
    loss.backward()
    return bn_state(model, "natural"), bn_state(model, "adversarial")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cls", [JT, AELFs])
def test_each_batchnorm_set_sees_only_its_own_half_of_the_batch(cls):
    method = cls(attack=ATTACK, bn="split")
    model = split_batchnorm(CNNb(width=0.125))
    x, y = batch()
    other, _ = batch(seed=1)
    nat, adv = one_step_states(method, model, x, y)
    # another adversarial half: the natural set's statistics and gradients are the same bit for bit, not the other's
    x_other_adv = torch.cat([x[:8], other[8:]])
    nat_2, adv_2 = one_step_states(method, model, x_other_adv, y)
    assert same(nat, nat_2) and not same(adv, adv_2)
    # another natural half: the other way round
    x_other_nat = torch.cat([other[:8], x[8:]])
    nat_3, adv_3 = one_step_states(method, model, x_other_nat, y)
    assert same(adv, adv_3) and not same(nat, nat_3)
    # both sets did learn something from their own half
    fresh_nat, fresh_adv = bn_state(model, "natural"), bn_state(model, "adversarial")
    assert not same({k: v for k, v in nat.items() if k in fresh_nat}, fresh_nat)
    assert not same({k: v for k, v in adv.items() if k in fresh_adv}, fresh_adv)


def test_with_one_shared_set_the_adversarial_half_reaches_the_natural_statistics():
    """The test above can fail: with the paper's single set, changing the adversarial half moves every statistic."""
    model = CNNb(width=0.125)
    x, y = batch()
    other, _ = batch(seed=1)
    runs = []
    for inputs in (x, torch.cat([x[:8], other[8:]])):
        copied = copy.deepcopy(model)
        with training(copied):
            JT(attack=ATTACK).loss(copied, inputs, y)
        runs.append(copied.features[1].running_mean.clone())
    assert not torch.equal(*runs)


def test_the_adversarial_set_is_the_model_at_test_time_and_under_attack():
    torch.manual_seed(0)
    plain = CNNb(width=0.125)
    x, y = batch()
    with training(plain):  # running statistics that differ from a fresh layer's
        plain(x)
    model = split_batchnorm(copy.deepcopy(plain))
    for _, module in model.named_modules():
        if isinstance(module, SplitBatchNorm):  # a natural set nothing like the plain model's
            torch.nn.init.normal_(module.natural.weight)
            module.natural.running_mean.add_(3.0)
    with evaluating(model), evaluating(plain), torch.no_grad():
        assert torch.equal(model(x), plain(x))
        with natural_inputs(model):
            assert not torch.equal(model(x), plain(x))
        assert torch.equal(model(x), plain(x)), "the routing is restored after the block"
    assert torch.equal(ATTACK(model, x, y), ATTACK(plain, x, y))


def test_a_plain_models_weights_start_both_sets():
    plain = CNNb(width=0.125)
    with training(plain):
        plain(batch()[0])
    model = split_batchnorm(CNNb(width=0.125))
    model.load_state_dict(split_state(model, plain.state_dict()))
    layer = model.features[1]
    for part in (layer.natural, layer.adversarial):
        assert torch.equal(part.running_mean, plain.features[1].running_mean)
        assert torch.equal(part.weight, plain.features[1].weight)
    assert split_state(model, model.state_dict()).keys() == model.state_dict().keys(), "split weights pass unchanged"


def test_bad_bn_settings_are_config_errors():
    with pytest.raises(ConfigError, match="method.bn must be one of shared, split"):
        config("jt", {"bn": "both"})
    with pytest.raises(ConfigError, match="unknown setting method.bn"):
        config("at", {"bn": "split"})
    with pytest.raises(ConfigError, match="no BatchNorm layer to split"):
        split_batchnorm(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


def test_a_split_run_saves_both_sets_and_loads_back(tmp_path):
    run = trainer.train(config("jt", {"bn": "split"}), tmp_path / "run", progress=False)
    saved = read_weights(run / WEIGHTS)
    model = load_model(run)
    first = next(name for name, module in model.named_modules() if isinstance(module, SplitBatchNorm))
    assert not torch.equal(saved[f"{first}.natural.running_mean"], saved[f"{first}.adversarial.running_mean"])
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_split_aelfs_starts_from_a_plain_st_run_and_keeps_its_head(tmp_path):
    st = trainer.train(config("st"), tmp_path / "st", progress=False)
    aelfs = config("aelfs", {"bn": "split", "beta": 0.05}, train={"init": str(st)})
    run = trainer.train(aelfs, tmp_path / "aelfs", progress=False)
    before, after = read_weights(st / WEIGHTS), read_weights(run / WEIGHTS)
    assert torch.equal(before["head.weight"], after["head.weight"]), "the head stays frozen"
    first = next(name for name, module in load_model(run).named_modules() if isinstance(module, SplitBatchNorm))
    for part in ("natural", "adversarial"):  # both sets started from ST's layer and then moved
        assert not torch.equal(after[f"{first}.{part}.running_mean"], before[f"{first}.running_mean"])


def test_a_split_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    jt = config("jt", {"bn": "split"}, train={"epochs": 2, "batch_size": 16, "checkpoint_every": 3})
    reference = trainer.train(jt, tmp_path / "reference", progress=False)
    # step 3 of epoch 2 (8 steps an epoch), between the checkpoints of steps 9 and 12
    stopped_run(jt, tmp_path / "run", monkeypatch, 11, "sigterm")
    assert latest_checkpoint(tmp_path / "run").name == "step-00000011"
    trainer.train(None, tmp_path / "run", resume=True, progress=False)
    assert_same_run(tmp_path / "run", reference)


def test_freeze_head_chooses_what_aelfs_and_jt_star_train():
    model = CNNb(width=0.125)
    features = {id(p) for p in feature_parameters(model)}
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in AELFs().trainable_parameters(model)} == features
    assert {id(p) for p in AELFs(freeze_head=False).trainable_parameters(model)} == everything
    assert {id(p) for p in JTStar().trainable_parameters(model)} == everything
    assert {id(p) for p in JTStar(freeze_head=True).trainable_parameters(model)} == features
    # AELFs with the head trained is JT*: the same step, bit for bit
    x, y = batch()
    weights = []
    for method in (AELFs(attack=ATTACK, freeze_head=False), JTStar(attack=ATTACK)):
        trained = copy.deepcopy(model)
        train_step(method, trained, make_optimizer(method, trained, TrainConfig()), x, y)
        weights.append(trained.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
