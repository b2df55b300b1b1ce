"""The two training paths ``aelf bench`` times, each in a process of its own.

- :class:`AelfPath`: exactly what :func:`aelf.core.train.train` does per step (its data layout, model layout,
  optimizer, ``train_step`` and ``record_step``, under its deterministic-mode setting);
- :class:`ReferencePath`: the loop as common adversarial-training repositories write it (:mod:`bench.reference`).

:class:`PathWorker` runs one path in a spawned process, so that process-wide settings (the CPU heap, deterministic
mode, the allocator) belong to one path only; :class:`PathSpec` is what a worker needs to rebuild a path on its own.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.utils.deterministic as deterministic
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aelf.core import cpu_heap, distributed
from aelf.core.config import TrainConfig
from aelf.core.data import dataset_info, train_batches
from aelf.core.errors import AelfError
from aelf.core.memory_format import model_memory_format
from aelf.core.methods import AT, ST, TRADES, AELFs
from aelf.core.train import TrainingState, make_optimizer, record_step, set_determinism, train_step
from bench.peak import synchronize
from bench.reference import reference_step_function
from bench.workloads import AELFS_BETA, GRAD_ALIGN, TRADES_BETA, Workload, base_method


def aelf_method(step: str, workload: Workload):
    return {
        "st": lambda: ST(),
        "at": lambda: AT(attack=workload.pgd),
        "trades": lambda: TRADES(beta=TRADES_BETA, attack=workload.trades),
        "aelfs": lambda: AELFs(beta=AELFS_BETA, attack=workload.pgd),
        "at-fgsm_rs": lambda: AT(attack=workload.fgsm_rs),
        "at-n_fgsm": lambda: AT(attack=workload.n_fgsm),
        "aelfs-fgsm_rs": lambda: AELFs(beta=AELFS_BETA, attack=workload.fgsm_rs),
        "aelfs-n_fgsm": lambda: AELFs(beta=AELFS_BETA, attack=workload.n_fgsm),
        "at-fgsm_rs-gradalign": lambda: AT(attack=workload.fgsm_rs, grad_align=GRAD_ALIGN),
    }[step]()


@contextmanager
def trainer_determinism(
    device: torch.device, enabled: bool = TrainConfig().deterministic, fill_uninitialized_memory: bool | None = None
):
    """Deterministic mode as :func:`aelf.train.train` sets it (:func:`aelf.train.set_determinism`), restored
    afterwards.

    ``fill_uninitialized_memory``: then override ``torch.utils.deterministic.fill_uninitialized_memory`` (the trainer
    turns it off; PyTorch's default, True, fills every new tensor with NaN; the tuning study measures its cost).
    """
    was = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = deterministic.fill_uninitialized_memory
    set_determinism(enabled, device)
    if fill_uninitialized_memory is not None:
        deterministic.fill_uninitialized_memory = fill_uninitialized_memory
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn_only)
        deterministic.fill_uninitialized_memory = was_fill


class AutocastLoss(nn.Module):
    """The trainer's loss module run under ``torch.autocast`` (the tuning study's bf16 variant)."""

    def __init__(self, inner: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.inner, self.device_type, self.dtype = inner, device_type, dtype

    def forward(self, x, y):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.inner(x, y)


class AelfPath:
    """aelf's training step: the trainer's data layout, model layout, optimizer, train_step and record_step."""

    kind = "aelf"

    def __init__(
        self,
        step: str,
        workload: Workload,
        base: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        device: torch.device,
        batch_size: int,
        *,
        channels_last: bool = True,
        compile_model: bool = False,
        autocast_dtype: torch.dtype | None = None,
        fill_uninitialized_memory: bool | None = None,
        seed: int = 0,
    ):
        # The trainer's layout rule wins: contiguous where channels_last reaches a broken kernel
        # (aelf.core.memory_format).
        fmt = model_memory_format(base, device) if channels_last else torch.contiguous_format
        self.device = device
        self.method = aelf_method(step, workload)
        self.model = copy.deepcopy(base).to(device=device, memory_format=fmt)
        self.optimizer = make_optimizer(self.method, self.model, TrainConfig())
        if compile_model:
            for child in self.model.children():  # as aelf.train's train.compile: every entry point is compiled
                child.compile()
        self.loss_module = distributed.wrap(self.model, self.method, distributed.SINGLE, device)
        if autocast_dtype is not None:
            self.loss_module = AutocastLoss(self.loss_module, device.type, autocast_dtype)
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.y = y.to(device)
        self.batch_size, self.seed = batch_size, seed
        self.fill_uninitialized_memory = fill_uninitialized_memory
        self.state = TrainingState(sums={})
        self.batches = self._batches()

    def _batches(self) -> Iterator:
        epoch = 0
        while True:
            yield from train_batches(self.x, self.y, self.batch_size, self.seed, epoch)
            epoch += 1

    def step(self) -> None:
        x, y = next(self.batches)
        with trainer_determinism(self.device, fill_uninitialized_memory=self.fill_uninitialized_memory):
            loss, metrics = train_step(self.method, self.model, self.optimizer, x, y, self.loss_module)
            record_step(self.state, loss, metrics)


class ReferencePath:
    """The plain reference loop: DataLoader over CPU tensors, ``.to(device)``, naive attack, default layout."""

    kind = "reference"

    def __init__(
        self,
        step: str,
        workload: Workload,
        base: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        device: torch.device,
        batch_size: int,
        seed: int = 0,
    ):
        self.device = device
        self.model = copy.deepcopy(base).to(device)
        if base_method(step) == "aelfs":
            for parameter in self.model.head.parameters():
                parameter.requires_grad = False
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.model.train()
        self.fn = reference_step_function(step, workload, self.model, self.optimizer)
        self.loader = DataLoader(
            TensorDataset(x.cpu(), y.cpu()),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.batches = self._batches()

    def _batches(self) -> Iterator:
        while True:
            yield from self.loader

    def step(self) -> None:
        x, y = next(self.batches)
        x, y = x.to(self.device), y.to(self.device)
        self.fn(x, y)


def time_steps(path, n_steps: int) -> float:
    """Wall seconds of ``n_steps`` steps of ``path``, the device synchronised before and after."""
    synchronize(path.device)
    start = time.perf_counter()
    for _ in range(n_steps):
        path.step()
    synchronize(path.device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class PathSpec:
    """What a worker needs to build one path on its own: the same initial weights and data in every worker
    (rebuilt from ``seed``), so no tensors cross the pipe."""

    kind: str  # "aelf" or "reference"
    step: str
    workload: Workload
    n_images: int
    device: str
    batch_size: int
    seed: int = 0

    def build(self):
        torch.manual_seed(self.seed)
        base = self.workload.build()
        x, y = synthetic_data(self.workload, self.n_images, self.seed)
        path_class = AelfPath if self.kind == "aelf" else ReferencePath
        return path_class(
            self.step, self.workload, base, x, y, torch.device(self.device), self.batch_size, seed=self.seed
        )


def synthetic_data(workload: Workload, n_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform images in [0, 1] and uniform labels, from ``seed`` (nothing is read from disk)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n_images, *workload.input_shape(), generator=generator)
    y = torch.randint(0, dataset_info(workload.dataset).num_classes, (n_images,), generator=generator)
    return x, y


def serve_paths(conn, threads: int, retain_heap: bool) -> None:
    """A worker process's loop: ``("build", spec)`` builds a path, ``("time", n)`` runs n steps and answers
    (wall seconds, CPU seconds of this process), ``("close",)`` ends. Errors are answered, not raised."""
    torch.set_num_threads(threads)
    path = None
    with cpu_heap.retained_heap(retain_heap):
        while True:
            message = conn.recv()
            try:
                if message[0] == "close":
                    conn.send(("ok", None))
                    return
                if message[0] == "build":
                    path = None  # free the previous path first
                    path = message[1].build()
                    conn.send(("ok", None))
                elif message[0] == "time":
                    cpu_start = time.process_time()
                    wall = time_steps(path, message[1])
                    conn.send(("ok", (wall, time.process_time() - cpu_start)))
            except Exception as err:  # answered to the parent, which raises it with the worker's name
                conn.send(("error", f"{type(err).__name__}: {err}"))


class PathWorker:
    """One training path in a spawned process of its own.

    Process-wide settings then belong to one path only: the trainer's CPU heap (:mod:`aelf.core.cpu_heap`, which glibc
    cannot fully undo within a process), deterministic mode, the allocator's state. The parent times the paths in
    turns; only one process works at a time, the other waits on its pipe.
    """

    def __init__(self, kind: str, threads: int, retain_heap: bool):
        context = multiprocessing.get_context("spawn")
        self.kind = kind
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve_paths, args=(child, threads, retain_heap), daemon=True)
        self.process.start()
        child.close()

    def call(self, *message):
        self.conn.send(message)
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise AelfError(f"the bench's {self.kind} worker died (exit code {self.process.exitcode})") from None
        if status == "error":
            raise AelfError(f"the bench's {self.kind} worker failed: {value}")
        return value

    def build(self, spec: PathSpec) -> None:
        self.call("build", spec)

    def time(self, n_steps: int) -> tuple[float, float]:
        return self.call("time", n_steps)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.call("close")
            except (AelfError, OSError):
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
