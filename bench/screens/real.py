"""Adapters of the real screens in ../shared/data to `Screen`s (no oracle: the truth is unknown).

- L1000 (LINCS plate LJP005, A375, 24 h; bulk log2 profiles, one well per drug and dose; 51
  kinase inhibitors with SMILES x 6 doses): fold `seed` holds out 12 drugs entirely (every dose;
  "unseen drug", folds disjoint) and the two middle doses (0.37, 1.11 uM) of half the remaining
  drugs ("unseen dose"). Trained with min_cells_per_context=1 (one well is a context).
- Papalexi 2021 THP-1 ECCITE-seq (raw counts, 299 genes, 25 KOs, 9 of the KO genes measured):
  "targets" trains on every KO and scores the knocked-out gene's rank in its own condition;
  "heldout" holds out four KOs (two with the gene measured) entirely ("unseen KO").
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from bench.screens.generators import Context, Screen

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
L1000 = DATA / "l1000" / "lincs_ljp005_a375_24h.h5ad"
PAPALEXI = DATA / "perturbseq" / "papalexi2021_thp1_eccite_subset.h5ad"
L1000_HELD_DOSES = ("0.37", "1.11")
# Held-out KOs per fold: two whose gene is measured, two whose gene is not.
PAPALEXI_HELD = (
    ("JAK2", "STAT2", "IRF1", "SMAD4"),
    ("STAT1", "CMTM6", "ATF2", "POU2F2"),
)


def available() -> dict[str, bool]:
    return {"l1000": L1000.exists(), "papalexi": PAPALEXI.exists()}


def _contexts(obs: pd.DataFrame, kind_of, dose_col: str | None) -> list[Context]:
    """One Context per perturbed (condition, dose) of the cells (no interventions: unknown)."""
    dose = obs[dose_col].map(lambda x: f"{float(x):g}") if dose_col else "1"
    pairs = obs[["condition"]].assign(dose=dose).drop_duplicates()
    out, z = [], np.zeros(0)
    for cond, dz in pairs.itertuples(index=False):
        if cond != "control":
            out.append(Context(cond, dz, *kind_of(cond, dz), z, z, z, z))
    return out


def l1000_screen(*, seed: int = 0, n_held: int = 12) -> Screen:
    a = ad.read_h5ad(L1000)
    a.obs["condition"] = a.obs["condition"].astype(str)
    drugs = sorted(set(a.obs["condition"]) - {"control"})
    perm = np.random.default_rng(0).permutation(drugs)
    held = set(perm[seed * n_held : (seed + 1) * n_held])
    rest = [x for x in perm if x not in held]
    dose_held = set(rest[: len(rest) // 2])

    def kind_of(cond, dose):
        if cond in held:
            return "unseen drug", cond
        if cond in dose_held and dose in L1000_HELD_DOSES:
            return "unseen dose", cond
        return "train", cond

    ctx = _contexts(a.obs, kind_of, "dose")
    k = {(c.condition, c.dose): c.kind for c in ctx}
    dose = a.obs["dose"].map(lambda x: f"{float(x):g}")
    mask = np.array(
        [k.get((c, d_), "train") == "train" for c, d_ in zip(a.obs["condition"], dose, strict=True)]
    )
    info = (
        f"LINCS L1000 LJP005 A375 24 h, {len(drugs)} drugs x 6 doses, one well each, "
        f"{int((a.obs['condition'] == 'control').sum())} DMSO wells; fold {seed}: {len(held)} "
        f"drugs held out, doses {'/'.join(L1000_HELD_DOSES)} uM of {len(dose_held)} others"
    )
    keys = {"dose_key": "dose", "smiles_key": "smiles"}
    return Screen("l1000", a, mask, keys, ctx, None, None, info)


def papalexi_screen(*, seed: int = 0, hold: bool = True) -> Screen:
    a = ad.read_h5ad(PAPALEXI)
    a.obs["condition"] = a.obs["condition"].astype(str)
    held = set(PAPALEXI_HELD[seed % len(PAPALEXI_HELD)]) if hold else set()

    def kind_of(cond, dose):
        return ("unseen KO" if cond in held else "train"), cond

    a.obs["dose"] = "1"
    ctx = _contexts(a.obs, kind_of, None)
    mask = ~a.obs["condition"].isin(held).to_numpy()
    measured = [c.condition for c in ctx if c.condition in set(a.var_names)]
    truth = pd.DataFrame(
        [(g, "1", g, g, -1.0) for g in measured if g not in held],
        columns=["condition", "dose", "component", "gene", "shift"],
    )
    kos = sorted(set(a.obs["condition"]) - {"control"})
    info = (
        f"Papalexi 2021 THP-1 ECCITE-seq subset, raw counts, {a.n_vars} genes, {len(kos)} KOs "
        f"({len(measured)} with the gene measured), {a.n_obs} cells; "
        + (f"held out: {sorted(held)}" if held else "every KO in training")
    )
    # the targets are scored by the run that trains on every KO ("targets")
    return Screen("papalexi", a, mask, {}, ctx, None, None if hold else truth, info)
