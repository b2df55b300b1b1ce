"""Issue 28, item 2: ``method.attack_mode`` crafts the training attack with BatchNorm on running (eval, the default)
or batch (train) statistics, never changing weights or running statistics."""

from __future__ import annotations

import copy

import pytest
import torch

from aelf.core.attacks import FGSMRS, PGD
from aelf.core.attacks.craft import craft
from aelf.core.config import make_config
from aelf.core.errors import ConfigError
from aelf.core.methods import AT, JT
from aelf.core.models import CNNb
from aelf.core.modes import training


def trained_bn_model() -> CNNb:
    """A tiny CNNb whose running statistics are far from any one batch's (a few shifted batches seen in train mode)."""
    torch.manual_seed(0)
    model = CNNb(width=0.125)
    with training(model), torch.no_grad():
        for shift in (0.0, 0.5, 1.0):
            model((torch.rand(8, 1, 32, 32) * 0.5 + shift * 0.5).clamp(0, 1))
    return model.eval()


def buffers(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def batch(n: int = 16):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize("attack", [FGSMRS(eps=0.3), PGD(eps=0.3, n_steps=3, step_size=0.1, random_start=True)])
def test_train_mode_crafting_uses_batch_statistics_and_changes_no_weight_or_running_statistic(attack):
    model = trained_bn_model()
    x, y = batch()
    before = buffers(model)
    torch.manual_seed(5)
    x_train = craft(attack, model, x, y, "train")
    after = buffers(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights and running statistics unchanged"
    assert any("num_batches_tracked" in k for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and all(not m.training for m in model.modules()), "modes restored"
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # the same attack on a copy in plain train mode (batch statistics) gives the same x'; eval mode another one
    reference = copy.deepcopy(model).train()
    torch.manual_seed(5)
    assert torch.equal(x_train, attack.perturb(reference, x, y))
    torch.manual_seed(5)
    x_eval = craft(attack, model, x, y, "eval")
    torch.manual_seed(5)
    assert torch.equal(x_eval, attack(model, x, y)), "eval mode is exactly the attack as called before"
    assert not torch.equal(x_eval, x_train)


@pytest.mark.parametrize("method", [AT(attack=FGSMRS(eps=0.3), attack_mode="train"), JT(attack_mode="train")])
def test_a_methods_step_updates_running_statistics_once_whatever_the_attack_mode(method):
    model = trained_bn_model()
    x, y = batch()
    counts = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with training(model):
        loss, _ = method.loss(model, x, y)
    assert torch.isfinite(loss)
    after = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert after == [c + 1 for c in counts], "only the training forward counts a batch"


def test_attack_mode_in_the_config():
    config = make_config({"method": {"name": "aelfs", "attack_mode": "train"}})
    assert config.method.attack_mode == "train"
    assert make_config({"method": {"name": "at"}}).method.attack_mode == "eval"
    with pytest.raises(ConfigError, match="method.attack_mode must be one of eval, train"):
        make_config({"method": {"name": "at", "attack_mode": "batch"}})
    with pytest.raises(ConfigError, match="unknown setting method.attack_mode"):
        make_config({"method": {"name": "st", "attack_mode": "train"}})
