"""bench.bn_gap: BatchNorm statistics recomputed from attacked images, and the study's tables on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch
from bench import bn_gap
from torch import nn

from aelf.core.attacks import PGD
from aelf.core.train import train

from conftest import tiny_config


class TwoNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))

    def forward(self, x):
        return self.body(x)


def test_recomputed_statistics_are_those_of_the_attacked_images_and_weights_stay():
    model = TwoNorms().eval()
    norm = model.body[2]
    norm.running_mean.fill_(5.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    x, y = torch.rand(64, 1, 2, 2), torch.randint(0, 2, (64,))
    attack = PGD(eps=0.1, n_steps=2, step_size=0.05)
    bn_gap.recompute_statistics(model, x, y, attack, batch_size=16)
    assert not model.training and norm.momentum == 0.1, "mode and momentum are restored"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items()), "no weight changes"
    assert norm.running_mean.abs().max() < 5.0, "the planted statistics are replaced"
    with pytest.raises(bn_gap.ConfigError, match="no BatchNorm"):
        bn_gap.recompute_statistics(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval(), x, y, attack, 16)


def test_the_mean_of_cumulative_statistics_is_the_data_mean():
    model = TwoNorms().eval()
    x, y = torch.rand(48, 1, 2, 2), torch.randint(0, 2, (48,))
    identity = lambda model, xb, yb: xb  # noqa: E731 -- "no attack": the statistics of x itself
    bn_gap.recompute_statistics(model, x, y, identity, batch_size=16)
    with torch.no_grad():
        hidden = model.body[1](model.body[0](x))
    assert torch.allclose(model.body[2].running_mean, hidden.mean(0), atol=1e-5)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    for seed in (3, 4):
        for method in ("at", "jt"):
            train(
                tiny_config(method, train={"seed": seed}, data={"test_limit": 40}),
                root / f"seed-{seed}" / method,
                progress=False,
            )
    return root


def test_the_study_writes_both_variants_with_paired_changes(root, tmp_path):
    document = bn_gap.run_study(root, tmp_path / "out", ["at", "jt"], aa_images=16, smoke=True, log=lambda *_: None)
    assert document["seeds"] == [3, 4] and set(document["methods"]) == {"at", "jt"}
    text = (tmp_path / "out" / "bn_gap.md").read_text()
    assert "| AT | as trained |" in text and "| JT | adversarial statistics |" in text and "SMOKE" in text
    assert json.loads((tmp_path / "out" / "bn_gap.json").read_text())["aa_images"] == 16
    for seed in ("3", "4"):
        assert set(document["per_seed"][seed]["jt"]) == {"trained", "adversarial"}
    again = bn_gap.run_study(root, tmp_path / "out", ["at", "jt"], aa_images=16, smoke=True, log=lambda *_: None)
    assert again["per_seed"] == document["per_seed"], "the second invocation reads every run's cache"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ROOT", "--out", "OUT", "--methods", "trades"], "not a finished run"),
        (["ROOT", "--out", "OUT", "--aa-images", "0"], "at least 1"),
        (["NOWHERE", "--out", "OUT"], "no seed-N folders"),
        (["ROOT"], "--out"),
    ],
)
def test_bad_arguments_are_one_line_errors(root, tmp_path, capsys, argv, message):
    argv = [str(root) if a == "ROOT" else str(tmp_path / a) if a in ("OUT", "NOWHERE") else a for a in argv]
    assert bn_gap.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
