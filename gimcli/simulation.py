"""Synthetic perturbation screens with a known causal graph and known direct targets.

Genes follow the model's own generative story: x = A^{-1}(u + eps) with a random sparse B (cycles
allowed), a hidden rule from drug features to targets and shifts, and a Hill dose-response on the
shifts. Expression is written as log-normalised values, or as Poisson counts with `counts=True`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli import _keys

# Small molecules with public, well-known structures (names as in sci-Plex where present).
BUILTIN_SMILES = {
    "Aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "Caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "Ibuprofen": "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O",
    "Paracetamol": "CC(=O)NC1=CC=C(C=C1)O",
    "Dexamethasone": "CC1CC2C3CCC4=CC(=O)C=CC4(C3(C(CC2(C1(C(=O)CO)O)C)O)F)C",
    "Vorinostat": "C1=CC=C(C=C1)NC(=O)CCCCCCC(=O)NO",
    "Imatinib": "CC1=C(C=C(C=C1)NC(=O)C2=CC=C(C=C2)CN3CCN(CC3)C)NC4=NC=CC(=N4)C5=CN=CC=C5",
    "Gefitinib": "COC1=C(C=C2C(=C1)N=CN=C2NC3=CC(=C(C=C3)F)Cl)OCCCN4CCOCC4",
    "Erlotinib": "COCCOC1=C(C=C2C(=C1)C(=NC=N2)NC3=CC=CC(=C3)C#C)OCCOC",
    "Methotrexate": "CN(CC1=CN=C2C(=N1)C(=NC(=N2)N)N)C3=CC=C(C=C3)C(=O)NC(CCC(=O)O)C(=O)O",
    "Metformin": "CN(C)C(=N)N=C(N)N",
    "Tamoxifen": "CCC(=C(C1=CC=CC=C1)C2=CC=C(C=C2)OCCN(C)C)C3=CC=CC=C3",
    "Nutlin-3": "CC(C)OC1=C(C=CC(=C1)OC)C2=NC(C(N2C(=O)N3CCNC(=O)C3)C4=CC=C(C=C4)Cl)C5=CC=C(C=C5)Cl",  # noqa: E501 (a SMILES reads as one string)
    "Trametinib": "CC1=C2C(=C(N(C1=O)C)NC3=C(C=C(C=C3)I)F)C(=O)N(C(=O)N2C4=CC=CC(=C4)NC(=O)C)C5CC5",
    "Sorafenib": "CNC(=O)C1=NC=CC(=C1)OC2=CC=C(C=C2)NC(=O)NC3=CC(=C(C=C3)Cl)C(F)(F)F",
    "Valproic acid": "CCCC(CCC)C(=O)O",
    "Resveratrol": "C1=CC(=CC=C1C=CC2=CC(=CC(=C2)O)O)O",
    "Quercetin": "C1=CC(=C(C=C1C2=C(C(=O)C3=C(C=C(C=C3O2)O)O)O)O)O",
    "Curcumin": "COC1=C(C=CC(=C1)C=CC(=O)CC(=O)C=CC2=CC(=C(C=C2)O)OC)O",
    "Lenalidomide": "C1CC(=O)NC(=O)C1N2CC3=C(C2=O)C=CC=C3N",
    "Thalidomide": "C1CC(=O)NC(=O)C1N2C(=O)C3=CC=CC=C3C2=O",
    "Dasatinib": "CC1=C(C(=CC=C1)Cl)NC(=O)C2=CN=C(S2)NC3=CC(=NC(=N3)C)N4CCN(CC4)CCO",
    "Bortezomib": "B(C(CC(C)C)NC(=O)C(CC1=CC=CC=C1)NC(=O)C2=NC=CN=C2)(O)O",
    "Fluorouracil": "C1=C(C(=O)NC(=O)N1)F",
    "Hydroxyurea": "C(=O)(N)NO",
    "Azacitidine": "C1=NC(=O)N(C(=N1)N)C2C(C(C(O2)CO)O)O",
    "Olaparib": "C1CC1C(=O)N2CCN(CC2)C(=O)C3=C(C=CC(=C3)CC4=NNC(=O)C5=CC=CC=C54)F",
    "Ruxolitinib": "C1CCC(C1)C(CC#N)N2C=C(C=N2)C3=C4C=CNC4=NC=N3",
    "Tofacitinib": "CC1CCN(CC1N(C)C2=NC=NC3=C2C=CN3)C(=O)CC#N",
    "Panobinostat": "CC1=C(C2=CC=CC=C2N1)CCNCC3=CC=C(C=C3)C=CC(=O)NO",
}


def random_graph(
    d: int,
    rng: np.random.Generator,
    *,
    kind: str = "cyclic",
    degree: float = 1.5,
    max_radius: float = 0.7,
) -> np.ndarray:
    """B[j, i] = effect of gene i on gene j; about `degree` parents per gene."""
    p = min(1.0, degree / max(d - 1, 1))
    mask = rng.random((d, d)) < p
    np.fill_diagonal(mask, False)
    if kind == "dag":
        perm = rng.permutation(d)
        order = np.empty(d, int)
        order[perm] = np.arange(d)
        mask &= order[None, :] < order[:, None]  # parent i before child j
    W = rng.uniform(0.4, 1.0, (d, d)) * rng.choice([-1.0, 1.0], (d, d)) * mask
    rho = np.abs(np.linalg.eigvals(W)).max() if d else 0.0
    if rho > max_radius:
        W *= max_radius / rho
    return W


def hill(dose: np.ndarray, ec50: np.ndarray, slope: float = 1.5) -> np.ndarray:
    dose = np.asarray(dose, float)
    return dose**slope / (dose**slope + ec50**slope)


def simulate(
    *,
    n_genes: int = 20,
    n_drugs: int = 12,
    doses: tuple[float, ...] = (10.0, 100.0, 1000.0),
    n_cells: int = 60,
    n_control: int = 300,
    n_combos: int = 0,
    n_cell_lines: int = 1,
    graph: str = "cyclic",
    degree: float = 1.5,
    n_targets: int = 2,
    features: str = "numeric",
    n_features: int = 8,
    smiles: dict[str, str] | None = None,
    counts: bool = False,
    noise: float = 0.5,
    library_size: float = 2000.0,
    chunk_cells: int = 20_000,
    seed: int = 0,
):
    """Return an AnnData screen with ground truth in `uns['gim_truth']`.

    features: "numeric" (columns f0..f{n-1} in obs) or "smiles" (column `smiles`; drugs taken
    from `smiles` or the built-in list). Targets of a drug: its `n_targets` genes of highest
    score under a hidden linear rule on its features; shifts: a second hidden rule, times a Hill
    function of dose with a drug-specific EC50. With `counts`, Poisson counts around a log-normal
    `library_size` per cell (smaller libraries give sparser matrices, as in real screens).
    Cells are generated `chunk_cells` at a time, so memory stays near the output CSR's size.
    """
    import anndata as ad

    if n_combos > n_drugs * (n_drugs - 1) // 2:
        raise ValueError(
            f"{n_combos} pairs asked of {n_drugs} drugs: at most {n_drugs * (n_drugs - 1) // 2} "
            "exist"
        )
    # One generator drives every draw, in this order: graph, noise sds, features, rules, EC50s,
    # cell-line baselines, pairs, then the cells' noise (the order fixes the data of a seed).
    rng = np.random.default_rng(seed)
    d = n_genes
    genes = [f"G{j:0{len(str(d - 1))}d}" for j in range(d)]
    B = random_graph(d, rng, kind=graph, degree=degree)
    sigma = rng.uniform(0.7, 1.0, d) * noise
    names, F = _drug_features(features, n_drugs, n_features, smiles, rng)
    drugs = _drug_rules(F, d, n_targets, doses, rng)
    base = rng.uniform(1.0, 3.0, (n_cell_lines, d))
    scale = rng.uniform(0.3, 0.5, d)
    conds = _conditions(names, doses, n_combos, rng)
    lines = [f"line{c}" for c in range(n_cell_lines)]
    U, cond_rows, truth = _shifts(conds, lines, drugs, names, genes, n_cells, n_control)
    sizes = np.array([r[4] for r in cond_rows])
    cell_cond = np.repeat(np.arange(len(cond_rows)), sizes)
    cell_line = np.array([r[3] for r in cond_rows])[cell_cond]
    # Noise is drawn chunk by chunk in cell order: the same stream as one draw per condition.
    counts_rng = np.random.default_rng([seed, 1]) if counts else None
    A_inv = np.linalg.inv(np.eye(d) - B)
    parts = []
    for lo in range(0, len(cell_cond), chunk_cells):
        sl = slice(lo, lo + chunk_cells)
        eps = rng.normal(size=(len(cell_cond[sl]), d)) * sigma
        x = (U[cell_cond[sl]] + eps) @ A_inv.T
        expr = base[cell_line[sl]] + scale * x
        parts.append(_expression(expr, counts_rng, library_size))
    X = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
    obs = _obs(cond_rows, cell_cond, names, F, features, smiles)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    params = {
        "n_genes": n_genes,
        "n_drugs": n_drugs,
        "doses": list(doses),
        "n_cells": n_cells,
        "n_control": n_control,
        "n_combos": n_combos,
        "n_cell_lines": n_cell_lines,
        "graph": graph,
        "degree": degree,
        "n_targets": n_targets,
        "features": features,
        "counts": counts,
        "noise": noise,
        "library_size": library_size,
        "seed": seed,
    }
    adata.uns[_keys.UNS_TRUTH] = _truth(B, truth, drugs, names, genes, params)
    return adata


def _truth(B, truth, drugs, names, genes, params) -> dict:
    """uns['gim_truth']: the graph, the targets of every context, each drug's targets and EC50."""
    Z, M = drugs["targets"], drugs["max_shift"]
    tt = pd.DataFrame(
        truth, columns=["condition", "dose", "cell_line", "component", "gene", "shift"]
    )
    drug_targets = [
        (names[k], genes[j], float(M[k, j]))
        for k in range(len(names))
        for j in np.flatnonzero(Z[k])
    ]
    return {
        "B": B.astype(np.float32),
        "targets": tt,
        "drug_targets": pd.DataFrame(drug_targets, columns=["component", "gene", "max_shift"]),
        "ec50": dict(zip(names, drugs["ec50"].tolist(), strict=True)),
        "params": params,
    }


