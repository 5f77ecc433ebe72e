"""Matmul precision of the training step: fp32, TF32 or bf16, scoped to the d x d products.

Only the large products (cells or contexts times A, and A W A^T) run at reduced precision; the
exact marginal, `slogdet` and the optimiser stay in fp32, so the objective's bookkeeping is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from gimcli.config import PRECISIONS
from gimcli.errors import InputError

Precision = Literal["fp32", "tf32", "bf16"]


def check_precision(precision: str, device: torch.device) -> None:
    """A known precision that `device` supports (bf16 needs hardware support on CUDA)."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support"
        )


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed matmuls at `precision`; restores the global flags on exit.

    TF32 only exists on CUDA (Ampere and newer): on CPU it is plain fp32. bf16 uses autocast on
    either device (CPUs with AVX512-BF16/AMX run it natively).
    """
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    elif precision not in PRECISIONS:  # never silently fp32: TrainConfig refuses it earlier
        raise ValueError(f"unknown matmul precision {precision!r}")
    elif precision == "tf32" and device.type == "cuda":
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        yield


def matmul(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b at `precision`, returned in a's dtype."""
    with matmul_precision(precision, a.device):
        return (a @ b).to(a.dtype)
