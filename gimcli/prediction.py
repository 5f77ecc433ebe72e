"""Predictive distributions of perturbations: known ones, new combinations, new drugs or doses."""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gimcli import _keys
from gimcli.data.contexts import canonical_dose, context_label, format_dose
from gimcli.data.features import component_descriptors
from gimcli.data.io import H5adAppender, atomic_path
from gimcli.errors import InputError
from gimcli.gimrun import GimRun
from gimcli.provenance import versions
from gimcli.sparsity import Reference, sample_rows

log = logging.getLogger(__name__)

# Below this similarity to every training perturbation a prediction is an extrapolation.
LOW_SIMILARITY = {"smiles": 0.3, "numeric": 0.5, "identity": 1.0}
# Conditions per chunk of predicted cells: bounds the memory of a prediction (chunk x n_cells x
# genes) and is the unit `write_predictions` streams to disk.
CHUNK_CONDITIONS = 64
# Components of the PCA written as obsm['X_pca'] (fitted on the run's reference control cells).
N_PCS = 50
SOURCE_PREDICTED, SOURCE_CONTROL = "predicted", "training_control"
# Cells per condition of noise="gaussian" when n_cells is not given (there are no reference cells
# to count).
GAUSSIAN_CELLS = 100


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
    combinations (`A+B`) whose components the model knows (with identity features, also ones it
    does not: GimRun's unseen knock-out rule predicts them). Without a dose (column or `doses`)
    every dose of `doses` is predicted; without a covariate, every training group.
    """
    if (features is None) == (conditions is None):
        raise InputError("give either --features/--drug-features CSV or --conditions")
    uses_dose = run.meta.keys.dose_key is not None
    rule = run.meta.keys.combinations
    if features is not None:
        req, new_feats = _requests_from_table(run, features, uses_dose=uses_dose)
        rule = rule.with_atomic(req["condition"])
    else:
        req, new_feats = pd.DataFrame({"condition": rule.canonical_names(conditions)}), {}
        known = set(run.spec.components)
        unknown = sorted({c for cond in req["condition"] for c in rule.split(cond)} - known)
        if unknown and run.spec.kind == "identity":  # the unseen knock-out rule (GimRun)
            new_feats = run.spec.featurize({n: n for n in unknown})
        elif unknown:
            raise InputError(
                f"--conditions: perturbation(s) {unknown[:10]} not in training; "
                "give their features with --features"
            )
    if not uses_dose and (doses or (features is not None and "dose" in features.columns)):
        given = "--doses" if doses else "the 'dose' column of the features table"
        raise InputError(
            f"{given}: the model was trained without --dose-key, so it cannot predict doses "
            "(leave them out, or retrain with --dose-key)"
        )
    if uses_dose and "dose" not in req.columns:
        if not doses:
            raise InputError("the model was trained with doses: give --doses or a 'dose' column")
        req = _cross(req, pd.DataFrame({"dose": [format_dose(x) for x in doses]}))
    elif not uses_dose:
        req["dose"] = "1"
    canon = [rule.canonical(c, d) for c, d in zip(req["condition"], req["dose"], strict=True)]
    req["condition"] = [c for c, _ in canon]
    req["dose"] = [canonical_dose(d, len(rule.split(c)), column="dose") for c, d in canon]
    return _with_covariates(run, req, covariates), new_feats


def _requests_from_table(
    run: GimRun, features: pd.DataFrame, *, uses_dose: bool
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Requests named by a features table, and the features of every row (featurised with the
    training spec, so that applicability compares like with like)."""
    spec = run.spec
    names = features["name"].astype(str).str.strip()
    new_feats: dict[str, np.ndarray] = {}
    if spec.kind == "identity":  # names not seen in training: the unseen knock-out rule
        new_feats = spec.featurize({n: n for n in names if n not in set(spec.components)})
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
    rule = run.meta.keys.combinations.with_atomic(new_feats)
    for cond in requests["condition"]:
        worst, near = 1.0, ""
        for c in rule.split(cond):
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


def log_space(run: GimRun) -> bool:
    """Whether the run's expression is log-normalised (predictions non-negative and sparse, by
    the rule of gimcli.sparsity) rather than continuous (negative values allowed: no clipping, no
    sparsity rule). The one switch, on the run's preprocessing record."""
    return getattr(run.preprocess_info, "kind", None) != "continuous"


@dataclass
class _Plan:
    """One prediction: the requests, what every chunk shares (reference cells per group, the PCA,
    the obs-name token), and the per-condition tables filled in as chunks are made."""

    run: GimRun
    requests: pd.DataFrame
    new_feats: dict[str, np.ndarray]
    n_cells: int | None  # None: every reference control cell of the group once
    seed: int
    map_targets: bool
    noise: str
    with_controls: bool
    chunk: int = CHUNK_CONDITIONS
    tables: dict[str, list] = field(default_factory=lambda: {k: [] for k in _TABLES})
    n_written: int = 0

    def __post_init__(self):
        run = self.run
        self.log = log_space(run)
        if self.noise == "controls" and run.ref_cells is None:
            self.noise = "gaussian"
        self.groups = run.group_index(self.requests) if len(self.requests) else np.zeros(0, int)
        self.refs: dict[int, Reference] = {}
        self.labels = [context_label(r, run.cov_keys) for _, r in self.requests.iterrows()]
        self.pca = _reference_pca(run)
        ident = {
            "model": run.meta.weights_sha256 or run.meta.input_dict().get("sha256"),
            "seed": run.meta.seed,
            "requests": self.requests.astype(str).to_dict("list"),
            "params": self.params,
        }
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode())
        self.token = "gim" + digest.hexdigest()[:8]

    @property
    def params(self) -> dict:
        return {
            "n_cells": self.n_cells,
            "seed": self.seed,
            "map_targets": self.map_targets,
            "noise": self.noise,
            "with_controls": self.with_controls,
        }

    def reference(self, g: int) -> Reference:
        return reference(self.run, g, self.refs)

    def pieces(self) -> Iterator[ad.AnnData]:
        """The predicted cells, `chunk` conditions at a time, then (with_controls) the reference
        control cells of every requested group."""
        for s in range(0, len(self.requests), self.chunk):
            yield self._conditions(slice(s, s + self.chunk))
        if self.with_controls and self.run.ref_cells is not None:
            yield self._controls()

    @torch.no_grad()
    def _conditions(self, sl: slice) -> ad.AnnData:
        run, req = self.run, self.requests.iloc[sl].reset_index(drop=True)
        g, labels = self.groups[sl], self.labels[sl]
        iv = run.interventions(req, self.new_feats)
        sem = run.module.eval().sem
        sd_g = run.std_sd[g]
        model_mean = sem.mean(torch.from_numpy(iv.direct())).numpy() * sd_g + run.std_mean[g]
        u = torch.from_numpy(iv.direct(map_targets=self.map_targets))
        delta = sem.propagate(u).numpy() * sd_g  # the predicted change of each gene's mean
        if self.noise == "controls":
            cells = cells_from_change(
                run, labels, g, delta, n_cells=self.n_cells, seed=self.seed, refs=self.refs
            )
        else:
            cells = []
            for k in range(len(req)):
                gen = torch.Generator().manual_seed(
                    int(_request_rng(self.seed, labels[k]).integers(2**62))
                )
                x = sem.sample(u[[k] * (self.n_cells or GAUSSIAN_CELLS)], generator=gen).numpy()
                x = x * sd_g[k] + run.std_mean[g[k]]
                cells.append(np.clip(x, 0, None) if self.log else x)
        X = np.concatenate(cells).astype(np.float32)
        mean = np.stack([c.mean(0) for c in cells])
        app = applicability(run, req, self.new_feats)
        t = self.tables
        t["mean"].append(mean)
        t["model_mean"].append(np.clip(model_mean, 0, None) if self.log else model_mean)
        t["target_prob"].append(iv.prob_any)
        t["applicability"].append(app)
        t["n_cells"].append(np.array([len(c) for c in cells]))
        reps = np.repeat(np.arange(len(req)), [len(c) for c in cells])
        obs = self._obs(req.iloc[reps], app["similarity"].to_numpy()[reps], SOURCE_PREDICTED)
        return self._piece(X, obs, mean[reps], iv.prob_any[reps])

    def _controls(self) -> ad.AnnData:
        run, keys = self.run, self.run.meta.keys
        parts, rows = [], []
        for gi in dict.fromkeys(self.groups.tolist()):
            ref = self.reference(gi)
            parts.append(ref)
            rows += [run.groups.iloc[[gi]]] * ref.n
        X = np.concatenate([r.cells for r in parts])
        req = (
            pd.concat(rows, ignore_index=True)
            if run.cov_keys
            else pd.DataFrame(index=range(len(X)))
        )
        req = req.assign(condition=keys.control, dose="0")
        mean = np.concatenate([np.repeat(r.mean[None], r.n, 0) for r in parts])
        obs = self._obs(req, np.full(len(X), np.nan), SOURCE_CONTROL)
        return self._piece(X, obs, mean, np.zeros_like(X))

    def _obs(self, req: pd.DataFrame, similarity: np.ndarray, source: str) -> pd.DataFrame:
        """Per cell: the perturbation under the training column name, the dose (when the model
        has one) and covariates, the applicability and where the cell comes from."""
        keys = self.run.meta.keys
        obs = pd.DataFrame({keys.perturbation_key: req["condition"].astype(str).to_numpy()})
        if keys.dose_key is not None:
            obs[keys.dose_key] = req["dose"].astype(str).to_numpy()
        for c in self.run.cov_keys:
            obs[c] = req[c].astype(str).to_numpy()
        obs[_keys.OBS_SIMILARITY] = similarity
        obs[_keys.OBS_SOURCE] = source
        obs.index = [f"{self.token}-{i}" for i in range(self.n_written, self.n_written + len(obs))]
        self.n_written += len(obs)
        return obs

    def _piece(self, X, obs, mean, prob) -> ad.AnnData:
        piece = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=self.run.genes))
        piece.layers[_keys.LAYER_MEAN] = np.asarray(mean, np.float32)
        piece.layers[_keys.LAYER_TARGET_PROB] = np.asarray(prob, np.float32)
        if self.pca is not None:
            center, comps, _, _ = self.pca
            piece.obsm["X_pca"] = ((X - center) @ comps.T).astype(np.float32)
        return piece

    def var(self) -> pd.DataFrame:
        """Genes, with the column of each in the training input (-1 where not recorded)."""
        idx = list(getattr(self.run.preprocess_info, "gene_index", None) or [])
        if len(idx) != len(self.run.genes):
            idx = [-1] * len(self.run.genes)
        return pd.DataFrame(
            {_keys.VAR_INPUT_INDEX: np.asarray(idx, np.int64)}, index=self.run.genes
        )

    def varm(self) -> dict:
        return {} if self.pca is None else {"PCs": self.pca[1].T.astype(np.float32)}

    def uns(self) -> dict:
        """uns['gim'] (per-condition tables, params, model, versions, gene alignment) and, with
        the PCA, uns['pca'] as scanpy writes it."""
        run, t = self.run, self.tables
        d = len(run.genes)
        app = pd.concat(t["applicability"], ignore_index=True) if t["applicability"] else None
        conds = self.requests.copy()
        conds["similarity"] = app["similarity"].to_numpy() if app is not None else []
        conds["nearest_training"] = app["nearest"].to_numpy() if app is not None else []
        conds["low_similarity"] = conds["similarity"] < LOW_SIMILARITY[run.spec.kind]
        prob = _stack(t["target_prob"], d)
        conds["n_map_targets"] = (prob > 0.5).sum(1)
        conds["n_cells"] = np.concatenate(t["n_cells"]) if t["n_cells"] else np.zeros(0, int)
        conds.index = self.labels

        def table(name):
            return pd.DataFrame(_stack(t[name], d), index=self.labels, columns=run.genes)

        inp = run.meta.input_dict()
        uns = {
            _keys.UNS: {
                "conditions": conds,
                "mean": table("mean"),
                "model_mean": table("model_mean"),
                "target_prob": table("target_prob"),
                "params": self.params,
                "keys": {
                    "perturbation_key": run.meta.keys.perturbation_key,
                    "control": run.meta.keys.control,
                    "dose_key": run.meta.keys.dose_key or "",
                    "covariate_keys": list(run.cov_keys),
                },
                "genes": {
                    "input_n_vars": int(inp.get("n_vars", -1)),
                    "input_sha256": inp.get("sha256", ""),
                    "alignment": GENE_ALIGNMENT,
                },
                "model": {
                    "seed": run.meta.seed,
                    "input": inp,
                    "config": run.meta.config.to_dict(),
                },
                "versions": versions(),
            }
        }
        prior = self.feature_prior()
        if prior:
            uns[_keys.UNS]["feature_prior"] = prior
        departure = self.combination_departure()
        if departure:
            uns[_keys.UNS]["combination_departure"] = departure
        transfer = self.group_transfer()
        if transfer:
            uns[_keys.UNS]["group_transfer"] = transfer
        if self.pca is not None:
            center, _, var, ratio = self.pca
            uns[_keys.UNS]["pca_mean"] = center.astype(np.float32)
            uns["pca"] = {
                "params": {"zero_center": True, "fitted_on": "the run's reference control cells"},
                "variance": var,
                "variance_ratio": ratio,
            }
        return uns

    def feature_prior(self) -> dict:
        """How the feature prior that predicts never-measured drugs was fitted and how well it
        predicted held-out training drugs ({} where no request has a new drug)."""
        fp = (
            self.run._feature_prior if self.new_feats and self.run.spec.kind != "identity" else None
        )
        if fp is None:
            return {}
        return {k: v for k, v in fp.chosen.items() if v is not None}

    def combination_departure(self) -> dict:
        """Per covariate group (by name): the training combinations and the weights of their
        departure from additivity that new combinations take ({} where no request is a
        combination, or no group has one fitted)."""
        fit = self.run._interaction
        rule = self.run.meta.keys.combinations.with_atomic(self.new_feats)
        if fit is None or not any(len(rule.split(c)) > 1 for c in self.requests["condition"]):
            return {}
        keys = self.run.cov_keys
        groups = self.run.groups
        name = {g: "|".join(f"{k}={groups[k].iloc[g]}" for k in keys) or "all" for g in fit.mean}
        return {name[g]: v for g, v in fit.summary().items()}

    def group_transfer(self) -> dict:
        """The weight of a perturbation's residual carried from the covariate groups it was
        measured in to one it was not (GimRun._across_groups), where a request is such a case."""
        table, w = self.run._group_transfer
        if not table:
            return {}
        rule = self.run.meta.keys.combinations
        names = {n for n, _ in table}
        used = [
            (n, covs)
            for c, covs in zip(
                self.requests["condition"], self.run._cov_tuples(self.requests), strict=True
            )
            for n in rule.split(c)
            if n in names and (n, covs) not in self.run._measured_alone_in
        ]
        if not used:
            return {}
        return {
            "weight": float(w),
            "n_perturbation_doses_in_two_or_more_groups": int(
                sum(v[1] > 1 for v in table.values())
            ),
            "requests": sorted({f"{n} in {'|'.join(c)}" for n, c in used}),
        }

    def warn_low_similarity(self) -> None:
        app = self.tables["applicability"]
        if not app:
            return
        warn_low_similarity(self.run, pd.concat(app)["similarity"])
        prior = self.feature_prior()
        # what the features add reaches a new drug through the gates (w) and the ridge (v)
        w, v = prior.get("cv_weight", 1.0), prior.get("cv_pooled_weight", 0.0)
        if w + v < 0.5:
            log.warning(
                "the training drugs' features predicted their effects poorly in cross-validation "
                "(skill %.2f over %d drugs): new drugs' shifts from features are scaled by %.2f,"
                " plus %.2f of the response the training drugs share",
                prior["cv_skill"],
                prior["n_drugs"],
                w + v,
                prior.get("cv_shared_weight", 0.0),
            )


