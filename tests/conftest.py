"""Small screens made by gim's own simulator, built once per session and copied per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# The test models are tiny: thread hand-offs cost more than they save (3-10x slower with 2
# threads on a loaded 2-core machine), and one thread keeps CPU runs bit-identical. Subprocesses
# (CLI, torchrun) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write(adata, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory) -> dict[str, Path]:
    from gimcli.simulation import simulate

    d = tmp_path_factory.mktemp("sim")
    return {
        # drugs by SMILES, 2 doses, pairs, 2 cell lines: exercises every code path of train/predict
        "smiles": _write(
            simulate(
                n_genes=12,
                n_drugs=6,
                doses=(10.0, 1000.0),
                n_cells=30,
                n_control=120,
                n_combos=2,
                n_cell_lines=2,
                features="smiles",
                seed=1,
            ),
            d / "smiles.h5ad",
        ),
        # numeric features, raw counts
        "counts": _write(
            simulate(
                n_genes=15,
                n_drugs=5,
                doses=(100.0,),
                n_cells=40,
                n_control=150,
                features="numeric",
                n_features=4,
                counts=True,
                seed=2,
            ),
            d / "counts.h5ad",
        ),
    }


@pytest.fixture
def smiles_h5ad(sim_cache, tmp_path) -> Path:
    return Path(shutil.copy(sim_cache["smiles"], tmp_path / "screen.h5ad"))


@pytest.fixture
def counts_h5ad(sim_cache, tmp_path) -> Path:
    return Path(shutil.copy(sim_cache["counts"], tmp_path / "counts.h5ad"))


@pytest.fixture
def gim(capsys):
    """Run the real CLI entry point in-process: returns (exit code, stdout, stderr)."""
    from gimcli.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return _run


def shared_file(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not available (tests read real data from ../shared/data)")
    return p


@pytest.fixture
def one_thread():
    """One torch thread: CPU bit-identity holds at a fixed thread count (subprocesses get
    OMP_NUM_THREADS=1), and tiny models run much faster without thread hand-offs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_run():
    """A GimRun trained briefly on the tiny screen (dose, three numeric features), and the screen.
    Tests must not modify either."""
    from gimcli.config import DataKeys, TrainConfig
    from gimcli.training.fitting import fit_run
    from tests.tiny import tiny_screen

    adata = tiny_screen()
    keys = DataKeys(dose_key="dose", feature_keys=["f0", "f1", "f2"])
    run, _ = fit_run(
        adata, keys=keys, config=TrainConfig(steps=40, eval_every=10, seed=1), device="cpu"
    )
    return run, adata
