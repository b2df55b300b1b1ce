import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

import aelf
from aelf.apps.cli import main
from aelf.apps.parser import build_parser, commands_parser
from aelf.core.run_folder import CONFIG

TINY_SETS = [
    "--set",
    "data.train_limit=128",
    "--set",
    "data.test_limit=40",
    "--set",
    "model.width=0.125",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.lr_milestones=[]",
    "--set",
    "eval.batch_size=40",
]
TINY_ATTACK = ["--set", "method.attack.n_steps=2", "--set", "method.attack.step_size=0.15"]


def run_cli(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "aelf", *args], capture_output=True, text=True, env=env, timeout=300)


def test_train_aelfs_from_st_and_eval_end_to_end(tmp_path):
    st, aelfs = tmp_path / "st", tmp_path / "aelfs"
    done = run_cli(
        "train",
        "--dataset",
        "mnist5k",
        "--model",
        "cnnb",
        "--method",
        "st",
        "--epochs",
        "2",
        "--out",
        str(st),
        "--no-progress",
        *TINY_SETS,
        "--set",
        "train.lr_milestones=[1]",
    )
    assert done.returncode == 0, done.stderr
    assert "st epoch 2/2: lr 0.01, " in done.stdout + done.stderr, "the decayed lr printed as 0.01, not 0.0100...02"
    done = run_cli(
        "train",
        "--method",
        "aelfs",
        "--epochs",
        "1",
        "--init",
        str(st),
        "--out",
        str(aelfs),
        "--no-progress",
        *TINY_SETS,
        *TINY_ATTACK,
    )
    assert done.returncode == 0, done.stderr
    done = run_cli("eval", str(aelfs), "--json", "--no-progress", "--set", "eval.attack.n_steps=2")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    sets = ["N", "N(L)", "N(R)", "N(U)", "N(D)"]
    assert list(result) == ["natural", "adversarial"]
    assert list(result["natural"]) == sets and list(result["adversarial"]) == sets
    assert all(0.0 <= v <= 100.0 for part in result.values() for v in part.values())
    saved = json.loads((aelfs / CONFIG).read_text())
    assert saved["method"]["name"] == "aelfs" and saved["train"]["init"] == str(st)
    assert saved["train"]["seed"] == 8 and (aelfs / "meta.json").is_file() and (aelfs / "metrics.jsonl").is_file()
    st_head = aelf.load_model(st).head.state_dict()
    aelfs_head = aelf.load_model(aelfs).head.state_dict()
    assert all(torch.equal(st_head[k], aelfs_head[k]) for k in st_head), "AELFs keeps W from the ST run"
    done = run_cli("eval", str(aelfs), "--no-progress", "--set", "eval.attack.n_steps=1")
    assert "| AELFs (measured) |" in done.stdout
    if importlib.util.find_spec("tensorboard") is not None:  # training curves for TensorBoard, one file per run
        assert list((aelfs / "tensorboard").glob("events.out.tfevents.*"))


