"""Run under ``torchrun --nproc_per_node=2``: one DDP optimisation step of every method, and a sharded evaluation.

Each rank takes its contiguous half of a fixed global batch of 128 images, converts BatchNorm to global-batch
statistics, wraps the method's loss in DDP and takes one SGD step (lr 0.1, momentum 0.9, weight decay 5e-4). Every
rank saves its parameters and buffers to ``OUT/{method}-rank{r}.pt``; the test compares them with one process taking
the same step on all 128 images. Then each rank evaluates its share of 101 test images and rank 0 saves the total
and the per-image outcomes.
"""

import sys
from pathlib import Path

import torch

from aelf.core import distributed
from aelf.core.accuracy import accuracy, correct_mask
from aelf.core.attacks import PGD, TradesKL
from aelf.core.config import TrainConfig
from aelf.core.methods import METHODS
from aelf.core.models import CNNb
from aelf.core.train import evaluate_natural, make_optimizer, train_step

out = Path(sys.argv[1])
context, device = distributed.setup("cpu")
torch.use_deterministic_algorithms(True)


def cheap_method(name: str):
    """The method with a deterministic two-step attack (no random start, no TRADES noise)."""
    cls = METHODS[name]
    if "attack" not in cls.__dataclass_fields__:
        return cls()
    attack = TradesKL(eps=0.3, n_steps=2, step_size=0.15, init_std=0.0) if name == "trades" else PGD(0.3, 2, 0.15)
    return cls(attack=attack)


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.rand(128, 1, 32, 32, generator=generator), torch.randint(0, 10, (128,), generator=generator)


for name in sorted(METHODS):
    torch.manual_seed(0)
    model = CNNb(width=0.125)
    model = distributed.sync_batchnorm(model, context, device, enabled=True)
    method = cheap_method(name)
    optimizer = make_optimizer(method, model, TrainConfig())
    loss_module = distributed.wrap(model, method, context, device)
    x, y = global_batch()
    part = distributed.shard(128, context)
    train_step(method, model, optimizer, x[part], y[part], loss_module)
    torch.save(model.state_dict(), out / f"{name}-rank{context.rank}.pt")

x_test, y_test = global_batch()
x_test, y_test = x_test[:101], y_test[:101]
torch.manual_seed(0)
model = CNNb(width=0.125).eval()
natural = evaluate_natural(model, x_test, y_test, batch_size=16, context=context)
attacked = accuracy(model, x_test, y_test, PGD(0.3, 1, 0.3), batch_size=16, context=context)
mask = correct_mask(model, x_test, y_test, PGD(0.3, 1, 0.3), batch_size=16, context=context)
seen = distributed.all_sum(torch.bincount(distributed.eval_indices(101, context), minlength=101), context)
if context.is_main:
    torch.save({"natural": natural, "attacked": attacked, "seen": seen, "mask": mask}, out / "eval.pt")
distributed.barrier(context)
distributed.teardown()
