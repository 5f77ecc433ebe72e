"""Prediction: which contexts a request names, and the AnnData of predicted cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gimcli import _keys
from gimcli.errors import InputError
from gimcli.prediction import build_requests, predict


def test_requests_cross_doses_and_canonicalise(tiny_run):
    run, _ = tiny_run
    req, new = build_requests(run, conditions=["drug00", "drug01+drug02"], doses=[10.0, 1e3])
    assert new == {}
    assert req.values.tolist() == [
        ["drug00", "10"],
        ["drug00", "1000"],
        ["drug01+drug02", "10+10"],
        ["drug01+drug02", "1000+1000"],
    ]
    with pytest.raises(InputError, match="not in training"):
        build_requests(run, conditions=["nope"], doses=[10.0])
    with pytest.raises(InputError, match="give --doses"):
        build_requests(run, conditions=["drug00"])
    with pytest.raises(InputError, match="either"):
        build_requests(run)


def test_requests_from_a_features_table(tiny_run):
    run, _ = tiny_run
    table = pd.DataFrame(
        {"name": [" new ", "drug00"], "f0": [0.1, 0.2], "f1": [1.0, 2.0], "f2": [0.0, 0.0]}
    ).assign(dose=["100", "10"])
    req, new = build_requests(run, features=table)
    assert req.values.tolist() == [["new", "100"], ["drug00", "10"]]
    assert set(new) == {"new", "drug00"} and new["new"].dtype == np.float32
    with pytest.raises(InputError, match="lacks feature column"):
        build_requests(run, features=table.drop(columns="f2"))


def test_predicted_anndata(tiny_run):
    run, _ = tiny_run
    req, new = build_requests(run, conditions=["drug00", "drug01"], doses=[100.0])
    a = predict(run, req, new, n_cells=7, seed=3)
    b = predict(run, req, new, n_cells=7, seed=3)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())  # reproducible from the seed
    assert a.shape == (14, len(run.genes)) and a.var_names.tolist() == run.genes
    assert a.obs["condition"].tolist() == ["drug00"] * 7 + ["drug01"] * 7
    assert (a.X.toarray() >= 0).all()
    mean = a.layers[_keys.LAYER_MEAN]
    assert np.allclose(mean[:7], mean[0]) and not np.allclose(mean[0], mean[7])
    uns = a.uns[_keys.UNS]
    assert list(uns["conditions"].index) == ["drug00|dose=100", "drug01|dose=100"]
    np.testing.assert_array_equal(uns["mean"].to_numpy(), mean[[0, 7]])
    assert uns["params"] == {
        "n_cells": 7,
        "seed": 3,
        "map_targets": False,
        "noise": "controls",
        "with_controls": False,
    }
    assert uns["model"]["config"] == run.meta.config.to_dict()
    g = predict(run, req, new, n_cells=7, seed=3, noise="gaussian")
    assert g.uns[_keys.UNS]["params"]["noise"] == "gaussian"
    # the same model mean, other cells; the mean layer is always that of the cells written
    pd.testing.assert_frame_equal(g.uns[_keys.UNS]["model_mean"], uns["model_mean"])
    np.testing.assert_allclose(g.layers[_keys.LAYER_MEAN][0], g.X.toarray()[:7].mean(0), atol=1e-6)


def test_streamed_file_equals_the_in_memory_prediction(tiny_run, tmp_path):
    """write_predictions streams chunks of conditions to disk; the file reads back as predict()."""
    import anndata as ad

    from gimcli.prediction import write_predictions

    run, _ = tiny_run
    req, new = build_requests(run, conditions=["drug00", "drug01", "drug02"], doses=[100.0])
    mem = predict(run, req, new, n_cells=5, seed=2, with_controls=True)
    path = tmp_path / "p.h5ad"
    summary = write_predictions(run, req, path, new, n_cells=5, seed=2, chunk=1)
    disk = ad.read_h5ad(path)
    assert summary["n_obs"] == disk.n_obs == mem.n_obs == 3 * 5 + 60
    np.testing.assert_array_equal(disk.X.toarray(), mem.X.toarray())
    for k in (_keys.LAYER_MEAN, _keys.LAYER_TARGET_PROB):
        np.testing.assert_array_equal(disk.layers[k], mem.layers[k])
    np.testing.assert_allclose(disk.obsm["X_pca"], mem.obsm["X_pca"], atol=1e-5)
    pd.testing.assert_frame_equal(disk.obs, mem.obs)
    pd.testing.assert_frame_equal(disk.uns["gim"]["mean"], mem.uns["gim"]["mean"])
    assert disk.var[_keys.VAR_INPUT_INDEX].tolist() == mem.var[_keys.VAR_INPUT_INDEX].tolist()


def test_a_conditions_cells_do_not_depend_on_the_others(tiny_run):
    run, _ = tiny_run
    both, _ = build_requests(run, conditions=["drug00", "drug01"], doses=[100.0])
    one, _ = build_requests(run, conditions=["drug01"], doses=[100.0])
    a = predict(run, both, n_cells=9, seed=4, chunk=1)
    b = predict(run, one, n_cells=9, seed=4)
    # the same cells, to the float32 rounding of a batch of conditions
    np.testing.assert_allclose(a.X.toarray()[9:], b.X.toarray(), atol=1e-5)


def test_controls_labels_names_and_gene_alignment(tiny_run):
    """--with-controls: the training controls under the control label in the training column;
    obs names unique across files; genes lined up with the input's full gene set."""
    import anndata as ad

    run, adata = tiny_run
    req, new = build_requests(run, conditions=["drug00"], doses=[100.0])
    a = predict(run, req, new, with_controls=True)
    key = run.meta.keys.perturbation_key
    ctrl = a.obs[a.obs[_keys.OBS_SOURCE] == "training_control"]
    assert len(ctrl) == 60 and set(ctrl[key]) == {run.meta.keys.control}
    pred = a[a.obs[_keys.OBS_SOURCE] == "predicted"]
    assert pred.n_obs == 60  # n_cells None: every reference control cell once
    # the control rows are exactly the reference cells, the predicted ones keep their sparsity
    np.testing.assert_array_equal(a[ctrl.index].X.toarray(), run.ref_cells)
    b = predict(run, req, new, n_cells=5, seed=1)
    assert not set(a.obs_names) & set(b.obs_names)
    assert ad.concat([a, b]).obs_names.is_unique
    idx = a.var[_keys.VAR_INPUT_INDEX].to_numpy()
    assert (adata.var_names[idx] == a.var_names).all()
    assert a.uns["gim"]["genes"]["input_n_vars"] in (-1, adata.n_vars)
    assert a.obsm["X_pca"].shape == (a.n_obs, a.varm["PCs"].shape[1])


