"""A tiny numeric-feature screen for the robustness tests: trains in a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TRAIN_ARGS = ["--dose-key", "dose", "--feature-keys", "f0,f1,f2", "-q"]


def tiny_screen(seed: int = 3):
    from gimcli.simulation import simulate

    return simulate(
        n_genes=8,
        n_drugs=4,
        doses=(100.0,),
        n_cells=20,
        n_control=60,
        features="numeric",
        n_features=3,
        seed=seed,
    )


def write_tiny(path: Path, seed: int = 3) -> Path:
    tiny_screen(seed).write_h5ad(path)
    return path


@pytest.fixture
def one_thread():
    """One torch thread: CPU bit-identity holds at a fixed thread count (subprocesses get
    OMP_NUM_THREADS=1), and tiny models run much faster without thread hand-offs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
