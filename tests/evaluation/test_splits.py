"""Train/test splits against masks written by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from gimcli.errors import InputError
from gimcli.evaluation.splits import Holdout, train_mask


def test_splits():
    obs = pd.DataFrame(
        {
            "condition": ["control"] * 2 + ["a", "a", "b", "a+b"],
            "dose": ["0", "0", "1", "10", "10", "10+10"],
            "line": ["x", "y", "x", "y", "x", "y"],
            "split": ["train"] * 3 + ["test"] * 3,
        }
    )
    kw = {"dose_key": "dose"}
    assert train_mask(obs, Holdout(conditions=["b"]), **kw).tolist() == [1, 1, 1, 1, 0, 1]
    assert train_mask(obs, Holdout(doses=[10.0]), **kw).tolist() == [1, 1, 1, 0, 0, 0]
    assert train_mask(obs, Holdout(combinations=["all"]), **kw).tolist() == [1, 1, 1, 1, 1, 0]
    assert train_mask(obs, Holdout(covariate=("line", "y")), **kw).tolist() == [
        1,
        1,
        1,
        0,
        1,
        0,
    ]  # controls stay
    assert train_mask(obs, Holdout(doses=[10.0], covariate=("line", "x")), **kw).tolist() == [
        1,
        1,
        1,
        1,
        0,
        1,
    ]
    assert train_mask(obs, Holdout(split_key="split"), **kw).tolist() == [1, 1, 1, 0, 0, 0]
    with pytest.raises(InputError, match="'nope'"):
        train_mask(obs, Holdout(conditions=["nope"]), **kw)
    with pytest.raises(InputError, match="every perturbed cell"):
        train_mask(obs, Holdout(doses=[1.0, 10.0]), **kw)
