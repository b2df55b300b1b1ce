"""Issue 17: the single-step training attacks fgsm_rs and n_fgsm, GradAlign, and choosing them in the config."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import FGSMRS, NFGSM, PGD
from aelf.core.config import TrainConfig, config_from_json, load_config, make_config, to_dict
from aelf.core.errors import ConfigError
from aelf.core.methods import AT, METHODS, TRADES
from aelf.core.methods.grad_align import gradient_alignment
from aelf.core.models import CNNb
from aelf.core.modes import training
from aelf.core.train import make_optimizer, train_step

EPS = 0.1


class Uphill(nn.Module):
    """Two logits (sum of pixels, 0): for label 1 the cross-entropy grows with every pixel, so the gradient's sign
    is +1 everywhere and a signed step moves each pixel up by exactly the step size."""

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


class Downhill(nn.Module):
    """Uphill's mirror image: for label 1 the cross-entropy grows as every pixel falls (gradient sign -1 everywhere;
    Uphill with label 0 would not do: its loss saturates and the gradient rounds to 0)."""

    def forward(self, x):
        s = (1 - x).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


class Flat(nn.Module):
    """Logits that do not depend on the input: the gradient is 0, its sign too, so the attack returns its start."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2]))

    def forward(self, x):
        return self.bias.expand(len(x), 2) + 0 * x.flatten(1).sum(1, keepdim=True)


def fixed_batch(value=0.5, n=64):
    x = torch.full((n, 1, 8, 8), value)
    return x, torch.ones(n, dtype=torch.long)


def noise_like(x, half_width, seed):
    torch.manual_seed(seed)
    return torch.empty_like(x).uniform_(-half_width, half_width)


@pytest.mark.parametrize(
    "attack,half_width", [(FGSMRS(eps=EPS), EPS), (NFGSM(eps=EPS), 2 * EPS), (NFGSM(eps=EPS, noise_scale=3.0), 3 * EPS)]
)
def test_the_noise_is_uniform_over_its_range(attack, half_width):
    x, y = fixed_batch()
    torch.manual_seed(3)
    delta = attack(Flat(), x, y) - x  # no gradient: the start itself
    assert delta.abs().max() <= half_width + 1e-6
    assert delta.max() > 0.9 * half_width and delta.min() < -0.9 * half_width, "the whole range is used"
    assert abs(delta.mean().item()) < 0.1 * half_width
    assert torch.allclose(delta, noise_like(x, half_width, 3), atol=1e-6), "drawn from torch's global generator"


def test_fgsm_rs_is_one_step_of_1_25_eps_then_the_projection():
    x, y = fixed_batch()
    torch.manual_seed(4)
    x_adv = FGSMRS(eps=EPS)(Uphill(), x, y)
    start = x + noise_like(x, EPS, 4)
    expected = torch.minimum(start + 1.25 * EPS, x + EPS)  # every pixel goes up 1.25 eps, then back into the ball
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert (x_adv - x).max() <= EPS + 1e-6 and (x_adv - x).max() > EPS - 1e-6, "projected onto the ball's edge"
    torch.manual_seed(4)
    small = FGSMRS(eps=EPS, step_size=0.01)(Uphill(), x, y)
    assert torch.allclose(small, torch.minimum(start + 0.01, x + EPS), atol=1e-6)


def test_n_fgsm_steps_eps_from_its_noise_and_is_not_projected():
    x, y = fixed_batch()
    torch.manual_seed(5)
    x_adv = NFGSM(eps=EPS)(Uphill(), x, y)
    expected = x + noise_like(x, 2 * EPS, 5) + EPS
    assert torch.allclose(x_adv, expected, atol=1e-6)
    distance = (x_adv - x).abs().max()
    assert EPS * 1.5 < distance <= 3 * EPS + 1e-6, "beyond the eps-ball, within (k + 1) eps"
    torch.manual_seed(5)
    no_noise = NFGSM(eps=EPS, noise_scale=0.0, step_size=0.03)(Uphill(), x, y)
    assert torch.allclose(no_noise, x + 0.03, atol=1e-6)


def test_the_noisy_start_is_clamped_to_the_pixel_box_before_the_gradient_step():
    x, y = fixed_batch(value=0.0)  # black pixels: half of the noise points below 0
    torch.manual_seed(6)
    n_fgsm = NFGSM(eps=EPS)(Uphill(), x, y)
    assert torch.allclose(n_fgsm, noise_like(x, 2 * EPS, 6).clamp(min=0) + EPS, atol=1e-6)
    torch.manual_seed(6)
    fgsm_rs = FGSMRS(eps=EPS)(Uphill(), x, y)
    assert torch.allclose(fgsm_rs, torch.full_like(x, EPS), atol=1e-6), "from >= 0, 1.25 eps up reaches the edge"


@pytest.mark.parametrize("model,sign", [(Uphill(), 1.0), (Downhill(), -1.0)], ids=["up", "down"])
def test_fgsm_rs_steps_with_the_gradient_sign_and_projects_both_ways(model, sign):
    x, y = fixed_batch()
    torch.manual_seed(7)
    x_adv = FGSMRS(eps=EPS)(model, x, y)
    expected = (x + noise_like(x, EPS, 7) + sign * 1.25 * EPS).clamp(x - EPS, x + EPS)
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert ((x_adv - x) * sign > EPS - 1e-6).float().mean() > 0.5, "most pixels end on the ball's edge"


