"""Strong PGD (margin loss, restarts, cosine steps), the AutoAttack wrapper, suites and `aelf eval --suite`."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import aelf
from aelf.apps.card import model_card
from aelf.apps.cli import main
from aelf.core.accuracy import correct_mask
from aelf.core.attacks import PGD, project
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.attacks.pgd import margin_loss
from aelf.core.config import make_config
from aelf.core.errors import ConfigError
from aelf.core.models import CNNb
from aelf.core.run import load_dataset, load_model
from aelf.workflows.evaluation.robustness import pgd, run_suite, suite_attacks

EPS = 0.1  # on the ST fixture accuracy under PGD is about 8% here: far from 0 and from clean, so attacks differ


@pytest.fixture(scope="module")
def fixture_data(trained_st_run):
    model = load_model(trained_st_run)
    x, y = load_dataset(trained_st_run, "test")
    return model, x, y


def accuracy_mask(model, attack, x, y):
    return correct_mask(model, x, y, attack, batch_size=200)


def reference_pgd(model, x, y, eps, n_steps, step_size):
    """The PGD loop as it was before the new fields: the defaults must reproduce it bit for bit."""
    x_adv = x.clone()
    for _ in range(n_steps):
        x_in = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
        x_adv = project(x_adv + step_size * grad.sign(), x, eps)
    return x_adv


def test_default_pgd_is_the_paper_attack_bit_for_bit():
    model = CNNb(width=0.125).eval()
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 10, (8,))
    attack = PGD(eps=0.1, n_steps=3, step_size=0.05)
    assert (attack.loss, attack.n_restarts, attack.step_schedule, attack.random_start) == ("ce", 1, "constant", False)
    assert torch.equal(attack(model, x, y), reference_pgd(model, x, y, 0.1, 3, 0.05))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"loss": "hinge"}, "loss must be one of ce, margin"),
        ({"step_schedule": "linear"}, "step_schedule must be one of constant, cosine"),
        ({"n_restarts": 0, "random_start": True}, "n_restarts must be at least 1"),
        ({"n_restarts": 3}, "needs random_start"),
    ],
)
def test_bad_strong_pgd_settings_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PGD(**kwargs)


def test_new_pgd_fields_are_settings():
    config = make_config({"eval": {"attack": {"loss": "margin", "random_start": True, "n_restarts": 3}}})
    assert config.eval.attack == PGD(random_start=True, loss="margin", n_restarts=3)
    with pytest.raises(ConfigError, match="loss must be one of"):
        make_config({"eval": {"attack": {"loss": "nope"}}})


def test_cosine_schedule_and_strong_pgd_stay_in_the_ball():
    attack = PGD(
        eps=0.1, n_steps=4, step_size=0.08, step_schedule="cosine", loss="margin", random_start=True, n_restarts=3
    )
    sizes = attack.step_sizes()
    assert sizes[0] == 0.08 and all(a > b > 0 for a, b in zip(sizes, sizes[1:], strict=False))
    model = CNNb(width=0.125).eval()
    x, y = torch.rand(16, 1, 32, 32), torch.randint(0, 10, (16,))
    x[:4] = 0.0
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not x_adv.requires_grad


def test_margin_loss_values():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    assert torch.equal(margin_loss(logits, torch.tensor([1, 0])), torch.tensor([-3.0, 3.0]))


def test_margin_loss_and_restarts_never_do_worse_than_plain_pgd(fixture_data):
    model, x, y = fixture_data
    plain = accuracy_mask(model, pgd(EPS, 20), x, y)
    torch.manual_seed(1)
    margin = accuracy_mask(model, pgd(EPS, 20, "margin", random_start=True), x, y)
    torch.manual_seed(1)
    one_start = accuracy_mask(model, pgd(EPS, 20, random_start=True), x, y)
    torch.manual_seed(1)
    restarts = accuracy_mask(model, pgd(EPS, 20, n_restarts=4), x, y)
    percent = lambda mask: 100.0 * mask.float().mean().item()  # noqa: E731
    # Restarts keep each example's worst case and the first restart is the single run: never more robust, per example.
    assert not (restarts & ~one_start).any()
    # Tolerance 2 points (4 of 200 images). Measured on this fixture at eps 0.1 (it trains to a different model with 1
    # or 2 CPU threads): plain PGD-CE-20 8.0 / 17.5%, 4 restarts 6.5 / 8.0%, margin from a random start 7.0 / 12.0%.
    # (The margin loss from the clean image is weaker than CE here, 14.0 / 19.0%, hence the random start in 'quick'.)
    assert percent(restarts) <= percent(plain) + 2.0
    assert percent(margin) <= percent(plain) + 2.0
    assert percent(plain & margin) <= min(percent(plain), percent(margin))


def test_suite_worst_case_is_the_per_example_and(fixture_data):
    model, x, y = fixture_data
    result = run_suite(model, x[:100], y[:100], "quick", EPS, individual=True)
    assert list(result.attacks) == ["FGSM", "PGD-CE-20", "PGD-margin-20-rs"]
    masks = list(result.correct.values())
    expected = masks[0] & masks[1] & masks[2] & masks[3]
    assert torch.equal(result.robust, expected)
    assert result.worst_case == round(100.0 * expected.float().mean().item(), 2)
    assert all(result.worst_case <= accuracy for accuracy in result.alone.values())
    assert result.worst_case <= result.clean
    after = [result.after[name] for name in result.attacks]
    assert after == sorted(after, reverse=True) and after[-1] == result.worst_case

    skipping = run_suite(model, x[:100], y[:100], "quick", EPS)  # already-fooled examples are not attacked again
    assert not skipping.alone and skipping.worst_case == skipping.after["PGD-margin-20-rs"]
    for name in skipping.attacks:  # an attack never "un-fools": each mask lies inside the clean one
        assert not (skipping.correct[name] & ~skipping.correct["clean"]).any()
    table = skipping.markdown()
    assert "| PGD-CE-20 | - |" in table and "**worst case**" in table
    assert json.loads(json.dumps(skipping.to_dict()))["worst_case"] == skipping.worst_case


def test_suites_are_nested_and_bad_names_rejected():
    quick, standard, full = (list(suite_attacks(name, 0.3)) for name in ("quick", "standard", "full"))
    assert standard[: len(quick)] == quick and full[: len(standard)] == standard
    assert full[-1] == "AutoAttack-standard" and "PGD-CE-100x5" in full
    with pytest.raises(ConfigError, match="unknown suite"):
        suite_attacks("huge", 0.3)


def test_autoattack_wrapper_stays_in_the_ball_and_lowers_accuracy(fixture_data):
    model, x, y = fixture_data
    x, y = x[:50], y[:50]
    model.train()
    seen = []
    hook = model.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    rng = torch.get_rng_state()
    attack = AutoAttack(eps=EPS, version="quick", n_iter=10)
    try:
        x_adv = attack(model, x, y)
    finally:
        hook.remove()
    assert seen and not any(seen), "the model runs in eval mode"
    assert model.training, "its mode is restored"
    assert torch.equal(rng, torch.get_rng_state()), "the caller's random stream is untouched"
    model.eval()
    assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert aelf.accuracy(model, x_adv, y) < aelf.accuracy(model, x, y) - 30.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"version": "huge"}, "version must be one of"),
        ({"norm": "L1"}, "norm must be one of"),
        ({"version": "custom"}, "needs attacks"),
        ({"version": "custom", "attacks": ("pgd",)}, "needs attacks"),
        ({"attacks": ("square",)}, "only used with version='custom'"),
        ({"eps": -1.0}, "eps must be >= 0"),
    ],
)
def test_bad_autoattack_settings_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AutoAttack(**kwargs)


def test_pgd_agrees_with_the_authors_apgd(fixture_data):
    """Cross-check against an independent implementation: aelf's PGD-CE and pyautoattack's APGD-CE.

    aelf's side is PGD-CE, 20 steps of 2.5 eps / 20, 5 random restarts (the suites' strong PGD); the authors' side is
    APGD-CE with 20 iterations (their 100 gave the same numbers here). Tolerance 5 points (10 of 200 images): the two
    are different algorithms (APGD adapts its step size, uses momentum and keeps the best iterate), so either may be
    a little stronger, but a larger gap means one of them is broken. Measured at eps 0.1 on this fixture, which trains
    to a different model with 2 or 1 CPU threads: PGD 6.5 / 8.5%, APGD 6.5 / 7.5%. (PGD-CE-20 from the clean image
    without restarts left 8.0 / 17.5%: a single run from x can be far from the worst case.)
    """
    model, x, y = fixture_data
    torch.manual_seed(0)
    ours = aelf.accuracy(model, x, y, pgd(EPS, 20, n_restarts=5))
    authors = aelf.accuracy(model, x, y, AutoAttack(EPS, version="custom", attacks=("apgd-ce",), n_iter=20))
    assert abs(ours - authors) <= 5.0, (ours, authors)
    assert ours < aelf.accuracy(model, x, y) - 50.0


def test_evaluate_model_api_on_a_users_model(fixture_data):
    model, x, y = fixture_data
    result = aelf.evaluate_model(model, x[:40], y[:40], suite="quick", eps=EPS)
    summary = result.to_dict()
    assert summary["suite"] == "quick" and summary["n_examples"] == 40 and summary["eps"] == EPS
    assert [a["name"] for a in summary["attacks"]] == ["FGSM", "PGD-CE-20", "PGD-margin-20-rs"]
    assert 0.0 <= summary["worst_case"] <= summary["clean"] <= 100.0
    assert result.robust.shape == (40,) and result.robust.dtype == torch.bool


def test_cli_eval_suite_json(trained_st_run, capsys):
    assert main(["eval", str(trained_st_run), "--suite", "quick", "--json", "--n-examples", "40"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suite"] == "quick" and out["n_examples"] == 40 and out["eps"] == 0.3
    assert [a["name"] for a in out["attacks"]] == ["FGSM", "PGD-CE-20", "PGD-margin-20-rs"]
    assert out["worst_case"] <= min(a["after"] for a in out["attacks"])
    saved = json.loads((trained_st_run / "eval-suite-quick.json").read_text())
    assert saved["worst_case"] == out["worst_case"]


def test_plain_eval_takes_n_examples_and_records_it(trained_st_run, tmp_path, capsys):
    run = shutil.copytree(trained_st_run, tmp_path / "run")
    args = ["eval", str(run), "--json", "--no-progress", "--n-examples", "20", "--set", "eval.attack.n_steps=1"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["n_examples"] == 20 and saved["natural"] == printed["natural"]
    assert all(round(value * 20 / 100, 6).is_integer() for value in saved["natural"].values()), "shares of 20 images"
    card = model_card(run)
    assert f"| natural (N) | {saved['natural']['N']:.2f} | [" in card and "| 20 |" in card, "intervals over 20 images"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--individual"], "goes with --suite"),
        (["--n-examples", "0"], "at least 1"),
        (["--suite", "huge"], "invalid choice"),
        (["--suite", "quick", "--n-examples", "0"], "at least 1"),
    ],
)
def test_cli_eval_suite_bad_input(trained_st_run, capsys, args, message):
    assert main(["eval", str(trained_st_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelf: error:") and message in err and err.count("\n") == 1
