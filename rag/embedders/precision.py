"""Forward-pass precision of local torch models: float32, or bfloat16 autocast.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` matrix products run in bfloat16 while
softmax, layer norm and reductions stay in float32 (PyTorch's CPU autocast op lists). On a
CPU with native bfloat16 instructions (AVX512-BF16 or AMX, which oneDNN uses) this measured
1.75x the float32 throughput for all-MiniLM-L6-v2 and 1.5x for SPLADE-tiny on this project's
machine, with a cosine of at least 0.99997 between the two precisions' dense vectors
(docs/BENCHMARKS.md). Without native support bfloat16 is emulated and slower, so ``auto``
picks float32 there.
"""

from __future__ import annotations

import contextlib

import torch

from rag.settings import Precision


def native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 matrix products natively on this CPU."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(precision: Precision, device: str = "cpu") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain float32).

    ``auto`` is bfloat16 on a CPU with native bfloat16, float32 otherwise (and on any other
    device, whose precision the model's own settings decide).
    """
    if precision is Precision.FLOAT32 or not device.startswith("cpu"):
        return None
    if precision is Precision.BFLOAT16 or native_bfloat16():
        return torch.bfloat16
    return None


def forward_context(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """A context in which forward passes run in ``dtype`` (autocast), or a no-op for
    ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)
