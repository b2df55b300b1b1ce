"""``aelf reproduce NAME``: every table and figure of the paper from one command.

An :class:`Experiment` is a list of runs (each a config layer over the preset, optionally starting from another run
of the same experiment, as AELFs starts from ST), the attacks it is tested with, and the paper's numbers. Two
presets per experiment:

- ``paper``: the settings of Appendix C and of the experiment's section, meant for a GPU;
- ``quick``: the same runs scaled down to finish in minutes on a 2-core CPU on the embedded ``mnist5k`` digits.

``--dataset`` swaps in other data that is present. When an experiment of the paper's CIFAR family runs on an
MNIST-family dataset (or the other way round), its attacks are rescaled to that family's budget (eps 0.3 on MNIST,
0.031 on CIFAR: eps and step sizes times 0.3/0.031) and the output says so.

Runs that finished in the output folder are reused, stopped ones resumed, so a long reproduction can be stopped and
continued. Evaluations are cached in each run folder (``reproduce-eval.json``) as long as the test attacks are the
same. A seed whose run folders are absent takes its results from ``OUT/results.json`` when that file was written with
the same settings, and a study can copy another study's finished runs (:mod:`aelf.workflows.reproduction.reuse`).
The research studies beyond the paper (:mod:`aelf.workflows.reproduction.studies`) are experiments too, with their
own presets and folders; what an experiment may declare is listed in :mod:`aelf.workflows.reproduction.experiment`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from aelf.core import distributed
from aelf.core.accuracy import correct_mask, percent
from aelf.core.attacks import FGSM, PGD
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.best import check_choice
from aelf.core.config import Config, make_config, to_dict
from aelf.core.config_text import parse_override
from aelf.core.data import load_dataset
from aelf.core.data.datasets import DATASETS, dataset_info
from aelf.core.errors import ConfigError
from aelf.core.fileio import read_cached, write_cached
from aelf.core.run import open_run
from aelf.core.run_folder import CONFIG, REPRODUCE_EVAL, WEIGHTS
from aelf.core.train import train
from aelf.workflows.attention.metrics import attention_per_image, summarize
from aelf.workflows.evaluation.evaluate import each_set, shift_outcomes
from aelf.workflows.evaluation.per_image import encode_bits
from aelf.workflows.reproduction import (
    evidence,
    paper_experiments,  # noqa: F401  (registers the paper's experiments)
    reuse,
    studies,  # noqa: F401  (registers the research studies)
    timing,
)
from aelf.workflows.reproduction.evidence import AUTOATTACK
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Plan, Run
from aelf.workflows.reproduction.outputs import write_outputs
from aelf.workflows.reproduction.tables import attack_label

# Bumped whenever a preset below changes what it trains or tests; written into every results.json, so that numbers
# are never compared across preset definitions unknowingly.
PRESET_VERSION = 1
EVAL_CACHE = REPRODUCE_EVAL  # cached measurements, in the run folder
ATTENTION_VERSION = 1  # part of the evaluation cache key: bump when the attention metrics change
PER_IMAGE_VERSION = 1  # part of the evaluation cache key: results carry per-image outcomes (intervals, pairs)


def family(dataset: str) -> str:
    return dataset_info(dataset).family.name


def family_eps(dataset: str) -> float:
    return dataset_info(dataset).family.attack.eps


# ----------------------------------------------------------------------------------------------------------------------
# Planning: every config is built and checked before any work starts


def scaled_attack(spec: dict, from_dataset: str, to_dataset: str) -> dict:
    """``spec`` (in units of ``from_dataset``'s family) moved to ``to_dataset``'s eps budget, if the family differs
    (its eps and step size, where it has them)."""
    factor = family_eps(to_dataset) / family_eps(from_dataset)
    if factor == 1.0:
        return dict(spec)
    return {**spec, **{k: round(spec[k] * factor, 4) for k in ("eps", "step_size") if spec.get(k) is not None}}


# Test attacks by name (a spec without one is PGD): the columns an experiment's preset may ask for.
TEST_ATTACKS = {"pgd": PGD, "fgsm": FGSM}


def make_test_attack(spec: dict):
    """The attack of a ``Preset.test_attacks`` entry."""
    settings = dict(spec)
    name = settings.pop("name", "pgd")
    if name not in TEST_ATTACKS:
        raise ConfigError(f"unknown test attack {name!r} (choose from: {', '.join(TEST_ATTACKS)})")
    return TEST_ATTACKS[name](**settings)


def attack_settings(attack) -> dict:
    """A test attack as results files and caches record it (PGD without its name, as it always was)."""
    return vars(attack) if isinstance(attack, PGD) else {"name": type(attack).__name__.lower(), **vars(attack)}


def plan(
    name: str,
    preset: str = "quick",
    out: str | Path = ".",
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> Plan:
    """The validated configs of every run (ConfigError before anything is trained or written)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r} (choose from: {', '.join(EXPERIMENTS)}; see --list)")
    experiment = EXPERIMENTS[name]
    if preset not in experiment.presets:
        raise ConfigError(f"unknown preset {preset!r} (choose from: {', '.join(experiment.presets)})")
    chosen = experiment.presets[preset]
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} (choose from: {', '.join(DATASETS)})")
    override_layers = [parse_override(text) for text in overrides]
    for layer in override_layers:
        if "method" in layer:
            raise ConfigError("aelf reproduce takes no method.* settings: each run's method is part of the experiment")
    dataset = dataset or chosen.settings["data"]["name"]
    notes = [f"preset {preset} (version {PRESET_VERSION}): {chosen.note}"]
    if dataset != chosen.settings["data"]["name"]:
        notes.append(f"--dataset {dataset} replaces {chosen.settings['data']['name']}")
    if family(dataset) != family(experiment.dataset):
        budget = family_eps(dataset)
        factor = budget / family_eps(experiment.dataset)
        notes.append(
            f"the paper ran this on {experiment.dataset}; on {dataset} the attacks are rescaled to eps {budget} "
            f"(eps and step sizes x{factor:.3g})"
        )
    train_attack = scaled_attack(chosen.attack, experiment.dataset, dataset)
    try:
        test_attacks = {
            label: make_test_attack(scaled_attack(spec, experiment.dataset, dataset))
            for label, spec in chosen.test_attacks.items()
        }
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{name} --preset {preset}: test attacks: {err}") from None
    runs = {run.key: run for run in experiment.runs}
    configs: dict[str, Config] = {}
    for run in runs.values():
        if run.of is not None:  # it evaluates another run's weights: that run's config
            configs[run.key] = configs[run.of]
            continue
        layers = [chosen.settings]
        if run.method == "st":
            layers.append(chosen.st_settings)
        layers.append(run.settings)
        if run.method != "st":
            layers.append({"method": {"attack": run_attack(run, train_attack, experiment.dataset, dataset)}})
        layers.append({"method": chosen.method_settings.get(run.method, {})})
        layers.append({"data": {"name": dataset, **({"root": data_root} if data_root else {})}})
        layers.append({"train": {"device": device}})
        if run.init:
            layers.append({"train": {"init": str(Path(out) / run.init)}})
        layers += override_layers
        try:
            configs[run.key] = make_config(*layers)
        except ConfigError as err:
            raise ConfigError(f"{name}/{run.key}: {err}") from None
    first_attack = next(iter(test_attacks.values()))
    autoattack = AutoAttack(eps=first_attack.eps, norm="Linf", version=chosen.autoattack)
    labels = {k: r.label for k, r in runs.items()}
    return Plan(
        experiment, preset, dataset, configs, labels, test_attacks, tuple(notes), autoattack, chosen.autoattack_examples
    )


