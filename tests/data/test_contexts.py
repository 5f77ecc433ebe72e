"""Contexts: perturbation x canonical dose x covariate group, built from obs, and the same keys
recovered for new cells (labels, held-out contexts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gimcli.config import DataKeys
from gimcli.data.contexts import (
    build_contexts,
    canonical_doses,
    cell_context_labels,
    context_label,
    context_labels,
    perturbed_contexts,
)
from gimcli.errors import InputError


@pytest.fixture
def obs() -> pd.DataFrame:
    rows = (
        [("control", "0", "A")] * 4
        + [("control", "0", "B")] * 4
        + [("d1", "10", "A")] * 3
        + [("d1", "10.0", "B")] * 3  # the same dose, written differently
        + [("d1+d2", "100", "A")] * 3  # one dose for both components
        + [("d2", "100", "A")] * 2  # too few cells: skipped
    )
    df = pd.DataFrame(rows, columns=["condition", "dose", "line"])
    df.index = [f"c{i}" for i in range(len(df))]
    return df


KEYS = DataKeys(dose_key="dose", covariate_keys=["line"])


def _build(obs):
    return build_contexts(obs, dose_key="dose", covariate_keys=["line"], min_cells=3)


def test_contexts_table_components_and_groups(obs):
    ctx = _build(obs)
    t = ctx.table
    assert list(t.columns) == ["condition", "dose", "line", "n_cells", "is_control"]
    assert t[["condition", "dose", "line"]].values.tolist() == [
        ["control", "", "A"],
        ["control", "", "B"],
        ["d1", "10", "A"],
        ["d1", "10", "B"],
        ["d1+d2", "100+100", "A"],
    ]
    assert t["n_cells"].tolist() == [4, 4, 3, 3, 3]
    assert ctx.comp_names == ["d1", "d2"]
    assert ctx.components.tolist() == [[-1, -1], [-1, -1], [0, -1], [0, -1], [0, 1]]
    assert ctx.comp_dose[4].tolist() == [100.0, 100.0]
    assert ctx.cov_group.tolist() == [0, 1, 0, 1, 0]
    assert ctx.groups["line"].tolist() == ["A", "B"]
    assert (ctx.cell_context[-2:] == -1).all() and (ctx.cell_context[:-2] >= 0).all()
    assert ctx.cov_onehot().tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_contexts_refuse_what_cannot_be_modelled(obs):
    with pytest.raises(InputError, match="no control cells for line=B"):
        _build(obs[~((obs["condition"] == "control") & (obs["line"] == "B"))])
    with pytest.raises(InputError, match="no control cells: no value 'DMSO'"):
        build_contexts(obs, control="DMSO")
    bad = obs.copy()
    bad.loc["c8", "dose"] = "1+2+3"
    with pytest.raises(InputError, match="3 parts for 1 components"):
        _build(bad)


def test_canonical_doses_parse_each_pair_once():
    pert = np.array(["control", "a", "a+b", "a"], object)
    raw = np.array(["x", "1e2", "5", "oops"], object)
    got = canonical_doses(pert, raw, control="control", dose_key="dose", strict=False)
    assert got.tolist() == ["", "100", "5+5", None]
    with pytest.raises(InputError, match="'oops' is not a number"):
        canonical_doses(pert, raw, control="control", dose_key="dose")


def test_labels_of_cells_and_held_out_contexts(obs):
    ctx = _build(obs)
    labels = context_labels(ctx.table, ["line"])
    assert labels[2] == "d1|dose=10|line=A" and labels[0] == "control|line=A"
    assert context_label({"condition": "x", "dose": ""}, []) == "x"
    cells = cell_context_labels(obs, KEYS, ctx.table)
    assert cells[8] == "d1|dose=10|line=A" and cells[11] == "d1|dose=10|line=B"
    assert cells[-1] == ""  # its context was skipped
    table, cell = perturbed_contexts(obs, KEYS)
    assert table[["condition", "dose", "line"]].values.tolist() == [
        ["d1", "10", "A"],
        ["d1", "10", "B"],
        ["d1+d2", "100+100", "A"],
        ["d2", "100", "A"],
    ]
    assert table["n_cells"].tolist() == [3, 3, 3, 2]
    assert (cell[:8] == -1).all() and cell[8:].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 2
    with pytest.raises(InputError, match="covariate column 'line' used in training"):
        perturbed_contexts(obs.drop(columns="line"), KEYS)
