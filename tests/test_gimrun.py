"""GimRun: the run directory round trip (model.pt + model.json), saving over an existing run, and
what loading refuses."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from gimcli import _keys
from gimcli.errors import CheckpointMismatch, ModelError
from gimcli.gimrun import GimRun
from gimcli.schema import MODEL_FORMAT_VERSION, RunMeta


def _requests(run):
    return pd.DataFrame({"condition": ["drug00", "drug01+drug02"], "dose": ["100", "100+100"]})


def _same_run(a: GimRun, b: GimRun) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert replace(a.meta, weights_sha256=None) == replace(b.meta, weights_sha256=None)
    arrays = ("comp_feats", "std_mean", "std_sd", "posterior", "posterior_shift")
    for name in (*arrays, "posterior_spike", "ref_cells", "ref_group"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_save_load_round_trip(tiny_run, tmp_path):
    run, _ = tiny_run
    run.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / _keys.MODEL_META).read_text())
    assert meta["format_version"] == MODEL_FORMAT_VERSION and len(meta["weights_sha256"]) == 64
    assert list(meta)[:5] == ["format_version", "versions", "seed", "config", "input"]
    back = GimRun.load(tmp_path / "r")
    _same_run(run, back)
    assert back.meta.weights_sha256 == meta["weights_sha256"] and run.meta.weights_sha256 is None
    a, b = run.interventions(_requests(run)), back.interventions(_requests(run))
    np.testing.assert_array_equal(a.prob, b.prob)
    np.testing.assert_array_equal(a.direct(), b.direct())


def test_run_meta_json_round_trip(tiny_run):
    run, _ = tiny_run
    js = json.loads(json.dumps(run.meta.to_json()))
    assert RunMeta.from_json(js) == run.meta
    with pytest.raises(KeyError, match="unknown key"):
        RunMeta.from_json({**js, "extra": 1})


def test_save_over_an_existing_run(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "r"
    run.save(out)
    other = replace(run, std_mean=run.std_mean + 1.0, meta=replace(run.meta, seed=99))
    other.save(out)  # replaces both files; the checksum ties them together again
    back = GimRun.load(out)
    assert back.meta.seed == 99
    np.testing.assert_array_equal(back.std_mean, run.std_mean + 1.0)
    assert sorted(p.name for p in out.iterdir()) == [_keys.MODEL_META, _keys.MODEL_WEIGHTS]


def test_load_refuses_other_formats_and_mismatched_files(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "r"
    run.save(out)
    meta_p = out / _keys.MODEL_META
    good = json.loads(meta_p.read_text())
    meta_p.write_text(json.dumps({**good, "format_version": MODEL_FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointMismatch, match="retrain"):
        GimRun.load(out)
    bad_cfg = {**good, "config": {**good["config"], "steps": -1}}
    meta_p.write_text(json.dumps(bad_cfg))
    with pytest.raises(ModelError, match="do not match each other.*steps=-1"):
        GimRun.load(out)
    meta_p.write_text(json.dumps({**good, "weights_sha256": "0" * 64}))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        GimRun.load(out)


def test_component_features_of_training_and_new_components(tiny_run):
    run, adata = tiny_run
    feats = run.component_features(["drug00", "drug03"])
    np.testing.assert_array_equal(feats["drug00"], run.comp_feats[0])
    table = pd.DataFrame({"name": ["new"], "f0": [0.0], "f1": [1.0], "f2": [2.0]})
    new = run.component_features(["new"], table=table)["new"]
    m, s = np.asarray(run.spec.mean), np.asarray(run.spec.sd)
    np.testing.assert_allclose(new, (np.array([0.0, 1.0, 2.0]) - m) / s, rtol=1e-6)
    from_obs = run.component_features(["drug01"], obs=adata.obs)  # a training one: as trained
    np.testing.assert_array_equal(from_obs["drug01"], run.comp_feats[1])


def test_a_loaded_run_refits_its_feature_prior_from_the_saved_choices(tmp_path, monkeypatch):
    """model.pt keeps what the feature prior chose by cross-validation, so a loaded run refits it
    in one pass (no gate search, no out-of-fold refits) and predicts new drugs and unmeasured
    doses exactly as the run that was saved."""
    import gimcli as gim
    from gimcli.model import feature_prior

    a = gim.simulate(n_genes=12, n_drugs=40, doses="10,100,1000", n_cells=15, seed=3)
    feats = [c for c in a.obs.columns if c.startswith("f")]
    train = a[a.obs["condition"] != "drug39"].copy()
    run = gim.train(train, dose_key="dose", feature_keys=feats, steps=60, seed=0)
    run.save(tmp_path / "r")
    ch = run._feature_prior.choices()
    assert (ch["gate_kind"] >= 0).sum() >= 2 and run.dose_weight_new is None

    def searched(*_):
        raise AssertionError("the loaded run searched again")

    monkeypatch.setattr(feature_prior, "_log_loss", searched)  # only the gate search calls it
    monkeypatch.setattr(feature_prior.FeaturePrior, "fit", searched)
    back = GimRun.load(tmp_path / "r")
    requests = pd.DataFrame(
        {"condition": ["drug39", "drug00", "drug01"], "dose": ["100", "300", "1000"]}
    )
    new = {"drug39": a.obs.loc[a.obs["condition"] == "drug39", feats].iloc[0].to_numpy(float)}
    x, y = run.interventions(requests, new), back.interventions(requests, new)
    for name in ("prob", "shift", "spike", "log_odds"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    assert back.dose_weight_new == run._dose_residuals[2]
    assert back._feature_prior.chosen == run._feature_prior.chosen
    # choices that do not belong to the run's data are refused, not silently refitted
    bad = {**ch, "gate_kind": np.roll(ch["gate_kind"], 1)}
    with pytest.raises(ModelError, match="feature prior does not fit"):
        _ = replace(back, feature_prior_choices=bad)._feature_prior
