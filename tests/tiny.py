"""A tiny numeric-feature screen for the robustness tests: trains in a few seconds.

Plain helpers, imported by the tests that corrupt or rewrite it (and by bench/robust_messages.py);
the fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

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
