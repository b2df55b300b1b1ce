"""What a paper experiment is: runs, presets and the paper's numbers, and the registry of experiments.

Adding an experiment: build an :class:`Experiment` in a file of its own (the paper's are in
:mod:`aelf.workflows.reproduction.paper_experiments`) and pass it to :func:`register_experiment`; ``aelf reproduce
NAME`` then plans, trains, evaluates and tabulates it like the paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aelf.core.errors import ConfigError

KINDS = ("shift", "robust")


@dataclass(frozen=True)
class Run:
    """One trained model of an experiment: ``settings`` is a config layer over the preset's (``method`` at least)."""

    key: str
    label: str
    settings: dict
    init: str | None = None  # key of the run of this experiment it starts from (``train.init``)

    @property
    def method(self) -> str:
        return self.settings["method"]["name"]


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


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Make ``experiment`` available to ``aelf reproduce`` under its name (a name may be registered once)."""
    if experiment.name in EXPERIMENTS:
        raise ConfigError(f"an experiment named {experiment.name!r} is registered already")
    if experiment.kind not in KINDS:
        raise ConfigError(f"experiment kind must be one of {', '.join(KINDS)} (got {experiment.kind!r})")
    if not experiment.runs or not experiment.presets:
        raise ConfigError(f"experiment {experiment.name!r} needs at least one run and one preset")
    EXPERIMENTS[experiment.name] = experiment
    return experiment