def run_attack(run: Run, train_attack: dict, paper_dataset: str, dataset: str) -> dict:
    """The training attack of a non-ST run: the preset's (``train_attack``, already rescaled), or the run's own
    ``method.attack`` rescaled like it, with the preset's eps where the run gives none."""
    own = run.settings["method"].get("attack")
    if own is None:
        return train_attack
    return {"eps": train_attack["eps"], **scaled_attack(own, paper_dataset, dataset)}


def default_out(name: str, preset: str) -> Path:
    """The experiment's own folder for ``preset`` (``Experiment.folders``), else ``runs/reproduce/NAME-PRESET``."""
    experiment = EXPERIMENTS.get(name)
    if experiment is not None and preset in experiment.folders:
        return Path(experiment.folders[preset])
    return Path("runs/reproduce") / f"{name}-{preset}"


def seed_folder(out: Path, seed: int) -> Path:
    """Where ``--seeds`` puts the runs of one seed."""
    return out / f"seed-{seed}"


def seed_overrides(overrides: Sequence[str], seed: int) -> list[str]:
    return [*overrides, f"train.seed={seed}"]


def run_config_yaml(
    name: str,
    run: str,
    preset: str = "quick",
    out: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> str:
    """One run's resolved settings in an experiment, as YAML that ``aelf train --config`` reads back; ``seed``: the
    run of that seed as ``reproduce(..., seeds=[..., seed, ...])`` trains it (its folder, its ``init``)."""
    out = Path(out or default_out(name, preset))
    if seed is not None:
        out, overrides = seed_folder(out, seed), seed_overrides(overrides, seed)
    the_plan = plan(name, preset, out, dataset, data_root, overrides)
    if run not in the_plan.configs:
        raise ConfigError(f"{name} has no run {run!r} (choose from: {', '.join(the_plan.configs)})")
    return yaml.safe_dump(to_dict(the_plan.configs[run]), sort_keys=False)


# ----------------------------------------------------------------------------------------------------------------------
# Running


def train_or_reuse(config: Config, run_dir: Path, progress: bool, log=print) -> bool:
    """Train ``run_dir`` from ``config``; reuse it if finished, resume it if stopped (its saved settings win). Returns
    whether it trained."""
    if (run_dir / WEIGHTS).is_file():
        log(f"{run_dir.name}: reusing the finished run in {run_dir}")
        return False
    resume = (run_dir / CONFIG).is_file()
    log(f"{run_dir.name}: {'resuming' if resume else 'training'} {run_dir}")
    train(None if resume else config, run_dir, resume=resume, progress=progress)
    return True


def eval_cache(evaluation: str | None = None) -> str:
    """The file a run folder caches its evaluation in (one per evaluation variant)."""
    return EVAL_CACHE if evaluation is None else f"reproduce-eval-{evaluation}.json"


def evaluation_key(plan_: Plan, weights: str = "last", evaluation: str | None = None) -> dict:
    """What a run's evaluation depends on: the key of its cache, and what a results file records to be reused."""
    return {
        **({"evaluation": evaluation} if evaluation else {}),
        "kind": plan_.experiment.kind,
        "test_attacks": {label: attack_settings(attack) for label, attack in plan_.test_attacks.items()},
        "attention": ATTENTION_VERSION,
        "per_image": PER_IMAGE_VERSION,
        "autoattack": vars(plan_.autoattack) if plan_.autoattack else None,
        "autoattack_examples": plan_.autoattack_examples,
        **({"weights": weights} if weights != "last" else {}),  # caches of the last weights stay valid
    }


def run_results(
    plan_: Plan,
    run_dir: Path,
    device: torch.device,
    progress: bool,
    context: distributed.Context = distributed.SINGLE,
    weights: str = "last",
    evaluation: str | None = None,
) -> tuple[dict, bool]:
    """The run's results on the experiment's test sets and attacks, from ``reproduce-eval.json`` when still valid,
    and whether they were measured now; ``weights``: the run's ``last`` (default) or ``best`` weights;
    ``evaluation``: a variant of the experiment (``Experiment.evaluations``) that changes the model before it is
    measured, cached in a file of its own."""
    key = evaluation_key(plan_, weights, evaluation)
    cached = read_cached(run_dir / eval_cache(evaluation), key)
    if cached is not None:
        return cached, False
    start = time.perf_counter()
    with open_run(run_dir, device, weights=weights) as run:
        if evaluation is not None:
            plan_.experiment.evaluations[evaluation](run)
        result = measure_run(plan_, run.model, run.x, run.y, run.config, progress, context)
    if context.is_main:
        write_cached(run_dir / eval_cache(evaluation), key, result, seconds=round(time.perf_counter() - start, 1))
    return result, True


def measure_run(plan_: Plan, model, x, y, config, progress: bool, context: distributed.Context) -> dict:
    """The measurements of one run of an experiment: shifted test sets (with attention metrics) or attacks, then
    AutoAttack when the preset has it; each accuracy with its per-image outcomes under ``per_image``."""
    batch = config.eval.batch_size
    result: dict[str, Any]
    per_image: dict[str, Any]
    masks: dict[str, Any]
    if plan_.experiment.kind == "shift":
        (attack,) = plan_.test_attacks.values()
        masks = shift_outcomes(model, x, y, attack, config.eval.shift_pixels, batch, progress, context)
        result, per_image = each_set(percent, masks), each_set(encode_bits, masks)
        # The paper's argument is about attention on MNIST: measure it next to the accuracies.
        values, zero = attention_per_image(model, x, y, context=context)
        result["attention"] = summarize(values, zero)
        per_image["attention"] = {"mass_90": [round(v, 6) for v in values["mass_90"].tolist()]}
    else:
        masks = {"natural": correct_mask(model, x, y, None, batch, context)}
        for label, attack in plan_.test_attacks.items():
            masks[label] = correct_mask(model, x, y, attack, batch, context)
        result = {label: percent(mask) for label, mask in masks.items()}
        per_image = {label: encode_bits(mask) for label, mask in masks.items()}
    # Every claim under AutoAttack too (on N for the shift study), next to the paper's PGD.
    if plan_.autoattack is not None:
        n_aa = plan_.autoattack_examples or len(y)
        mask = correct_mask(model, x[:n_aa], y[:n_aa], plan_.autoattack, batch, context)
        result[AUTOATTACK], per_image[AUTOATTACK] = percent(mask), encode_bits(mask)
    result["per_image"] = per_image
    return result


def reproduce(
    name: str,
    preset: str = "quick",
    out: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    progress: bool = True,
    table_name: str = "results",
    log=print,
    autoattack: bool = True,
    seeds: Sequence[int] | None = None,
    weights: str = "last",
) -> dict:
    """Train (or reuse, or resume) and evaluate every run of experiment ``name``; write ``OUT/{table_name}.md``,
    ``.json`` and, for figures, ``OUT/NAME.png``. Returns the JSON document.

    ``seeds``: train every run once per seed (``train.seed``), into ``OUT/seed-N/KEY``; the tables then show the mean
    over seeds with 95% intervals, and every run is compared with AT paired over the same seeds and test images.
    Without it each run trains once with the preset's seed, into ``OUT/KEY``. ``weights``: evaluate each run's
    ``last`` (default) or ``best`` weights (``best`` needs runs trained with train.val_size > 0).
    """
    out = Path(out or default_out(name, preset))
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError(f"--seeds expects distinct non-negative whole numbers (got {seeds})")
    plans = {}
    if seeds is None:
        the_plan = plan(name, preset, out, dataset, data_root, overrides, device)
        plans[next(iter(the_plan.configs.values())).train.seed] = (the_plan, out)
    else:
        for seed in seeds:
            folder = seed_folder(out, seed)
            plans[seed] = (
                plan(name, preset, folder, dataset, data_root, seed_overrides(overrides, seed), device),
                folder,
            )
    if not autoattack:
        plans = {seed: (replace(p, autoattack=None), folder) for seed, (p, folder) in plans.items()}
    the_plan = next(iter(plans.values()))[0]
    check_choice(weights)
    if weights == "best" and not all(config.train.val_size for config in the_plan.configs.values()):
        raise ConfigError(
            "--weights best evaluates the weights kept by robust validation: train the runs with it "
            "(--set train.val_size=N)"
        )
    context, target = distributed.setup(device)  # under torchrun: every run trained and evaluated by all ranks
    # Data problems (a missing CIFAR folder, a corrupt file) surface here, before any training.
    load_dataset(the_plan.dataset, "test", next(iter(the_plan.configs.values())).data.root, limit=1)
    # Read before anything is written: the results of seeds whose run folders are gone (a repository keeps only the
    # results file) are reused from it when it was written with the same settings.
    previous = reuse.previous_per_seed(out / f"{table_name}.json", results_settings(the_plan, overrides, weights), log)
    runs_computed = 0  # runs this invocation trained or measured (a rerun that reused everything did no work)
    sources = the_plan.experiment.donor_folders(preset)
    start = time.perf_counter()
    per_seed: dict[str, dict[str, dict]] = {key: {} for key in the_plan.configs}
    timings: dict[str, dict[str, dict | None]] = {key: {} for key in the_plan.configs}
    for seed, (seed_plan, folder) in plans.items():
        folder.mkdir(parents=True, exist_ok=True)
        donors = [seed_folder(Path(source), seed) if seeds is not None else Path(source) for source in sources]
        kept = reuse.reusable(previous, seed, folder, seed_plan.experiment.runs)
        for key, config in seed_plan.configs.items():
            if key in kept:
                log(f"{key}: reusing seed {seed}'s results from {out / table_name}.json (no run folder {folder / key})")
                per_seed[key][str(seed)], timings[key][str(seed)] = kept[key]["result"], kept[key]["timing"]
                continue
            run = seed_plan.runs[key]
            run_dir = folder / (run.of or key)
            trained = False
            if run.of is None:
                # The first folder holding a finished run of the same config gives it.
                for donor in donors if context.is_main else ():
                    if reuse.copy_finished_run(config, run_dir, donor, log):
                        break
                distributed.barrier(context)
                trained = train_or_reuse(config, run_dir, progress, log)
                # Rank 0 releases the run's lock after the last step; no rank opens the run before that.
                distributed.barrier(context)
            per_seed[key][str(seed)], measured = run_results(
                seed_plan, run_dir, target, progress, context, weights, run.evaluation
            )
            runs_computed += int(trained or measured)
            timings[key][str(seed)] = timing.run_timing(run_dir, eval_cache(run.evaluation), evaluates=run.of)
    seconds = round(time.perf_counter() - start, 1)
    document = render(the_plan, list(plans), per_seed, seconds, overrides, weights)
    document.update(
        timing=timings,
        recorded_seconds=timing.total_seconds(timings),
        machine=timing.machine(target),
        runs_computed=runs_computed,
    )
    if any(str(seed) in by_seed for by_seed in previous.values() for seed in plans):
        # the file continues (its results or its runs' cached evaluations): the wall time of its work stays on record
        document["earlier_invocations"] = reuse.earlier_invocations(out / f"{table_name}.json")
    section = ""
    if the_plan.experiment.summary is not None:  # a study's own analysis of the document
        entries, section = the_plan.experiment.summary(document, plans, out)
        document.update(entries)
    if context.is_main:
        log(write_outputs(the_plan, document, out, table_name, section))
    return document


def results_settings(the_plan: Plan, overrides: Sequence[str] = (), weights: str = "last") -> dict:
    """What a results file records of how it was made, and must share with a later invocation that reuses it
    (:mod:`aelf.workflows.reproduction.reuse`)."""
    return {
        "experiment": the_plan.experiment.name,
        "preset": the_plan.preset_name,
        "preset_version": PRESET_VERSION,
        "dataset": the_plan.dataset,
        "overrides": list(overrides),
        "test_attacks": {label: attack_settings(attack) for label, attack in the_plan.test_attacks.items()},
        "evaluation": evaluation_key(the_plan, weights),
    }


def render(
    the_plan: Plan,
    seeds: list[int],
    per_seed: dict,
    seconds: float,
    overrides: Sequence[str] = (),
    weights: str = "last",
) -> dict:
    """The JSON document of a reproduction: settings (``overrides``: the ``--set`` ones, which change the preset's
    scale), notes, the measured rows (mean over seeds), every seed's results with per-image outcomes, the paired
    comparisons with AT (or each run's baseline; with ``Experiment.extra_baselines``, ``comparisons_with`` too), and
    the paper's rows."""
    experiment = the_plan.experiment
    settings = results_settings(the_plan, overrides, weights)
    document = {
        "experiment": experiment.name,
        "title": experiment.title,
        **{name: settings[name] for name in ("preset", "preset_version", "dataset", "overrides")},
        "notes": [*the_plan.notes, *([f"changed with --set: {', '.join(overrides)}"] if overrides else [])],
        **{name: settings[name] for name in ("test_attacks", "evaluation")},
        "labels": the_plan.labels,
        "seeds": seeds,
        "n_test_images": evidence.n_images(next(iter(per_seed.values()))[str(seeds[0])]),
        "measured": {key: evidence.mean_result(list(runs.values())) for key, runs in per_seed.items()},
        "per_seed": per_seed,
        "paper": {key: row for key, row in experiment.paper_rows.items() if key in the_plan.labels},
        "paper_label": experiment.paper_label,
        "seconds": seconds,
    }
    baselines = {run.key: experiment.baseline_of(run) for run in experiment.runs}
    document["comparisons"] = evidence.paired_comparisons(document, experiment.kind, baselines)
    if set(baselines.values()) != {evidence.BASELINE}:
        document["baselines"] = baselines
    if experiment.extra_baselines:  # every run with each further baseline too: {baseline: {run: {column: ...}}}
        document["comparisons_with"] = {
            extra: evidence.paired_comparisons(document, experiment.kind, dict.fromkeys(per_seed, extra))
            for extra in experiment.extra_baselines
        }
    document["autoattack_gaps"] = evidence.autoattack_gaps(document, experiment.kind)
    return document


def list_experiments() -> str:
    """``aelf reproduce --list``: every experiment with its runs and both presets."""
    lines = []
    for experiment in EXPERIMENTS.values():
        lines.append(f"{experiment.name}: {experiment.title}")
        lines.append(f"  runs: {', '.join(run.key for run in experiment.runs)}")
        for preset_name, preset in experiment.presets.items():
            dataset = preset.settings["data"]["name"]
            train_text = attack_label(PGD(**scaled_attack(preset.attack, experiment.dataset, dataset)))
            attacks = ", ".join(
                f"{name} {attack_label(make_test_attack(scaled_attack(spec, experiment.dataset, dataset)))}"
                for name, spec in preset.test_attacks.items()
            )
            lines.append(f"  --preset {preset_name} ({dataset}): train attack {train_text}; test {attacks}")
            lines.append(f"    {preset.note}")
    return "\n".join(lines) + "\n"
