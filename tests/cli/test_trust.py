"""Issue 10, "a tool a biologist can trust", through the CLI: fail before the first step, no
partial run directory, errors in gim.log and under --json (item 1, item 9's exit codes)."""

from __future__ import annotations

import json

import pytest

from tests.tiny import TRAIN_ARGS, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
IDENTITY = ["--dose-key", "dose", "-q"]  # the tiny screen without --feature-keys: identity


def test_heldout_perturbation_without_features_fails_before_training(gim, tmp_path):
    from tests.tiny import tiny_screen

    a = tiny_screen()
    a.obs.loc[a.obs["condition"] == "drug01", "f0"] = float("nan")  # no features to describe it
    data = tmp_path / "tiny.h5ad"
    a.write_h5ad(data)
    out = tmp_path / "run"
    args = ["train", data, "--out", out, *TRAIN_ARGS, "--holdout-conditions", "drug01"]
    rc, stdout, err = gim(*args, "--steps", "5", "--json")
    assert rc == 3, err  # bad input, not 4 ("unusable run directory")
    assert err.startswith("gim: error: ") and "drug01" in err and len(err.splitlines()) == 1, err
    assert {p.name for p in out.iterdir()} == {"gim.log"}  # no partial run directory
    log = (out / "gim.log").read_text()
    assert "drug01" in log and "contexts (" not in log  # the error is logged; no step was taken
    obj = json.loads(stdout)
    assert obj["status"] == "error" and obj["exit_code"] == 3 and obj["type"] == "InputError"


def test_heldout_identity_perturbation_is_trained_around_and_scored(gim, tmp_path):
    """Identity features describe a held-out name by the unseen knock-out rule: no refusal."""
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    args = ["train", data, "--out", out, *IDENTITY, "--holdout-conditions", "drug01"]
    rc, _, err = gim(*args, "--steps", "5", "--no-baseline-refit")
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    assert "drug01" not in [c["condition"] for c in meta["contexts"]]
    assert (out / "eval_metrics.csv").exists()


def test_a_failure_after_training_leaves_no_partial_run_directory(gim, tmp_path, monkeypatch):
    import gimcli.workflow as wf
    from gimcli.errors import TrainingError

    def boom(*a, **k):
        raise TrainingError("disk full while writing eval_metrics.csv")

    monkeypatch.setattr(wf, "write_eval", boom)
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", data, "--out", out, *TRAIN_ARGS, "--steps", "5", "--holdout-conditions", "drug01"
    )
    assert rc == 5 and "disk full" in err, err
    assert {p.name for p in out.iterdir()} == {"gim.log"}  # model.pt was written, then removed
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert "disk full while writing eval_metrics.csv" in (out / "gim.log").read_text()


# -- item 2: the combination rule -------------------------------------------------------------
def _pairs_screen(tmp_path, rename=None, flip=False):
    """Drugs by SMILES with two pairs; `rename` maps drug names (e.g. to names holding '+'),
    `flip` spells half the cells of a pair B+A."""
    from gimcli.simulation import simulate

    a = simulate(
        n_genes=8, n_drugs=4, doses=(100.0,), n_cells=20, n_control=60, n_combos=2,
        features="smiles", seed=3,
    )  # fmt: skip
    obs = a.obs.copy()
    cond = obs["condition"].astype(str)
    if flip:
        rows = (cond == "Aspirin+Caffeine").to_numpy().nonzero()[0][::2]
        cond.iloc[rows] = "Caffeine+Aspirin"
    for old, new in (rename or {}).items():
        cond = cond.str.replace(old, new, regex=False)
    obs["condition"] = cond
    a.obs = obs
    singles = obs[~cond.str.contains(r"\+(?!\))", regex=True) & (cond != "control")]
    table = singles.drop_duplicates("condition")[["condition", "smiles"]]
    csv = tmp_path / "drugs.csv"
    table.rename(columns={"condition": "name"}).to_csv(csv, index=False)
    path = tmp_path / "pairs.h5ad"
    a.write_h5ad(path)
    return path, csv


