"""The device's peak FLOP/s that ``aelf bench`` reports its efficiency against: on CPU a measured fp32 GEMM peak,
on CUDA the vendor's dense number for the device."""

from __future__ import annotations

import os
import time

import torch

from aelf.workflows.reproduction.timing import cpu_name


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Vendors' dense (no sparsity) peaks in FLOP/s, matched on torch.cuda.get_device_name(); first match wins.
VENDOR_PEAKS = (
    ("H100 PCIe", {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "source": "NVIDIA H100 PCIe datasheet"}),
    ("H100 NVL", {"fp32": 60e12, "tf32": 418e12, "bf16": 835e12, "source": "NVIDIA H100 NVL datasheet"}),
    ("H100", {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989e12, "source": "NVIDIA H100 SXM datasheet"}),
    ("H200", {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989e12, "source": "NVIDIA H200 SXM datasheet (H100 compute)"}),
    ("A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "source": "NVIDIA A100 datasheet"}),
)


def measured_gemm_peak(device: torch.device, sizes=(1024, 2048, 4096), reps: int = 3) -> dict:
    """The best fp32 ``torch.mm`` throughput on square matrices, with the current thread count."""
    best = 0.0
    best_size = None
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        torch.mm(a, b)
        for _ in range(reps):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            rate = 2 * n**3 / (time.perf_counter() - start)
            if rate > best:
                best, best_size = rate, n
    return {"flops": best, "size": best_size, "threads": torch.get_num_threads()}


def device_peak(device: torch.device, smoke: bool = False) -> dict:
    """CPU: a measured GEMM peak; CUDA: the vendor's number for the device (None when it is not in the table)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in VENDOR_PEAKS:
            if key in name:
                return {"name": name, "flops": peaks["bf16"], "kind": "vendor's bf16 dense peak", **peaks}
        return {"name": name, "flops": None, "kind": "unknown device: no vendor peak in bench.peak.VENDOR_PEAKS"}
    gemm = measured_gemm_peak(device, sizes=(256, 512) if smoke else (1024, 2048, 4096), reps=2 if smoke else 3)
    return {
        "name": f"{cpu_name()} ({os.cpu_count()} logical CPUs)",
        "flops": gemm["flops"],
        "kind": f"measured GEMM peak (best fp32 torch.mm of {gemm['size']}x{gemm['size']} matrices, "
        f"{gemm['threads']} threads)",
        "fp32_measured": gemm["flops"],
    }
