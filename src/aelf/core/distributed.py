"""Multi-GPU and multi-node runs through ``torchrun`` and PyTorch's DistributedDataParallel.

``torchrun --nproc_per_node=N -m aelf train ...`` starts N processes with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``
and ``MASTER_ADDR/PORT`` set; :func:`setup` reads them, joins the process group (NCCL on GPUs, gloo on CPUs) and
picks the device. Without those variables everything here is a no-op for a single process.

How training is split (see :mod:`aelf.train`):

- every rank draws the same global batch order (a function of seed and epoch) and takes its own contiguous shard of
  each global batch of ``train.batch_size`` images, so the global batch size and the learning rate are those of the
  config, whatever the number of ranks;
- each rank attacks its own shard;
- DDP wraps :class:`MethodLoss`, a module whose forward *is* the method's loss. One DDP forward and one backward per
  step, whatever the method does inside (attacks taking input gradients, several forward passes, a frozen head), so
  DDP's reducer sees exactly one backward for each forward and averages the gradients;
- BatchNorm layers become SyncBatchNorm (``train.sync_batchnorm``, default on), so batch statistics are those of the
  global batch, as in one process;
- rank 0 alone writes logs, checkpoints and reports; every decision to stop (end of training, a non-finite loss, a
  signal) is agreed by all ranks through a collective, so they stop together.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aelf.core.errors import ConfigError, TrainingInterrupted
from aelf.core.protocols import LossAndMetrics, Method, SplitModel


@dataclass(frozen=True)
class Context:
    """This process's place in the run: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_name: str, timeout_s: float = 600.0) -> tuple[Context, torch.device]:
    """Join the process group if ``torchrun`` started us; return the context and this rank's device.

    ``timeout_s`` bounds every collective: if a rank dies, the others fail with an error after at most this long
    instead of waiting forever (``torchrun`` itself usually ends them sooner).
    """
    if not launched_by_torchrun():
        return SINGLE, resolve_device(device_name)
    context = Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", context.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        options: dict[str, Any] = {"device_id": device} if use_cuda else {}
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timeout, **options, **restart_store(context, timeout)
        )
    return context, device


