"""torchrun data parallel (2 CPU processes, gloo) and --backed reading against one in-memory run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from gimcli.simulation import simulate

ARGS = [
    "--dose-key",
    "dose",
    "--covariate-keys",
    "cell_line",
    "--feature-keys",
    "f0,f1,f2,f3",
    "--steps",
    "60",
    "--device",
    "cpu",
    "--objective",
    "exact",
    "-q",
]


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scale")
    adata = simulate(
        n_genes=15,
        n_drugs=6,
        doses=(10.0, 1000.0),
        n_cells=40,
        n_control=120,
        n_cell_lines=2,
        n_features=4,
        counts=True,
        library_size=300,
        seed=1,
    )
    adata.write_h5ad(d / "screen.h5ad")
    return d / "screen.h5ad"


@pytest.fixture(scope="module")
def reference(screen) -> Path:
    from gimcli.cli import main

    out = screen.parent / "single"
    assert main(["train", str(screen), "--out", str(out), *ARGS]) == 0
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def _posterior(run: Path) -> np.ndarray:
    return ad.read_h5ad(run / "annotated.h5ad").varm["gim_target_prob"].to_numpy()


@pytest.fixture(scope="module")
def backed(screen) -> Path:
    from gimcli.cli import main

    out = screen.parent / "backed"
    assert main(["train", str(screen), "--out", str(out), "--backed", *ARGS]) == 0
    return out


def test_torchrun_two_processes_match_one(screen, reference, backed):
    """Each of 2 gloo processes reads only its half of the rows (sharded reading) and the
    contexts are sharded for the steps. Stated tolerances after 60 exact steps (at 150, with the
    one hidden layer and weight decay 1.0, Adam grew the summation-order rounding to
    6e-3 in B: the optimiser's path, not the statistics, which test_sharded_statistics_...
    compares directly):
    - against one process reading the same file in chunks (--backed, the same statistics up to
      the all-reduce's summation order): |B - B_1| < 1e-4, posteriors within 1e-4 (measured
      1.2e-6 and 3.6e-7);
    - against one process holding the matrix in memory (statistics within float32 rounding,
      amplified by Adam over the steps): |B - B_mem| < 0.02, posteriors within 0.02 (measured
      0.011 and 4e-5). Without the all-reduces each rank fits its own half and B differs > 0.1."""
    out = screen.parent / "ddp"
    _torchrun("-m", "gimcli", "train", str(screen), "--out", str(out), *ARGS)
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in reference.iterdir())
    a, b, c = _weights(reference), _weights(out), _weights(backed)
    assert float((c["module.sem.B"] - b["module.sem.B"]).abs().max()) < 1e-4
    assert np.nanmax(np.abs(_posterior(backed) - _posterior(out))) < 1e-4
    assert float((a["module.sem.B"] - b["module.sem.B"]).abs().max()) < 0.02
    # a graph was learned, not two zeros compared
    assert float((a["module.sem.B"]).abs().max()) > 0.1
    assert np.nanmax(np.abs(_posterior(reference) - _posterior(out))) < 0.02
    # annotated.h5ad of a sharded run: the input's file with annotations, X never loaded
    src, ann = ad.read_h5ad(screen), ad.read_h5ad(out / "annotated.h5ad")
    assert (src.X != ann.X).nnz == 0 and ann.obs["gim_context"].astype(str).ne("").all()


def test_backed_reading_gives_the_same_run(screen, reference, backed):
    """--backed reads in chunks and never holds the modelled matrix (gimcli.training.sharded):
    the statistics equal the in-memory ones to float32 rounding, so after 60 steps B is within
    0.02 and the posteriors within 0.02, as for the sharded run above (measured 4e-5 with weight
    decay 0.1 and two layers, 1.2e-3 with one layer and weight decay 0.3, 9.9e-3 with the shift
    prior: Adam's path amplifies the rounding)."""
    a, b = _weights(reference), _weights(backed)
    assert float((a["module.sem.B"] - b["module.sem.B"]).abs().max()) < 0.02
    assert np.nanmax(np.abs(_posterior(reference) - _posterior(backed))) < 0.02
    assert torch.equal(a["ref_cells"], b["ref_cells"])  # the same reference control cells
    # annotated.h5ad is the input plus annotations: the copied cell matrix is the input's
    src, ann = ad.read_h5ad(screen), ad.read_h5ad(backed / "annotated.h5ad")
    assert (src.X != ann.X).nnz == 0
    assert ann.obs["gim_context"].astype(str).ne("").all()


def test_backed_reading_runs_the_same_value_checks(screen, gim, tmp_path):
    """Counts mixed with a non-integer value are refused in chunks too, naming the cell and gene."""
    a = ad.read_h5ad(screen)
    X = a.X.toarray()
    X[-1, 2] = 0.5  # far past the first chunk that decides "counts"
    a.X = X
    bad = tmp_path / "mixed.h5ad"
    a.write_h5ad(bad)
    for extra in ([], ["--backed"]):
        rc, _, err = gim("train", bad, "--out", tmp_path / f"run{len(extra)}", *ARGS, *extra)
        assert rc == 3 and "0.5" in err and repr(a.obs_names[-1]) in err, (extra, err)


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    p = subprocess.run(
        [*cmd, "--nproc-per-node", str(nproc), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_sharded_statistics_of_two_processes_equal_one_in_memory(tmp_path):
    """Two gloo processes, each reading only its half of the rows in chunks, end with the same
    genes (gene selection from all-reduced sums), standardisation, per-context sums and pooled
    scatter as one process holding the whole matrix, within float32 tolerance."""
    from gimcli.config import DataKeys, TrainConfig
    from gimcli.training import fitting
    from gimcli.training.batches import TrainData
    from gimcli.training.stats import FullStats

    adata = simulate(
        n_genes=40, n_drugs=5, doses=(10.0, 1000.0), n_cells=30, n_control=90, n_cell_lines=2,
        n_features=2, counts=True, library_size=400, seed=3,
    )  # fmt: skip
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    worker = Path(__file__).with_name("shard_worker.py")
    # small chunks (1500 stored values): each process reads several
    _torchrun(str(worker), str(path), str(tmp_path), "20", "1500")
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    for k in r0.files:  # every process holds the same global statistics
        if not k.startswith("shard_"):
            assert np.array_equal(r0[k], r1[k]), k
    assert r0["shard_n_train"] + r1["shard_n_train"] == r0["n_train"].sum()  # contexts split
    keys = DataKeys(dose_key="dose", covariate_keys=["cell_line"], feature_keys=["f0", "f1"])
    cfg = TrainConfig(n_top_genes=20)
    prep = fitting.prepare(adata, keys, drug_features=None, config=cfg)
    assert list(r0["genes"]) == prep.preprocess.genes and len(prep.preprocess.genes) == 20
    assert np.allclose(r0["mean"], prep.std_mean, rtol=1e-5, atol=1e-5)
    assert np.allclose(r0["sd"], prep.std_sd, rtol=1e-4, atol=1e-5)
    assert np.array_equal(r0["ref"], prep.ref_cells())  # the same reference control cells
    td = TrainData(
        prep.X, prep.contexts.cell_context, prep.context_batch, prep.cell_group, prep.std_mean,
        prep.std_sd, val_fraction=cfg.val_fraction, seed=cfg.seed, device=torch.device("cpu"),
    )  # fmt: skip
    full = FullStats(td)
    for s in ("train", "val"):
        ref = full._stats[s]
        used = r0[f"n_{s}"] > 0
        assert np.array_equal(r0[f"n_{s}"][used], ref.n.numpy())
        # standardised sums: within 1e-4 sd per cell (the float32 rounding of mean and sd)
        err = np.abs(r0[f"sum_{s}"][used] - ref.sum_x.numpy()) / ref.n.numpy()[:, None]
        assert err.max() < 1e-4, s
        W = ref.W.double().numpy()
        # W scales as 1/sd^2: the sd's float32 rounding (~1e-5) doubles here (measured 2.6e-5)
        assert np.abs(r0[f"W_{s}"] - W).max() < 1e-4 * np.abs(W).max(), s


def test_threads_follow_the_allocation(monkeypatch, backed):
    """--threads wins; else OMP_NUM_THREADS; else SLURM_CPUS_PER_TASK or the CPU affinity,
    shared among torchrun's local processes; the number used is recorded in model.json."""
    import json

    from gimcli.training.distributed import resolve_threads

    for k in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert resolve_threads(3) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(0) == (1, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(0) == (len(os.sched_getaffinity(0)), "CPU affinity")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "32")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_threads(0) == (8, "SLURM_CPUS_PER_TASK / 4 local processes")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert resolve_threads(0)[0] == 1
    training = json.loads((backed / "model.json").read_text())["training"]
    assert training["threads"] >= 1 and training["threads_source"]
    assert len(training["peak_rss_bytes"]) == 1 and training["stage_seconds"]["scatter"] > 0
