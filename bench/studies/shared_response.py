"""Study (bench/NOTES.md item 14): a new drug's prior as a times the response the training drugs
share plus w times what its features add, against one weight for both (the model before) and
against no shared response (a = 0).

Screens from `gim simulate` (20 genes, doses 10, 100, 1000, cyclic graph), 12 or 40 drugs, every
4th drug held out at all doses; features as simulated, or shuffled among the drugs (so that they
carry nothing and only the shared response can help). One fit per screen and seed; the variants
only change the two weights of the same fitted feature prior, so their differences are paired.
    python bench/studies/shared_response.py            # ~25 min (one process)
    python bench/studies/shared_response.py --seeds 0 --drugs 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from bench._common import setup  # noqa: E402
from gimcli.config import DataKeys, TrainConfig  # noqa: E402
from gimcli.evaluation.heldout import evaluate  # noqa: E402
from gimcli.model.feature_prior import drug_folds  # noqa: E402
from gimcli.simulation import simulate  # noqa: E402
from gimcli.training.fitting import fit_run  # noqa: E402

FEATS = [f"f{i}" for i in range(8)]
BASELINES = ("control", "perturbed_mean", "ridge")


def _single_weight(prior, args, seed: int) -> float:
    """The weight the model had before item 14: one least-squares scale in [0, 1] of the prior's
    whole out-of-fold prediction (same folds and gate choices as FeaturePrior.fit)."""
    feats, drug, dose_t, cov, _, direct = (np.asarray(a) for a in args)
    fold = drug_folds(drug, seed=seed)
    oof = np.zeros(direct.shape)
    for f in np.unique(fold):
        te = fold == f
        p, on, off = prior.refit(~te, *args, seed=seed).predict(feats[te], dose_t[te], cov[te])
        oof[te] = p * on + (1 - p) * off
    den = float((oof * oof).sum())
    return float(np.clip((oof * direct).sum() / den, 0, 1)) if den > 0 else 0.0


def one(n_drugs: int, shuffled: bool, seed: int) -> dict:
    a = simulate(n_genes=20, n_drugs=n_drugs, doses=(10.0, 100.0, 1000.0), seed=seed)
    if shuffled:
        drugs = sorted(set(a.obs["condition"].astype(str)) - {"control"})
        perm = dict(zip(drugs, np.random.default_rng(100 + seed).permutation(drugs), strict=True))
        row = a.obs.groupby("condition", observed=True)[FEATS].first()
        src = a.obs["condition"].astype(str).map(lambda c: perm.get(c, c))
        a.obs[FEATS] = row.loc[src].to_numpy()
    drugs = sorted(set(a.obs["condition"].astype(str)) - {"control"})
    held = drugs[::4]
    mask = ~a.obs["condition"].astype(str).isin(held).to_numpy()
    run, _ = fit_run(
        a,
        keys=DataKeys(dose_key="dose", feature_keys=FEATS),
        config=TrainConfig(seed=seed, steps=1000),
        device="cpu",
        train_mask=mask,
    )
    prior, args = run._feature_prior, run._feature_prior_args
    fitted = (prior.shared_weight, prior.weight)
    w_old = _single_weight(prior, args, seed)
    out = {"a": fitted[0], "w": fitted[1], "w_old": w_old}
    train, test = a[mask], a[~mask]
    for name, (sa, sw) in {"fit": fitted, "old": (w_old, w_old), "a=0": (0.0, fitted[1])}.items():
        prior.shared_weight, prior.weight = sa, sw
        methods = ("gim", *BASELINES) if name == "fit" else ("gim",)
        res = evaluate(run, test, train=train, methods=methods, seed=seed)
        t = res.table
        r2 = t[t["scope"] == "aggregate"].set_index("method")["r2_mean"]
        out[name] = float(r2["gim"])
        if name == "fit":
            out.update({b: float(r2[b]) for b in BASELINES})
    prior.shared_weight, prior.weight = fitted
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--drugs", default="12,40")
    opt = ap.parse_args()
    setup()
    seeds = [int(s) for s in opt.seeds.split(",")]
    for n in (int(s) for s in opt.drugs.split(",")):
        for shuffled in (True, False):
            rows = [one(n, shuffled, s) for s in seeds]
            label = f"{n} drugs, features {'shuffled' if shuffled else 'as simulated'}"
            print(
                f"\n{label} (seeds {opt.seeds}); a, w: "
                + ", ".join(f"{r['a']:.2f}, {r['w']:.2f} (before {r['w_old']:.2f})" for r in rows)
            )
            for other in ("old", "a=0", *BASELINES):
                d = np.array([r["fit"] - r[other] for r in rows])
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                print(
                    f"  R2 fit {np.mean([r['fit'] for r in rows]):.4f} - {other:14s}"
                    f" {np.mean([r[other] for r in rows]):.4f}: {d.mean():+.4f} ± {se:.4f}"
                )


if __name__ == "__main__":
    main()
