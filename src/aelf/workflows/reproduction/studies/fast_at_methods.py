"""``fast-at-methods``: single-step training of AT, JT and AELFs with the anchor's attack, on CNNb (issue 28, item 6).

    aelf reproduce fast-at-methods --seeds 8,9,10    # studies/fast-at-methods

The anchor study (``fast-at-anchor``) ran Wong et al.'s MNIST recipe; at its 6,000 steps most of its fgsm_rs runs
became robust and some collapsed, by seed, with neither the random start (clipped to [0, 1] or not) nor the step
shown to decide which. What can transfer to CNNb at the size of ``aelf reproduce table2 --preset quick`` (CNNb width
0.25 with BatchNorm, 8 epochs of SGD, 248 steps) is the recipe's attack, as its authors ran it (the start unclipped),
and its optimiser; its 6,000 steps cannot (PGD training of every method would take 24 times longer). The runs keep
the preset's steps, so each method's PGD run is table2's own (copied, not trained again):

- ``METHOD-pgd``: table2's run (the preset's PGD(0.3, 8, 0.04)); ``st``: the start of every AELFs run;
- ``METHOD-fgsm_rs``: fgsm_rs at eps 0.3, step 1.25 eps, unclipped start (the anchor's attack);
- ``METHOD-n_fgsm``: n_fgsm (noise 2 eps, step eps, not projected), unclipped start;
- for AT, one part changed at a time from ``at-fgsm_rs``: the start clipped (aelf's default: the start's effect on
  this network, paired); and the anchor's optimiser and schedule (Adam, lr 5e-3, triangular cyclic, no weight decay)
  in place of the preset's SGD;
- for each method, ``METHOD-fgsm_rs-train``: the attack crafted with BatchNorm in train mode (``method.attack_mode:
  train``, batch statistics, as the anchor's CIFAR scripts): BatchNorm, which the anchor's network does not have,
  as a cause of collapse.

Tested as ``fast-at``: natural, PGD(0.3, 16, 0.02), FGSM(0.3) and
AutoAttack (quick) on the first 500 test digits, each single-step run against its method's PGD run, paired, with
training times from steps timed in turns.
"""

from __future__ import annotations

from dataclasses import replace

from aelf.workflows.reproduction.experiment import Experiment, Run, register_experiment
from aelf.workflows.reproduction.studies import fast_at

# No eps: every training attack takes the preset's (0.3 on the digits), as table2's PGD runs do.
UNCLIPPED = {"clip_start": False}
ATTACKS = {
    "pgd": None,
    "fgsm_rs": {"name": "fgsm_rs", **UNCLIPPED},
    "n_fgsm": {"name": "n_fgsm", **UNCLIPPED},
}
ANCHOR_OPTIMISER = {"optimizer": "adam", "lr": 5e-3, "schedule": "cyclic", "weight_decay": 0.0, "lr_milestones": []}


def variant(name: str, key: str, label: str, attack: dict, **settings) -> Run:
    """Method ``name`` with fgsm_rs changed in one part from the anchor's attack, compared with its PGD run."""
    spec = {"name": name, "attack": {"name": "fgsm_rs", **attack}, **settings.pop("method", {})}
    return fast_at.method_run(name, key, label, {"method": spec, **settings})


TRAIN_MODE = {"method": {"attack_mode": "train"}}
RUNS = (
    *fast_at.runs(("at", "jt", "aelfs"), ATTACKS),
    variant("at", "at-fgsm_rs-clip", "AT fgsm_rs, clipped start", {"clip_start": True}),
    variant("at", "at-fgsm_rs-train", "AT fgsm_rs, crafted in train mode", UNCLIPPED, **TRAIN_MODE),
    variant("at", "at-fgsm_rs-adam", "AT fgsm_rs, Adam cyclic", UNCLIPPED, train=ANCHOR_OPTIMISER),
    variant("jt", "jt-fgsm_rs-train", "JT fgsm_rs, crafted in train mode", UNCLIPPED, **TRAIN_MODE),
    variant("aelfs", "aelfs-fgsm_rs-train", "AELFs fgsm_rs, crafted in train mode", UNCLIPPED, **TRAIN_MODE),
)

QUICK = fast_at.preset("quick")
PRESET = replace(QUICK, note=f"{QUICK.note}; single-step runs with the anchor's unclipped random start")

EXPERIMENT = register_experiment(
    Experiment(
        name="fast-at-methods",
        title="Single-step training of AT, JT and AELFs with the anchor's attack (unclipped start), on CNNb",
        kind="robust",
        dataset="mnist",
        runs=RUNS,
        presets={"quick": PRESET},
        paper_rows={},
        paper_label="",
        figure=fast_at.figure,
        baseline="at-pgd",
        # table2's runs: the ablation's folder keeps every seed's (table2's own keeps only its results file for some).
        reuse_runs_from={"quick": ("studies/table2-quick", "studies/ablation-quick")},
        folders={"quick": "studies/fast-at-methods"},
        summary=fast_at.summary_of(RUNS),
    )
)
