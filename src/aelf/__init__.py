"""aelf: adversarial-training research toolkit implementing "Attention-based interpretation and response to the
trade-off of adversarial training" (ST, AT, JT, AELFs) with attacks, shifted test sets and evaluation.

Python API::

    import aelf
    model = aelf.load_model("runs/aelfs")          # nn.Module in eval mode, inputs in [0, 1]
    x, y = aelf.load_dataset("mnist5k", "test")    # (N, 1, 32, 32) in [0, 1], (N,)
    x_adv = aelf.PGD(eps=0.3, n_steps=16, step_size=0.02)(model, x, y)
    print(aelf.evaluate_model(model, x, y, suite="quick", eps=0.3).markdown())   # attack suite, worst case
    print(aelf.check_model(model, x, y, eps=0.3).markdown())                     # gradient-masking checks
    data = aelf.load_files("my.npz")               # your own .npz/.safetensors/image folder, split: data.x_train, ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from aelf.core import __version__  # noqa: F401

# Where each name of the API lives. They are imported on first use, so that ``import aelf`` (and with it the ``aelf``
# command, whose ``--help`` needs none of them) does not load torch until something asks for it.
_API = {
    "accuracy": "aelf.core.accuracy",
    "FGSM": "aelf.core.attacks",
    "PGD": "aelf.core.attacks",
    "AutoAttack": "aelf.core.attacks.autoattack",
    "Config": "aelf.core.config",
    "load_config": "aelf.core.config",
    "make_config": "aelf.core.config",
    "load_files": "aelf.core.data.files",
    "AelfError": "aelf.core.errors",
    **dict.fromkeys(("AELF", "AT", "JT", "METHODS", "ST", "TRADES", "AELFs", "JTStar"), "aelf.core.methods"),
    "as_split_model": "aelf.core.models",
    "load_dataset": "aelf.core.run",
    "load_model": "aelf.core.run",
    "read_config": "aelf.core.run",
    "train": "aelf.core.train",
    "evaluate": "aelf.workflows.evaluation.evaluate",
    "evaluate_run": "aelf.workflows.evaluation.evaluate",
    "check_model": "aelf.workflows.evaluation.masking",
    "evaluate_model": "aelf.workflows.evaluation.robustness",
}

if TYPE_CHECKING:
    from aelf.core.accuracy import accuracy
    from aelf.core.attacks import FGSM, PGD
    from aelf.core.attacks.autoattack import AutoAttack
    from aelf.core.config import Config, load_config, make_config
    from aelf.core.data.files import load_files
    from aelf.core.errors import AelfError
    from aelf.core.methods import AELF, AT, JT, METHODS, ST, TRADES, AELFs, JTStar
    from aelf.core.models import as_split_model
    from aelf.core.run import load_dataset, load_model, read_config
    from aelf.core.train import train
    from aelf.workflows.evaluation.evaluate import evaluate, evaluate_run
    from aelf.workflows.evaluation.masking import check_model
    from aelf.workflows.evaluation.robustness import evaluate_model


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'aelf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


__all__ = [
    "AELF",
    "AELFs",
    "AT",
    "AelfError",
    "AutoAttack",
    "Config",
    "FGSM",
    "JT",
    "JTStar",
    "METHODS",
    "PGD",
    "ST",
    "TRADES",
    "accuracy",
    "as_split_model",
    "check_model",
    "evaluate",
    "evaluate_model",
    "evaluate_run",
    "load_config",
    "load_dataset",
    "load_files",
    "load_model",
    "make_config",
    "read_config",
    "train",
]
