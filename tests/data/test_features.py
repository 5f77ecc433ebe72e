"""Featurisation: one path (descriptors -> FeatureSpec.featurize) for training, new drugs from a
table and new drugs from obs; the spec survives JSON."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gimcli.config import DataKeys, TrainConfig
from gimcli.data.features import (
    FeatureSpec,
    component_descriptors,
    read_feature_csv,
    tanimoto,
    training_features,
)
from gimcli.errors import InputError

SMILES = {"Aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O", "Caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"}


def _obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "condition": ["control", "Aspirin", "Aspirin", "Caffeine", "Aspirin+Caffeine"],
            "smiles": ["", SMILES["Aspirin"], SMILES["Aspirin"], SMILES["Caffeine"], ""],
            "f0": [np.nan, 1.0, 3.0, 5.0, np.nan],
            "f1": [np.nan, 0.0, 0.0, 1.0, np.nan],
        }
    )


def test_smiles_from_obs_and_from_a_table_give_the_same_features():
    names = ["Aspirin", "Caffeine"]
    cfg = TrainConfig(fp_bits=256)
    spec, F = training_features(
        _obs(), names, keys=DataKeys(smiles_key="smiles"), drug_features=None, config=cfg
    )
    table = pd.DataFrame({"name": list(SMILES), "smiles": list(SMILES.values())})
    spec_t, F_t = training_features(_obs(), names, keys=DataKeys(), drug_features=table, config=cfg)
    assert spec == spec_t and spec.kind == "smiles" and spec.smiles == SMILES
    np.testing.assert_array_equal(F, F_t)
    assert F.shape == (2, 256) and set(np.unique(F)) <= {0.0, 1.0}
    new = spec.featurize(component_descriptors(spec, ["Aspirin"], table=table))
    np.testing.assert_array_equal(new["Aspirin"], F[0])
    assert tanimoto(F[:1], F)[0, 0] == 1.0 and tanimoto(F[:1], F)[0, 1] < 1.0
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_numeric_features_are_standardised_per_component_mean():
    spec, F = training_features(
        _obs(),
        ["Aspirin", "Caffeine"],
        keys=DataKeys(feature_keys=["f0", "f1"]),
        drug_features=None,
        config=TrainConfig(),
    )
    assert spec.kind == "numeric" and spec.columns == ["f0", "f1"]
    raw = np.array([[2.0, 0.0], [5.0, 1.0]])  # Aspirin: mean of its two cells
    np.testing.assert_allclose(F, (raw - raw.mean(0)) / raw.std(0), rtol=1e-6)
    table = pd.DataFrame({"name": ["New"], "f0": [2.0], "f1": [0.0]})
    new = spec.featurize(component_descriptors(spec, ["New"], table=table))
    np.testing.assert_allclose(new["New"], F[0], rtol=1e-6)


def test_identity_features_and_refusals():
    spec, F = training_features(
        _obs(), ["Aspirin", "Caffeine"], keys=DataKeys(), drug_features=None, config=TrainConfig()
    )
    assert spec.kind == "identity" and F.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # a name not seen in training has no identity: a zero row (the unseen knock-out rule)
    assert spec.featurize({"New": "New", "Caffeine": "Caffeine"}) == {
        "New": pytest.approx([0.0, 0.0]),
        "Caffeine": pytest.approx([0.0, 1.0]),
    }
    with pytest.raises(InputError, match="give only one of"):
        training_features(
            _obs(),
            ["Aspirin"],
            keys=DataKeys(smiles_key="smiles", feature_keys=["f0"]),
            drug_features=None,
            config=TrainConfig(),
        )
    missing = r"no SMILES in obs\['smiles'\] for perturbation\(s\) \['X'\]"
    with pytest.raises(InputError, match=missing):
        keys = DataKeys(smiles_key="smiles")
        training_features(_obs(), ["X"], keys=keys, drug_features=None, config=TrainConfig())


def test_feature_csv_needs_name_and_with_smiles_a_smiles_column(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("Name,SMILES\nA,CCO\n")
    df = read_feature_csv(str(p), smiles=True)
    assert df.columns.tolist() == ["name", "smiles"]
    p.write_text("name,logp\nA,1\n")
    with pytest.raises(InputError, match="missing column 'smiles'"):
        read_feature_csv(str(p), smiles=True)
    p.write_text("smiles\nCCO\n")
    with pytest.raises(InputError, match="missing column 'name'"):
        read_feature_csv(str(p))
