"""Study: why does GIM trail the additive baseline on held-out pairs of the simulation?

Compares, on held-out pairs, GIM's prediction with the additive baseline, and GIM's fit of the
pairs' *training singles* at the top dose with their empirical means (the additive baseline's
inputs): if GIM fits the singles worse than their empirical means, pairs inherit that error.
    python bench/studies/combos.py [steps ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench._common import setup  # noqa: E402
from gimcli.config import DataKeys, TrainConfig  # noqa: E402
from gimcli.evaluation.heldout import evaluate, log_expression  # noqa: E402
from gimcli.evaluation.metrics import r2_mean  # noqa: E402
from gimcli.evaluation.splits import Holdout, train_mask  # noqa: E402
from gimcli.prediction import predict  # noqa: E402
from gimcli.simulation import simulate  # noqa: E402
from gimcli.training.fitting import fit_run  # noqa: E402


def main(steps_list, systems=(("cyclic", 0), ("dag", 1)), target_costs=(None,)):
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
        m = train_mask(a.obs, Holdout(combinations=["all"]), dose_key="dose")
        for steps, tc in [(s, t) for s in steps_list for t in target_costs]:
            cfg = TrainConfig(steps=steps, seed=seed)
            cfg = cfg if tc is None else cfg.replace(target_cost=tc)
            run, hist = fit_run(
                a,
                keys=DataKeys(dose_key="dose", feature_keys=[f"f{i}" for i in range(8)]),
                config=cfg,
                device="cpu",
                train_mask=m,
            )
            res = evaluate(run, a[~m], train=a[m], methods=("gim", "additive"), seed=0)
            agg = res.summary["aggregate"]
            # fit of the top-dose singles that make up the held-out pairs
            pairs = a.obs.loc[~m, "condition"].astype(str).unique()
            singles = sorted({c for p in pairs for c in p.split("+")})
            req = pd.DataFrame({"condition": singles, "dose": ["1000"] * len(singles)})
            pm = predict(run, req, n_cells=2).uns["gim"]["mean"].to_numpy()
            X = log_expression(a, run)
            emp = np.stack(
                [
                    np.asarray(
                        X[((a.obs["condition"] == s) & (a.obs["dose"] == "1000")).to_numpy()].mean(
                            0
                        )
                    ).ravel()
                    for s in singles
                ]
            )
            from gimcli.evaluation.truth import target_recovery

            rec = target_recovery(run, a.uns["gim_truth"]["targets"])
            rows.append(
                {
                    "system": f"{graph}/{seed}",
                    "steps": steps,
                    "target_cost": cfg.target_cost,
                    "train_target_auroc": rec["auroc"],
                    "train_target_auprc": rec["auprc"],
                    "steps_run": run.meta.training.steps_run,
                    "pairs_r2_gim": agg["gim"]["r2_mean"],
                    "pairs_r2_additive": agg["additive"]["r2_mean"],
                    "pairs_mse_gim": agg["gim"]["mse"],
                    "pairs_mse_additive": agg["additive"]["mse"],
                    "singles_fit_r2": float(
                        np.mean([r2_mean(e, p) for e, p in zip(emp, pm, strict=True)])
                    ),
                    "singles_fit_mse": float(np.mean((emp - pm) ** 2)),
                }
            )
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string())


if __name__ == "__main__":
    args = sys.argv[1:]
    if (
        args and args[0] == "--target-cost"
    ):  # python bench/studies/combos.py --target-cost 0.5,2 1200
        main(
            [int(s) for s in args[2:]] or [1200],
            target_costs=[float(x) for x in args[1].split(",")],
        )
    else:
        main([int(s) for s in args] or [1200, 4000])
