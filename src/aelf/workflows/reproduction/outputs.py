"""The outputs of ``aelf reproduce``: the Markdown table with intervals and comparisons, the JSON document and the
figure, written into the output folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aelf.core.fileio import write_json, write_text
from aelf.workflows.attention.metrics import FOREGROUND_THRESHOLD, metrics_markdown
from aelf.workflows.reproduction import evidence
from aelf.workflows.reproduction.evidence import AUTOATTACK
from aelf.workflows.reproduction.experiment import Plan
from aelf.workflows.reproduction.tables import attack_label, robust_table, shift_table


def write_outputs(the_plan: Plan, document: dict, out: Path, table_name: str, section: str = "") -> str:
    """Write the Markdown table, the JSON and the figure; return the Markdown. ``section``: a study's own Markdown
    (``Experiment.summary``), placed before the figure."""
    experiment = the_plan.experiment
    labels, measured, paper_rows = document["labels"], document["measured"], document["paper"]
    aa = the_plan.autoattack
    extra = AUTOATTACK if aa is not None else None
    if experiment.kind == "shift":
        (attack,) = the_plan.test_attacks.values()
        table = shift_table(measured, paper_rows, attack_label(attack), experiment.paper_label, labels, extra)
    else:
        table = robust_table(measured, paper_rows, the_plan.test_attacks, experiment.paper_label, labels, extra)
    if aa is not None:
        images = f"the first {the_plan.autoattack_examples}" if the_plan.autoattack_examples else "all"
        table += (
            f"\n{AUTOATTACK}: the authors' pyautoattack, version {aa.version}, l-inf eps {aa.eps:.4g}, on {images} "
            f"test images{' of N' if experiment.kind == 'shift' else ''} (the paper reports PGD only).\n"
        )
    else:
        table += "\nNo AutoAttack column (--no-autoattack).\n"
    markdown = (
        f"# {experiment.title}\n\n"
        + "".join(f"- {note}\n" for note in document["notes"])
        + f"\n{table}\nMeasured rows: {seeds_text(document['seeds'])}; {time_text(document)}. Paper rows: copied "
        "from the paper, not measured.\n"
        f"\n## Intervals and comparisons (measured)\n\n{evidence.interval_table(document, experiment.kind)}"
    )
    comparisons = evidence.comparisons_markdown(document["comparisons"], labels, document.get("baselines"))
    if comparisons:
        markdown += "\n" + comparisons
    for extra, found in document.get("comparisons_with", {}).items():
        comparisons = evidence.comparisons_markdown(found, labels, dict.fromkeys(found, extra))
        if comparisons:
            markdown += "\n" + comparisons
    gaps = evidence.gaps_markdown(
        document["autoattack_gaps"], labels, attack_label(next(iter(the_plan.test_attacks.values())))
    )
    if gaps:
        markdown += "\n" + gaps
    line = evidence.headline(document)
    if line:
        markdown += f"\n**{line}**\n"
    if experiment.kind == "shift":
        summaries = {labels.get(key, key): row["attention"] for key, row in measured.items()}
        attention = {
            "n_examples": next(iter(summaries.values()))["n_images"],
            "foreground_threshold": FOREGROUND_THRESHOLD,
            "models": summaries,
        }
        markdown += "\n## Attention breadth (measured)\n\n" + metrics_markdown(attention)
    if section:
        markdown += "\n" + section
    if experiment.figure:
        figure = out / f"{experiment.name}.png"
        experiment.figure(document, figure)
        markdown += f"\nFigure: {figure.name}\n"
    write_text(out / f"{table_name}.md", markdown)
    write_json(out / f"{table_name}.json", document)
    return markdown


def time_text(document: dict) -> str:
    """The invocation's wall time, the recorded training and evaluation time of every run, and the machine."""
    text = f"{document['seconds']:.0f} s for this invocation (reused runs and cached evaluations take none)"
    recorded = document.get("recorded_seconds")
    if recorded:
        unknown = recorded["runs_not_recorded"]
        text += (
            f"; recorded over all runs and seeds: training {recorded['train_s']:.0f} s, evaluation "
            f"{recorded['eval_s']:.0f} s" + (f" ({unknown} runs' times not recorded)" if unknown else "")
        )
    found = document.get("machine")
    if found:
        text += f"; this invocation's machine: {machine_text(found)}"
    for earlier in document.get("earlier_invocations", []):
        where = machine_text(earlier["machine"]) if earlier.get("machine") else "machine not recorded in the file"
        seeds = ", ".join(map(str, earlier.get("seeds") or []))
        text += f"; an earlier invocation of these results (seeds {seeds}): {earlier['seconds']:.0f} s, {where}"
    return text


def machine_text(found: dict) -> str:
    return (
        f"{found['cpu']}, {found['cores']} cores, {found['torch_threads']} torch threads, {found['device']}, "
        f"torch {found['torch']}"
    )


def seeds_text(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds ({', '.join(map(str, seeds))})"
