"""Do the joint methods' BatchNorm statistics explain their larger PGD - AutoAttack gap? (issue 14)

JT and AELFs train on batches that are half natural, half adversarial, so their BatchNorm running statistics
average the two distributions, while AT's come from adversarial batches only. If the mixed statistics are why the
joint methods lose more under AutoAttack than under the paper's PGD, recomputing them from adversarial examples
alone should raise the joint methods' AutoAttack accuracy and shrink their gap, and leave AT (the control: its
statistics are adversarial already) where it was.

    aelf reproduce bn-gap --preset medium --seeds 8,9,10    # studies/bn-gap
    aelf reproduce bn-gap --seeds 8,9,10                    # table2's quick settings: studies/bn-gap-quick

The runs are table2's with the same preset and seed (finished ones in ``studies/table2-PRESET/seed-N`` are copied,
not trained again). Each of AT, JT and AELFs is measured twice on the same test images:

- as trained (``at``, ``jt``, ``aelfs``): the run's own weights and running statistics;
- with adversarial statistics (``at-bn``, ``jt-bn``, ``aelfs-bn``): the same weights, every BatchNorm's running mean
  and variance recomputed (a cumulative average) from the run's training images attacked by its own training attack,
  the examples made against the model as trained (eval mode).

Each is measured natural, under the paper's PGD(0.3, 16, 0.02) and under AutoAttack (APGD-CE + APGD-T, version
``quick``) on the first 200 test images; every ``-bn`` row is compared with its run as trained, paired over seeds and
images, and the change of the PGD - AutoAttack gap gets its own interval.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from aelf.core.data.loader import eval_batches
from aelf.core.errors import ConfigError
from aelf.core.modes import training
from aelf.core.run import OpenRun, load_dataset
from aelf.workflows.evaluation import stats
from aelf.workflows.reproduction import evidence, paper_experiments
from aelf.workflows.reproduction.evidence import AUTOATTACK
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Experiment, Run, register_experiment

VARIANT = "adversarial_bn"
METHODS = {"at": "AT", "jt": "JT", "aelfs": "AELFs"}
AA_IMAGES = 200
PGD_COLUMN = "A*"


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recompute_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch_size: int) -> None:
    """Every BatchNorm's running mean and variance recomputed from ``x`` attacked by ``attack`` (against the model
    as it is, which must be in eval mode), as a cumulative average over the batches; weights are not touched."""
    norms = batch_norms(model)
    if not norms:
        raise ConfigError("the model has no BatchNorm layer: there are no statistics to recompute")
    attacked = [attack(model, xb, yb) for xb, yb in eval_batches(x, y, batch_size)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    with training(model), torch.no_grad():
        for xb in attacked:
            model(xb)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def adversarial_statistics(run: OpenRun) -> None:
    """The evaluation variant: the open run's BatchNorm statistics recomputed from its training images under its
    own training attack."""
    x, y = load_dataset(run.run_dir, "train")
    attack = getattr(run.config.method, "attack", None)  # the methods that train on adversarial images have one
    recompute_statistics(run.model, x.to(run.device), y.to(run.device), attack, run.config.eval.batch_size)


def runs() -> tuple[Run, ...]:
    """table2's runs, then each adversarial method's weights with adversarial statistics."""
    variants = tuple(
        Run(f"{key}-bn", f"{label}, adversarial BN statistics", {}, of=key, evaluation=VARIANT)
        for key, label in METHODS.items()
    )
    return (*EXPERIMENTS["table2"].runs, *variants)


def preset(name: str):
    """table2's preset, tested natural, with the paper's PGD and with AutoAttack on the first AA_IMAGES images."""
    base = EXPERIMENTS["table2"].presets[name]
    return replace(
        base,
        test_attacks={PGD_COLUMN: paper_experiments.MNIST_PGD},
        autoattack="quick",
        autoattack_examples=AA_IMAGES,
        note=f"the runs of table2 --preset {name} ({base.note}); tested here on N only: natural, PGD and "
        f"AutoAttack on the first {AA_IMAGES} test images",
    )


# ----------------------------------------------------------------------------------------------------------------------
# The study's analysis: the change of the PGD - AutoAttack gap


def gap_change(per_seed: dict, seeds: list[int], key: str) -> stats.Comparison:
    """The gap (PGD minus AutoAttack, per image, on AutoAttack's images) with adversarial statistics minus the gap
    as trained, in points, paired over seeds and images."""
    gaps = {}
    for run in (f"{key}-bn", key):
        aa = evidence.outcomes(per_seed[run], seeds, (AUTOATTACK,)).astype(float)
        pgd = evidence.outcomes(per_seed[run], seeds, (PGD_COLUMN,))[:, : aa.shape[1]].astype(float)
        gaps[run] = 100 * (pgd - aa)
    return stats.paired_mean_difference(gaps[f"{key}-bn"], gaps[key])


def summary(document: dict, plans: dict, out: Path) -> tuple[dict, str]:
    """``Experiment.summary``: per method, adversarial statistics minus as trained on every column and on the gap
    (``document["bn_gap"]``), as a Markdown table."""
    seeds, per_seed = document["seeds"], document["per_seed"]
    found: dict = {}
    for key in METHODS:
        change = {
            column: document["comparisons"][f"{key}-bn"][column] for column in document["comparisons"][f"{key}-bn"]
        }
        if AUTOATTACK in per_seed[key][str(seeds[0])]["per_image"]:
            gap = gap_change(per_seed, seeds, key)
            change["gap"] = evidence.as_record(gap, text=gap.format(1))
        found[key] = change
    columns = list(next(iter(found.values())))
    lines = [
        "## Adversarial BatchNorm statistics minus as trained",
        "",
        "Paired over seeds and images, in points (95% interval); gap: PGD minus AutoAttack on AutoAttack's images.",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key, change in found.items():
        lines.append(f"| {METHODS[key]} | " + " | ".join(change[c]["text"] for c in columns) + " |")
    return {"bn_gap": found}, "\n".join(lines) + "\n"


EXPERIMENT = register_experiment(
    Experiment(
        name="bn-gap",
        title="BatchNorm statistics and the PGD - AutoAttack gap of AT, JT and AELFs (table2's settings)",
        kind="robust",
        dataset="mnist",
        runs=runs(),
        presets={name: preset(name) for name in ("medium", "quick")},
        paper_rows={},
        paper_label="",
        evaluations={VARIANT: adversarial_statistics},
        reuse_runs_from={"quick": "studies/table2-quick", "medium": "studies/table2-medium"},
        folders={"medium": "studies/bn-gap", "quick": "studies/bn-gap-quick"},
        summary=summary,
    )
)
