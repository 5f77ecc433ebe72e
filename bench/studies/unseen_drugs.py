"""Study: why do predictions for unseen drugs lose to "no change" on the simulated screens?

For the held-out drugs of benchmark 1 (trained exactly as there), compares the network's prior for
each held-out context with the simulator's truth: do the predicted targets (pi) rank the true ones
first, and does the predicted direct shift m on a true target have the right sign?
    python bench/studies/unseen_drugs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench._common import setup  # noqa: E402
from bench.sim import HELD_DOSE, HELD_DRUGS, SIZES, SYSTEMS  # noqa: E402
from gimcli.config import DataKeys, TrainConfig  # noqa: E402
from gimcli.evaluation.splits import Holdout, train_mask  # noqa: E402
from gimcli.evaluation.truth import auroc_auprc  # noqa: E402
from gimcli.simulation import simulate  # noqa: E402
from gimcli.training.fitting import fit_run  # noqa: E402


def main() -> None:
    setup()
    rows = []
    for graph, seed in SYSTEMS:
        a = simulate(graph=graph, seed=seed, **SIZES)
        m = train_mask(
            a.obs,
            Holdout(conditions=HELD_DRUGS, doses=[HELD_DOSE], combinations=["all"]),
            dose_key="dose",
        )
        run, _ = fit_run(
            a,
            keys=DataKeys(
                dose_key="dose", feature_keys=[f"f{i}" for i in range(SIZES["n_features"])]
            ),
            config=TrainConfig(seed=seed),
            device="cpu",
            train_mask=m,
        )
        truth = a.uns["gim_truth"]["targets"]
        feats = run.component_features(HELD_DRUGS, obs=a.obs)
        for held in (
            HELD_DRUGS,
            run.meta.components,
        ):  # unseen drugs, then training drugs (prior only)
            for drug in held:
                for dose in ("10", "1000"):
                    req = pd.DataFrame({"condition": [drug], "dose": [dose]})
                    iv = run.interventions(req, feats, use_posterior=False)
                    t = truth[(truth["condition"] == drug) & (truth["dose"] == dose)].set_index(
                        "gene"
                    )["shift"]
                    label = np.isin(run.genes, t.index)
                    true_shift = np.array(
                        [t.get(g, 0.0) for g in run.genes]
                    )  # simulator units; signs compare
                    big = label & (np.abs(true_shift) > 0.5)  # noise sd is 0.35-0.5 there
                    rows.append(
                        {
                            "system": f"{graph}/{seed}",
                            "drugs": "unseen" if held is HELD_DRUGS else "training",
                            "pi_auroc": auroc_auprc(label.astype(int)[None], iv.prob_any)["auroc"],
                            "sign_agrees": float(
                                np.mean(np.sign(iv.shift[0, 0, big]) == np.sign(true_shift[big]))
                            )
                            if big.any()
                            else np.nan,
                        }
                    )
    df = pd.DataFrame(rows)
    print(df.groupby(["drugs", "system"])[["pi_auroc", "sign_agrees"]].mean().round(3).to_string())
    print(df.groupby("drugs")[["pi_auroc", "sign_agrees"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