def _drug_features(features, n_drugs, n_features, smiles, rng) -> tuple[list[str], np.ndarray]:
    """Drug names and features: standardised Morgan bits of real SMILES, or random numbers."""
    if features == "smiles":
        from gimcli.data.features import morgan_fingerprints

        pool = dict(smiles or BUILTIN_SMILES)
        names = list(pool)[:n_drugs]
        if len(names) < n_drugs:
            raise ValueError(f"only {len(names)} SMILES available for {n_drugs} drugs")
        fps = morgan_fingerprints({n: pool[n] for n in names}, n_bits=256)
        F = np.stack([fps[n] for n in names])
        return names, (F - F.mean(0)) / np.maximum(F.std(0), 1e-6)
    return [f"drug{k:02d}" for k in range(n_drugs)], rng.normal(size=(n_drugs, n_features))


def _drug_rules(F, d, n_targets, doses, rng) -> dict[str, np.ndarray]:
    """The hidden rules from features to targets (top scores) and signed maximal shifts, and
    each drug's EC50 (log-uniform over the dose range)."""
    W_t = rng.normal(size=(F.shape[1], d))
    W_s = rng.normal(size=(F.shape[1], d))
    top = np.argsort(-(F @ W_t), axis=1)[:, :n_targets]
    Z = np.zeros((len(F), d), bool)
    np.put_along_axis(Z, top, True, axis=1)
    sign = np.sign(np.tanh(F @ W_s / np.sqrt(F.shape[1])) + 1e-9)
    M = sign * (1.5 + 1.5 * np.abs(np.tanh(F @ W_s / np.sqrt(F.shape[1]))))
    ec50 = np.exp(rng.uniform(np.log(min(doses)), np.log(max(doses)), len(F)))
    return {"targets": Z, "max_shift": M, "ec50": ec50}


