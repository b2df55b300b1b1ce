"""Issue 28, item 3: the single-step attacks' options the anchors use: an unclipped random start and the step as a
multiple of eps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import FGSMRS, NFGSM
from aelf.core.config import make_config
from aelf.core.errors import ConfigError


class Recorder(nn.Module):
    """A small linear classifier that remembers the smallest and largest input pixel it was given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(16, 10)
        self.seen: list[tuple[float, float]] = []

    def forward(self, x):
        self.seen.append((x.min().item(), x.max().item()))
        return self.head(x.flatten(1))


def digits(n: int = 32):
    generator = torch.Generator().manual_seed(3)
    x = (torch.rand(n, 1, 4, 4, generator=generator) > 0.5).float()  # pixels at 0 and 1: any noise leaves [0, 1]
    return x, torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize("attack", [FGSMRS, NFGSM])
def test_the_start_is_clipped_by_default_and_not_with_clip_start_false(attack):
    x, y = digits()
    clipped, unclipped = Recorder(), Recorder()
    attack(eps=0.3)(clipped, x, y)
    out = attack(eps=0.3, clip_start=False)(unclipped, x, y)
    assert clipped.seen[0][0] >= 0 and clipped.seen[0][1] <= 1
    assert unclipped.seen[0][0] < -0.1 and unclipped.seen[0][1] > 1.1, "the gradient is taken outside [0, 1]"
    assert out.min() >= 0 and out.max() <= 1, "the result is clipped either way"


def test_unclipped_fgsm_rs_is_wong_et_als_mnist_step():
    """locuslab/fast_adversarial MNIST/train_mnist.py: delta ~ U(-eps, eps); gradient at X + delta; delta <- clamp(delta
    + alpha sign(grad), -eps, eps); delta <- max(min(1 - X, delta), -X); the training input is clamp(X + delta)."""
    x, y = digits()
    model = Recorder()
    eps, alpha = 0.3, 0.375
    torch.manual_seed(7)
    ours = FGSMRS(eps=eps, step_scale=1.25, clip_start=False)(model, x, y)
    torch.manual_seed(7)
    delta = torch.zeros_like(x).uniform_(-eps, eps).requires_grad_(True)
    F.cross_entropy(model(x + delta), y).backward()
    delta = torch.clamp(delta.detach() + alpha * delta.grad.sign(), -eps, eps)
    delta = torch.max(torch.min(1 - x, delta), 0 - x)
    theirs = torch.clamp(x + delta, 0, 1)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_the_step_as_a_multiple_of_eps():
    assert FGSMRS(eps=0.3).step == pytest.approx(0.375)  # 1.25 eps by default
    assert FGSMRS(eps=0.3, step_scale=1.0).step == pytest.approx(0.3)
    assert FGSMRS(eps=0.3, step_size=0.1).step == 0.1
    assert NFGSM(eps=0.3).step == pytest.approx(0.3) and NFGSM(eps=0.3, step_scale=0.5).step == pytest.approx(0.15)
    with pytest.raises(ConfigError, match="step_size .* or its step_scale .* not both"):
        FGSMRS(eps=0.3, step_size=0.1, step_scale=1.0)
    with pytest.raises(ConfigError, match="step_scale must be positive"):
        NFGSM(step_scale=0)


def test_the_options_from_the_config():
    config = make_config(
        {"method": {"name": "at", "attack": {"name": "fgsm_rs", "step_scale": 1, "clip_start": "false"}}}
    )
    assert config.method.attack == FGSMRS(eps=0.3, step_scale=1.0, clip_start=False)
