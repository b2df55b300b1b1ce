"""The memory format a model trains and is evaluated in: channels_last, unless that reaches a broken CPU kernel.

channels_last is the faster layout for oneDNN's convolutions on CPU. But on oneDNN's AVX2 code path (a CPU without
AVX-512, or ``ONEDNN_MAX_CPU_ISA`` capped below it), the weight gradient of a 1x1 convolution with a stride above 1
and between 2 and 7 input channels goes to ``jit_avx2_1x1_convolution_bwd_weights_t``, which gives wrong gradients
that change from call to call, hangs or crashes (SIGSEGV) in channels_last (torch 2.13, oneDNN 3.12; the probe and
the measured table are in BENCHMARKS.md). PreAct ResNet-18 below width 1/8 and narrow Wide ResNets have such a layer
(the strided 1x1 shortcut). The contiguous layout takes other kernels and is correct, so such a model uses it on
that code path. Every other case keeps channels_last.

The rule is by layer shape, not by model name, so a user's own model is covered too; :func:`affected_convolutions`
lists the layers that decide it.
"""

from __future__ import annotations

import os
import platform

import torch
from torch import nn

# oneDNN's AVX2 1x1 weight-gradient kernel is reached by 1x1 convolutions with stride > 1; with fewer input channels
# than its SIMD width (8 floats) it is wrong. 1 input channel takes another path and measured correct; it is still
# counted as affected, since nothing is lost by the contiguous layout there.
AVX2_SIMD_FLOATS = 8
AVX512_ISAS = ("AVX512", "AVX10", "AMX", "ALL")  # ONEDNN_MAX_CPU_ISA values that keep oneDNN's AVX-512 kernels


def onednn_uses_avx2_path() -> bool:
    """Whether oneDNN's x86 convolutions run their AVX2 (or older) kernels in this process.

    True on an x86 CPU whose ATen capability is below AVX-512 (``torch.backends.cpu.get_cpu_capability()``, which
    ``ATEN_CPU_CAPABILITY`` can lower), or when ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA``) caps oneDNN below
    AVX-512. False on other architectures, where these x86 kernels do not exist.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if cap and not cap.strip().upper().startswith(AVX512_ISAS):
        return True
    return not torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def affected_convolutions(model: nn.Module) -> list[str]:
    """Names of the model's convolutions whose weight gradient reaches the broken AVX2 kernel in channels_last:
    1x1 kernel, stride above 1, fewer input channels per group than the kernel's SIMD width."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and max(module.stride) > 1:
            if module.in_channels // module.groups < AVX2_SIMD_FLOATS:
                names.append(name)
    return names


def model_memory_format(model: nn.Module, device: torch.device | str) -> torch.memory_format:
    """channels_last, or the contiguous format for a model with an affected convolution on oneDNN's AVX2 path."""
    if torch.device(device).type == "cpu" and onednn_uses_avx2_path() and affected_convolutions(model):
        return torch.contiguous_format
    return torch.channels_last