def test_at_the_top_of_the_pixel_box_the_start_and_the_result_are_clamped():
    """White pixels: half of the noise points above 1. A step down shows the start's clamp, a step up the result's:
    without either, values above 1 - eps (down) or above 1 (up) would appear."""
    x, y = fixed_batch(value=1.0)
    noise = noise_like(x, 2 * EPS, 8).clamp(max=0)  # what is left of n_fgsm's noise after the start's clamp
    torch.manual_seed(8)
    assert torch.allclose(NFGSM(eps=EPS)(Downhill(), x, y), 1 + noise - EPS, atol=1e-6)
    torch.manual_seed(8)
    assert torch.allclose(NFGSM(eps=EPS)(Uphill(), x, y), (1 + noise + EPS).clamp(max=1), atol=1e-6)
    torch.manual_seed(8)
    assert torch.allclose(FGSMRS(eps=EPS)(Downhill(), x, y), torch.full_like(x, 1 - EPS), atol=1e-6)
    torch.manual_seed(8)
    assert torch.equal(FGSMRS(eps=EPS)(Uphill(), x, y), torch.ones_like(x))


@pytest.mark.parametrize("attack", [FGSMRS(eps=0.3), NFGSM(eps=0.3)])
@pytest.mark.parametrize("model,size", [(Uphill(), 8), (CNNb(width=0.125), 32)])
def test_results_stay_in_the_pixel_box(attack, model, size):
    x = torch.rand(32, 1, size, size)
    x[:8], x[8:16] = 0.0, 1.0  # pixels on the border of [0, 1]
    y = torch.arange(32) % 2  # Uphill: label 1 pushes every pixel up, label 0 down, past both borders
    x_adv = attack(model, x, y)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad


@pytest.mark.parametrize("attack", [FGSMRS(eps=0.3), NFGSM(eps=0.3)])
def test_same_seed_same_examples_other_seed_other_examples(attack):
    model = CNNb(width=0.125)
    x, y = torch.rand(8, 1, 32, 32), torch.arange(8)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(attack(model, x, y))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("attack", [FGSMRS(eps=0.3), NFGSM(eps=0.3)])
def test_attacks_run_in_eval_mode_and_restore_modes(attack):
    model = CNNb(width=0.125).train()
    model.features[1].eval()
    before = [m.training for m in model.modules()]
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    attack(model, torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))
    assert seen == [False]
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"step_size": 0.0}, {"step_size": -1.0}])
def test_bad_single_step_settings_are_rejected(kwargs):
    for cls in (FGSMRS, NFGSM):
        with pytest.raises(ConfigError):
            cls(**kwargs)
    with pytest.raises(ConfigError, match="noise_scale"):
        NFGSM(noise_scale=-1.0)
    with pytest.raises(ConfigError, match="grad_align"):
        AT(grad_align=-0.1)


# ----------------------------------------------------------------------------------------------------------------------
# Methods


ADVERSARIAL = sorted(name for name in METHODS if name not in ("st", "trades"))