def test_continuous_runs_are_not_clipped(tiny_run, monkeypatch):
    """One switch: a run whose preprocessing records kind 'continuous' gets the plain shift."""
    from dataclasses import dataclass

    from gimcli import prediction

    run, _ = tiny_run
    req, new = build_requests(run, conditions=["drug00"], doses=[100.0])
    log_cells = predict(run, req, new).X.toarray()

    @dataclass
    class Info:
        kind: str
        genes: list

    monkeypatch.setattr(
        type(run), "preprocess_info", property(lambda r: Info("continuous", r.genes))
    )
    assert not prediction.log_space(run)
    cont = predict(run, req, new).X.toarray()
    delta = cont - run.ref_cells
    np.testing.assert_allclose(delta, delta[0][None].repeat(len(delta), 0), atol=1e-5)
    assert not np.array_equal(cont, log_cells)


def test_many_conditions_stream_to_disk_in_bounded_pieces(tiny_run, tmp_path, monkeypatch):
    """Predictions of many conditions (every known drug x 4 doses) reach the file one chunk of
    conditions at a time: no appended piece holds more than `chunk` conditions' cells, so memory
    follows the chunk, not the number of conditions (issue 13)."""
    import anndata as ad

    from gimcli.data.io import H5adAppender
    from gimcli.prediction import write_predictions

    run, _ = tiny_run
    drugs = sorted(run.meta.components)
    req, new = build_requests(run, conditions=drugs, doses=[1.0, 10.0, 100.0, 1000.0])
    sizes = []
    append = H5adAppender.append
    monkeypatch.setattr(
        H5adAppender, "append", lambda self, piece: (sizes.append(piece.n_obs), append(self, piece))
    )
    path = tmp_path / "many.h5ad"
    summary = write_predictions(run, req, path, new, n_cells=4, seed=0, chunk=3)
    n_pred = 4 * len(req)
    assert len(req) >= 12 and summary["n_conditions"] == len(req)
    n_chunks = -(-len(req) // 3)  # one piece per chunk of conditions, then the controls
    assert all(s <= 3 * 4 for s in sizes[:n_chunks]) and sum(sizes[:n_chunks]) == n_pred
    assert sum(sizes) == summary["n_obs"] == ad.read_h5ad(path, backed="r").n_obs
