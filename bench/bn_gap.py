"""Do the joint methods' BatchNorm statistics explain their larger PGD - AutoAttack gap? (issue 14)

JT and AELFs train on batches that are half natural, half adversarial, so their BatchNorm running statistics
average the two distributions, while AT's come from adversarial batches only. If the mixed statistics are why the
joint methods lose more under AutoAttack than under the paper's PGD, recomputing them from adversarial examples
alone should raise the joint methods' AutoAttack accuracy and shrink their gap, and leave AT (the control: its
statistics are adversarial already) where it was.

For every run of the given methods in a ``aelf reproduce ... --seeds`` folder (``ROOT/seed-N/KEY``), this measures
the model twice on the same test images:

- ``as trained``: the run's own weights and running statistics;
- ``adversarial``: the same weights, every BatchNorm's running mean and variance recomputed (a cumulative average,
  ``momentum=None``) from the run's training images attacked by its own training attack, the examples made against
  the model as trained (eval mode).

Each is measured natural, under the run's test attack (``eval.attack``: the paper's PGD(0.3, 16, 0.02) for the
MNIST presets) and under AutoAttack (pyautoattack's APGD-CE + APGD-T, version ``quick``) on the first
``--aa-images`` test images. Reported per method: mean ± std over seeds with 95% intervals, and paired over seeds and
images: adversarial statistics minus as trained (AutoAttack, PGD) and the change of the PGD - AutoAttack gap.

    .venv/bin/python -m bench.bn_gap /work/studies/table2-medium --out studies/bn-gap --aa-images 500
    .venv/bin/python -m bench.bn_gap ROOT --out DIR --smoke      # tiny AutoAttack and PGD, seconds (the tests)

Resumable: each run's measurements are cached in its folder (``bn-gap-eval.json``) as long as the settings are the
same. Writes ``OUT/bn_gap.json`` and ``OUT/bn_gap.md``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aelf.apps.cli import ArgumentParser
from aelf.core.accuracy import correct_mask
from aelf.core.attacks import PGD
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.checkpoint import WEIGHTS, read_cached, write_cached, write_json, write_text
from aelf.core.data.loader import eval_batches
from aelf.core.errors import AelfError, ConfigError
from aelf.core.modes import training
from aelf.core.run import load_dataset, open_run, read_config
from aelf.workflows.evaluation import stats
from aelf.workflows.evaluation.per_image import decode_bits, encode_bits
from aelf.workflows.reproduction.evidence import as_record

CACHE = "bn-gap-eval.json"
CACHE_VERSION = 1  # part of the cache key: bump when what a measurement holds changes
VARIANTS = {"trained": "as trained", "adversarial": "adversarial statistics"}
COLUMNS = ("natural", "pgd", "autoattack")
LABELS = {"at": "AT", "jt": "JT", "aelfs": "AELFs", "jt_star": "JT*", "trades": "TRADES"}


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


def measure(model, x, y, pgd, autoattack, aa_images: int, batch: int) -> dict:
    masks = {
        "natural": correct_mask(model, x, y, None, batch),
        "pgd": correct_mask(model, x, y, pgd, batch),
        "autoattack": correct_mask(model, x[:aa_images], y[:aa_images], autoattack, batch),
    }
    return {label: encode_bits(mask) for label, mask in masks.items()}


def run_outcomes(run_dir: Path, aa_images: int, smoke: bool, device: str) -> dict:
    """``{variant: {column: packed bits}}`` of one run, from ``CACHE`` when its settings are the same."""
    key = {"version": CACHE_VERSION, "aa_images": aa_images, "smoke": smoke}
    cached = read_cached(run_dir / CACHE, key)
    if cached is not None:
        return cached
    with open_run(run_dir, device) as run:
        config, batch = run.config, run.config.eval.batch_size
        pgd = PGD(**vars(config.eval.attack))
        train_attack = config.method.attack
        if smoke:
            pgd = replace(pgd, n_steps=2, step_size=pgd.eps / 2)
            train_attack = replace(train_attack, n_steps=1, step_size=train_attack.eps)
        autoattack = AutoAttack(eps=pgd.eps, version="quick", n_iter=2 if smoke else None)
        n = min(aa_images, len(run.y))
        result = {"trained": measure(run.model, run.x, run.y, pgd, autoattack, n, batch)}
        x_train, y_train = load_dataset(run_dir, "train")
        recompute_statistics(run.model, x_train.to(run.device), y_train.to(run.device), train_attack, batch)
        result["adversarial"] = measure(run.model, run.x, run.y, pgd, autoattack, n, batch)
    write_cached(run_dir / CACHE, key, result)
    return result


def seeds_of(root: Path) -> list[int]:
    seeds = sorted(int(p.name.removeprefix("seed-")) for p in root.glob("seed-*") if p.name[5:].isdigit())
    if not seeds:
        raise ConfigError(f"{root} holds no seed-N folders: give the --out folder of `aelf reproduce ... --seeds`")
    return seeds


def summarize(per_seed: dict, seeds: list[int], methods: list[str]) -> dict:
    """Per method: each variant's accuracies with intervals, and the paired changes adversarial minus trained."""
    found = {}
    for method in methods:
        bits = {
            v: {c: np.stack([decode_bits(per_seed[str(s)][method][v][c]) for s in seeds]) for c in COLUMNS}
            for v in VARIANTS
        }
        rows = {v: {c: stats.accuracy_summary(bits[v][c]).format(1) for c in COLUMNS} for v in VARIANTS}
        for v in VARIANTS:
            n = bits[v]["autoattack"].shape[1]
            rows[v]["gap"] = stats.paired_difference(bits[v]["pgd"][:, :n], bits[v]["autoattack"]).format(1)
        n = bits["trained"]["autoattack"].shape[1]
        gaps = {v: bits[v]["pgd"][:, :n].astype(float) - bits[v]["autoattack"] for v in VARIANTS}
        change = {
            "autoattack": stats.paired_difference(bits["adversarial"]["autoattack"], bits["trained"]["autoattack"]),
            "pgd": stats.paired_difference(bits["adversarial"]["pgd"], bits["trained"]["pgd"]),
            "natural": stats.paired_difference(bits["adversarial"]["natural"], bits["trained"]["natural"]),
            "gap": stats.paired_mean_difference(100 * gaps["adversarial"], 100 * gaps["trained"]),
        }
        found[method] = {
            "rows": rows,
            "change": {c: comparison.format(1) for c, comparison in change.items()},
            "change_values": {c: as_record(x) for c, x in change.items()},
        }
    return found