@pytest.mark.parametrize("attack", [FGSMRS(eps=0.3), NFGSM(eps=0.3)], ids=["fgsm_rs", "n_fgsm"])
@pytest.mark.parametrize("name", ADVERSARIAL)
def test_every_method_trains_a_step_with_each_single_step_attack(name, attack):
    method = METHODS[name](attack=attack)
    model = CNNb(width=0.125)
    optimizer = make_optimizer(method, model, TrainConfig())
    declared = {id(p) for p in method.trainable_parameters(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.rand(16, 1, 32, 32), torch.arange(16) % 10
    loss, metrics = train_step(method, model, optimizer, x, y)
    assert torch.isfinite(loss) and 0.0 <= metrics["adv_acc"] <= 1.0
    for param_name, parameter in model.named_parameters():
        assert (not torch.equal(parameter, before[param_name])) == (id(parameter) in declared), param_name


def test_trades_keeps_its_own_attack():
    with pytest.raises(ConfigError, match="TradesKL"):
        TRADES(attack=FGSMRS())
    with pytest.raises(ConfigError, match="unknown setting method.attack.name"):
        load_config(None, ["method.name=trades", "method.attack.name=fgsm_rs"])


def fresh_model():
    torch.manual_seed(0)
    return CNNb(width=0.125)


def at_loss(weight):
    """AT's loss with fgsm_rs on a fixed model and batch, the attack's noise drawn after torch.manual_seed(1); the
    model (its BatchNorm statistics updated by the train-mode forward) and batch come back too."""
    model = fresh_model()
    x, y = torch.rand(8, 1, 32, 32), torch.arange(8)
    torch.manual_seed(1)
    with training(model):
        loss, metrics = AT(attack=FGSMRS(eps=0.3), grad_align=weight).loss(model, x, y)
    return model, x, y, loss, metrics


def test_grad_align_off_is_plain_at():
    _, x, y, loss, metrics = at_loss(0.0)
    assert "grad_cos" not in metrics
    model = fresh_model()
    torch.manual_seed(1)
    x_adv = FGSMRS(eps=0.3)(model, x, y)
    with training(model):
        expected = F.cross_entropy(model(x_adv), y)
    assert torch.equal(loss, expected)


def test_grad_align_adds_weight_times_one_minus_the_gradient_cosine():
    _, x, y, loss, metrics = at_loss(0.5)
    model = fresh_model()
    torch.manual_seed(1)
    x_adv = FGSMRS(eps=0.3)(model, x, y)
    eta = torch.empty_like(x).uniform_(-0.3, 0.3)  # drawn right after the attack's noise
    model.eval()
    grads = []
    for point in (x, (x + eta).clamp(0, 1)):
        point = point.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(F.cross_entropy(model(point), y), point)[0].flatten(1))
    cos = F.cosine_similarity(grads[0], grads[1], dim=1).mean()
    model.train()
    with training(model):
        ce = F.cross_entropy(model(x_adv), y)
    assert torch.allclose(loss, ce + 0.5 * (1 - cos), atol=1e-5)
    assert torch.allclose(metrics["grad_cos"], cos, atol=1e-5)


def test_grad_align_reaches_the_weights_through_double_backprop():
    model, _, _, loss_on, _ = at_loss(1.0)
    with_reg = torch.autograd.grad(loss_on, list(model.parameters()))
    model, _, _, loss_off, _ = at_loss(0.0)
    without = torch.autograd.grad(loss_off, list(model.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(with_reg, without, strict=True)) > 1e-4


def test_gradient_alignment_leaves_batchnorm_statistics_and_modes_alone():
    model = CNNb(width=0.125).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    align = gradient_alignment(model, torch.rand(8, 1, 32, 32), torch.arange(8), 0.3)
    assert -1.0 <= align.item() <= 1.0 and align.requires_grad
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert all(m.training for m in model.modules())


# ----------------------------------------------------------------------------------------------------------------------
# Config


def test_the_attack_is_chosen_by_name_and_survives_a_round_trip():
    config = load_config(
        None,
        ["method.name=aelfs", "method.attack.name=n_fgsm", "method.attack.eps=8/255", "method.attack.noise_scale=3"],
    )
    assert config.method.attack == NFGSM(eps=8 / 255, noise_scale=3.0)
    written = json.dumps(to_dict(config))
    assert json.loads(written)["method"]["attack"]["name"] == "n_fgsm"
    assert config_from_json(written) == config
    at = make_config({"method": {"name": "at", "grad_align": 0.2, "attack": {"name": "fgsm_rs", "step_size": 0.1}}})
    assert at.method == AT(attack=FGSMRS(step_size=0.1), grad_align=0.2)
    assert config_from_json(json.dumps(to_dict(at))) == at


def test_no_name_means_pgd_and_pgd_is_written_as_before():
    old = {"method": {"name": "jt", "attack": {"eps": 0.3, "n_steps": 3, "step_size": 0.1}}}
    config = make_config(old)
    assert config.method.attack == PGD(eps=0.3, n_steps=3, step_size=0.1)
    assert "name" not in to_dict(config)["method"]["attack"]
    assert make_config({"method": {"name": "jt", "attack": {"name": "pgd", "n_steps": 3}}}).method.attack.n_steps == 3


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["method.name=at", "method.attack.name=fgsm"], "unknown training attack 'fgsm'"),
        (["method.name=at", "method.attack.name=[1]"], "unknown training attack"),
        (["method.name=at", "method.attack.name=fgsm_rs", "method.attack.n_steps=2"], "method.attack.n_steps"),
        (["eval.attack.name=fgsm_rs"], "unknown setting eval.attack.name"),
        (["method.name=jt", "method.attack.name=n_fgsm", "method.attack.noise_scale=-1"], "noise_scale"),
    ],
)
def test_bad_attack_choices_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_grad_align_under_torchrun_averages_the_double_backprop_gradients(tmp_path):
    from test_distributed import HELPERS, torchrun

    done = torchrun(str(HELPERS / "ddp_grad_align.py"), str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    generator = torch.Generator().manual_seed(5)
    x, y = torch.rand(128, 1, 32, 32, generator=generator), torch.randint(0, 10, (128,), generator=generator)
    halves = []
    for part in (slice(0, 64), slice(64, 128)):  # each rank's half, on a fresh copy of the same model
        model = fresh_model()
        torch.manual_seed(1)
        with training(model):
            loss, _ = AT(attack=FGSMRS(eps=0.3), grad_align=0.5).loss(model, x[part], y[part])
        halves.append(
            dict(
                zip(
                    [n for n, _ in model.named_parameters()],
                    torch.autograd.grad(loss, list(model.parameters())),
                    strict=True,
                )
            )
        )
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"grad-align-rank{rank}.pt", weights_only=True)
        for name, grad in saved.items():
            assert torch.allclose(grad, (halves[0][name] + halves[1][name]) / 2, atol=1e-5), f"rank {rank} {name}"
