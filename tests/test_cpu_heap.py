"""aelf.core.cpu_heap: freed CPU memory stays in the heap during training (no page faults per step), and only then."""

import resource

import pytest
import torch

from aelf.core import cpu_heap
from aelf.core.config import TrainConfig

pytestmark = pytest.mark.skipif(not cpu_heap.supported(), reason="needs glibc")


def page_faults(fn) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def churn() -> None:
    """What a training step does to the allocator: large tensors written, freed, allocated again."""
    for _ in range(5):
        block = torch.empty(16 * 1024 * 1024)  # 64 MiB: above glibc's largest mmap threshold
        block.fill_(1.0)
        del block


def test_retained_heap_reuses_memory_without_page_faults():
    with cpu_heap.retained_heap() as applied:
        assert applied
        churn()  # the first passes grow the heap to its steady state (small allocations may split a freed block)
        churn()
        inside = page_faults(churn)
    outside = page_faults(churn)  # restored: each 64 MiB block is a fresh mmap again
    # 64 MiB are 16,384 pages of 4 KiB (32 huge pages where transparent huge pages are always on) faulted in per block
    assert outside >= 5 * 32
    assert inside < outside / 10


def test_disabled_or_unsupported_is_a_no_op(monkeypatch):
    with cpu_heap.retained_heap(enabled=False) as applied:
        assert applied is False
    monkeypatch.setattr(cpu_heap.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert cpu_heap.glibc() is None
    with cpu_heap.retained_heap() as applied:
        assert applied is False


def test_blocks_nest_and_only_the_outermost_restores():
    with cpu_heap.retained_heap():
        with cpu_heap.retained_heap() as inner:
            assert inner
        churn()  # the inner block's exit must not have turned mmap back on
        churn()
        assert page_faults(churn) < 5 * 32
        with cpu_heap.retained_heap(enabled=False) as disabled_inside:
            assert disabled_inside  # still retained by the outer block
    assert page_faults(churn) >= 5 * 32


def test_runs_retain_by_default_and_only_on_cpu():
    assert TrainConfig().retain_cpu_heap is True
    with cpu_heap.for_run(TrainConfig(), torch.device("cpu")) as applied:
        assert applied
    with cpu_heap.for_run(TrainConfig(), torch.device("cuda")) as applied:
        assert not applied
    with cpu_heap.for_run(TrainConfig(retain_cpu_heap=False), torch.device("cpu")) as applied:
        assert not applied