def markdown(document: dict) -> str:
    seeds, n = document["seeds"], document["aa_images"]
    lines = [
        "# BatchNorm statistics and the PGD - AutoAttack gap" + (" (SMOKE: not a result)" if document["smoke"] else ""),
        "",
        f"- runs: {document['root']}, seeds {', '.join(map(str, seeds))}; test attack {document['pgd']}; AutoAttack "
        f"(quick: APGD-CE + APGD-T) on the first {n} test images",
        "- as trained: the run's weights and running statistics; adversarial statistics: every BatchNorm's running "
        "mean and variance recomputed from the run's training images under its own training attack",
        f"- accuracy in %, mean ± std over {len(seeds)} seeds [95% interval over seeds and images]; gap: PGD minus "
        "AutoAttack on the same images, paired",
        "",
        "| method | BatchNorm statistics | natural | PGD | AutoAttack | PGD - AutoAttack |",
        "|---|---|---|---|---|---|",
    ]
    for method, found in document["methods"].items():
        for variant, label in VARIANTS.items():
            row = found["rows"][variant]
            lines.append(
                f"| {LABELS.get(method, method)} | {label} | {row['natural']} | {row['pgd']} | "
                f"{row['autoattack']} | {row['gap'].split(':')[0]} |"
            )
    lines += [
        "",
        "Adversarial statistics minus as trained, paired over seeds and images (points, 95% interval):",
        "",
        "| method | natural | PGD | AutoAttack | gap |",
        "|---|---|---|---|---|",
    ]
    for method, found in document["methods"].items():
        change = found["change"]
        lines.append(
            f"| {LABELS.get(method, method)} | {change['natural']} | {change['pgd']} | "
            f"{change['autoattack']} | {change['gap']} |"
        )
    lines += ["", f"This invocation: {document['seconds']:.0f} s (cached runs take none)."]
    return "\n".join(lines) + "\n"


def run_study(
    root: Path,
    out: Path,
    methods: list[str],
    aa_images: int = 500,
    smoke: bool = False,
    device: str = "auto",
    log=print,
) -> dict:
    if aa_images < 1:
        raise ConfigError(f"--aa-images must be at least 1 (got {aa_images})")
    seeds = seeds_of(root)
    for seed in seeds:
        for method in methods:
            if not (root / f"seed-{seed}" / method / WEIGHTS).is_file():
                raise ConfigError(f"{root / f'seed-{seed}' / method} is not a finished run")
    start = time.perf_counter()
    per_seed: dict = {}
    for seed in seeds:
        per_seed[str(seed)] = {}
        for method in methods:
            log(f"seed {seed} {method}")
            per_seed[str(seed)][method] = run_outcomes(root / f"seed-{seed}" / method, aa_images, smoke, device)
    attack = read_config(root / f"seed-{seeds[0]}" / methods[0]).eval.attack
    document = {
        "study": "bn_gap",
        "smoke": smoke,
        "root": str(root),
        "seeds": seeds,
        "aa_images": aa_images,
        "pgd": f"PGD({attack.eps:g}, {attack.n_steps}, {attack.step_size:g})",
        "methods": summarize(per_seed, seeds, methods),
        "per_seed": per_seed,
    }
    document["seconds"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(document)
    write_text(out / "bn_gap.md", text)
    write_json(out / "bn_gap.json", document)
    log(text)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.bn_gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the --out folder of `aelf reproduce NAME --seeds ...`")
    parser.add_argument("--out", type=Path, required=True, help="folder for bn_gap.md and bn_gap.json")
    parser.add_argument("--methods", default="at,jt,aelfs", help="run keys to measure (default at,jt,aelfs)")
    parser.add_argument("--aa-images", type=int, default=500, metavar="N", help="AutoAttack on the first N (500)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="tiny attacks (the tests): not a result")
    try:
        args = parser.parse_args(argv)
        methods = [m for m in args.methods.split(",") if m]
        run_study(args.root, args.out, methods, args.aa_images, args.smoke, args.device)
        return 0
    except AelfError as err:
        print(f"bn_gap: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
