"""Recovery of known direct targets and causal edges (simulated data, or perturbed genes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from gimcli.gimrun import GimRun


def target_labels(
    run: GimRun, truth_targets: pd.DataFrame, *, min_abs_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """0/1 matrix (perturbed training contexts x genes) of true direct targets, and the row index
    of those contexts in run.contexts. Context keys are matched on condition, dose and covariates
    present in the truth table."""
    tc = run.contexts.astype({"dose": str})
    pert = np.flatnonzero(~tc["is_control"].astype(bool).to_numpy())
    keys = ["condition", "dose", *[k for k in run.cov_keys if k in truth_targets.columns]]
    tt = truth_targets[truth_targets["shift"].abs() > min_abs_shift].astype({"dose": str})
    gene_idx = {g: i for i, g in enumerate(run.genes)}
    by_ctx: dict[tuple, list[int]] = {}
    for r in tt.itertuples(index=False):
        rd = r._asdict()
        if rd["gene"] in gene_idx:
            by_ctx.setdefault(tuple(str(rd[k]) for k in keys), []).append(gene_idx[rd["gene"]])
    L = np.zeros((len(pert), len(run.genes)), np.int8)
    for row, k in enumerate(pert):
        for j in by_ctx.get(tuple(str(tc.iloc[k][c]) for c in keys), []):
            L[row, j] = 1
    return L, pert


def auroc_auprc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    y, s = np.asarray(labels).ravel(), np.asarray(scores).ravel()
    if y.min() == y.max():
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}


def target_recovery(
    run: GimRun, truth_targets: pd.DataFrame, *, min_abs_shift: float = 0.0
) -> dict[str, float]:
    """AUROC/AUPRC of the target score (posterior log-odds) of training contexts against the
    truth."""
    L, rows = target_labels(run, truth_targets, min_abs_shift=min_abs_shift)
    return auroc_auprc(L, run.target_score[rows])


def graph_recovery(run: GimRun, B_true: np.ndarray, true_genes: list[str]) -> dict[str, float]:
    """AUROC/AUPRC of |B| learned for the presence of each true edge (off-diagonal)."""
    idx = pd.Index(true_genes).get_indexer(run.genes)
    Bt = np.asarray(B_true)[np.ix_(idx, idx)]
    Bl = run.module.sem.weights().detach().cpu().numpy()
    off = ~np.eye(len(idx), dtype=bool)
    return auroc_auprc(Bt[off] != 0, np.abs(Bl[off]))