def test_drug_features_names_with_plus_are_never_split(gim, tmp_path):
    path, _ = _pairs_screen(tmp_path, rename={"Ibuprofen": "(+)-Ibuprofen"})

    a = __import__("anndata").read_h5ad(path)
    cond = a.obs["condition"].astype(str)
    single = a.obs[cond.isin(["Aspirin", "Caffeine", "(+)-Ibuprofen", "Paracetamol"])]
    csv = tmp_path / "named.csv"
    single.drop_duplicates("condition")[["condition", "smiles"]].rename(
        columns={"condition": "name"}
    ).to_csv(csv, index=False)
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", path, "--out", out, "--dose-key", "dose", "--drug-features", csv,
        "--steps", "20", "-q",
    )  # fmt: skip
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    assert "(+)-Ibuprofen" in meta["components"] and "(" not in meta["components"]
    assert meta["keys"]["combination_sep"] == "+"
    assert "(+)-Ibuprofen+Caffeine" in {c["condition"] for c in meta["contexts"]}


def test_combination_sep_none_treats_names_as_atomic(gim, tmp_path):
    from tests.tiny import tiny_screen

    a = tiny_screen()
    obs = a.obs.copy()
    obs["condition"] = obs["condition"].astype(str).str.replace("drug0", "cd3_cd28+u012")
    a.obs = obs
    path = tmp_path / "flow.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "run"
    rc, _, err = gim("train", path, "--out", out, *TRAIN_ARGS, "--steps", "5")
    assert rc == 3 and "no values in feature columns" in err, err  # '+' splits by default
    rc, _, err = gim(
        "train", path, "--out", out, *TRAIN_ARGS, "--steps", "5", "--combination-sep", "none"
    )
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    assert meta["components"] == [f"cd3_cd28+u012{i}" for i in range(4)]
    assert meta["keys"]["combination_sep"] == "none"


def test_combination_order_is_canonical_in_train_predict_and_explain(gim, tmp_path):
    import anndata as ad
    import numpy as np

    path, csv = _pairs_screen(tmp_path, flip=True)
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", path, "--out", out, "--dose-key", "dose", "--smiles-key", "smiles",
        "--steps", "20", "-q", "--holdout-combinations", "Caffeine+Ibuprofen",
    )  # fmt: skip
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    conds = [c["condition"] for c in meta["contexts"]]
    assert "Aspirin+Caffeine" in conds and "Caffeine+Aspirin" not in conds  # one context
    assert [c["n_cells"] for c in meta["contexts"] if c["condition"] == "Aspirin+Caffeine"] == [20]
    preds = {}
    for spelling in ("Ibuprofen+Caffeine", "Caffeine+Ibuprofen"):
        p = tmp_path / f"{spelling}.h5ad"
        rc, _, err = gim(
            "predict", out, "--conditions", spelling, "--doses", "100", "--out", p, "-q"
        )
        assert rc == 0, err
        preds[spelling] = ad.read_h5ad(p)
    a, b = preds.values()
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert set(a.obs["condition"].astype(str)) == {"Caffeine+Ibuprofen", "control"}
    names = tmp_path / "conds.txt"
    names.write_text("Caffeine+Aspirin\n")  # one name per line: commas allowed
    rc, stdout, err = gim("explain", out, "--conditions-file", names, "--format", "json")
    assert rc == 0, err
    rows = json.loads(stdout)
    assert rows and {r["condition"] for r in rows} == {"Aspirin+Caffeine"}