def restart_store(context: Context, timeout: datetime.timedelta) -> dict[str, Any]:
    """Under ``torchrun --max-restarts``, a key space of this attempt's own in torchrun's store.

    torchrun keeps its store across restarts of the workers. After an attempt that created a second gloo group (the
    statistics group of :class:`GlobalBatchNorm2d`), a restarted rank can read an address the dead attempt left
    there and fail to connect ("Connection refused") when it looks before rank 0 of the new attempt has written its
    own; a prefix per attempt (``TORCHELASTIC_RESTART_COUNT``) leaves nothing stale to read. Outside torchrun's agent
    store, the usual ``env://`` initialisation.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        context.world_size,
        is_master=False,
        timeout=timeout,
    )
    return {
        "store": dist.PrefixStore(f"aelf/attempt-{attempt}/", store),
        "rank": context.rank,
        "world_size": context.world_size,
    }


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ...; ConfigError if unavailable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    return device


def teardown(failed: bool = False) -> None:
    """Leave the process group together: no rank destroys it while another still talks to it (a rank of gloo that
    exits under a peer's feet can abort with "terminate called without an active exception").

    ``failed``: this rank is leaving with an error while its peers may be inside a collective it will never enter;
    waiting for them at a barrier would hang both, so it leaves at once and the peers' next collective fails.
    """
    if dist.is_initialized():
        if not failed:
            with contextlib.suppress(RuntimeError):  # a peer that died already: nothing left to wait for
                dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def stdout_on_main_only() -> Iterator[None]:
    """Under torchrun, ranks other than 0 print nothing to stdout (tables, JSON): one copy of each result.

    Errors still go to every rank's stderr. The process group is left on the way out.
    """
    quiet = not is_main_process()
    try:
        with open(os.devnull, "w") if quiet else contextlib.nullcontext() as sink:
            with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
                yield
    except TrainingInterrupted:  # a stop every rank agreed on, at the same step: they leave together
        teardown()
        raise
    except BaseException:
        teardown(failed=True)
        raise
    teardown()


def shard(batch_size: int, context: Context) -> slice:
    """This rank's contiguous part of a global batch of ``batch_size`` examples."""
    if batch_size % context.world_size:
        raise ConfigError(
            f"train.batch_size {batch_size} must be divisible by the {context.world_size} processes of this run"
        )
    per_rank = batch_size // context.world_size
    return slice(context.rank * per_rank, (context.rank + 1) * per_rank)


def eval_indices(n: int, context: Context) -> torch.Tensor:
    """The test examples this rank evaluates: every ``world_size``-th one, so each is counted exactly once."""
    return torch.arange(context.rank, n, context.world_size)


def all_sum(value: torch.Tensor, context: Context) -> torch.Tensor:
    """Sum of ``value`` over all ranks (the value itself for one process)."""
    if context.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def _agree(value: int, context: Context, device: torch.device | None, op: dist.ReduceOp.RedOpType) -> int:
    if not context.distributed:
        return value
    tensor = torch.tensor(value, dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=op)
    return int(tensor.item())


def agree_max(value: int, context: Context, device: torch.device | None) -> int:
    """The largest ``value`` any rank holds: how ranks agree on a flag (a signal to stop) before acting on it."""
    return _agree(value, context, device, dist.ReduceOp.MAX)


def agree_min(value: int, context: Context, device: torch.device | None) -> int:
    """The smallest ``value`` any rank holds (e.g. the first step at which any rank saw a non-finite loss)."""
    return _agree(value, context, device, dist.ReduceOp.MIN)


def gather_objects(obj: object, context: Context) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for one process)."""
    if not context.distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


class MethodLoss(nn.Module):
    """``forward(x, y) -> (loss, metrics)`` of ``method`` on ``model``: what DistributedDataParallel wraps.

    Inside one forward the method may run attacks (eval mode, input gradients only), several passes of the model and
    the feature/head split; DDP only needs the parameters that the loss's backward reaches, once per forward.
    """

    def __init__(self, model: SplitModel, method: Method):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        return self.method.loss(self.model, x, y)


def wrap(model: SplitModel, method: Method, context: Context, device: torch.device) -> nn.Module:
    """The step's loss module: plain for one process, DDP over it (gradients averaged across ranks) otherwise."""
    loss_module = MethodLoss(model, method)
    if not context.distributed:
        return loss_module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        loss_module,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,  # BatchNorm statistics are synchronised by (Global|Sync)BatchNorm instead
    )


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce: the sum over ranks forward, and (the sum depends on every rank) backward too."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across ranks, on any device.

    PyTorch's own :class:`torch.nn.SyncBatchNorm` (used on GPUs) needs CUDA; this is its CPU counterpart for gloo
    runs: per-channel sums and sums of squares are all-reduced (differentiably), then the batch is normalised and the
    running statistics updated exactly as BatchNorm2d does for one process holding the whole batch. Parameters and
    buffers are those of BatchNorm2d, so checkpoints load into a plain model.
    """

    group = None  # the process group of the statistics (set by sync_batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n_local = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), n_local])
        sums = _AllReduceSum.apply(stats, self.group)  # type: ignore[no-untyped-call]  # torch: apply is untyped
        channels = x.shape[1]
        count = sums[-1]
        mean = sums[:channels] / count
        var = sums[channels : 2 * channels] / count - mean * mean  # biased, as BatchNorm normalises with
        with torch.no_grad():
            tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and running_mean is not None and running_var is not None  # track_running_stats
            tracked += 1
            # momentum None means a cumulative average, as in BatchNorm2d
            factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
            unbiased = var * count / (count - 1)
            running_mean.lerp_(mean.detach(), factor)
            running_var.lerp_(unbiased.detach(), factor)
        shape = (1, channels, 1, 1)
        x_hat = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape) if self.affine else x_hat


def sync_batchnorm(model: nn.Module, context: Context, device: torch.device, enabled: bool) -> nn.Module:
    """BatchNorm -> statistics of the global batch when running on several ranks (SyncBatchNorm on GPUs,
    :class:`GlobalBatchNorm2d` on CPUs), so that N ranks x B/N images normalise like one process with B."""
    if not (context.distributed and enabled):
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]  # torch: untyped
    # A process group of their own: the statistics' backward all-reduces run on the autograd thread while DDP's
    # reducer all-reduces gradient buckets as they fill; on one shared group the two streams of collectives could
    # interleave in a different order on different ranks, and gloo aborts on such a mismatch.
    group = dist.new_group(backend="gloo")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                replacement = GlobalBatchNorm2d(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                ).to(device=child.weight.device if child.affine else device)
                replacement.load_state_dict(child.state_dict())
                replacement.group = group
                setattr(parent, name, replacement)
    return model
