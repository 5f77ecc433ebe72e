"""TrainConfig and DataKeys refuse what they cannot take, where they are made, naming the field;
the library never falls back silently on an unknown choice."""

from __future__ import annotations

import types

import pytest
import torch

from gimcli.config import DataKeys, TrainConfig
from gimcli.errors import ConfigError, InputError


@pytest.mark.parametrize(
    "kw,field,words",
    [
        ({"objective": "exactt"}, "objective", "expected one of schedule, exact, relaxed"),
        ({"batching": "ful"}, "batching", "expected one of full, sampled"),
        ({"precision": "fp16"}, "precision", "expected one of fp32, tf32, bf16"),
        ({"dose_response": "linear"}, "dose_response", "expected one of hill, mlp"),
        ({"hvg_flavor": "sorted"}, "hvg_flavor", "expected one of"),
        ({"steps": -5}, "steps", "must be >= 1"),
        ({"steps": 10.5}, "steps", "must be an integer"),
        ({"lr": 0.0}, "lr", "must be > 0"),
        ({"lr": float("nan")}, "lr", "must be finite"),
        ({"structure_first": 1.5}, "structure_first", "between 0 and 1"),
        ({"val_fraction": 1.0}, "val_fraction", "< 1"),
        ({"restarts": 0}, "restarts", "must be >= 1"),
        ({"fix_graph": "yes"}, "fix_graph", "true or false"),
        ({"target_cost": -1.0}, "target_cost", "must be >= 0"),
        ({"seed": -1}, "seed", "must be >= 0"),
    ],
)
def test_train_config_refuses_bad_values_naming_the_field(kw, field, words):
    with pytest.raises(ConfigError, match=words) as e:
        TrainConfig(**kw)
    assert e.value.field == field and isinstance(e.value, InputError)
    assert str(e.value).startswith(f"{field}=")


def test_train_config_round_trip_and_unknown_keys():
    cfg = TrainConfig(steps=10, lr=1, precision="bf16")  # an int is a fine float
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="stpes=10: not a TrainConfig field"):
        TrainConfig.from_dict({"stpes": 10})
    with pytest.raises(ConfigError, match="steps"):
        cfg.replace(steps=0)  # replace() validates too


def test_data_keys_are_frozen_tuples_and_json():
    keys = DataKeys(dose_key="dose", covariate_keys=["cell_line"], feature_keys=None)
    assert keys.covariate_keys == ("cell_line",) and keys.feature_keys == ()
    d = keys.to_dict()
    assert d["covariate_keys"] == ["cell_line"] and DataKeys.from_dict(d) == keys
    with pytest.raises(ConfigError, match="one string"):
        DataKeys(covariate_keys="cell_line")
    with pytest.raises(ConfigError, match="not a DataKeys field"):
        DataKeys.from_dict({"dose": "dose"})


def test_cli_names_the_flag(gim, tmp_path):
    rc, _, err = gim("train", tmp_path / "none.h5ad", "--out", tmp_path / "r", "--steps", "-5")
    assert rc == 3 and "--steps -5: must be >= 1" in err
    rc, _, err = gim("train", tmp_path / "none.h5ad", "--out", tmp_path / "r", "--batching", "ful")
    assert rc == 3 and "--batching 'ful': expected one of full, sampled" in err


def test_library_has_no_silent_fallbacks():
    from gimcli.model.module import GIMModule
    from gimcli.model.precision import matmul_precision
    from gimcli.training.stats import step_data

    with pytest.raises(ValueError, match="fp16"), matmul_precision("fp16", torch.device("cpu")):
        pass
    fake_cfg = types.SimpleNamespace(batching="ful", precision="fp32")
    data = types.SimpleNamespace(precision="fp32")
    with pytest.raises(ValueError, match="ful"):
        step_data(data, fake_cfg)
    module = GIMModule.from_config(TrainConfig(), d=3, n_features=2, n_cov=0)
    with pytest.raises(ValueError, match="exactt"):
        module.loss(None, mode="exactt", target_cost=1.0, l1_graph=0.0)