def _conditions(names, doses, n_combos, rng) -> list[tuple[str, str, list[int], list[float]]]:
    """(condition, dose string, drug indices, doses): control, every drug at every dose, and
    `n_combos` random pairs at the top dose."""
    n_drugs = len(names)
    conds: list[tuple[str, str, list[int], list[float]]] = [("control", "0", [], [])]
    for k in range(n_drugs):
        for dz in doses:
            conds.append((names[k], f"{dz:g}", [k], [dz]))
    pairs = set()
    while len(pairs) < n_combos and n_drugs > 1:
        a, b = sorted(rng.choice(n_drugs, 2, replace=False).tolist())
        pairs.add((a, b))
    for a, b in sorted(pairs):
        dz = max(doses)
        conds.append((f"{names[a]}+{names[b]}", f"{dz:g}+{dz:g}", [a, b], [dz, dz]))
    return conds


def _shifts(conds, lines, drugs, names, genes, n_cells, n_control):
    """Per (cell line, condition): the direct shift vector u (shifts of components add), the
    row (condition, dose, line, line index, cells) and the true targets with their shifts.
    Cells are then generated in chunks straight into CSR: a 1M x 2000 screen never exists as a
    dense matrix (16 GB in float64)."""
    Z, M, ec50 = drugs["targets"], drugs["max_shift"], drugs["ec50"]
    U = np.zeros((len(lines) * len(conds), len(genes)))
    cond_rows, truth = [], []
    for li, line in enumerate(lines):
        for ci, (cond, dose_s, comps, dz) in enumerate(conds):
            u = U[li * len(conds) + ci]
            for k, dk in zip(comps, dz, strict=True):
                shift = Z[k] * M[k] * hill(dk, ec50[k])
                u += shift
                for j in np.flatnonzero(Z[k]):
                    truth.append((cond, dose_s, line, names[k], genes[j], float(shift[j])))
            cond_rows.append(
                (cond, dose_s if comps else "0", line, li, n_control if not comps else n_cells)
            )
    return U, cond_rows, truth


