"""Predictive distributions of perturbations: known ones, new combinations, new drugs or doses."""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gimcli import _keys
from gimcli.data.contexts import canonical_dose, context_label, format_dose
from gimcli.data.features import component_descriptors, split_components
from gimcli.errors import InputError
from gimcli.gimrun import GimRun
from gimcli.provenance import versions

log = logging.getLogger(__name__)

# Below this similarity to every training perturbation a prediction is an extrapolation.
LOW_SIMILARITY = {"smiles": 0.3, "numeric": 0.5, "identity": 1.0}


def _cross(base: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    return base.merge(extra, how="cross") if len(extra.columns) else base


def build_requests(
    run: GimRun,
    *,
    features: pd.DataFrame | None = None,
    conditions: list[str] | None = None,
    doses: list[float] | None = None,
    covariates: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The contexts to predict (condition, dose, <covariates>) and features of new components.

    `features` is a CSV table with `name` and `smiles` (or the numeric feature columns used in
    training), optionally `dose` and covariate columns; `conditions` names perturbations or
    combinations (`A+B`) whose components the model knows. Without a dose (column or `doses`)
    every dose of `doses` is predicted; without a covariate, every training group.
    """
    if (features is None) == (conditions is None):
        raise InputError("give either --features/--drug-features CSV or --conditions")
    uses_dose = run.meta.keys.dose_key is not None
    if features is not None:
        req, new_feats = _requests_from_table(run, features, uses_dose=uses_dose)
    else:
        req, new_feats = pd.DataFrame({"condition": [c.strip() for c in conditions]}), {}
        known = set(run.spec.components)
        unknown = sorted({c for cond in req["condition"] for c in split_components(cond)} - known)
        if unknown:
            raise InputError(
                f"--conditions: perturbation(s) {unknown[:10]} not in training; "
                "give their features with --features"
            )
    if uses_dose and "dose" not in req.columns:
        if not doses:
            raise InputError("the model was trained with doses: give --doses or a 'dose' column")
        req = _cross(req, pd.DataFrame({"dose": [format_dose(x) for x in doses]}))
    elif not uses_dose:
        req["dose"] = "1"
    req["dose"] = [
        canonical_dose(d, len(split_components(c)), column="dose")
        for c, d in zip(req["condition"], req["dose"], strict=True)
    ]
    return _with_covariates(run, req, covariates), new_feats


def _requests_from_table(
    run: GimRun, features: pd.DataFrame, *, uses_dose: bool
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Requests named by a features table, and the features of every row (featurised with the
    training spec, so that applicability compares like with like)."""
    spec = run.spec
    names = features["name"].astype(str).str.strip()
    new_feats: dict[str, np.ndarray] = {}
    if spec.kind == "identity":
        unknown = sorted(set(names) - set(spec.components))
        if unknown:
            raise InputError(
                f"identity features only cover training perturbations; unknown: {unknown[:10]}"
            )
    else:
        table = features.assign(name=names)
        new_feats = spec.featurize(component_descriptors(spec, list(names), table=table))
    req = pd.DataFrame({"condition": names})
    if "dose" in features.columns and uses_dose:
        req["dose"] = features["dose"].astype(str).to_numpy()
    for k in run.cov_keys:
        if k in features.columns:
            req[k] = features[k].astype(str).to_numpy()
    return req, new_feats


def _with_covariates(
    run: GimRun, req: pd.DataFrame, covariates: dict[str, str] | None
) -> pd.DataFrame:
    """Requests with the given covariate values, crossed with every training group for the
    covariates neither given nor in the table."""
    cov_keys = run.cov_keys
    covariates = dict(covariates or {})
    unknown_cov = set(covariates) - set(cov_keys)
    if unknown_cov:
        raise InputError(f"--covariate {sorted(unknown_cov)}: model covariates are {cov_keys}")
    for k, v in covariates.items():
        req[k] = str(v)
    missing = [k for k in cov_keys if k not in req.columns]
    if missing:
        req = _cross(req, run.groups[missing].drop_duplicates().astype(str))
    return req[["condition", "dose", *cov_keys]].reset_index(drop=True)


def applicability(
    run: GimRun, requests: pd.DataFrame, new_feats: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Per request: the lowest, over its components, of the similarity to the nearest training
    component, and that nearest component."""
    spec = run.spec
    train_names = run.meta.components
    sims, nearest = [], []
    for cond in requests["condition"]:
        worst, near = 1.0, ""
        for c in split_components(cond):
            if c in new_feats:
                s = spec.similarity(new_feats[c][None], run.comp_feats)[0]
                j = int(np.argmax(s))
                if s[j] < worst or not near:
                    worst, near = min(worst, float(s[j])), train_names[j]
            elif not near:
                near = c
        sims.append(worst)
        nearest.append(near)
    return pd.DataFrame({"similarity": sims, "nearest": nearest})


@torch.no_grad()
def predict(
    run: GimRun,
    requests: pd.DataFrame,
    new_feats: dict[str, np.ndarray] | None = None,
    *,
    n_cells: int = 100,
    seed: int = 0,
    map_targets: bool = False,
    noise: Literal["controls", "gaussian"] = "controls",
) -> ad.AnnData:
    """Sample `n_cells` per request from the model; layers hold each condition's mean and target
    probability. Cells and the mean use the expected direct shift E[u] (GimRun.interventions: the
    posterior of measured contexts and components, else the network's prior); `map_targets` moves
    cells by the MAP targets (prob > 0.5) instead.

    noise="controls" moves control cells of the training run (kept in model.pt) by the propagated
    intervention A^{-1}u; "gaussian" draws x = A^{-1}(b + u + eps) with the fitted Gaussian eps."""
    new_feats = new_feats or {}
    iv = run.interventions(requests, new_feats)
    module = run.module.eval()
    sem = module.sem
    pi_any = iv.prob_any
    mean_std = sem.mean(torch.from_numpy(iv.direct())).numpy()
    u_cells = torch.from_numpy(iv.direct(map_targets=map_targets))
    g = run.group_index(requests)
    mu_g, sd_g = run.std_mean[g], run.std_sd[g]
    mean_expr = mean_std * sd_g + mu_g

    K = len(mean_expr)
    reps = np.repeat(np.arange(K), n_cells)
    cells = _sample_cells(run, u_cells, g, reps, n_cells=n_cells, seed=seed, noise=noise)
    app = applicability(run, requests, new_feats)
    low = app["similarity"] < LOW_SIMILARITY[run.spec.kind]
    if low.any():
        log.warning(
            "%d of %d predicted perturbation(s) are far from every training perturbation "
            "(similarity < %.2f); treat them as extrapolations",
            int(low.sum()),
            K,
            LOW_SIMILARITY[run.spec.kind],
        )
    params = {
        "n_cells": n_cells,
        "seed": seed,
        "map_targets": map_targets,
        "noise": noise if run.ref_cells is not None else "gaussian",
    }
    return _as_anndata(run, requests, cells, reps, mean_expr, pi_any, app, low, params)


@torch.no_grad()
def _sample_cells(run, u_cells, g, reps, *, n_cells: int, seed: int, noise: str) -> np.ndarray:
    """`n_cells` cells per request (rows `reps`), log-normalised and clipped at 0."""
    sem = run.module.sem
    sd_g = run.std_sd[g]
    if noise == "controls" and run.ref_cells is not None:
        # The SEM's counterfactual: the same cell, intervened on, is x0 + A^{-1}u. Moving real
        # control cells keeps their real (sparse, non-Gaussian) noise; only the intervention is
        # modelled.
        rng = np.random.default_rng(seed)
        by_group = {gi: np.flatnonzero(run.ref_group == gi) for gi in np.unique(g)}
        rows = np.concatenate(
            [rng.choice(by_group[gi], n_cells, replace=n_cells > len(by_group[gi])) for gi in g]
        )
        shift = sem.propagate(u_cells).numpy() * sd_g
        cells = run.ref_cells[rows] + shift[reps]
    else:
        gen = torch.Generator().manual_seed(seed)
        x = sem.sample(u_cells[reps], generator=gen).numpy()
        cells = x * sd_g[reps] + run.std_mean[g][reps]
    return np.clip(cells, 0, None).astype(np.float32)


def _as_anndata(run, requests, cells, reps, mean_expr, pi_any, app, low, params) -> ad.AnnData:
    """The predicted cells with per-cell obs, the mean and target-probability layers, and the
    per-condition tables in uns['gim']."""
    cov_keys = run.cov_keys
    labels = [context_label(r, cov_keys) for _, r in requests.iterrows()]
    obs = requests.iloc[reps].reset_index(drop=True).copy()
    obs[_keys.OBS_SIMILARITY] = app["similarity"].to_numpy()[reps]
    obs.index = [f"pred{i}" for i in range(len(obs))]
    for c in ["condition", "dose", *cov_keys]:
        obs[c] = obs[c].astype("category")
    out = ad.AnnData(X=sp.csr_matrix(cells), obs=obs, var=pd.DataFrame(index=run.genes))
    out.layers[_keys.LAYER_MEAN] = mean_expr[reps].astype(np.float32)
    out.layers[_keys.LAYER_TARGET_PROB] = pi_any[reps].astype(np.float32)
    conds = requests.copy()
    conds["similarity"] = app["similarity"].to_numpy()
    conds["nearest_training"] = app["nearest"].to_numpy()
    conds["low_similarity"] = low.to_numpy()
    conds["n_map_targets"] = (pi_any > 0.5).sum(1)
    conds.index = labels
    out.uns[_keys.UNS] = {
        "conditions": conds,
        "mean": pd.DataFrame(mean_expr, index=labels, columns=run.genes),
        "target_prob": pd.DataFrame(pi_any, index=labels, columns=run.genes),
        "params": params,
        "model": {
            "seed": run.meta.seed,
            "input": run.meta.input_dict(),
            "config": run.meta.config.to_dict(),
        },
        "versions": versions(),
    }
    return out
