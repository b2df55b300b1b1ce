"""Run under ``torchrun --nproc_per_node=2``: AT with fgsm_rs and GradAlign (double backpropagation) through DDP.

Each rank computes the loss on its half of a fixed batch of 128 images with its noise drawn after
``torch.manual_seed(1)``, BatchNorm per rank (so that a one-process reference can take each half on its own), and
saves the DDP-averaged parameter gradients to ``OUT/grad-align-rank{r}.pt``.
"""

import sys
from pathlib import Path

import torch

from aelf.core import distributed
from aelf.core.attacks import FGSMRS
from aelf.core.methods import AT
from aelf.core.models import CNNb
from aelf.core.modes import training

out = Path(sys.argv[1])
context, device = distributed.setup("cpu")
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)
model = CNNb(width=0.125)
method = AT(attack=FGSMRS(eps=0.3), grad_align=0.5)
loss_module = distributed.wrap(model, method, context, device)
generator = torch.Generator().manual_seed(5)
x, y = torch.rand(128, 1, 32, 32, generator=generator), torch.randint(0, 10, (128,), generator=generator)
part = distributed.shard(128, context)
torch.manual_seed(1)
with training(model):
    loss, _ = loss_module(x[part], y[part])
loss.backward()
torch.save({name: p.grad for name, p in model.named_parameters()}, out / f"grad-align-rank{context.rank}.pt")
distributed.teardown()