# -- item 3: continuous input ------------------------------------------------------------------
def test_continuous_input_with_negative_values(gim, tmp_path):
    import anndata as ad
    import numpy as np

    from tests.tiny import tiny_screen

    a = tiny_screen()
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    a.X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)  # z-scored: about half negative
    path = tmp_path / "z.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "run"
    rc, _, err = gim("train", path, "--out", out, *TRAIN_ARGS, "--steps", "5")
    assert rc == 3 and "negative values" in err and "--input continuous" in err, err
    rc, _, err = gim(
        "train", path, "--out", out, *TRAIN_ARGS, "--steps", "20", "--input", "continuous",
        "--n-top-genes", "6",
    )  # fmt: skip
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    pre = meta["preprocess"]
    assert pre["kind"] == "continuous" and not pre["log1p"] and pre["hvg_flavor"] == "variance"
    assert meta["keys"]["input_kind"] == "continuous"
    want = np.argsort(-a.X.var(0), kind="stable")[:6]  # by variance, not seurat on expm1
    assert sorted(pre["gene_index"]) == sorted(want.tolist())
    pred = tmp_path / "p.h5ad"
    rc, _, err = gim("predict", out, "--conditions", "drug00", "--doses", "100", "--out", pred)
    assert rc == 0, err
    p = ad.read_h5ad(pred)
    Xp = p.X.toarray()
    cells = (p.obs["gim_source"] == "predicted").to_numpy()
    assert (Xp[cells] < 0).mean() > 0.2  # written in the input's space, not clipped at 0


# -- item 8: inputs that must not be accepted ---------------------------------------------------
def _write(a, tmp_path):
    path = tmp_path / "bad.h5ad"
    a.write_h5ad(path)
    return path


def test_all_zero_x_is_refused(gim, tmp_path):
    import numpy as np

    from tests.tiny import tiny_screen

    a = tiny_screen()
    a.X = np.zeros(a.shape, np.float32)
    rc, _, err = gim("train", _write(a, tmp_path), "--out", tmp_path / "r", *TRAIN_ARGS)
    assert rc == 3 and "X: every value is 0" in err, err


def test_feature_varying_within_a_condition_and_partial_nan_are_refused(gim, tmp_path):
    import numpy as np

    from tests.tiny import tiny_screen

    a = tiny_screen()
    obs = a.obs.copy()
    rows = np.flatnonzero(obs["condition"].astype(str) == "drug02")
    obs.iloc[rows[:5], obs.columns.get_loc("f1")] += 1.0
    a.obs = obs
    rc, _, err = gim("train", _write(a, tmp_path), "--out", tmp_path / "r", *TRAIN_ARGS)
    assert rc == 3 and "feature column 'f1' differs between cells of 'drug02'" in err, err
    a = tiny_screen()
    obs = a.obs.copy()
    rows = np.flatnonzero(obs["condition"].astype(str) == "drug01")
    obs.iloc[rows[:3], obs.columns.get_loc("f0")] = np.nan
    a.obs = obs
    rc, _, err = gim("train", _write(a, tmp_path), "--out", tmp_path / "r2", *TRAIN_ARGS)
    assert rc == 3 and "feature column 'f0': 3 of the 20 cells of 'drug01' have no value" in err


# -- item 5: artefacts presented as findings ----------------------------------------------------
def test_explain_lists_only_confident_targets_and_says_when_there_are_none(gim, tmp_path):
    import pandas as pd

    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    rc, _, err = gim("train", data, "--out", out, *TRAIN_ARGS, "--steps", "40")
    assert rc == 0, err
    rc, csv, err = gim("explain", out, "--format", "csv", "--min-prob", "0")
    everything = pd.read_csv(pd.io.common.StringIO(csv))
    rc, csv, err = gim("explain", out, "--format", "csv")
    assert rc == 0, err
    df = pd.read_csv(pd.io.common.StringIO(csv))
    targets = df[df["kind"] == "target"]
    assert (targets["prob"] >= 0.5).all()  # no probability-0.000 "targets"
    n_conf = (everything[everything["kind"] == "target"]["prob"] >= 0.5).sum()
    assert len(targets) == n_conf
    # the context whose best target is least sure, with a bar just above it
    t = everything[everything["kind"] == "target"].astype({"dose": str})
    best = t.groupby(["condition", "dose"])["prob"].max().sort_values()
    (cond, dose), top = best.index[0], best.iloc[0]
    assert top < 0.999, best.head()
    bar = f"{(top + 1) / 2:.5f}"
    rc, text, err = gim("explain", out, "--conditions", cond, "--min-prob", bar)
    assert rc == 0, err
    assert f"{cond} {dose}: no confident direct targets (prob >= {bar})" in text
    assert "target" not in text.split("no confident")[0]


