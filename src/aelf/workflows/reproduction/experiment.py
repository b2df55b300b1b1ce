"""What an experiment is: runs, presets and the paper's numbers, and the registry of experiments.

Adding an experiment: build an :class:`Experiment` in a file of its own (the paper's are in
:mod:`aelf.workflows.reproduction.paper_experiments`, the research studies one file each in
:mod:`aelf.workflows.reproduction.studies`) and pass it to :func:`register_experiment`; ``aelf reproduce NAME``
then plans, trains (reusing finished runs, resuming stopped ones), evaluates with caching and tabulates it like the
paper's, and ``--seeds`` gives every accuracy its interval and every comparison its pairing.

What a study can say beyond a paper table, each optional with a default that leaves the paper's experiments as they
are:

- a run's own training attack: ``Run.settings["method"]["attack"]`` wins over the preset's ``attack`` (a
  ``{"name": "fgsm_rs"}`` without ``eps`` gets the preset's eps; like the preset's, it is rescaled when the dataset
  family differs);
- test attacks other than PGD: a ``Preset.test_attacks`` entry with ``"name": "fgsm"`` (see ``TEST_ATTACKS`` in
  :mod:`aelf.workflows.reproduction.reproduce`); AutoAttack on every test image: ``autoattack_examples=None``;
- what each run is compared with: ``Experiment.baseline`` (default ``at``) or a run's own ``Run.baseline``; and
  with ``Experiment.extra_baselines``, every run (but ST and that run) with each of those runs too;
- an evaluation of another run's weights under a variant: ``Run(of="at", evaluation="NAME")`` trains nothing and
  measures the run ``at`` after ``Experiment.evaluations[NAME](open_run)`` changed its model (e.g. recomputed
  BatchNorm statistics), with a cache of its own;
- runs found in another study's folder: ``Experiment.reuse_runs_from[preset]`` names it (or several, searched in
  order); a finished run there (the same seed) whose resolved config is this run's (up to the folder of its
  ``train.init`` and the device) is copied instead of trained;
- its default output folder per preset (``Experiment.folders``, relative to the current folder: the repository's
  studies live under ``studies/``);
- a study's own analysis: ``Experiment.summary(document, plans, out)`` returns entries for the results document and
  a Markdown section (verdicts, time tables), and ``figure`` draws from the document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.config import Config
from aelf.core.errors import ConfigError

KINDS = ("shift", "robust")


@dataclass(frozen=True)
class Run:
    """One trained model of an experiment: ``settings`` is a config layer over the preset's (``method`` at least),
    or, with ``of``, an evaluation of another run's model (``settings`` then unused)."""

    key: str
    label: str
    settings: dict
    init: str | None = None  # key of the run of this experiment it starts from (``train.init``)
    of: str | None = None  # key of the run whose weights this one evaluates (then it trains nothing itself)
    evaluation: str | None = None  # name of an evaluation variant of the experiment (``Experiment.evaluations``)
    baseline: str | None = None  # the run it is compared with (default: the experiment's, or ``of``'s run)

    @property
    def method(self) -> str | None:
        """The method's name (None for a run that evaluates another run's weights and has no settings)."""
        return self.settings.get("method", {}).get("name")


@dataclass(frozen=True)
class Preset:
    """How every run of an experiment is trained and tested.

    ``settings``: config layer for every run; ``st_settings``: extra layer for standard-training runs (their own
    schedule, Appendix C); ``method_settings``: extra layer per method name; ``attack``: the training attack of every
    adversarial method, in the units of the experiment's paper dataset; ``test_attacks``: column label -> PGD
    settings; ``note``: how this preset differs from the paper.
    """

    settings: dict
    attack: dict
    test_attacks: dict[str, dict]
    note: str
    st_settings: dict = field(default_factory=dict)
    method_settings: dict = field(default_factory=dict)
    # The AutoAttack column (the authors' pyautoattack) at the first test attack's eps: its version and how many test
    # images (None: all). Quick presets use the cheaper APGD-CE + APGD-T subset on the first 200 images.
    autoattack: str = "standard"
    autoattack_examples: int | None = None


@dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper. ``kind``: ``shift`` (natural and adversarial accuracy on N, N(L), N(R), N(U),
    N(D), one test attack) or ``robust`` (natural accuracy and one column per test attack)."""

    name: str
    title: str
    kind: str
    dataset: str  # the dataset of the paper's experiment
    runs: tuple[Run, ...]
    presets: dict[str, Preset]
    paper_rows: dict[str, dict]
    paper_label: str
    figure: Callable[[dict, Path], None] | None = None  # draws OUT/NAME.png from the results document
    baseline: str = "at"  # every other run (but ST) is compared with this one, paired over seeds and images
    evaluations: dict[str, Callable] = field(default_factory=dict)  # variant name -> fn(open run): changes its model
    # preset -> folder (or folders, searched in order) of other studies' runs
    reuse_runs_from: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # preset -> default output folder
    summary: Callable[[dict, dict, Path], tuple[dict, str]] | None = None  # (document, plans, out) -> (entries, md)
    extra_baselines: tuple[str, ...] = ()  # further runs every run is compared with (``comparisons_with``)

    def donor_folders(self, preset: str) -> tuple[str, ...]:
        """The folders whose finished runs of ``preset`` are copied instead of trained, in the order searched."""
        found = self.reuse_runs_from.get(preset, ())
        return (found,) if isinstance(found, str) else found

    def baseline_of(self, run: Run) -> str:
        """The run key ``run`` is compared with."""
        return run.baseline or run.of or self.baseline


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Make ``experiment`` available to ``aelf reproduce`` under its name (a name may be registered once)."""
    if experiment.name in EXPERIMENTS:
        raise ConfigError(f"an experiment named {experiment.name!r} is registered already")
    if experiment.kind not in KINDS:
        raise ConfigError(f"experiment kind must be one of {', '.join(KINDS)} (got {experiment.kind!r})")
    if not experiment.runs or not experiment.presets:
        raise ConfigError(f"experiment {experiment.name!r} needs at least one run and one preset")
    keys = [run.key for run in experiment.runs]
    for run in experiment.runs:
        earlier = keys[: keys.index(run.key)]
        for what, key in (("init", run.init), ("of", run.of)):
            if key is not None and (key not in earlier or any(r.of for r in experiment.runs if r.key == key)):
                raise ConfigError(f"{experiment.name}/{run.key}: {what} {key!r} must be a trained run listed before it")
        if run.evaluation is not None and run.evaluation not in experiment.evaluations:
            raise ConfigError(f"{experiment.name}/{run.key}: no evaluation variant {run.evaluation!r}")
    for key in experiment.extra_baselines:
        if key not in keys:
            raise ConfigError(f"{experiment.name}: extra baseline {key!r} is not one of its runs")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


@dataclass(frozen=True)
class Plan:
    """An experiment resolved for one invocation (and one seed): every run's validated config and the attacks."""

    experiment: Experiment
    preset_name: str
    dataset: str
    configs: dict[str, Config]  # run key -> config, in training order
    labels: dict[str, str]
    test_attacks: dict[str, Any]  # column label -> attack (PGD, FGSM)
    notes: tuple[str, ...]
    autoattack: AutoAttack | None  # None: no AutoAttack column (--no-autoattack)
    autoattack_examples: int | None

    @property
    def runs(self) -> dict[str, Run]:
        return {run.key: run for run in self.experiment.runs}
