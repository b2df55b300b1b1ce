"""The research studies beyond the paper's tables, registered as experiments that ``aelf reproduce NAME`` runs like
the paper's: one file per study, imported here (which registers it). Each writes to its own folder under
``studies/`` by default (``Experiment.folders``), so that every study is one command run from the repository root:

- ``fast-at``: single-step (fgsm_rs, n_fgsm) against PGD training of AT and AELFs, with step times measured in turns
  (:mod:`.fast_at`);
- ``bn-gap``: do the joint methods' BatchNorm statistics explain their larger PGD - AutoAttack gap? (:mod:`.bn_gap`);
- ``ablation``: which part of AELFs (ST start, frozen head, penalty, mixed BatchNorm statistics, loss ratio) costs its
  robustness (:mod:`.ablation`);
- ``fast-at-anchor``: Wong et al. 2020's single-step MNIST recipe on mnist5k, the anchor every single-step verdict
  here is read against (:mod:`.fast_at_anchor`);
- ``fast-at-methods``: AT, JT and AELFs trained with the anchor's single-step attack on CNNb, and the parts of it
  changed one at a time (:mod:`.fast_at_methods`).
"""

from aelf.workflows.reproduction.studies import ablation, bn_gap, fast_at, fast_at_anchor, fast_at_methods

STUDIES = (
    fast_at.EXPERIMENT,
    bn_gap.EXPERIMENT,
    ablation.EXPERIMENT,
    fast_at_anchor.EXPERIMENT,
    fast_at_methods.EXPERIMENT,
)