def warn_low_similarity(run: GimRun, sim: pd.Series, *, what: str = "predicted") -> None:
    """One warning when perturbations are far from every training perturbation."""
    low = sim < LOW_SIMILARITY[run.spec.kind]
    if low.any():
        log.warning(
            "%d of %d %s perturbation(s) are far from every training perturbation "
            "(similarity < %.2f); treat them as extrapolations",
            int(low.sum()),
            len(sim),
            what,
            LOW_SIMILARITY[run.spec.kind],
        )


def reference(run: GimRun, g: int, cache: dict[int, Reference] | None = None) -> Reference:
    """The reference control cells of covariate group `g` (rows of run.std_mean), summarised for
    the sparsity rule; `cache` keeps them across calls."""
    cache = {} if cache is None else cache
    if g not in cache:
        cache[g] = Reference.of(run.ref_cells[run.ref_group == g])
    return cache[g]


def _request_rng(seed: int, label: str) -> np.random.Generator:
    """The generator of one request's cells: (seed, its label), whatever else is predicted."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def cells_from_change(
    run: GimRun,
    labels: list[str],
    groups: np.ndarray,
    delta: np.ndarray,
    *,
    n_cells: int | None,
    seed: int,
    refs: dict[int, Reference] | None = None,
) -> list[np.ndarray]:
    """Per request (its context label, covariate group and predicted change of every gene's mean,
    delta (K, d)): `n_cells` reference control cells of its group (None: each of them once, so
    that the cells' mean is exactly the predicted mean) moved by the change, by the
    sparsity rule in log space (gimcli.sparsity), plainly for continuous data. Every method's
    predicted cells are made here (GIM and the mean baselines alike), so that they are compared
    on the same footing."""
    refs = {} if refs is None else refs
    out = []
    for k, label in enumerate(labels):
        ref = reference(run, int(groups[k]), refs)
        rows = sample_rows(ref.n, n_cells or ref.n, _request_rng(seed, label))
        out.append(ref.cells_for(rows, delta[k], log_space=log_space(run)))
    return out


_TABLES = ("mean", "model_mean", "target_prob", "applicability", "n_cells")
GENE_ALIGNMENT = (
    "var['gim_input_index'] is each gene's column in the training input (var_names are its "
    "names); the input's other genes were not modelled and are not predicted: "
    "full[:, var['gim_input_index']] = X lines a prediction up with the input's full gene set"
)


def _stack(parts: list, d: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, d), np.float32)


def _reference_pca(run: GimRun):
    """(center, components (k, d), variance, variance ratio) of the run's reference control
    cells: one embedding for every prediction of a run (obsm['X_pca'], e.g. for pertpy's
    distances); None without reference cells."""
    if run.ref_cells is None or len(run.ref_cells) < 2:
        return None
    X = np.asarray(run.ref_cells, np.float64)
    center = X.mean(0)
    k = max(1, min(N_PCS, X.shape[1], len(X) - 1))
    _, s, Vt = np.linalg.svd(X - center, full_matrices=False)
    var = s**2 / (len(X) - 1)
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    return center, Vt[:k], var[:k], ratio[:k]


_OPTIONS = ("n_cells", "seed", "map_targets", "noise", "with_controls", "chunk")


def _plan(run, requests, new_feats, **options) -> _Plan:
    if options["noise"] not in ("controls", "gaussian"):
        raise InputError(f"--noise {options['noise']!r}: expected controls or gaussian")
    if options["n_cells"] is not None and options["n_cells"] < 1:
        raise InputError("--n-cells must be >= 1 (or 0/None: every reference control cell once)")
    return _Plan(run, requests.reset_index(drop=True), new_feats or {}, **options)


def _categorical(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = obs[c].astype("category")
    return obs


def predict(
    run: GimRun,
    requests: pd.DataFrame,
    new_feats: dict[str, np.ndarray] | None = None,
    *,
    n_cells: int | None = None,
    seed: int = 0,
    map_targets: bool = False,
    noise: Literal["controls", "gaussian"] = "controls",
    with_controls: bool = False,
    chunk: int = CHUNK_CONDITIONS,
    warn: bool = True,
) -> ad.AnnData:
    """`n_cells` cells per request (docs/design.md, "Predictions"), in memory; None: every
    reference control cell of the request's group once (then the cells' mean is exactly the
    predicted mean).

    Cells are the run's reference control cells moved by the predicted change of each gene's mean
    (`A^{-1} E[u]`, GimRun.interventions: the posterior of measured contexts and components, else
    the network's prior; `map_targets`: the MAP targets instead) under the sparsity rule of
    gimcli.sparsity; noise="gaussian" samples the fitted Gaussian SEM instead. The cells of a
    request depend on (seed, its label) only, not on the other requests. `with_controls` adds the
    reference control cells of every requested group, labelled with the control label.
    `layers['gim_mean']` and uns['gim']['mean'] are the mean of each condition's written cells;
    uns['gim']['model_mean'] is the SEM's analytical mean."""
    plan = _plan(run, requests, new_feats, **{k: v for k, v in locals().items() if k in _OPTIONS})
    pieces = list(plan.pieces())
    if warn:  # evaluate predicts with two models: it warns once
        plan.warn_low_similarity()
    if pieces:
        out = ad.concat(pieces, merge="same")
    else:
        out = ad.AnnData(X=sp.csr_matrix((0, len(run.genes)), dtype=np.float32))
    out.obs = _categorical(out.obs)
    out.var = plan.var()
    for name, arr in plan.varm().items():
        out.varm[name] = arr
    out.uns.update(plan.uns())
    return out


def write_predictions(
    run: GimRun,
    requests: pd.DataFrame,
    path: str | Path,
    new_feats: dict[str, np.ndarray] | None = None,
    *,
    n_cells: int | None = None,
    seed: int = 0,
    map_targets: bool = False,
    noise: Literal["controls", "gaussian"] = "controls",
    with_controls: bool = True,
    chunk: int = CHUNK_CONDITIONS,
    extra_uns: dict | None = None,
) -> dict:
    """`predict`, streamed to the .h5ad `path` `chunk` conditions at a time (atomically): the
    same file as `predict(...).write_h5ad(path)` without every cell in memory. Returns the
    summary: n_obs, n_conditions and the per-condition table."""
    plan = _plan(run, requests, new_feats, **{k: v for k, v in locals().items() if k in _OPTIONS})
    obs = []
    with atomic_path(path) as tmp:
        w = H5adAppender(tmp)
        try:
            for piece in plan.pieces():
                w.append(piece)
                obs.append(piece.obs)
        except BaseException:
            w.f.close()
            raise
        uns = plan.uns()
        uns[_keys.UNS].update(extra_uns or {})
        full_obs = pd.concat(obs) if obs else pd.DataFrame()
        w.close(obs=_categorical(full_obs), var=plan.var(), varm=plan.varm(), uns=uns)
    plan.warn_low_similarity()
    return {
        "n_obs": w.n_obs,
        "n_conditions": len(plan.requests),
        "conditions": uns[_keys.UNS]["conditions"],
    }