def _expression(expr: np.ndarray, counts_rng, library_size: float) -> sp.csr_matrix:
    """Log-scale expression as given (clipped at 0), or Poisson counts around a log-normal
    library size per cell when `counts_rng` is given."""
    if counts_rng is None:
        return sp.csr_matrix(np.clip(expr, 0, None).astype(np.float32))
    lib = counts_rng.lognormal(np.log(library_size), 0.3, len(expr))[:, None]
    rate = np.exp(expr)
    rate = rate / rate.sum(1, keepdims=True) * lib
    return sp.csr_matrix(counts_rng.poisson(rate).astype(np.float32))


def _obs(cond_rows, cell_cond, names, F, features, smiles) -> pd.DataFrame:
    """Per cell: condition, dose, cell line, and the drug's SMILES or feature columns."""
    ctab = pd.DataFrame([r[:3] for r in cond_rows], columns=["condition", "dose", "cell_line"])
    obs = pd.DataFrame(
        {c: pd.Categorical.from_codes(*_codes(ctab[c].to_numpy(), cell_cond)) for c in ctab}
    )
    obs.index = pd.Index(np.char.add("cell", np.arange(len(obs)).astype(str)).astype(object))
    if features == "smiles":
        smi = {n: (smiles or BUILTIN_SMILES)[n] for n in names}
        # SMILES may contain '+' (charges), so combination rows carry none: a combination's
        # components are featurised from their single-drug rows.
        obs["smiles"] = obs["condition"].map(lambda c: smi.get(c, "")).astype(str)
        return obs
    # Feature rows per condition (NaN for control and combinations), gathered per cell.
    comp_of = {n: k for k, n in enumerate(names)}
    Fc = np.full((len(cond_rows), F.shape[1]), np.nan)
    for i, r in enumerate(cond_rows):
        if r[0] in comp_of:
            Fc[i] = F[comp_of[r[0]]]
    for f in range(F.shape[1]):
        obs[f"f{f}"] = Fc[cell_cond, f]
    return obs


def _codes(values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, list]:
    """Categorical codes per cell from one value per condition (categories sorted, as astype)."""
    cats, inv = np.unique(values.astype(str), return_inverse=True)
    return inv[index], cats.tolist()
