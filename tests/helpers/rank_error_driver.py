"""Under torchrun: rank 1 stops with an aelf error while rank 0 waits in a collective (the CLI's error path)."""

import torch

from aelf.apps import cli
from aelf.core import distributed
from aelf.core.errors import DataError


def fail_on_rank_1(args) -> int:
    context, _ = distributed.setup("cpu")
    if context.rank == 1:
        raise DataError("rank 1 cannot read its input")
    distributed.all_sum(torch.ones(1), context)  # a collective rank 1 never enters
    return 0


cli.cmd_eval = fail_on_rank_1
raise SystemExit(cli.main(["eval", "any-run"]))
