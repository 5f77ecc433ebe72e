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
