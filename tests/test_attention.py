"""Attention analysis: gradient maps, signs, captum maps, breadth metrics, the figure, the HTML report, the CLI and
the TensorBoard logger."""

import json
import logging
import math
import shutil
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelf.apps.cli import main
from aelf.apps.report import build_report, resolve_runs, training_figure
from aelf.core.errors import AelfError, ConfigError
from aelf.core.tensorboard import LOG_DIR, TensorBoardLogger
from aelf.core.validation import ADV, FGSM_ACC, NAT
from aelf.workflows.attention import metrics
from aelf.workflows.attention.figure import attention_figure, on_black, on_white, select_images
from aelf.workflows.attention.maps import (
    THRESHOLDS,
    grad_cam,
    gradient_sign_maps,
    integrated_gradients,
    last_conv_layer,
    loss_gradient,
    normalize_gradient,
    normalized_gradient,
    pixel_map,
    sign_maps,
    smoothgrad,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def linear_model(in_shape=(2, 4, 5), classes=3):
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), classes)).double()


def tiny_cnn(channels=3, classes=3):
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, classes),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Gradient maps


def test_loss_gradient_is_the_closed_form_of_a_linear_model():
    model = linear_model()
    x = torch.rand(5, 2, 4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    weight, bias = model[1].weight, model[1].bias
    with torch.no_grad():
        probabilities = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
        # logits = W x + b  =>  dCE/dx = W^T (softmax - onehot), per image
        expected = ((probabilities - F.one_hot(y, 3).double()) @ weight).reshape(x.shape)
    gradient = loss_gradient(model, x, y, batch_size=2)  # batched: 2 + 2 + 1 images
    torch.testing.assert_close(gradient, expected)
    torch.testing.assert_close(pixel_map(gradient), expected.sum(1))  # channels summed
    assert not any(p.grad is not None for p in model.parameters()), "no weight gradients are accumulated"


def test_normalisation_follows_footnote_3():
    scales = torch.tensor([1e-6, 1.0, 30.0, 1e3], dtype=torch.float64)
    gradient_map = torch.randn(4, 6, 7, dtype=torch.float64) * scales[:, None, None]
    gradient_map[3] = 0  # an all-zero gradient (a saturated softmax) stays zero, with no NaN
    normalized = normalize_gradient(gradient_map)
    for i in range(3):
        unit = gradient_map[i] / gradient_map[i].norm()  # unit l2 norm first ...
        torch.testing.assert_close(unit.norm(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(normalized[i], unit / unit.abs().max())  # ... then max |G| = 1
        assert normalized[i].abs().max().item() == 1.0 and torch.equal(normalized[i].sign(), gradient_map[i].sign())
    assert torch.equal(normalized[3], torch.zeros(6, 7, dtype=torch.float64))
    model, x = linear_model(), torch.rand(3, 2, 4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(normalized_gradient(model, x, y), normalize_gradient(loss_gradient(model, x, y).sum(1)))


def test_sign_maps_hide_exactly_the_pixels_at_or_below_each_threshold():
    values = torch.tensor([[-1.0, -0.35, -0.2, -0.15, -0.05, 0.0], [0.05, 0.1, 0.15, 0.25, 0.3, 0.9]])[None]
    signs = sign_maps(values, THRESHOLDS)
    assert signs.shape == (1, 3, 2, 6) and signs.dtype == torch.int8
    for index, threshold in enumerate(THRESHOLDS):
        shown = values.abs() > threshold
        assert torch.equal(signs[:, index] != 0, shown)
        assert torch.equal(signs[:, index][shown], values.sign()[shown].to(torch.int8))
    assert signs[0, 1, 0, 2] == 0 and signs[0, 0, 1, 1] == 0, "a value equal to the threshold is hidden"
    with pytest.raises(ConfigError, match="thresholds"):
        sign_maps(values, [-0.1])


def test_gradient_sign_maps_on_normalised_and_raw_scale():
    model, x, y = linear_model(), torch.rand(2, 2, 4, 5, dtype=torch.float64), torch.tensor([0, 1])
    raw = loss_gradient(model, x, y).sum(1)
    assert torch.equal(gradient_sign_maps(model, x, y, [0.5]), sign_maps(normalize_gradient(raw), [0.5]))
    assert torch.equal(gradient_sign_maps(model, x, y, [0.01], sign_scale="raw"), sign_maps(raw, [0.01]))
    with pytest.raises(ConfigError, match="sign_scale"):
        gradient_sign_maps(model, x, y, sign_scale="log")


# ----------------------------------------------------------------------------------------------------------------------
# captum maps


def test_captum_maps_have_the_image_shape_and_restore_modes():
    model = tiny_cnn().train()
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    assert last_conv_layer(model) is model[2]
    cam = grad_cam(model, x, y, batch_size=2)
    assert cam.shape == (5, 8, 8) and (cam >= 0).all()
    torch.testing.assert_close(grad_cam(model, x, y, layer="2"), cam)  # a layer named by the caller
    state = torch.get_rng_state()
    smooth = smoothgrad(model, x, y, n_samples=4, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state is kept"
    assert smooth.shape == (5, 8, 8) and (smooth >= 0).all()
    torch.testing.assert_close(smoothgrad(model, x, y, n_samples=4), smooth)  # seeded: reproducible
    ig = integrated_gradients(model, x, y, n_steps=64)
    assert ig.shape == (5, 8, 8)
    assert all(module.training for module in model.modules()), "every module's mode is restored"
    with torch.no_grad():  # completeness: the attributions add up to logit_y(x) - logit_y(black image)
        gap = (model.eval()(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(ig.sum((1, 2)), gap, atol=1e-3, rtol=1e-2)
    with pytest.raises(ConfigError, match="no layer named"):
        grad_cam(model, x, y, layer="nope")
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        grad_cam(linear_model((3, 8, 8)).float(), x, y)


# ----------------------------------------------------------------------------------------------------------------------
# Breadth metrics on synthetic maps


def test_metrics_of_a_uniform_map():
    uniform = torch.full((1, 10, 10), 0.37)
    assert metrics.mass_fraction(uniform, 0.5).item() == 0.5
    assert metrics.mass_fraction(uniform, 0.9).item() == 0.9
    assert metrics.entropy(uniform).item() == pytest.approx(math.log(100), abs=1e-12)
    assert metrics.normalized_entropy(uniform).item() == pytest.approx(1.0, abs=1e-12)


def test_metrics_of_a_single_pixel_map_and_a_two_pixel_map():
    single = torch.zeros(1, 10, 10)
    single[0, 3, 4] = 2.5
    assert metrics.mass_fraction(single, 0.5).item() == 0.01 and metrics.mass_fraction(single, 0.9).item() == 0.01
    assert metrics.entropy(single).item() == 0.0 and metrics.normalized_entropy(single).item() == 0.0
    two = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # q = (3/4, 1/4)
    assert metrics.mass_fraction(two, 0.5).item() == 0.25 and metrics.mass_fraction(two, 0.75).item() == 0.25
    assert metrics.mass_fraction(two, 0.9).item() == 0.5
    assert metrics.entropy(two).item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert metrics.normalized_entropy(two).item() == pytest.approx(metrics.entropy(two).item() / math.log(4))


def test_foreground_share_on_constructed_images():
    image = torch.full((1, 1, 4, 4), 0.1)
    image[0, 0, :2] = 0.9  # the top half is foreground (> 0.5)
    magnitude = torch.ones(1, 4, 4)
    magnitude[0, :2] = 3.0
    assert metrics.foreground_share(magnitude, image).item() == pytest.approx(24 / 32)
    rgb = torch.zeros(1, 3, 1, 2)
    rgb[0, :2, 0, 0] = 1.0  # mean 2/3: foreground
    rgb[0, 0, 0, 1] = 1.0  # mean 1/3: background
    assert metrics.foreground_share(torch.tensor([[[1.0, 4.0]]]), rgb).item() == pytest.approx(0.2)
    assert metrics.foreground_share(magnitude, torch.zeros(1, 1, 4, 4)).item() == 0.0
    with pytest.raises(ConfigError, match="magnitudes"):
        metrics.entropy(-magnitude)


def test_summary_leaves_out_zero_maps_and_the_report_is_json():
    magnitude = torch.zeros(3, 10, 10)
    magnitude[0] = 1.0
    magnitude[1, 0, 0] = 1.0  # magnitude[2] is all zero
    per_image = metrics.breadth(magnitude, torch.zeros(3, 1, 10, 10))
    summary = metrics.summarize(per_image, magnitude.flatten(1).amax(1) == 0)
    assert summary["n_images"] == 3 and summary["n_zero_maps"] == 1
    assert summary["mass_90"]["mean"] == pytest.approx((0.9 + 0.01) / 2)
    assert summary["entropy_normalized"]["mean"] == pytest.approx(0.5)
    assert summary["entropy_normalized"]["std"] == pytest.approx(0.5)  # population std of (1, 0)
    models = {"a": linear_model(), "b": linear_model()}
    x, y = torch.rand(4, 2, 4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    markdown, document = metrics.attention_metrics_report(models, x, y)
    assert json.loads(json.dumps(document))["models"]["a"]["n_images"] == 4
    assert document["models"]["a"] == document["models"]["b"]
    assert markdown.count("\n| a |") == 1 and "| model |" in markdown
    assert all(line.count("|") == 8 for line in markdown.splitlines() if line.startswith("|"))


# ----------------------------------------------------------------------------------------------------------------------
# Figure


def test_colours_follow_figure_2():
    values = np.array([[1.0, -1.0, 0.0]])
    assert on_black(values)[0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]  # red +, green -, black background
    assert on_white(values)[0].tolist() == [[0, 1, 0], [1, 0, 0], [1, 1, 1]]  # reversed marks on white


def test_attention_figure_writes_pngs(tmp_path):
    models = {"first": tiny_cnn(channels=1), "second": tiny_cnn(channels=1)}
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    written = attention_figure(models, x, y, tmp_path / "fig" / "attention.png", smoothgrad_samples=2, ig_steps=4)
    names = [path.name for path in written]
    assert names == [
        "attention.png",
        "attention-gradient.png",
        "attention-signs.png",
        "attention-gradcam.png",
        "attention-smoothgrad.png",
        "attention-ig.png",
    ]
    assert all(path.read_bytes().startswith(PNG_SIGNATURE) for path in written)


def test_select_images():
    y = torch.tensor([3, 0, 2, 0, 2, 1])
    assert select_images(y, images=[5, 0]) == [5, 0]
    assert select_images(y, classes=[0, 2], per_class=2) == [1, 3, 2, 4]
    with pytest.raises(ConfigError, match="out of range"):
        select_images(y, images=[6])
    with pytest.raises(ConfigError, match="class 7 has no images"):
        select_images(y, classes=[7])
    with pytest.raises(ConfigError, match="either"):
        select_images(y, images=[0], classes=[0])


# ----------------------------------------------------------------------------------------------------------------------
# Report, CLI


class CheckedHTML(HTMLParser):
    """Collects section ids and image sources; fails on an end tag that does not close the innermost open tag."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.sections: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("script", "link") or (tag != "img" and "src" in attrs):
            self.external.append(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def check_html(page: str) -> CheckedHTML:
    parser = CheckedHTML()
    parser.feed(page)
    parser.close()
    assert parser.doctype == "DOCTYPE html" and parser.open == [], parser.open
    assert {"config", "training", "accuracy", "attention"} <= set(parser.sections)
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.external == []
    return parser


@pytest.fixture
def run_copy(trained_st_run, tmp_path):
    """A private copy of the session's trained run (other tests write into the original)."""
    copy = tmp_path / "runs" / "st-copy"
    shutil.copytree(
        trained_st_run,
        copy,
        ignore=shutil.ignore_patterns("checkpoints", "eval*.json", "check.json", "attention-metrics.*", "tensorboard"),
    )
    return copy


def test_report_of_one_run_and_of_a_folder_of_runs(run_copy, tmp_path):
    page = build_report([run_copy], n_images=1, n_examples=10, device="cpu")
    check_html(page)
    assert f"not evaluated yet: run aelf eval {run_copy}" in page and "st-copy" in page
    folder = tmp_path / "study"
    for name in ("st", "second<&>"):
        shutil.copytree(run_copy, folder / name)
    (folder / "st" / "eval.json").write_text(
        json.dumps(
            {
                "natural": {s: 90.0 for s in ("N", "N(L)", "N(R)", "N(U)", "N(D)")},
                "adversarial": {s: 1.5 for s in ("N", "N(L)", "N(R)", "N(U)", "N(D)")},
                "attack": {"eps": 0.3},
            }
        )
    )
    (folder / "results.md").write_text("| a | <b>table</b> |\n")
    assert [run.name for run in resolve_runs([folder])[0]] == ["second<&>", "st"]
    page = build_report([folder], n_images=2, n_examples=10, device="cpu")
    parser = check_html(page)
    assert len(parser.images) == 2  # training curves, the attention figure of both runs
    assert "<td>90.00</td>" in page and "second&lt;&amp;&gt;" in page and "&lt;b&gt;table&lt;/b&gt;" in page
    with pytest.raises(AelfError, match="holds no run folders"):
        resolve_runs([tmp_path])


def test_cli_attention_figure_metrics_and_report(run_copy, tmp_path, capsys):
    out = tmp_path / "figure"
    assert (
        main(
            [
                "attention",
                str(run_copy),
                "--classes",
                "0,2",
                "--thresholds",
                "0.05,0.5",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (out / "attention.png").read_bytes().startswith(PNG_SIGNATURE) and (out / "attention-signs.png").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "attention",
                str(run_copy),
                "--metrics",
                "--n-examples",
                "20",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "metrics"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| st-copy |" in printed and "written:" in printed
    for folder in (tmp_path / "metrics", run_copy):
        document = json.loads((folder / metrics.JSON_FILE).read_text())
        assert document["n_examples"] == 20 and list(document["models"]) == ["st-copy"]
        assert (folder / metrics.MARKDOWN_FILE).read_text().startswith("Attention breadth")
    row = document["models"]["st-copy"]
    assert 0 < row["mass_50"]["mean"] < row["mass_90"]["mean"] <= 1 and 0 < row["entropy_normalized"]["mean"] <= 1
    report = tmp_path / "report.html"
    assert (
        main(
            ["report", str(run_copy), "--out", str(report), "--n-images", "1", "--n-examples", "10", "--device", "cpu"]
        )
        == 0
    )
    page = report.read_text()
    check_html(page)
    assert "saved attention-metrics.json" in page


@pytest.mark.parametrize(
    "args,message",
    [
        (["RUN", "--images", "0,200"], "image index 200 is out of range"),
        (["RUN", "--classes", "10"], "class 10 has no images"),
        (["NOPE", "--images", "0"], "run folder not found"),
        (["RUN", "--images", "0", "--classes", "1"], "either --images or --classes"),
        (["RUN", "--images", "a,b"], "--images expects"),
        (["RUN"], "needs --images or --classes"),
        (["RUN", "--metrics", "--n-examples", "0"], "--n-examples"),
        (["RUN", "--images", "0", "--thresholds", "-1"], "--thresholds must be >= 0"),
    ],
)
def test_cli_attention_bad_input_exit_2_and_nothing_written(run_copy, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    before = sorted(path.name for path in run_copy.iterdir())
    args = [str(run_copy) if a == "RUN" else str(tmp_path / "nope") if a == "NOPE" else a for a in args]
    assert main(["attention", *args, "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelf: error:") and message in err and err.count("\n") == 1
    assert not out.exists() and sorted(path.name for path in run_copy.iterdir()) == before


def test_cli_report_bad_input(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "holds no run folders" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------------------------------------------------
# TensorBoard


def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoardLogger(tmp_path) as logger:
        assert logger.enabled
        logger.log_epoch({"epoch": 1, "step": 10, "lr": 0.1, "loss": 2.0, "note": "text", "flag": True})
        logger.log_epoch({"epoch": 2, "step": 20, "lr": 0.01, "loss": 1.0})
    events = list((tmp_path / LOG_DIR).glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(tmp_path / LOG_DIR))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["loss", "lr"]
    assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [(1, 2.0), (2, 1.0)]


def test_tensorboard_logger_is_a_no_op_without_tensorboard(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with caplog.at_level(logging.DEBUG, logger="aelf.core.tensorboard"):
        logger = TensorBoardLogger(tmp_path)
    assert not logger.enabled
    logger.log_epoch({"epoch": 1, "loss": 2.0})
    logger.close()
    assert not (tmp_path / LOG_DIR).exists()
    assert len(caplog.records) == 1 and "tensorboard is not installed" in caplog.records[0].getMessage()


def test_every_training_plot_title_fits_its_panel(tmp_path):
    """The robust-validation title once ran past its panel (373 px over 354 px)."""
    rows = [
        {"epoch": e, "lr": 0.1, "loss": 1.0 / e, "nat_acc": 0.5, "test_nat_acc": 0.5, NAT: 0.5, ADV: 0.3, FGSM_ACC: 0.4}
        for e in (1, 2, 3)
    ]
    figure = training_figure({"run": rows}, {"run": tmp_path})
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert len(figure.axes) == 4
    for ax in figure.axes:
        assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width, ax.get_title()
