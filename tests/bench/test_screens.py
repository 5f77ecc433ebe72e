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
