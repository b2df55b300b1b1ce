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

from aelf.core import __version__  # noqa: E402, F401
from aelf.core.accuracy import accuracy
from aelf.core.attacks import FGSM, PGD  # noqa: E402
from aelf.core.attacks.autoattack import AutoAttack  # noqa: E402
from aelf.core.config import Config, load_config, make_config  # noqa: E402
from aelf.core.data.files import load_files  # noqa: E402
from aelf.core.errors import AelfError  # noqa: E402
from aelf.core.methods import AELF, AT, JT, METHODS, ST, TRADES, AELFs, JTStar  # noqa: E402
from aelf.core.models import as_split_model  # noqa: E402
from aelf.core.run import load_dataset, load_model, read_config  # noqa: E402
from aelf.core.train import train  # noqa: E402
from aelf.workflows.evaluation.evaluate import evaluate, evaluate_run  # noqa: E402
from aelf.workflows.evaluation.masking import check_model  # noqa: E402
from aelf.workflows.evaluation.robustness import evaluate_model  # noqa: E402

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