def test_min_cells_drops_rarely_detected_genes_and_is_recorded(gim, tmp_path):
    import numpy as np

    from tests.tiny import tiny_screen

    a = tiny_screen()
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    X[:, 3] = 0.0
    X[0, 3] = 2.0  # G3 detected in one cell only
    a.X = X
    path = tmp_path / "rare.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "run"
    rc, _, err = gim("train", path, "--out", out, *TRAIN_ARGS, "--steps", "5", "--min-cells", "3")
    assert rc == 0, err
    pre = json.loads((out / "model.json").read_text())["preprocess"]
    assert pre["min_cells"] == 3 and "G3" not in pre["genes"] and len(pre["genes"]) == 7


# -- item 6: warn when a fit is not to be believed ---------------------------------------------
def test_health_rules_flag_rising_validation_unstable_b_and_a_better_b0_refit():
    from gimcli.training.health import health_warnings

    rows = [
        {"step": 0, "loss": 9.0, "val_nll": 600.0},
        {"step": 50, "loss": 5.0, "val_nll": 552.0},
        {"step": 100, "loss": 4.0, "val_nll": 1151.0},
    ]
    w = health_warnings(rows, best_step=50, best_val=552.0, spectral_radius=1.86,
                        nograph_best_val=540.0)  # fmt: skip
    assert [x["check"] for x in w] == ["validation_rising", "unstable_graph", "graph_not_helping"]
    assert "reached 1151 at step 100, well above its best 552 (step 50" in w[0]["message"]
    assert "spectral radius of B is 1.86 >= 1" in w[1]["message"]
    assert "(540 < 552 NLL)" in w[2]["message"]
    assert all("\n" not in x["message"] for x in w)
    ok = health_warnings(rows[:2], best_step=50, best_val=552.0, spectral_radius=0.4,
                         nograph_best_val=560.0)  # fmt: skip
    assert ok == []
    nan = health_warnings([{"step": 0, "loss": float("nan"), "val_nll": float("nan")}],
                          best_step=0, best_val=float("inf"), spectral_radius=0.1)  # fmt: skip
    assert [x["check"] for x in nan] == ["diverged"]


