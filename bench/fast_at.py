"""Single-step against multi-step adversarial training (issue 17): AT and AELFs, each trained with PGD, fgsm_rs and
n_fgsm on mnist5k with the settings of ``aelf reproduce table2 --preset quick`` (or ``--preset medium``), for several
seeds.

    .venv/bin/python -m bench.fast_at --out runs/fast-at                        # seeds 8, 9, 10
    .venv/bin/python -m bench.fast_at --out runs/fast-at --seeds 8,9,10,11      # a seed more: the others are reused
    .venv/bin/python -m bench.fast_at --preset medium --out runs/fast-at-medium  # CNNb width 0.5, 10 epochs
    .venv/bin/python -m bench.fast_at --smoke --out /tmp/fast-at-smoke          # tiny, seconds (the tests)

Run from the repository root (the bench is part of the repository, not of the package).

Every run is the preset's (quick: mnist5k, CNNb width 0.25, 8 epochs with lr x0.1 after 5 and 7, batch 128, SGD;
medium: CNNb width 0.5, 10 epochs, x0.1 after 6 and 9; AELFs from an ST run of the same seed, beta 0.05); only the
training attack changes (the runs ``st``, ``at-pgd`` and ``aelfs-pgd`` are those of ``aelf reproduce table2`` with the
same preset and seed, so they can be linked from its folder instead of trained again):

- ``pgd``: the preset's PGD(0.3, 8, 0.04), no random start;
- ``fgsm_rs``: FGSM from a uniform start in the eps-ball, step 1.25 eps = 0.375, projected back onto the ball (Wong
  et al. 2020, whose MNIST runs at eps 0.3 used this alpha 0.375; their MNIST optimiser and schedule are not copied:
  every variant here keeps the preset's, so that only the attack differs);
- ``n_fgsm``: noise of half-width 2 eps = 0.6, step eps = 0.3, no projection (de Jorge et al. 2022's k = 2, alpha =
  eps). aelf's defaults for both attacks are exactly these.

MNIST at eps 0.3 is where single-step training is known to overfit catastrophically; a collapsed run shows as FGSM
accuracy far above its PGD accuracy (both are measured). Each run is tested on the 1,000 mnist5k test images:
natural, PGD(0.3, 16, 0.02) (the paper's attack), FGSM(0.3) and AutoAttack (the authors' pyautoattack through
``aelf.core.attacks.autoattack``, version ``quick`` as the quick preset uses, by default on all 1,000 images instead
of the preset's first 200: the verdict rests on a paired difference of a few points, which 200 images cannot
resolve). Training time is the sum of the trainer's ``epoch_time_s`` in the run's ``metrics.jsonl`` (each epoch's
steps and its natural test accuracy); the wall time of the training call is kept too.

Resumable: finished runs are reused, stopped ones resumed (``aelf.workflows.reproduction.reproduce.train_or_reuse``),
every run's evaluation is cached in its folder (``fast-at-eval.json``) as long as the test attacks are the same.
A change of settings (``--set``) needs a new ``--out``: runs found in the folder are reused as they are.

Writes ``OUT/fast_at.json`` (every run's numbers and per-image outcomes, the summaries and the verdicts),
``OUT/fast_at.md`` (the table and one verdict line per method) and ``OUT/fast_at.png`` (AutoAttack accuracy against
training minutes).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from aelf.apps.cli import ArgumentParser
from aelf.core.accuracy import correct_mask
from aelf.core.attacks import FGSM, FGSMRS, NFGSM, PGD
from aelf.core.attacks.autoattack import VERSIONS, AutoAttack
from aelf.core.checkpoint import WEIGHTS, read_cached, read_json, write_cached, write_json, write_text
from aelf.core.config import Config, to_dict
from aelf.core.data import dataset_info
from aelf.core.errors import AelfError, CheckpointError, ConfigError
from aelf.core.memory_format import model_memory_format
from aelf.core.modes import training
from aelf.core.run import CONFIG, METRICS, model_for, open_run
from aelf.core.train import make_optimizer, set_determinism, train_step
from aelf.workflows.evaluation.per_image import decode_bits, encode_bits
from aelf.workflows.reproduction.experiment import EXPERIMENTS
from aelf.workflows.reproduction.reproduce import plan, train_or_reuse
from bench.fast_at_summary import ATTACKS, COLUMNS, METHODS, figure, markdown, run_key, variant_rows, verdicts

EXPERIMENT = "table2"
PRESETS = ("quick", "medium")  # the quick preset, and the larger CPU study's (CNNb width 0.5, 10 epochs)
DEFAULT_SEEDS = (8, 9, 10)
EVAL_CACHE = "fast-at-eval.json"
TIMING = "fast-at-time.json"
STEP_TIMES = "step-times.json"  # the step time of every run key, measured in turns once per study folder
EVAL_VERSION = 1  # part of the evaluation cache key: bump when what an evaluation measures changes
SMOKE_OVERRIDES = (
    "data.train_limit=192",
    "data.test_limit=48",
    "model.width=0.0625",
    "train.epochs=1",
    "train.lr_milestones=[]",
    "train.batch_size=64",
)


# ----------------------------------------------------------------------------------------------------------------------
# Planning


def study_configs(
    seed: int, folder: Path, device: str, overrides: list[str], smoke: bool, preset: str = "quick"
) -> dict[str, Config]:
    """``{run key: config}`` of one seed: ST (AELFs' start) and every method x training attack, in training order."""
    base = plan(EXPERIMENT, preset, folder, overrides=[*overrides, f"train.seed={seed}"], device=device).configs
    pgd = base["at"].method.attack
    if smoke:
        pgd = replace(pgd, n_steps=2, step_size=pgd.eps / 2)
    attacks = {"pgd": pgd, "fgsm_rs": FGSMRS(eps=pgd.eps), "n_fgsm": NFGSM(eps=pgd.eps)}
    configs = {"st": base["st"]}
    for method in METHODS:
        for name, attack in attacks.items():
            config = base[method]
            configs[run_key(method, name)] = replace(config, method=replace(config.method, attack=attack))
    return configs


def evaluation_attacks(smoke: bool, aa_version: str | None, preset: str = "quick") -> tuple[dict, AutoAttack | None]:
    """The evaluation attacks: PGD (the preset's test attack), FGSM at its eps, and AutoAttack (None: left out)."""
    (spec,) = EXPERIMENTS[EXPERIMENT].presets[preset].test_attacks.values()
    pgd = PGD(**spec)
    if smoke:
        pgd = replace(pgd, n_steps=2, step_size=pgd.eps / 2)
    autoattack = None
    if aa_version is not None:
        autoattack = AutoAttack(eps=pgd.eps, version=aa_version, n_iter=2 if smoke else None)
    return {"natural": None, "pgd": pgd, "fgsm": FGSM(eps=pgd.eps)}, autoattack


def describe(attack) -> dict | None:
    return None if attack is None else {"name": type(attack).__name__, **vars(attack)}


def attack_text(attack) -> str:
    if isinstance(attack, PGD):
        return f"PGD({attack.eps:g}, {attack.n_steps}, {attack.step_size:g})"
    if isinstance(attack, FGSMRS):
        return f"fgsm_rs (eps {attack.eps:g}, step {attack.step:g}, projected)"
    if isinstance(attack, NFGSM):
        return f"n_fgsm (noise ±{attack.noise_scale * attack.eps:g}, step {attack.step:g}, not projected)"
    return f"FGSM({attack.eps:g})"


# ----------------------------------------------------------------------------------------------------------------------
# Training and evaluation, both resumable


def train_timed(config: Config, run_dir: Path, progress: bool, log) -> None:
    """:func:`train_or_reuse`, adding this call's wall seconds to ``TIMING`` in the run folder when it trained (also
    when it stopped: a resumed run's sessions add up; a killed process's session is lost)."""
    if (run_dir / WEIGHTS).is_file():
        train_or_reuse(config, run_dir, progress, log)
        return
    start = time.perf_counter()
    try:
        train_or_reuse(config, run_dir, progress, log)
    finally:
        if (run_dir / CONFIG).is_file():
            before = read_timing(run_dir)
            write_json(
                run_dir / TIMING,
                {
                    "wall_s": round(before["wall_s"] + time.perf_counter() - start, 3),
                    "sessions": before["sessions"] + 1,
                },
            )


def read_timing(run_dir: Path) -> dict:
    try:
        saved = read_json(run_dir / TIMING)
    except CheckpointError:
        saved = None
    if isinstance(saved, dict) and isinstance(saved.get("wall_s"), int | float):
        return saved
    return {"wall_s": 0.0, "sessions": 0}


def training_time(run_dir: Path) -> dict:
    """Minutes of training: the epochs' ``epoch_time_s`` summed, and the wall time of the training calls."""
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines() if line.strip()]
    timing = read_timing(run_dir)
    return {
        "train_minutes": round(sum(row["epoch_time_s"] for row in rows) / 60, 4),
        "epochs": len(rows),
        "wall_minutes": round(timing["wall_s"] / 60, 4) if timing["sessions"] else None,
        "sessions": timing["sessions"],
    }