def test_bad_input_is_one_line_without_traceback(tmp_path):
    done = run_cli("train", "--dataset", "nope", "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "unknown dataset 'nope'" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "nope"], "unknown dataset"),
        (["--method", "nope"], "unknown method"),
        (["--model", "nope"], "unknown model"),
        (["--method", "at", "--set", "method.attack.eps=-0.1"], "eps must be >= 0"),
        (["--method", "at", "--set", "method.attack.n_steps=0"], "n_steps must be at least 1"),
        (["--method", "jt", "--set", "method.lambda_nat=1.2"], "lambda_nat must be in [0, 1]"),
        (["--method", "aelfs"], "--init RUN"),
        (["--dataset", "fashion-mnist", "--set", "data.root=/no/such/folder"], "data folder not found"),
        (["--dataset", "mnist"], "needs a folder"),
        (["--config", "/no/such.yaml"], "config file not found"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--bogus-flag"], "unrecognized arguments"),
        (["--set", "data.train_limit=20"], "exceeds the 20 training images: give --set train.batch_size=20"),
    ],
)
def test_bad_input_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", *TINY_SETS, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelf: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_overwrite_never_empties_a_folder_that_is_not_a_run(tmp_path, capsys):
    """--overwrite replaces an aelf run folder only: a project folder keeps every file, and the refused command
    writes nothing into it (no .lock either)."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "thesis.txt").write_text("four years of work")
    (project / "src" / "main.py").write_text("print('hi')")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    for extra in ([], ["--overwrite"], ["--resume-if-exists"]):
        code = main(["train", "--out", str(project), "--epochs", "1", "--no-progress", *TINY_SETS, *extra])
        err = capsys.readouterr().err
        assert code == 2, extra
        assert err.startswith("aelf: error:") and err.count("\n") == 1 and "not an aelf run folder" in err
        assert "--overwrite" not in err, "the error must not suggest emptying the folder"
        assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before, "nothing written or removed"
    assert (project / "thesis.txt").read_text() == "four years of work"


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--resume-if-exists"]])
def test_out_naming_a_file_is_one_error_before_anything_is_written(tmp_path, capsys, extra):
    """--out FILE once took the lock first and ended in a FileExistsError traceback."""
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    for out, phrase in ((target, f"{target} exists and is not a folder"), (target / "run", f"{target} exists")):
        code = main(["train", "--out", str(out), "--epochs", "1", "--no-progress", *TINY_SETS, *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("aelf: error:") and err.count("\n") == 1 and phrase in err
        assert target.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [target]


def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress", *TINY_SETS]) == 0
    (out / "eval.json").write_text("{}")  # a file of the old run
    assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress", *TINY_SETS]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "eval.json").is_file()
    assert main(["train", "--out", str(out), "--epochs", "1", "--overwrite", "--no-progress", *TINY_SETS]) == 0
    assert not (out / "eval.json").exists() and (out / "model.safetensors").is_file()


def test_eval_of_missing_or_unfinished_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "none")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CONFIG).write_text(json.dumps({"method": {"name": "st"}}))
    assert main(["eval", str(tmp_path / "half")]) == 2
    assert "training has not finished" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    assert main(["eval", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'}: not an aelf run folder" in err and "file not found" not in err


def test_eval_of_a_run_still_training_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps({"method": {"name": "st"}}))
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / ".lock").write_text(f"{writer.pid}\n")  # what a training process keeps while it writes the run
        assert main(["eval", str(run)]) == 2
        assert f"{run}: still training (process {writer.pid} is writing it)" in capsys.readouterr().err
    finally:
        writer.kill()
        writer.wait()
    assert main(["eval", str(run)]) == 2  # a lock file left by a dead process: the run just has not finished
    assert "training has not finished" in capsys.readouterr().err


def test_load_model_round_trip(trained_st_run):
    model = aelf.load_model(trained_st_run)
    assert not model.training
    x, y = aelf.load_dataset(trained_st_run, "test")
    assert x.shape[1:] == (1, 32, 32) and len(x) == 200
    again = aelf.load_model(trained_st_run)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    from aelf.core.checkpoint import read_weights

    saved = read_weights(trained_st_run / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    feats = model.forward_features(x[:4])
    assert torch.allclose(model.forward_head(feats), model(x[:4]))
    assert aelf.accuracy(model, x, y) > 60.0


def test_ratio_sets_both_loss_weights(tmp_path, capsys):
    out = tmp_path / "jt"
    args = ["train", "--method", "jt", "--ratio", "0.4:0.6", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main([*args, *TINY_SETS, *TINY_ATTACK]) == 0
    method = json.loads((out / CONFIG).read_text())["method"]
    assert (method["lambda_nat"], method["lambda_adv"]) == (0.4, 0.6)
    assert main(["train", "--method", "jt", "--ratio", "0.4:0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "must be 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_train_help_names_every_dataset_model_and_method():
    from aelf.apps.parser import build_parser
    from aelf.core.data.datasets import DATASETS
    from aelf.core.methods import METHODS
    from aelf.core.models import MODELS

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {action.dest: action.help for action in train._actions}
    for dest, names in (("dataset", DATASETS), ("model", MODELS), ("method", METHODS)):
        names_part = helps[dest].split(":", 1)[1].split("(default")[0]
        listed = {name.strip() for name in names_part.split(",")}
        assert listed == set(names), (dest, listed)


def test_top_level_help_loads_no_torch_and_lists_what_every_command_says():
    """aelf --help took about 5 s, all of it importing torch for a text that needs none of it."""
    code = (
        "import sys\nfrom aelf.apps.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "usage: aelf" in done.stdout and done.stdout.strip().endswith("torch loaded: False"), done.stderr
    assert commands_parser().format_help() == build_parser().format_help(), "the same commands and lines"


COMMANDS = ["train", "eval", "check", "curves", "demo", "reproduce", "claims", "attention", "report", "card"]


@pytest.mark.parametrize("argv", [["--help"], *[[command, "--help"] for command in COMMANDS]])
def test_every_help_page_prints(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0 and "usage: aelf" in capsys.readouterr().out


def test_a_finished_run_is_extended_with_more_epochs_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress", *TINY_SETS]) == 0
    weights = (out / "model.safetensors").read_bytes()
    for extra, phrase in (
        (["--set", "train.lr=0.5"], "only more epochs"),
        (["--set", "train.epochs=3", "--set", "train.lr=0.5"], "only more epochs"),
        (["--method", "at"], "only more epochs"),
    ):
        assert main(["train", "--resume", str(out), "--no-progress", *extra]) == 2
        assert phrase in capsys.readouterr().err
    (out / "config.json").write_text((out / "config.json").read_text().replace('"epochs": 1', '"epochs": 2'))
    assert main(["train", "--resume", str(out), "--no-progress", "--epochs", "1"]) == 2
    assert "train.epochs can only grow when a run continues (2 -> 1)" in capsys.readouterr().err
    (out / "config.json").write_text((out / "config.json").read_text().replace('"epochs": 2', '"epochs": 1'))
    assert (out / "model.safetensors").read_bytes() == weights, "refused: nothing changed"

    assert main(["train", "--resume", str(out), "--no-progress", "--set", "train.epochs=3"]) == 0
    assert f"resuming {out} from step 2 of 6 (epoch 2 of 3, step-00000002)" in capsys.readouterr().out
    assert [row["epoch"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert json.loads((out / CONFIG).read_text())["train"]["epochs"] == 3
    extended = json.loads((out / "meta.json").read_text())["extended"]
    assert len(extended) == 1 and extended[0]["epochs"] == [1, 3] and extended[0]["at_step"] == 2
