"""One tiny screen of bench/screens end to end: data, training, scoring and the report. The
oracle (fresh cells of the true model) must beat "no change" on the unseen drugs, and every
number must be finite: a generator whose held-out cells do not follow its own model fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.screens.report import markdown, summarise  # noqa: E402
from bench.screens.run import TITLES, run_job  # noqa: E402
from gimcli.config import TrainConfig  # noqa: E402


def test_tiny_screen_end_to_end():
    r = run_job(("linear-dag", 0, "quick", TrainConfig(steps=60)))
    per = pd.DataFrame(r["per_context"])
    assert set(per["kind"]) == {"unseen drug", "unseen dose"}
    assert not r["refused"]
    for kind, rows in per.groupby("kind"):
        r2 = rows.groupby("method")["r2_mean"].mean()
        ed = rows.groupby("method")["energy_distance"].mean()
        assert r2["oracle"] > r2["control"], kind
        assert ed["oracle"] < ed["control"], kind
        scored = rows[rows["method"].isin(["gim", "oracle", "control", "ridge", "nearest"])]
        assert np.isfinite(scored[["r2_mean", "energy_distance"]].to_numpy()).all(), kind
    ap = pd.DataFrame(r["targets"])["ap"]
    assert len(ap) and np.isfinite(ap).all() and (ap > 0).all()
    summary = summarise([r])
    t = summary["linear-dag"]["tasks"]["unseen drug"]
    assert t["compare"]["r2_mean"]["verdict"] in ("win", "tie", "loss")
    md, headline = markdown(summary, {"size": "quick", "jobs": 1, "wall_s": 1.0,
                                      "machine": "test", "skipped": []}, TITLES)  # fmt: skip
    assert "oracle" in md and "linear-dag" in headline


def test_noise_ceiling_matches_the_oracle_where_the_truth_is_known():
    """The ceiling of real screens (expected R² of the true mean against the observed one) must
    agree with the oracle's R² on a simulated screen: there the true mean is known (1000 fresh
    cells, whose own Monte Carlo noise adds ~5% of a 50-cell context's)."""
    from dataclasses import replace

    from bench.screens.run import build, config
    from bench.screens.score import Scorer
    from gimcli.config import DataKeys
    from gimcli.training.fitting import fit_run

    screen = build("linear-dag", 0, "quick")
    run, _ = fit_run(screen.adata, keys=DataKeys(**screen.keys), device="cpu",
                     config=config("linear-dag", 0, TrainConfig(steps=30)),
                     train_mask=screen.mask)  # fmt: skip
    per = pd.DataFrame(Scorer(run, screen, seed=0).heldout_rows()[0])
    as_real = pd.DataFrame(Scorer(run, replace(screen, sample=None), seed=0).heldout_rows()[0])
    oracle = per.loc[per["method"] == "oracle", "r2_mean"].to_numpy()
    ceiling = as_real.loc[as_real["method"] == "ceiling", "r2_mean"].to_numpy()
    assert len(ceiling) == len(oracle) > 10 and "oracle" not in set(as_real["method"])
    gap_o, gap_c = 1 - oracle.mean(), 1 - ceiling.mean()
    assert gap_o > 0.002  # the noise is not negligible, so the comparison means something
    assert abs(gap_c - gap_o) < 0.25 * gap_o, (gap_c, gap_o)


def test_size_overrides_reach_the_generator_and_bad_ones_are_refused():
    """bench/studies/sizes.py sweeps the screens' sizes through `--set`: the arguments must be
    parsed to the generator's types and change the screen built, and a screen they cannot apply
    to (a real one) is refused before any work."""
    import pytest

    from bench.screens.run import build, parse_overrides, suite

    kw = parse_overrides(["n_train=10", "n_genes=12", "doses=10,1000"])
    assert kw == {"n_train": 10, "n_genes": 12, "doses": (10.0, 1000.0)}
    screen = build("linear-dag", 0, "quick", kw)
    a = screen.adata
    assert a.n_vars == 12
    drugs = a.obs.loc[np.asarray(screen.mask), "condition"]
    assert drugs[drugs != "control"].nunique() == 10
    assert set(a.obs.loc[a.obs["condition"] != "control", "dose"].astype(float)) == {10.0, 1000.0}
    with pytest.raises(SystemExit, match="ARG=VALUE"):
        parse_overrides(["n_train"])
    with pytest.raises(SystemExit, match="l1000"):
        suite(size="quick", only=["l1000"], overrides={"n_train": 10})
