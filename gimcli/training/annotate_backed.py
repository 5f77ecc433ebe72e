"""annotated.h5ad for an input read in backed mode: copy the file, then write the annotations.

The cell matrix is never loaded: the input file is copied byte for byte (streamed) and only the
small elements that `outputs.annotate` changes (obs, var, varm, uns) are rewritten in the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np

from gimcli.data.io import atomic_path
from gimcli.gimrun import GimRun


def write_annotated_backed(
    adata: ad.AnnData, run: GimRun, path: Path, train_mask: np.ndarray | None = None
) -> None:
    from anndata.io import write_elem

    from gimcli.training.outputs import annotate

    # everything but X is in memory in backed mode; the user's varm entries must survive the rewrite
    light = ad.AnnData(
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=dict(adata.uns),
        varm={k: adata.varm[k] for k in adata.varm},
    )
    out = annotate(light, run, train_mask)
    with atomic_path(path) as tmp:
        shutil.copyfile(adata.filename, tmp)
        with h5py.File(tmp, "r+") as f:
            for key, value in (
                ("obs", out.obs),
                ("var", out.var),
                ("varm", dict(out.varm)),
                ("uns", dict(out.uns)),
            ):
                if key in f:
                    del f[key]
                write_elem(f, key, value)
