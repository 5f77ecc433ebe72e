"""Preprocessing: scanpy's own normalisation and seurat gene selection, in memory and in chunks.

Every other test screen has fewer genes than n_top_genes, so gene selection runs here: on 60
genes, against scanpy itself, and the chunked (backed) reader against the in-memory one.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import gimcli.data.chunked as chunked
from gimcli.data.checks import check_expression
from gimcli.data.preprocess import preprocess, transform_new
from gimcli.errors import InputError
from gimcli.simulation import simulate

N_TOP = 25


@pytest.fixture(scope="module")
def counts60():
    return simulate(
        n_genes=60, n_drugs=4, doses=(100.0,), n_cells=40, n_control=120, counts=True, seed=2
    )


def _scanpy_hvg(adata: ad.AnnData, n_top: int) -> list[str]:
    ref = adata.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=n_top, flavor="seurat")
    return ref.var_names[ref.var["highly_variable"].to_numpy()].tolist()


def test_seurat_selection_is_scanpys(counts60):
    X, info = preprocess(counts60, n_top_genes=N_TOP)
    assert info.is_counts and info.log1p and info.hvg_flavor == "seurat"
    assert info.genes == _scanpy_hvg(counts60, N_TOP) and len(info.genes) == N_TOP
    assert X.shape == (counts60.n_obs, N_TOP) and X.dtype == np.float32
    ref = counts60.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(X.toarray(), ref[:, info.genes].X.toarray(), rtol=1e-6)


def test_seurat_rule_from_moments_matches_scanpy(counts60):
    """chunked.seurat_hvg reproduces scanpy's rule from per-gene mean and variance only."""
    ref = counts60.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    e = np.expm1(ref.X.toarray().astype(np.float64))
    keep = chunked.seurat_hvg(e.mean(0), e.var(0, ddof=1), N_TOP)
    assert ref.var_names[keep].tolist() == _scanpy_hvg(counts60, N_TOP)


def test_forced_genes_are_kept(counts60):
    plain = preprocess(counts60, n_top_genes=N_TOP)[1].genes
    extra = next(g for g in counts60.var_names if g not in plain)
    _, info = preprocess(counts60, n_top_genes=N_TOP, force_genes=[extra, "not-a-gene"])
    assert set(info.genes) == set(plain) | {extra}


@pytest.mark.parametrize("chunk_nnz", [None, 500])  # one chunk, and many (rows cut anywhere)
def test_chunked_equals_in_memory(counts60, tmp_path, monkeypatch, chunk_nnz):
    if chunk_nnz:
        monkeypatch.setattr(chunked, "_CHUNK_NNZ", chunk_nnz)
    path = tmp_path / "c.h5ad"
    counts60.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    for n_top in (N_TOP, 1000):  # with gene selection, and without (every gene kept)
        Xm, im = preprocess(counts60, n_top_genes=n_top)
        Xb, ib = preprocess(backed, n_top_genes=n_top)
        assert ib == im
        np.testing.assert_array_equal(Xb.toarray(), Xm.toarray())
    backed.file.close()


def test_log_normalised_input_is_used_as_given_and_checked(counts60):
    logged = counts60.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    X, info = preprocess(logged, n_top_genes=1000)
    assert not info.is_counts and info.target_sum is None and info.hvg_flavor is None
    np.testing.assert_array_equal(X.toarray(), logged.X.toarray())
    assert check_expression(counts60.X, where="X") is True
    with pytest.raises(InputError, match="counts-layer given"):
        check_expression(logged.X, where="X", counts_layer=True)


def test_transform_new_repeats_training_preprocessing(counts60):
    X, info = preprocess(counts60, n_top_genes=N_TOP)
    shuffled = counts60[:, counts60.var_names[::-1]].copy()  # aligned by name, not position
    Xn, missing = transform_new(shuffled, info)
    assert missing == []
    np.testing.assert_allclose(Xn.toarray(), X.toarray(), rtol=1e-6)
