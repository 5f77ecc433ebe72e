"""Direct targets per perturbation (probabilities and shifts) vs downstream genes; the graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gimcli.errors import InputError
from gimcli.gimrun import GimRun


@torch.no_grad()
def intervention_summary(
    run: GimRun,
    requests: pd.DataFrame,
    new_feats: dict | None = None,
    *,
    use_posterior: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per request: target probability (K,d), its log-odds (K,d; the ranking score, which does
    not saturate), signed direct shift on targets (K,d), and total effect A^{-1} E[u] (K,d), the
    last two in standardised units (pooled within-context sd).

    Measured contexts (and components measured alone) use the exact posterior given their cells;
    the rest the network's prior pi(features) (GimRun.interventions). E[u] includes the small
    shifts of non-targets (the spike), which are not counted as targets."""
    iv = run.interventions(requests, new_feats or {}, use_posterior=use_posterior)
    prob = iv.prob_any
    shift = (iv.prob * iv.shift).sum(1) / np.maximum(
        prob, 1e-6
    )  # the shift a gene gets when it is a target
    total = run.module.sem.propagate(torch.from_numpy(iv.direct().astype(np.float32))).numpy()
    return prob, iv.log_odds_any, shift, total


def target_table(
    run: GimRun,
    requests: pd.DataFrame,
    new_feats: dict | None = None,
    *,
    top: int = 20,
    n_downstream: int = 5,
) -> pd.DataFrame:
    """Long table: per request its `top` direct targets (by posterior log-odds: probabilities of
    1.0 tie, their log-odds do not) and its `n_downstream` strongest downstream genes (largest
    |total - direct| effect among non-targets)."""
    prob, log_odds, shift, total = intervention_summary(run, requests, new_feats)
    genes = np.asarray(run.genes)
    keys = ["condition", "dose", *run.cov_keys]
    rows = []
    for k, r in enumerate(requests[keys].itertuples(index=False)):
        base = dict(zip(keys, r, strict=True))
        order = np.argsort(-log_odds[k], kind="stable")[:top]
        for rank, j in enumerate(order, 1):
            rows.append(
                {
                    **base,
                    "kind": "target",
                    "gene": genes[j],
                    "prob": float(prob[k, j]),
                    "log_odds": float(log_odds[k, j]),
                    "shift": float(shift[k, j]),
                    "effect": float(total[k, j]),
                    "rank": rank,
                }
            )
        downstream = np.abs(total[k] - prob[k] * shift[k])
        downstream[order] = -1
        for rank, j in enumerate(np.argsort(-downstream, kind="stable")[:n_downstream], 1):
            rows.append(
                {
                    **base,
                    "kind": "downstream",
                    "gene": genes[j],
                    "prob": float(prob[k, j]),
                    "log_odds": float(log_odds[k, j]),
                    "shift": float(shift[k, j]),
                    "effect": float(total[k, j]),
                    "rank": rank,
                }
            )
    cols = [*keys, "kind", "gene", "prob", "log_odds", "shift", "effect", "rank"]
    return pd.DataFrame(rows, columns=cols)


def graph_table(run: GimRun, *, top: int | None = 100, min_weight: float = 0.0) -> pd.DataFrame:
    """Learned causal edges source -> target with weight B[target, source], strongest first."""
    B = run.module.sem.weights().detach().numpy()
    t, s = np.nonzero(np.abs(B) > min_weight)
    w = B[t, s]
    order = np.argsort(-np.abs(w), kind="stable")
    if top is not None:
        order = order[:top]
    genes = np.asarray(run.genes)
    return pd.DataFrame({"source": genes[s[order]], "target": genes[t[order]], "weight": w[order]})


def training_requests(
    run: GimRun, conditions: list[str] | None = None, covariates: dict[str, str] | None = None
) -> pd.DataFrame:
    """The perturbed training contexts, optionally only those of the named conditions/covariates."""
    tc = run.contexts
    tc = tc[~tc["is_control"].astype(bool)]
    if conditions:
        tc = tc[tc["condition"].isin([c.strip() for c in conditions])]
    for k, v in (covariates or {}).items():
        if k not in run.cov_keys:
            raise InputError(f"--covariate {k}: model covariates are {run.cov_keys}")
        tc = tc[tc[k].astype(str) == str(v)]
    return tc[["condition", "dose", *run.cov_keys]].astype(str).reset_index(drop=True)
