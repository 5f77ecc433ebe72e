"""Study: the predicted mean A^{-1}(b + E[u]) against the MAP read-out A^{-1}(b + u with the
targets of prob > 0.5), on held-out pairs and held-out doses of the simulation
(GimRun.interventions:
posteriors of measured components, else the network's prior).
    python bench/studies/readout.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench._common import setup  # noqa: E402
from gimcli.config import DataKeys, TrainConfig  # noqa: E402
from gimcli.data.contexts import perturbed_contexts  # noqa: E402
from gimcli.evaluation.heldout import evaluate, log_expression  # noqa: E402
from gimcli.evaluation.metrics import mse, r2_mean  # noqa: E402
from gimcli.evaluation.splits import Holdout, train_mask  # noqa: E402
from gimcli.simulation import simulate  # noqa: E402
from gimcli.training.fitting import fit_run  # noqa: E402


@torch.no_grad()
def means(run, table, *, map_targets: bool) -> np.ndarray:
    u = torch.from_numpy(run.interventions(table).direct(map_targets=map_targets))
    m = run.module.sem.mean(u)
    g = run.group_index(table)
    return m.numpy() * run.std_sd[g] + run.std_mean[g]


def main(systems=(("dag", 0), ("dag", 1), ("cyclic", 0), ("cyclic", 1))):
    setup()
    rows = []
    for graph, seed in systems:
        a = simulate(
            n_genes=20,
            n_drugs=12,
            doses=(10.0, 100.0, 1000.0),
            n_cells=60,
            n_control=300,
            n_combos=6,
            graph=graph,
            seed=seed,
        )
        m = train_mask(a.obs, Holdout(combinations=["all"], doses=[100.0]), dose_key="dose")
        run, _ = fit_run(
            a,
            keys=DataKeys(dose_key="dose", feature_keys=[f"f{i}" for i in range(8)]),
            config=TrainConfig(steps=1200, seed=seed),
            device="cpu",
            train_mask=m,
        )
        test = a[~m]
        table, cell = perturbed_contexts(test.obs, run.meta.keys)
        X = log_expression(test, run)
        y = np.stack([np.asarray(X[cell == k].mean(0)).ravel() for k in range(len(table))])
        res = evaluate(run, test, train=a[m], methods=("additive", "ridge"), seed=0).summary[
            "per_context"
        ]
        base = pd.DataFrame(res).set_index(["condition", "dose", "method"])["mse"]
        for name, mp in (("E[u]", False), ("MAP", True)):
            P = means(run, table, map_targets=mp)
            for k, r in table.iterrows():
                kind = "pair" if "+" in r["condition"] else "dose"
                rows.append(
                    {
                        "system": f"{graph}/{seed}",
                        "kind": kind,
                        "readout": name,
                        "mse": mse(y[k], P[k]),
                        "r2": r2_mean(y[k], P[k]),
                        "additive_mse": base.get((r["condition"], r["dose"], "additive")),
                        "ridge_mse": base.get((r["condition"], r["dose"], "ridge")),
                    }
                )
    df = pd.DataFrame(rows)
    print(
        df.groupby(["kind", "readout"])[["mse", "r2", "additive_mse", "ridge_mse"]]
        .mean()
        .to_string()
    )
    print(
        df.groupby(["system", "kind", "readout"])[["mse", "r2", "additive_mse"]].mean().to_string()
    )


if __name__ == "__main__":
    main()