def evaluate_cached(
    run_dir: Path, attacks: dict, autoattack: AutoAttack | None, aa_images: int | None, device: str
) -> dict:
    """Accuracies (percent) and per-image outcomes of one run, from ``EVAL_CACHE`` when its attacks are the same."""
    key = {
        "version": EVAL_VERSION,
        "attacks": {label: describe(a) for label, a in attacks.items()},
        "autoattack": describe(autoattack),
        "autoattack_images": aa_images,
    }
    cached = read_cached(run_dir / EVAL_CACHE, key)
    if cached is not None:
        return cached
    with open_run(run_dir, device) as run:
        batch = run.config.eval.batch_size
        masks = {label: correct_mask(run.model, run.x, run.y, attack, batch) for label, attack in attacks.items()}
        if autoattack is not None:
            n = aa_images or len(run.y)
            masks["autoattack"] = correct_mask(run.model, run.x[:n], run.y[:n], autoattack, batch)
    result = {
        "accuracy": {label: round(100 * mask.float().mean().item(), 3) for label, mask in masks.items()},
        "per_image": {label: encode_bits(mask) for label, mask in masks.items()},
    }
    write_cached(run_dir / EVAL_CACHE, key, result)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Step timing: the time axis, measured so that a busy machine cannot bias it


def step_seconds(configs: dict[str, Config], repeats: int = 5, steps: int = 2, seed: int = 0) -> dict[str, float]:
    """Median seconds of one training step of each run's config (its model, method, attack, batch size), the runs
    timed in turns in this process: ``repeats`` rounds, each timing ``steps`` steps of every run in order.

    The epochs' wall times of runs trained hours apart on a shared machine measure the load as much as the method;
    steps timed in turns see the same load, so their ratios hold.
    """
    device = torch.device("cpu")
    set_determinism(True, device)
    paths = {}
    for key, config in configs.items():
        torch.manual_seed(seed)
        model = model_for(config)
        fmt = model_memory_format(model, device)
        model = model.to(memory_format=fmt)
        optimizer = make_optimizer(config.method, model, config.train)
        generator = torch.Generator().manual_seed(seed)
        shape = (config.train.batch_size, dataset_info(config.data.name).in_channels, 32, 32)
        x = torch.rand(shape, generator=generator).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (config.train.batch_size,), generator=generator)
        paths[key] = (config.method, model, optimizer, x, y)
    times: dict[str, list[float]] = {key: [] for key in paths}
    for round_ in range(repeats + 1):
        for key, (method, model, optimizer, x, y) in paths.items():
            start = time.perf_counter()
            with training(model):
                for _ in range(steps):
                    train_step(method, model, optimizer, x, y)
            if round_:  # the first round warms oneDNN's kernels up
                times[key].append((time.perf_counter() - start) / steps)
    return {key: round(statistics.median(values), 5) for key, values in times.items()}