def test_health_warnings_reach_stderr_json_model_json_and_the_report(gim, tmp_path, monkeypatch):
    import gimcli.workflow as wf
    from gimcli.training import health

    def spectral(history, **kw):  # the run's own numbers, with B declared unstable
        return health.health_warnings(history, **{**kw, "spectral_radius": 1.5})

    monkeypatch.setattr(wf, "health_warnings", spectral)
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    rc, stdout, err = gim("train", data, "--out", out, *TRAIN_ARGS, "--steps", "20", "--json")
    assert rc == 0, err
    msg = "spectral radius of B is 1.5 >= 1"
    assert msg in err and len([ln for ln in err.splitlines() if msg in ln]) == 1
    assert [w["check"] for w in json.loads(stdout)["warnings"]] == ["unstable_graph"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["diagnostics"]["warnings"][0]["check"] == "unstable_graph"
    report = (out / "report.html").read_text()
    assert "Warnings: this fit may not be believable" in report
    assert "spectral radius of B is 1.5 &gt;= 1" in report  # html-escaped
    assert f"gim run report: {out}" in report  # named by --out, not the staging directory
    from gimcli import GimRun

    assert GimRun.load(out).meta.warnings[0]["check"] == "unstable_graph"  # reads back


# -- item 7 and item 9: smaller frictions --------------------------------------------------------
def test_contexts_all_too_small_say_how_many_were_dropped_and_why(gim, tmp_path):
    from tests.tiny import tiny_screen

    a = tiny_screen()
    cond = a.obs["condition"].astype(str).to_numpy()
    keep = cond == "control"
    for d in ("drug00", "drug01"):
        keep[(cond == d).nonzero()[0][:2]] = True  # two wells per drug: below 3 cells
    path = tmp_path / "bulk.h5ad"
    a[keep].copy().write_h5ad(path)
    args = ["train", path, "--out", tmp_path / "r", *TRAIN_ARGS, "--steps", "5"]
    rc, _, err = gim(*args, "--min-cells-per-context", "3")
    assert rc == 3, err
    assert "every perturbed context (2, 4 cells) has fewer than 3 cells" in err
    assert "no perturbed cells" not in err
    rc, _, err = gim(*args)  # the default keeps them: a bulk screen has one sample per context
    assert rc == 0, err


def test_doses_refused_by_a_model_trained_without_a_dose_key(gim, tmp_path):
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", data, "--out", out, "--feature-keys", "f0,f1,f2", "--steps", "5", "-q"
    )
    assert rc == 0, err
    rc, _, err = gim(
        "predict", out, "--conditions", "drug00", "--doses", "10", "--out", tmp_path / "p.h5ad"
    )
    assert rc == 3 and "trained without --dose-key, so it cannot predict doses" in err, err


def test_holdout_recorded_split_column_guides_mapped_and_no_baseline_refit(gim, tmp_path):
    import anndata as ad

    from tests.tiny import tiny_screen

    a = tiny_screen()
    obs = a.obs.copy()  # guide labels of measured genes: G1_1 targets G1
    obs["condition"] = (
        obs["condition"]
        .astype(str)
        .map(
            {
                "control": "control",
                "drug00": "G1_1",
                "drug01": "G1_2",
                "drug02": "G5_1",
                "drug03": "G6_1",
            }  # fmt: skip
        )
    )
    a.obs = obs
    path = tmp_path / "guides.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", path, "--out", out, "--feature-keys", "f0,f1,f2", "--dose-key", "dose",
        "--steps", "20", "--holdout-conditions", "G6_1", "--no-baseline-refit",
    )  # fmt: skip
    assert rc == 0, err
    meta = json.loads((out / "model.json").read_text())
    assert meta["holdout"]["conditions"] == ["G6_1"]
    assert not (out / "nograph").exists()
    ev = json.loads((out / "eval_metrics.json").read_text())
    assert "gim_nograph" not in ev["aggregate"]
    ann = ad.read_h5ad(out / "annotated.h5ad")
    split = ann.obs["gim_split"].astype(str)
    cond = ann.obs["condition"].astype(str)
    assert set(split[cond == "G6_1"]) == {"heldout"}
    assert (split == "validation").sum() == 2 * 3 + 6  # 10% of each context of >= 10 cells
    assert set(split[cond == "control"]) == {"train", "validation"}
    assert ann.uns["gim"]["holdout"]["conditions"] == "G6_1"
    # identity features: the guides' genes are recorded as the perturbed genes
    rc, _, err = gim("train", path, "--out", tmp_path / "id", "--dose-key", "dose",
                     "--steps", "5", "-q")  # fmt: skip
    assert rc == 0, err
    idm = json.loads((tmp_path / "id" / "model.json").read_text())
    genes = idm["preprocess"]["genes"]
    named = {c: genes[g] for c, g in zip(idm["components"], idm["comp_gene"], strict=True)}
    assert named == {"G1_1": "G1", "G1_2": "G1", "G5_1": "G5", "G6_1": "G6"}


def test_help_shows_no_bool_metavar(gim):
    for cmd in ("train", "predict", "explain", "evaluate", "simulate"):
        rc, out, _ = gim(cmd, "--help")
        assert rc == 0 and "<bool>" not in out, cmd
