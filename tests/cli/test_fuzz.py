"""Property-based: random corruptions of obs, var, X and the file never crash with a traceback,
never write a model or annotated data, and always exit >= 3 with a one-line message."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tiny import TRAIN_ARGS, tiny_screen

pytestmark = pytest.mark.usefixtures("one_thread")

N_CELLS, N_GENES = 140, 8  # the tiny screen
_BASE = None


def _base():
    global _BASE
    if _BASE is None:
        _BASE = tiny_screen()
    return _BASE.copy()


# Each corruption is (name, params); apply() turns it into a broken AnnData (and CLI args).
bad_value = st.sampled_from([np.nan, np.inf, -np.inf]) | st.floats(-1e6, -1e-6)
cell, gene = st.integers(0, N_CELLS - 1), st.integers(0, N_GENES - 1)
junk_text = st.text(
    st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=8
).filter(lambda s: not _is_number(s))
corruption = st.one_of(
    st.tuples(st.just("x_value"), cell, gene, bad_value),
    st.tuples(st.just("x_scale"), st.floats(11.0, 1e4).filter(lambda f: f != round(f))),
    st.tuples(st.just("dup_gene"), gene, gene),
    st.tuples(st.just("dup_cell"), cell, cell),
    st.tuples(st.just("drop_column"), st.sampled_from(["condition", "dose", "f0", "f1", "f2"])),
    st.tuples(st.just("missing_perturbation"), cell),
    st.tuples(st.just("bad_dose"), st.integers(0, 79), junk_text | st.floats(-1e6, -1e-3).map(str)),
    st.tuples(
        st.just("drug_without_features"),
        st.integers(0, 3),
        st.sampled_from(["f0", "f1", "f2"]),
        st.sampled_from([np.nan, np.inf]),
    ),
    st.tuples(st.just("no_controls"), st.integers(0, 3)),
    st.tuples(
        st.just("wrong_key"),
        st.sampled_from(["--perturbation-key", "--dose-key", "--covariate-keys"]),
        st.text(st.characters(codec="ascii", categories=["L"]), min_size=1, max_size=6),
    ),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.95)),
)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


_NEEDS = {
    "missing_perturbation": ["condition"],
    "bad_dose": ["condition", "dose"],
    "drug_without_features": ["condition"],
    "no_controls": ["condition"],
}


def _apply(a, c, args: list[str]) -> tuple[object, float | None]:
    kind, *p = c
    if any(col not in a.obs.columns for col in _NEEDS.get(kind, [])):
        return a, None  # an earlier corruption dropped the column: already an error
    if kind == "x_value":
        X = a.X.toarray() if sp.issparse(a.X) else a.X
        X[p[0], p[1]] = p[2]
        a.X = X
    elif kind == "x_scale":
        a.X = (a.X.toarray() if sp.issparse(a.X) else a.X) * p[0] + 0.5  # normalised, not logged
    elif kind == "dup_gene" and p[0] != p[1]:
        names = a.var_names.tolist()
        names[p[0]] = names[p[1]]
        a.var_names = names
    elif kind == "dup_gene":
        a.var_names = ["G"] * N_GENES
    elif kind == "dup_cell":
        names = a.obs_names.tolist()
        names[p[0]] = names[(p[1] + 1) % N_CELLS if p[0] == p[1] else p[1]]
        a.obs_names = names
    elif kind == "drop_column":
        a.obs = a.obs.drop(columns=p[0], errors="ignore")
    elif kind == "missing_perturbation":
        obs = a.obs.copy()
        obs["condition"] = obs["condition"].astype(object)
        obs.iloc[p[0], obs.columns.get_loc("condition")] = None
        a.obs = obs
    elif kind == "bad_dose":
        obs = a.obs.copy()
        obs["dose"] = obs["dose"].astype(str)
        rows = np.flatnonzero(obs["condition"].astype(str) != "control")
        obs.iloc[rows[p[0]], obs.columns.get_loc("dose")] = p[1]
        a.obs = obs
    elif kind == "drug_without_features":
        obs = a.obs.copy()
        obs.loc[obs["condition"].astype(str) == f"drug0{p[0]}", p[1]] = p[2]
        a.obs = obs
    elif kind == "no_controls":
        obs = a.obs.copy()
        obs["condition"] = obs["condition"].astype(str).replace("control", f"drug0{p[0]}")
        a.obs = obs
    elif kind == "wrong_key":
        args += [p[0], f"zz{p[1]}"]
    elif kind == "truncate":
        return a, p[0]
    return a, None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(corruptions=st.lists(corruption, min_size=1, max_size=3, unique_by=lambda c: c[0]))
def test_random_corruptions_fail_cleanly(gim, tmp_path_factory, corruptions):
    tmp = tmp_path_factory.mktemp("fuzz")
    a, args, cut = _base(), [], None
    for c in corruptions:
        a, frac = _apply(a, c, args)
        cut = frac if frac is not None else cut
    path = tmp / "bad.h5ad"
    a.write_h5ad(path)
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
    out = tmp / "run"
    rc, stdout, err = gim("train", path, "--out", out, *TRAIN_ARGS, "--steps", "3", *args)
    err = err.strip()
    assert rc >= 3, (corruptions, rc, err)
    assert err.startswith("gim: error: ") and len(err.splitlines()) == 1, (corruptions, err)
    assert "Traceback" not in err and "internal error" not in err
    assert stdout == ""
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert written <= {"gim.log"}, written  # the log of the failed command, never an output
