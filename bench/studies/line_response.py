"""Study (bench/NOTES.md item 18): drugs whose response differs between cell lines, as in sci-Plex
(A549, K562, MCF7 respond to the same compound with different strength).

The drug screens of bench/screens/generators.py (a learnable rule from 16 features to targets,
direction and potency) measured in 3 lines: line l has its own baseline (+ U(0, 0.5) per gene)
and scales every drug's shift interventions by s_l (default 0.4, 1.0, 1.6). Held out as in the
screens suite: 25 drugs in every line ("unseen drug") and one dose of 40% of the training drugs
("unseen dose"). GIM and the baselines (control, perturbed mean and ridge are per line) are
scored per held-out context; differences are paired over units (a drug in a line).

    python bench/studies/line_response.py                     # seeds 0 1, dag + nonlinear
    python bench/studies/line_response.py --seeds 0 --mechanisms dag --scales 1,1,1
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bench._common import fit_and_score, setup  # noqa: E402
from bench.screens.generators import drug_screen  # noqa: E402
from bench.screens.report import compare  # noqa: E402
from gimcli.config import TrainConfig  # noqa: E402

METHODS = ("gim", "control", "perturbed_mean", "ridge", "nearest", "additive")


def lines_screen(mechanism: str, seed: int, scales: tuple[float, ...], n_train: int, n_held: int):
    """The generator's screen (its drugs, rule and split) with each line's cells drawn afresh."""
    s = drug_screen(name=mechanism, mechanism=mechanism, n_train=n_train, n_held=n_held,
                    n_cells=30, n_control=300, seed=seed)  # fmt: skip
    d = s.adata.n_vars
    rng = np.random.default_rng([seed, 11])
    feats = (
        s.adata.obs.drop(columns=["condition", "dose"])
        .groupby(s.adata.obs["condition"].astype(str), observed=True)
        .first()
    )
    X, rows = [], []
    for li, scale in enumerate(scales):
        offset = rng.uniform(0, 0.5, d) if mechanism != "nonlinear" else None
        for c in s.contexts:
            n = 300 if c.condition == "control" else 30
            ctx = dataclasses.replace(c, shift=c.shift * scale)
            x = s.sample(ctx, n, rng)
            X.append(x + offset if offset is not None else x)
            rows += [(c.condition, c.dose, f"line{li}", c.kind, f"{c.unit}@line{li}")] * n
    obs = pd.DataFrame(rows, columns=["condition", "dose", "cell_line", "kind", "unit"])
    obs.index = [f"c{i}" for i in range(len(obs))]
    for col in feats.columns:
        obs[col] = obs["condition"].map(feats[col]).astype(float)
    a = ad.AnnData(sp.csr_matrix(np.concatenate(X)), obs=obs, var=s.adata.var.copy())
    return a, s.keys


def run_one(mechanism, seed, scales, steps, n_train, n_held) -> pd.DataFrame:
    a, keys = lines_screen(mechanism, seed, scales, n_train, n_held)
    mask = (a.obs["kind"] == "train").to_numpy()
    kind = a.obs.loc[~mask].groupby(["condition", "dose", "cell_line"], observed=True)
    info = kind[["kind", "unit"]].first()
    cfg = TrainConfig(steps=steps, seed=seed, min_cells_per_context=1)
    run, _, res, wall = fit_and_score(a, mask, cfg=cfg, covariate_keys=["cell_line"], **keys)
    per = pd.DataFrame(res.summary["per_context"])
    per = per[per["method"].isin(METHODS)]
    key = list(zip(per["condition"], per["dose"].astype(str), per["cell_line"], strict=True))
    per["kind"] = [info.loc[k, "kind"] for k in key]
    per["unit"] = [f"{mechanism}/s{seed}/" + info.loc[k, "unit"] for k in key]
    prior = run._feature_prior
    print(f"{mechanism} seed {seed}: {wall:.0f} s; feature prior a={prior.shared_weight:.2f} "
          f"w={prior.weight:.2f} skill={prior.chosen.get('cv_skill', float('nan')):.3f}",
          flush=True)  # fmt: skip
    return per


def summarise(per: pd.DataFrame) -> str:
    out = []
    for (mech, kind), g in per.groupby([per["unit"].str.split("/").str[0], "kind"]):
        u = g.groupby(["unit", "method"])["r2_mean"].mean().unstack()
        means = u.mean().dropna()
        c = compare(u, "r2_mean", [m for m in means.index if m != "gim"])
        out.append(
            f"{mech:10s} {kind:12s} units {len(u):3d}  "
            + "  ".join(f"{m} {v:.4f}" for m, v in means.items())
            + f"  | gim - {c['best']} {c['diff']:+.4f} ± {c['se']:.4f} ({c['verdict']})"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--mechanisms", default="dag,nonlinear")
    ap.add_argument("--scales", default="0.4,1.0,1.6")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--train", type=int, default=80)
    ap.add_argument("--held", type=int, default=20)
    ap.add_argument("--out", default=None, help="CSV of per-context rows")
    args = ap.parse_args(argv)
    setup()
    scales = tuple(float(x) for x in args.scales.split(","))
    pers = [
        run_one(m, int(s), scales, args.steps, args.train, args.held)
        for m in args.mechanisms.split(",")
        for s in args.seeds.split(",")
    ]
    per = pd.concat(pers, ignore_index=True)
    if args.out:
        per.to_csv(args.out, index=False)
    print(f"scales {scales}")
    print(summarise(per))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
