"""Benchmark 7: drugs across cell lines, as in sci-Plex (3 lines). A `gim simulate` screen of 75
drugs (8 numeric features) x 4 doses in 3 lines, whose drugs act alike in every line (the lines
differ in baseline expression): 15 drugs are held out in every line ("unseen drug") and 15 other
drugs in one line each ("drug new to a line": measured in the two others). Seeds 0 and 1; contexts
of both pooled, paired SEs over them. The easy case for carrying a drug's effect between lines
(GimRun._group_transfer); Norman's lines (benchmark 2) are the opposite one, where nothing beyond
the shared response carries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench._common import by_kind, fit_and_score, kind_tables
from gimcli.config import TrainConfig
from gimcli.evaluation.splits import Holdout, train_mask
from gimcli.simulation import simulate

SEEDS = (0, 1)
N_DRUGS, N_UNSEEN, N_NEW_IN_LINE, N_LINES = 75, 15, 15, 3


def screen(seed: int):
    a = simulate(n_genes=30, n_drugs=N_DRUGS, doses=(10.0, 100.0, 1000.0, 10000.0), n_cells=30,
                 n_control=300, n_cell_lines=N_LINES, seed=seed)  # fmt: skip
    drugs = sorted(set(a.obs["condition"]) - {"control"})
    perm = np.random.default_rng(seed).permutation(drugs)
    unseen, new_in = perm[:N_UNSEEN], perm[N_UNSEEN : N_UNSEEN + N_NEW_IN_LINE]
    cond, line = a.obs["condition"].astype(str), a.obs["cell_line"].astype(str)
    test = cond.isin(unseen).to_numpy()
    line_of = {d: f"line{k % N_LINES}" for k, d in enumerate(new_in)}
    for d, ln in line_of.items():
        test |= ((cond == d) & (line == ln)).to_numpy()
    a.obs["bench_split"] = np.where(test, "test", "train")
    return a, set(unseen), line_of


def run(cfg: TrainConfig) -> dict:
    pers, wall, weights = [], 0.0, []
    for seed in SEEDS:
        a, unseen, line_of = screen(seed)
        mask = train_mask(a.obs, Holdout(split_key="bench_split"))
        fk = [f"f{i}" for i in range(8)]
        run_, _, res, w = fit_and_score(a, mask, cfg=cfg.replace(seed=seed), dose_key="dose",
                                        covariate_keys=["cell_line"], feature_keys=fk)  # fmt: skip
        wall += w
        weights.append(run_._group_transfer[1])
        per = pd.DataFrame(res.summary["per_context"])
        per["context"] = f"s{seed}:" + per["context"].astype(str)
        per["kind"] = [
            "unseen drug (every line)" if c in unseen else "drug new to a line"
            for c in per["condition"]
        ]
        pers.append(per)
    per = pd.concat(pers, ignore_index=True)
    tab = by_kind(per, dict(zip(per["context"], per["kind"], strict=True)))
    md = [
        f"`gim simulate`: {N_DRUGS} drugs x 4 doses x {N_LINES} lines, 30 genes, 30 cells per "
        f"context; seeds {list(SEEDS)} pooled. Held out per seed: {N_UNSEEN} drugs in every line, "
        f"{N_NEW_IN_LINE} drugs in one line each. Weight of the carried residual (leave one line "
        f"out): {', '.join(f'{x:.2f}' for x in weights)}.",
        kind_tables(tab),
    ]
    return {
        "markdown": "\n\n".join(md),
        "by_kind": tab.reset_index().to_dict("records"),
        "wall_s": wall,
        "transfer_weight": weights,
    }
