"""Gradient-masking diagnostics fire on deliberately masked models and stay quiet on the trained one; `aelf check`
and `aelf curves` end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelf.apps.cli import main
from aelf.core.errors import ConfigError
from aelf.core.run import load_dataset, load_model
from aelf.workflows.evaluation.masking import check_deterministic, check_model

CHEAP = {"n_examples": 100, "n_steps": 8, "n_restarts": 2, "n_queries": 200}  # a few seconds per check_model


class Rounded(nn.Module):
    """Input quantisation to 1/255 steps with torch.round, whose gradient is 0: every gradient attack is blind."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 255) / 255)


class Saturating(nn.Module):
    """Logits scaled by 1 + 10^4 x (share of pixels off the 1/255 grid): predictions never change, but once an attack
    step leaves the grid the softmax saturates and the cross-entropy gradient underflows to exactly 0 (the mechanism
    by which defensive distillation masked gradients). FGSM's one step uses the clean gradient; PGD gets stuck."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        off_grid = ((x * 255 - torch.round(x * 255)).abs() > 1e-3).float().flatten(1).mean(1)
        return self.net(x) * (1 + 1e4 * off_grid)[:, None]


class Noisy(nn.Module):
    """Gaussian input noise in every mode: a randomised model."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


class DropoutAlwaysOn(nn.Module):
    """Dropout called with training=True, so eval mode does not switch it off."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(F.dropout(x, p=0.2, training=True))


@pytest.fixture(scope="module")
def trained(trained_st_run):
    model = load_model(trained_st_run)
    x, y = load_dataset(trained_st_run, "test")
    return model, torch.round(x * 255) / 255, y  # pixels on the 1/255 grid, as in an 8-bit image


def warned(report) -> set[str]:
    return {check.name for check in report.warnings}


def test_checks_stay_quiet_on_the_trained_model(trained):
    model, x, y = trained
    report = check_model(model, x, y, eps=0.1, **CHEAP)
    assert not report.warnings, report.markdown()
    assert [c.name for c in report.checks] == [
        "deterministic",
        "unbounded",
        "iterative-vs-single-step",
        "more-steps-and-restarts",
        "black-box-vs-white-box",
    ]
    assert report.to_dict()["passed"] and "all checks passed" in report.markdown()


def test_zero_gradient_quantisation_fires_unbounded_and_black_box(trained):
    model, x, y = trained
    report = check_model(Rounded(model), x, y, eps=0.3, **CHEAP)
    assert {"unbounded", "black-box-vs-white-box"} <= warned(report), report.markdown()
    unbounded = next(c for c in report.checks if c.name == "unbounded")
    assert unbounded.numbers["accuracy"] > 50.0 and "gradient masking suspected" in unbounded.message
    assert "black-box-vs-white-box: gradient masking suspected" in report.markdown()


def test_saturated_softmax_fires_iterative_and_more_steps(trained):
    model, x, y = trained
    report = check_model(Saturating(model), x, y, eps=0.3, **CHEAP)
    assert {"iterative-vs-single-step", "more-steps-and-restarts"} <= warned(report), report.markdown()
    single = next(c for c in report.checks if c.name == "iterative-vs-single-step")
    assert single.numbers["pgd"] > single.numbers["fgsm"] + 2.0
    assert single.message.startswith("iterative-vs-single-step: gradient masking suspected")


@pytest.mark.parametrize("wrapper", [Noisy, DropoutAlwaysOn])
def test_determinism_check_fires_on_randomised_models(trained, wrapper):
    model, x, _ = trained
    assert check_deterministic(model, x[:50], 50).status == "pass"
    result = check_deterministic(wrapper(model), x[:50], 50)
    assert result.status == "warn" and result.numbers["max_logit_difference"] > 0
    assert "randomised in eval mode" in result.message


def test_check_rejects_bad_settings(trained):
    model, x, y = trained
    with pytest.raises(ConfigError, match="eps must be positive"):
        check_model(model, x, y, eps=0.0)
    with pytest.raises(ConfigError, match="n_examples must be at least 1"):
        check_model(model, x, y, n_examples=0)


def test_cli_check_prints_table_and_writes_json(trained_st_run, capsys):
    assert main(["check", str(trained_st_run), "--n-examples", "20", "--strict"]) == 0
    out = capsys.readouterr().out
    assert "| unbounded | pass |" in out and "all checks passed" in out
    saved = json.loads((trained_st_run / "check.json").read_text())
    assert saved["passed"] and saved["n_examples"] == 20 and saved["eps"] == 0.3
    assert main(["check", str(trained_st_run), "--n-examples", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checks"][0]["name"] == "deterministic"


def test_cli_curves_end_to_end(trained_st_run, tmp_path, capsys):
    out = tmp_path / "curves"
    args = ["curves", str(trained_st_run), "--eps", "0,0.1,0.3", "--steps", "1,4", "--n-examples", "40"]
    assert main([*args, "--out", str(out)]) == 0
    assert "| st | 0.3 |" in capsys.readouterr().out
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads((out / "curves.json").read_text())
    entry = curves["runs"]["st"]
    assert curves["eps"] == [0.0, 0.1, 0.3] and curves["steps"] == [1, 4] and entry["n_examples"] == 40
    clean, *attacked = entry["accuracy_vs_eps"]
    assert clean > 60.0 and attacked == sorted(attacked, reverse=True) and attacked[-1] < clean
    assert "| run | eps 0 | eps 0.1 | eps 0.3 |" in (out / "curves.md").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--eps", "0,2"], "eps values must be in [0, 1]"),
        (["--eps", "0,x"], "--eps expects comma-separated numbers"),
        (["--eps", "0.1", "--steps", "0"], "step counts must be at least 1"),
        (["--eps", "0.1", "--steps", "1.5"], "--steps expects whole numbers"),
    ],
)
def test_cli_curves_bad_input_writes_nothing(trained_st_run, tmp_path, capsys, args, message):
    out = tmp_path / "curves"
    assert main(["curves", str(trained_st_run), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelf: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_check_of_missing_run(tmp_path, capsys):
    assert main(["check", str(tmp_path / "none")]) == 2
    assert "run folder not found" in capsys.readouterr().err
