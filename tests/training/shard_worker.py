"""Run under torchrun by tests/training/test_scale.py: each process reads its rows of a backed
file and saves the statistics it ends with (the all-reduced ones) to OUT/rank<r>.npz."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import torch

from gimcli.config import DataKeys, TrainConfig
from gimcli.data import chunked
from gimcli.training.distributed import DataParallel
from gimcli.training.fitting import prepare_sharded


def main(path: str, out: str, n_top_genes: int, chunk_nnz: int) -> None:
    chunked._CHUNK_NNZ = chunk_nnz  # several chunks per process
    dev = torch.device("cpu")
    ddp = DataParallel.from_env(dev)
    keys = DataKeys(dose_key="dose", covariate_keys=["cell_line"], feature_keys=["f0", "f1"])
    cfg = TrainConfig(n_top_genes=n_top_genes)
    adata = ad.read_h5ad(path, backed="r")
    prep, st = prepare_sharded(
        adata, keys, drug_features=None, config=cfg, train_mask=None, ddp=ddp, device=dev
    )
    np.savez(
        f"{out}/rank{ddp.rank if ddp else 0}.npz",
        genes=np.array(prep.preprocess.genes),
        mean=prep.std_mean,
        sd=prep.std_sd,
        ref=prep.ref_cells(),
        rows=np.array(st.sum_x["train"].shape[0]),
        **{f"sum_{s}": st.sum_x[s] for s in ("train", "val")},
        **{f"n_{s}": st.n[s] for s in ("train", "val")},
        **{f"W_{s}": st._W[s] for s in ("train", "val")},
        **{f"shard_n_{s}": st.n_cells(s) for s in ("train", "val")},
    )
    if ddp:
        ddp.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
