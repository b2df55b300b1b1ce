import pytest

from aelf.core.config import load_config, make_config, to_dict
from aelf.core.config_text import parse_override
from aelf.core.errors import ConfigError
from aelf.core.methods import AELFs


def test_defaults_are_the_paper_settings():
    config = make_config()
    assert config.train.batch_size == 128 and config.train.lr == 0.1 and config.train.seed == 8
    assert config.train.weight_decay == 5e-4 and config.train.lr_milestones == (20, 40) and config.train.epochs == 50
    assert (config.eval.attack.eps, config.eval.attack.n_steps, config.eval.attack.step_size) == (0.3, 16, 0.02)
    assert config.eval.attack.random_start is False and config.eval.shift_pixels == 8


def test_yaml_then_flags_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: aelfs\n  beta: 0.2\ntrain:\n  epochs: 9\n")
    config = load_config(path, ["method.attack.eps=8/255", "train.lr_milestones=[3, 6]"], **{"train.epochs": 4})
    assert isinstance(config.method, AELFs) and config.method.beta == 0.2
    assert config.method.attack.eps == pytest.approx(8 / 255)
    assert config.train.epochs == 4 and config.train.lr_milestones == (3, 6)


def test_round_trip_through_dict():
    config = load_config(None, ["method.name=jt", "method.lambda_nat=0.4", "method.lambda_adv=0.6"])
    assert make_config(to_dict(config)) == config
    assert to_dict(config)["method"]["name"] == "jt"


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.epochs=five", "expected an integer"),
        ("train.epochs=2.5", "expected an integer"),
        ("train.lr=__import__('os')", "expected a number"),
        ("train.colour=red", "unknown setting train.colour"),
        ("method.name=magic", "unknown method 'magic'"),
        ("method.beta=0.1", "unknown setting method.beta"),
        ("model.name=resnet999", "unknown model 'resnet999'"),
        ("data.name=imagenet", "unknown dataset 'imagenet'"),
        ("eval.attack.eps=-1", "eps must be >= 0"),
        ("eval.attack.n_steps=0", "n_steps must be at least 1"),
        ("train.deterministic=maybe", "expected true or false"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_settings_are_rejected_at_load_time(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize(
    "overrides,name,value",
    [
        (["method.name=at", "method.attack.eps=8"], "eps", "8"),
        (["eval.attack.eps=5"], "eps", "5"),
        (["method.name=at", "method.attack.step_size=2"], "step_size", "2"),
        (["method.name=at", "method.attack.name=fgsm_rs", "method.attack.eps=8"], "eps", "8"),
        (["method.name=at", "method.attack.name=fgsm_rs", "method.attack.step_size=10"], "step_size", "10"),
        (["method.name=trades", "method.attack.init_std=2"], "init_std", "2"),
    ],
)
def test_pixel_sizes_above_one_are_refused_suggesting_a_fraction(overrides, name, value):
    """eps 8 (meaning 8/255) once trained and evaluated with a meaningless budget."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert f"attack {name} is in pixel units" in message and "at most 1" in message and f"{value}/255" in message
    load_config(None, [text.replace(f"={value}", f"={value}/255") for text in overrides])  # the fraction loads


def test_pixel_size_check_in_the_api():
    from aelf.core.attacks import PGD
    from aelf.core.attacks.autoattack import AutoAttack

    with pytest.raises(ConfigError, match="8/255"):
        PGD(eps=8, n_steps=10, step_size=0.01)
    with pytest.raises(ConfigError, match="at most 1"):
        AutoAttack(eps=8)
    assert AutoAttack(eps=1.5, norm="L2").eps == 1.5, "an l2 radius is not a pixel size"
    assert PGD(eps=1.0, n_steps=1, step_size=1.0).eps == 1.0, "the whole pixel range is allowed"


def test_fraction_parsing_never_evaluates():
    assert parse_override("a.b=8/255") == {"a": {"b": "8/255"}}
    with pytest.raises(ConfigError):
        load_config(None, ["eval.attack.eps=1/0"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_paper_runs_printed_config_loads_back_as_the_same_config(tmp_path, capsys):
    """The paper's settings have one source (the experiments); ``--print-config`` gives YAML that loads back equal."""
    from aelf.apps.cli import main
    from aelf.workflows.reproduction.reproduce import plan

    for run in ("st", "at", "jt", "aelfs"):
        assert main(["reproduce", "table2", "--preset", "paper", "--out", str(tmp_path), "--print-config", run]) == 0
        path = tmp_path / f"{run}.yaml"
        path.write_text(capsys.readouterr().out)
        assert load_config(path) == plan("table2", "paper", tmp_path).configs[run]
    assert main(["reproduce", "table2", "--print-config", "nope"]) == 2


def test_print_config_with_one_seed_is_that_seeds_run(tmp_path, capsys):
    """``--seeds 10 --print-config RUN``: the run as ``--seeds ...,10`` trains it, in OUT/seed-10 from seed-10's ST."""
    from aelf.apps.cli import main
    from aelf.workflows.reproduction.reproduce import plan

    assert main(["reproduce", "table2", "--out", str(tmp_path), "--seeds", "10", "--print-config", "aelfs"]) == 0
    path = tmp_path / "aelfs.yaml"
    path.write_text(capsys.readouterr().out)
    config = load_config(path)
    assert (config.train.seed, config.train.init) == (10, str(tmp_path / "seed-10" / "st"))
    assert config == plan("table2", "quick", tmp_path / "seed-10", overrides=["train.seed=10"]).configs["aelfs"]
    assert main(["reproduce", "table2", "--seeds", "8,9", "--print-config", "aelfs"]) == 2
    assert "give one seed" in capsys.readouterr().err


def test_words_that_yaml_1_1_reads_as_booleans_stay_text(tmp_path):
    # PyYAML's default (YAML 1.1) reads off/on/yes/no as booleans, so `--set train.amp=off` used to be rejected
    assert load_config(None, ["train.amp=bf16", "train.amp=off"]).train.amp == "off"
    path = tmp_path / "amp.yaml"
    path.write_text("train:\n  amp: off\n  deterministic: false\n")
    config = load_config(path)
    assert config.train.amp == "off" and config.train.deterministic is False
    with pytest.raises(ConfigError, match="train.deterministic: expected true or false, got 'no'"):
        load_config(None, ["train.deterministic=no"])
