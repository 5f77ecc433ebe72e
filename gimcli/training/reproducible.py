"""Reproducibility: deterministic kernels, and the provenance every output records.

On CPU a fixed `--seed` alone makes runs bit-for-bit identical (same machine, same versions, same
number of threads: the seeded RNGs drive every random choice, and CPU kernels do not race).
On CUDA, atomics in scatter/index kernels and cuBLAS workspaces make sums order-dependent;
`--deterministic` switches to deterministic kernels. Then two runs on the same GPU model and
software agree to within GPU_TOLERANCE (they usually agree exactly; across GPU models or
versions nothing is promised).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Max abs difference of trained weights between two --deterministic runs on one GPU model.
GPU_TOLERANCE = 1e-5


def set_deterministic(enabled: bool) -> None:
    """Use only deterministic torch kernels (errors, not silent nondeterminism, if one lacks)."""
    if not enabled:
        return
    # cuBLAS needs a fixed workspace to be deterministic; must be set before CUDA initialises.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def provenance(
    *, seed: int | None = None, inputs: dict[str, str | Path | None] | None = None
) -> dict:
    """Seed, package versions and the SHA-256 of each input file: recorded in every output."""
    from gimcli.data.io import file_sha256
    from gimcli.gimrun import versions

    files = {}
    for name, p in (inputs or {}).items():
        if p is None:
            continue
        p = Path(p)
        files[name] = {"path": str(p), "sha256": file_sha256(p) if p.is_file() else ""}
    return {
        "seed": seed,
        "versions": versions(),
        "inputs": files,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch_threads": torch.get_num_threads(),
    }