def cached_step_seconds(out: Path, configs: dict[str, Config], smoke: bool) -> dict[str, float]:
    """:func:`step_seconds`, measured once per study folder (``STEP_TIMES``) for these configs."""
    key = {
        name: to_dict(replace(config, train=replace(config.train, seed=0, init=None)))
        for name, config in configs.items()
    }
    cached = read_cached(out / STEP_TIMES, key)
    if cached is not None:
        return cached
    seconds = step_seconds(configs, repeats=1 if smoke else 5, steps=1 if smoke else 2)
    write_cached(out / STEP_TIMES, key, seconds)
    return seconds


def step_minutes(run_dir: Path, seconds_per_step: float) -> float:
    """Minutes of a finished run's training at ``seconds_per_step``: the steps its metrics.jsonl counts."""
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines() if line.strip()]
    return round(rows[-1]["step"] * seconds_per_step / 60, 4)


# ----------------------------------------------------------------------------------------------------------------------
# The study


def run_study(
    out: Path,
    seeds: list[int],
    device: str = "auto",
    overrides: list[str] | None = None,
    smoke: bool = False,
    aa_version: str | None = "quick",
    aa_images: int | None = None,
    progress: bool = True,
    log=print,
    preset: str = "quick",
) -> dict:
    """Train (or reuse, or resume) and evaluate every run; write OUT/fast_at.json, .md and .png; return the JSON."""
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers (got {seeds})")
    if aa_images is not None and aa_images < 1:
        raise ConfigError(f"--aa-images must be at least 1 (got {aa_images})")
    overrides = [*(SMOKE_OVERRIDES if smoke else ()), *(overrides or [])]
    if smoke and aa_version is not None:
        aa_images = aa_images or 16
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    attacks, autoattack = evaluation_attacks(smoke, aa_version, preset)
    plans = {seed: study_configs(seed, out / f"seed-{seed}", device, overrides, smoke, preset) for seed in seeds}
    start = time.perf_counter()
    runs: dict[str, dict] = {}
    for seed, configs in plans.items():
        folder = out / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        runs[str(seed)] = {}
        for key, config in configs.items():
            train_timed(config, folder / key, progress, log)
            entry = training_time(folder / key)
            if key != "st":
                entry.update(evaluate_cached(folder / key, attacks, autoattack, aa_images, device))
            runs[str(seed)][key] = entry
    # The time axis: every run's steps at the step time measured in turns (the same for every seed's run of a key).
    seconds = cached_step_seconds(out, plans[seeds[0]], smoke)
    for seed in seeds:
        for key, entry in runs[str(seed)].items():
            entry["step_seconds"] = seconds[key]
            entry["step_minutes"] = step_minutes(out / f"seed-{seed}" / key, seconds[key])
    columns = tuple(c for c in COLUMNS if c != "autoattack" or autoattack is not None)
    verdict_column = "autoattack" if autoattack is not None else "pgd"
    first = plans[seeds[0]]
    k = first[run_key("at", "pgd")].method.attack.n_steps
    variants = variant_rows(runs, seeds, columns, k)
    n_test = len(decode_bits(runs[str(seeds[0])][run_key("at", "pgd")]["per_image"]["natural"]))
    document = {
        "study": "fast_at",
        "smoke": smoke,
        "seeds": seeds,
        "settings": {
            "experiment": f"{EXPERIMENT} --preset {preset}",
            "note": EXPERIMENTS[EXPERIMENT].presets[preset].note,
            "dataset": first["st"].data.name,
            "overrides": overrides,
            "train_attacks": {a: attack_text(first[run_key("at", a)].method.attack) for a in ATTACKS},
            "train_attack_settings": {a: describe(first[run_key("at", a)].method.attack) for a in ATTACKS},
            "eval": {
                "pgd": describe(attacks["pgd"]),
                "pgd_text": attack_text(attacks["pgd"]),
                "fgsm": describe(attacks["fgsm"]),
                "fgsm_text": attack_text(attacks["fgsm"]),
                "autoattack": describe(autoattack),
                "autoattack_images": min(aa_images or n_test, n_test),
            },
            "columns": list(columns),
            "test_images": n_test,
        },
        "runs": runs,
        "variants": variants,
        "verdict_column": verdict_column,
        "verdicts": verdicts(runs, seeds, variants, verdict_column),
        "figure": "fast_at.png",
        "seconds": round(time.perf_counter() - start, 1),
    }
    figure(document, out / "fast_at.png")
    text = markdown(document)
    write_text(out / "fast_at.md", text)
    write_json(out / "fast_at.json", document)
    log(text)
    return document


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m bench.fast_at", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fast-at"), help="the study's folder (runs/fast-at)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2", help="training seeds (default 8,9,10; --smoke: 8)")
    parser.add_argument(
        "--preset",
        default="quick",
        choices=PRESETS,
        help="table2's settings: quick (default) or medium (the larger CPU study)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--aa-version",
        default="quick",
        choices=[v for v in VERSIONS if v != "custom"],
        help="AutoAttack version (the quick preset's: quick)",
    )
    parser.add_argument(
        "--aa-images",
        type=int,
        default=None,
        metavar="N",
        help="AutoAttack on the first N test images (default: all; the quick preset uses 200)",
    )
    parser.add_argument("--no-autoattack", action="store_true", help="leave AutoAttack out (verdicts on PGD)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every run (not method.*), e.g. train.val_size=500",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny data and model, 1 epoch, 1 seed, tiny AutoAttack")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def parse_seeds(text: str | None, smoke: bool) -> list[int]:
    if text is None:
        return [DEFAULT_SEEDS[0]] if smoke else list(DEFAULT_SEEDS)
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes integers separated by commas (got {text!r})") from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        run_study(
            args.out,
            parse_seeds(args.seeds, args.smoke),
            device=args.device,
            overrides=args.set,
            smoke=args.smoke,
            aa_version=None if args.no_autoattack else args.aa_version,
            aa_images=args.aa_images,
            progress=not args.no_progress,
            preset=args.preset,
        )
        return 0
    except AelfError as err:
        print(f"fast_at: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
