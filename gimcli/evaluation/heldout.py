"""Score a trained run on held-out cells: the GIM and every baseline side by side.

`evaluate(run, test, train=...)` returns a tidy table (one row per held-out context and method,
plus aggregate rows) and a JSON-able summary; `write_eval` writes RUN/eval_metrics.csv/.json.
Everything is computed in log-normalised expression over the model's genes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli import _keys
from gimcli.config import TrainConfig
from gimcli.data.contexts import (
    build_contexts,
    cell_context_labels,
    context_label,
    dose_parts,
    perturbed_contexts,
)
from gimcli.data.io import atomic_path, read_h5ad, write_text
from gimcli.data.preprocess import transform_new
from gimcli.errors import InputError, ModelError
from gimcli.evaluation import baselines as bl
from gimcli.evaluation import metrics as M
from gimcli.gimrun import GimRun
from gimcli.prediction import cells_from_change, predict, reference
from gimcli.provenance import finite_json, json_default
from gimcli.training.fitting import fit_run

log = logging.getLogger(__name__)

METHODS = ("gim", "gim_nograph", *bl.MEAN_BASELINES)
# Contexts per predict() call: bounds memory of the sampled cells (contexts x cells x genes).
_PRED_CHUNK = 32
# Training cells the PCA space of the distribution metrics is fitted on (a fixed-seed subsample).
_PCA_CELLS = 20_000


def log_expression(adata: ad.AnnData, run: GimRun) -> sp.csr_matrix:
    """Cells x model genes, preprocessed as in training; every model gene must be present (a
    zero-filled gene would bias every metric)."""
    X, _ = transform_new(
        adata,
        run.preprocess_info,
        counts_layer=run.meta.keys.counts_layer,
        where="evaluation data",
        max_missing=0.0,
    )
    return X


def fit_nograph(
    run: GimRun, train_data: ad.AnnData, *, device: str = "auto", config: TrainConfig | None = None
) -> GimRun:
    """The same GIM refit on the same training cells with B = 0 (the no-causal-model ablation).

    Drugs are described by the run's own SMILES table, so the refit needs no SMILES column."""
    keys, spec = run.meta.keys, run.spec
    cfg = (config or run.config).replace(fix_graph=True)
    drug = None
    if spec.kind == "smiles":
        drug = pd.DataFrame({"name": list(spec.smiles), "smiles": list(spec.smiles.values())})
    keys = replace(
        keys, smiles_key=None, feature_keys=keys.feature_keys if spec.kind == "numeric" else ()
    )
    nograph, _ = fit_run(train_data, keys=keys, drug_features=drug, config=cfg, device=device)
    return nograph


def _gim_predictions(
    run: GimRun,
    table: pd.DataFrame,
    feats: dict[str, np.ndarray],
    *,
    n_cells: int | None,
    seed: int,
    warn: bool = True,
):
    """Per held-out context: the GIM's cells (those `gim predict` writes with the same n_cells
    and seed, to float32 rounding), their mean and the target probabilities."""
    new = {n: f for n, f in feats.items() if n not in run.meta.components}
    req = table[["condition", "dose", *run.cov_keys]].reset_index(drop=True)
    pred = predict(run, req, new, n_cells=n_cells, seed=seed, chunk=_PRED_CHUNK, warn=warn)
    X = pred.X.toarray()
    cells = np.split(X, np.cumsum(pred.uns[_keys.UNS]["conditions"]["n_cells"].to_numpy())[:-1])
    means = np.stack([c.astype(np.float64).mean(0) for c in cells]) if cells else np.zeros(0)
    return means, cells, pred.uns[_keys.UNS]["target_prob"].to_numpy()


def _baseline_cells(run: GimRun, held, means: np.ndarray, ref, *, n_cells: int | None, seed: int):
    """A mean baseline's cells: the same reference control cells as the GIM's for each context,
    moved by the baseline's predicted change (its mean minus the training control mean) under the
    same sparsity rule; returns (mean of the cells, cells)."""
    labels = [context_label(held.table.iloc[k], run.cov_keys) for k in range(len(held.queries))]
    groups = run.group_index(held.table)
    delta = np.stack([means[k] - ref.control(q.group) for k, q in enumerate(held.queries)])
    ok = np.isfinite(delta).all(1)
    cells = cells_from_change(
        run, labels, groups, np.where(ok[:, None], delta, 0.0), n_cells=n_cells, seed=seed
    )
    m = np.stack([c.astype(np.float64).mean(0) for c in cells])
    m[~ok] = np.nan
    return m, cells


@dataclass
class EvalResult:
    table: pd.DataFrame  # tidy: one row per (context, method) and one aggregate row per method
    summary: dict  # JSON-able: aggregate, best baseline, definitions, targets, params
    # with keep_cells: per method, the predicted cells of each held-out context (rows of
    # `contexts`), the very cells its metrics were computed from
    cells: dict[str, list[np.ndarray]] | None = None
    contexts: pd.DataFrame | None = None


@dataclass
class _Heldout:
    """The held-out contexts of the test cells, as every method sees them."""

    table: pd.DataFrame  # condition, dose, <covariates>, n_cells
    cell_ctx: np.ndarray  # context of each test cell, -1 for controls
    queries: list[bl.Query]

    @classmethod
    def of(cls, run: GimRun, test: ad.AnnData) -> _Heldout:
        keys = run.meta.keys
        table, cell_ctx = perturbed_contexts(test.obs, keys)
        if not len(table):
            raise InputError(
                "no perturbed cells in the test data "
                f"(every obs[{keys.perturbation_key!r}] is the control)"
            )
        queries = [
            bl.Query(
                components=keys.combinations.split(table["condition"].iloc[k]),
                doses=dose_parts(table["dose"].iloc[k]),
                group=tuple(str(table[c].iloc[k]) for c in run.cov_keys),
                covariates=table.iloc[[k]],
            )
            for k in range(len(table))
        ]
        return cls(table=table, cell_ctx=cell_ctx, queries=queries)


def evaluate(
    run: GimRun,
    test: ad.AnnData,
    *,
    train: ad.AnnData,
    nograph: GimRun | None = None,
    methods: tuple[str, ...] = METHODS,
    drug_features: pd.DataFrame | None = None,
    truth: dict | None = None,
    n_cells: int | None = None,
    seed: int = 0,
    split: dict | None = None,
    keep_cells: bool = False,
) -> EvalResult:
    """Score the GIM and the baselines on every perturbed context of `test`.

    `train` holds exactly the training cells (the baselines and the PCA space use them). Without
    `nograph`, the B = 0 GIM is refit when "gim_nograph" is in `methods`. `truth` is a simulated
    screen's uns['gim_truth'] (targets and graph are then scored too). `keep_cells` keeps every
    method's predicted cells in the result (bench/celleval.py writes them for cell-eval).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise InputError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    held = _Heldout.of(run, test)
    Xte, Xtr = log_expression(test, run), log_expression(train, run)
    keys = run.meta.keys
    tr = build_contexts(
        train.obs,
        perturbation_key=keys.perturbation_key,
        control=keys.control,
        dose_key=keys.dose_key,
        covariate_keys=run.cov_keys or None,
        min_cells=1,
        combinations=keys.combinations,
    )
    ref = bl.TrainReference.build(
        Xtr, tr.table, tr.cell_context, run.cov_keys, rule=keys.combinations
    )
    sub = np.random.default_rng(seed).choice(Xtr.shape[0], min(Xtr.shape[0], _PCA_CELLS), False)
    space = M.PCASpace(Xtr[np.sort(sub)].toarray(), seed=seed)
    names = {n for q in held.queries for n in q.components}
    names |= {n for cl in ref.contexts["components"] for n in cl}
    feats = run.component_features(
        sorted(names), obs=pd.concat([train.obs, test.obs], ignore_index=True), table=drug_features
    )
    preds: dict[str, tuple[np.ndarray, list | None]] = {}
    pis: dict[str, np.ndarray] = {}
    for name in ("gim", "gim_nograph"):
        if name not in methods:
            continue
        if name == "gim_nograph" and nograph is None:
            log.info("refitting the GIM with B = 0 on the training cells (baseline gim_nograph)")
            nograph = fit_nograph(run, train)
        model = run if name == "gim" else nograph
        m, c, pis[name] = _gim_predictions(
            model, held.table, feats, n_cells=n_cells, seed=seed, warn=name == "gim"
        )
        preds[name] = (m, c)
    baselines = bl.mean_baselines(
        ref,
        feats,
        methods=methods,
        similarity=run.spec.similarity,
        dose_scale=run.meta.dose_scale,
        cov_categories=run.meta.covariates.categories,
    )
    for name, predict_mean in baselines.items():
        means = np.stack([predict_mean(q) for q in held.queries])
        preds[name] = _baseline_cells(run, held, means, ref, n_cells=n_cells, seed=seed)
    per = _score_contexts(
        run, held, Xte, ref, preds, space, seed=seed, models={"gim_nograph": nograph}
    )
    out, agg, n_ok = _with_aggregates(per, run.cov_keys)
    summary = _summary(agg, n_ok, per, held.table, split, n_cells, seed, space)
    if truth is not None:
        summary["targets"] = _target_scores(
            run, nograph, truth, held.table, pis, train, ref, Xtr, tr
        )
    if not keep_cells:
        return EvalResult(table=out, summary=summary)
    cells = {name: c for name, (_, c) in preds.items()}
    return EvalResult(table=out, summary=summary, cells=cells, contexts=held.table)


def _score_contexts(run, held, Xte, ref, preds, space, *, seed, models=None) -> pd.DataFrame:
    """One row of metrics per held-out context and method, each from the cells the method
    predicts: their mean is its prediction, and its change is taken against the mean of the
    reference control cells they were made from (the controls a prediction file writes), as
    cell-eval computes it. `models` names the run whose reference cells a method used (default:
    `run`)."""
    rows = []
    refs: dict[str, dict] = {}
    for k, q in enumerate(held.queries):
        rows_k = np.flatnonzero(held.cell_ctx == k)
        X_true = Xte[rows_k].toarray().astype(float)
        y, c = X_true.mean(0), ref.control(q.group)
        row = held.table.iloc[k]
        g = int(run.group_index(held.table.iloc[[k]])[0])
        base = {
            "scope": "context",
            "context": context_label(row, run.cov_keys),
            **{col: row[col] for col in ["condition", "dose", *run.cov_keys]},
            "n_cells": len(rows_k),
            "combination": len(q.components) > 1,
        }
        for name, (P, cells) in preds.items():
            p = P[k]
            if not np.isfinite(p).all():
                rows.append({**base, "method": name, **{m_: np.nan for m_ in M.METRICS}})
                continue
            model = (models or {}).get(name) or run
            c_pred = reference(model, g, refs.setdefault(name, {})).mean
            metrics = M.context_metrics(
                y, p, c, X_true, cells[k], space=space, seed=seed + k, c_pred=c_pred
            )
            rows.append({**base, "method": name, **metrics})
    return pd.DataFrame(rows)


def _with_aggregates(per: pd.DataFrame, cov_keys: list[str]):
    """The per-context rows plus one aggregate row per method (means over its scored contexts)."""
    agg = per.groupby("method", sort=False)[list(M.METRICS)].mean()
    n_ok = per.groupby("method", sort=False)["r2_mean"].count()
    agg_rows = [
        {
            "scope": "aggregate",
            "context": "ALL",
            "condition": "",
            "dose": "",
            **{k: "" for k in cov_keys},
            "n_cells": int(per.loc[per["method"] == m_, "n_cells"].sum()),
            "combination": "",
            "method": m_,
            "n_contexts": int(n_ok[m_]),
            **agg.loc[m_].to_dict(),
        }
        for m_ in agg.index
    ]
    return pd.concat([per, pd.DataFrame(agg_rows)], ignore_index=True), agg, n_ok


def _best_baselines(agg: pd.DataFrame) -> dict:
    out = {}
    for m_ in M.METRICS:
        vals = agg.loc[[b for b in agg.index if b != "gim"], m_].dropna()
        if not len(vals):
            continue
        best = vals.idxmax() if M.HIGHER_IS_BETTER[m_] else vals.idxmin()
        g = agg.loc["gim", m_] if "gim" in agg.index else np.nan
        out[m_] = {
            "method": best,
            "value": float(vals[best]),
            "gim": float(g),
            "gim_at_least_as_good": bool(
                g >= vals[best] if M.HIGHER_IS_BETTER[m_] else g <= vals[best]
            )
            if np.isfinite(g)
            else None,
        }
    return out


def _summary(agg, n_ok, per, table, split, n_cells, seed, space) -> dict:
    def clean(d):
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()
        }

    by_kind = {}
    for kind, sel in (
        ("single", per["combination"] == False),  # noqa: E712
        ("combination", per["combination"] == True),  # noqa: E712
    ):
        if sel.any():
            by_kind[kind] = {
                m_: clean(v)
                for m_, v in per[sel]
                .groupby("method", sort=False)[list(M.METRICS)]
                .mean()
                .to_dict("index")
                .items()
            }
    return {
        "schema_version": 1,
        "methods": list(agg.index),
        "metrics": list(M.METRICS),
        "definitions": M.DEFINITIONS,
        "baseline_definitions": bl.__doc__.split("\n\n", 1)[1].strip(),
        "higher_is_better": M.HIGHER_IS_BETTER,
        "split": split,
        "n_test_contexts": int(len(table)),
        "aggregate": {
            m_: {**clean(agg.loc[m_].to_dict()), "n_contexts": int(n_ok[m_])} for m_ in agg.index
        },
        "aggregate_by_kind": by_kind,
        "best_baseline": _best_baselines(agg),
        "per_context": [clean(r) for r in per.to_dict("records")],
        "params": {
            "n_cells": n_cells,
            "seed": seed,
            "pca_components": int(space.components.shape[0]),
            "mmd_bandwidths": list(space.bandwidths),
            "top_de": M.TOP_DE,
            "max_cells": M.MAX_CELLS,
        },
    }


def _target_scores(run, nograph, truth, table, pis, train, ref, Xtr, tr) -> dict:
    """AUROC/AUPRC of direct targets: training contexts (posterior) and held-out contexts (pi of
    the features), the graph, and the marginal 'largest mean shift' ranking on training contexts."""
    from gimcli.evaluation.truth import auroc_auprc, graph_recovery, target_labels, target_recovery

    tt = truth["targets"]
    out: dict = {}
    for name, r in (("gim", run), ("gim_nograph", nograph)):
        if r is None:
            continue
        out[name] = {"train": target_recovery(r, tt)}
        if "B" in truth:
            out[name]["graph"] = graph_recovery(
                r, np.asarray(truth["B"]), list(truth.get("genes", run.genes))
            )
    # held-out contexts: truth labels by condition/dose/covariates
    keys = ["condition", "dose", *[k for k in run.cov_keys if k in tt.columns]]
    gene_idx = {g: i for i, g in enumerate(run.genes)}
    lab = np.zeros((len(table), len(run.genes)), np.int8)
    want = {tuple(str(r[k]) for k in keys): i for i, (_, r) in enumerate(table.iterrows())}
    for r in tt.astype({"dose": str}).itertuples(index=False):
        rd = r._asdict()
        i = want.get(tuple(str(rd[k]) for k in keys))
        if i is not None and rd["gene"] in gene_idx:
            lab[i, gene_idx[rd["gene"]]] = 1
    for name, pi in pis.items():
        out.setdefault(name, {})["heldout"] = auroc_auprc(lab, pi)
    # marginal ranking: |mean shift| / control sd of each training context
    L, rows = target_labels(run, tt)
    tc = run.contexts.astype({"dose": str})
    score = np.zeros(L.shape)
    trc = tr.table.astype({"dose": str})
    for i, k in enumerate(rows):
        key = tuple(str(tc.iloc[k][c]) for c in ["condition", "dose", *run.cov_keys])
        hit = np.flatnonzero(
            [
                tuple(str(trc.iloc[j][c]) for c in ["condition", "dose", *run.cov_keys]) == key
                for j in range(len(trc))
            ]
        )
        if not len(hit):
            continue
        cells = np.flatnonzero(tr.cell_context == hit[0])
        g = tuple(str(tc.iloc[k][c]) for c in run.cov_keys)
        ctrl = Xtr[ref.ctrl_rows.get(g, np.concatenate(list(ref.ctrl_rows.values())))].toarray()
        score[i] = np.abs(np.asarray(Xtr[cells].mean(0)).ravel() - ctrl.mean(0)) / np.maximum(
            ctrl.std(0), 1e-3
        )
    out["largest_mean_shift"] = {"train": auroc_auprc(L, score)}
    return out


def describe(result: EvalResult) -> str:
    """'gim=0.912, control=0.850, ...': each method's mean R² over the held-out contexts."""
    agg = result.summary["aggregate"]
    return ", ".join(
        f"{m}={v['r2_mean']:.3f}" for m, v in agg.items() if v.get("r2_mean") is not None
    )


def write_eval(result: EvalResult, out_dir: str | Path) -> dict[str, str]:
    """RUN/eval_metrics.csv (the tidy table) and RUN/eval_metrics.json (the summary), atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, js = out_dir / _keys.EVAL_CSV, out_dir / _keys.EVAL_JSON
    with atomic_path(csv) as tmp:
        result.table.to_csv(tmp, index=False)
    write_text(json.dumps(finite_json(result.summary), indent=1, default=json_default), js)
    return {"eval_csv": str(csv), "eval_json": str(js)}


def train_cells(annotated: ad.AnnData) -> ad.AnnData:
    """The cells a run trained on, from RUN/annotated.h5ad (obs['gim_context'] != '')."""
    if _keys.OBS_CONTEXT not in annotated.obs.columns:
        raise ModelError(
            f"annotated data lacks obs[{_keys.OBS_CONTEXT!r}]; retrain with this gim version"
        )
    return annotated[(annotated.obs[_keys.OBS_CONTEXT].astype(str) != "").to_numpy()]


def evaluate_split(
    run: GimRun,
    adata: ad.AnnData,
    mask: np.ndarray,
    *,
    split: dict | None = None,
    device: str = "auto",
    seed: int = 0,
    drug_features: pd.DataFrame | None = None,
    baseline_refit: bool = True,
) -> tuple[EvalResult, GimRun | None]:
    """After training on `adata[mask]`: refit the B = 0 ablation on the same cells (unless
    `baseline_refit` is False) and score every method on the held-out cells `adata[~mask]`."""
    mask = np.asarray(mask, bool)
    train, test = adata[mask], adata[~mask]
    # only cells of contexts the model kept (too-small contexts are dropped from training)
    train = train[cell_context_labels(train.obs, run.meta.keys, run.contexts) != ""]
    methods = METHODS if baseline_refit else tuple(m for m in METHODS if m != "gim_nograph")
    nograph = None
    if baseline_refit:
        log.info(
            "refitting the GIM with B = 0 on the %d training cells (baseline gim_nograph; "
            "--no-baseline-refit skips it)",
            train.n_obs,
        )
        nograph = fit_nograph(run, train, device=device)
    truth = adata.uns.get(_keys.UNS_TRUTH)
    res = evaluate(
        run,
        test,
        train=train,
        nograph=nograph,
        truth=truth if isinstance(truth, dict) else None,
        seed=seed,
        split=split,
        drug_features=drug_features,
        methods=methods,
    )
    return res, nograph


def evaluate_saved_run(
    run: GimRun,
    run_dir: Path,
    test: ad.AnnData,
    *,
    methods: tuple[str, ...] = METHODS,
    drug_features: pd.DataFrame | None = None,
    n_cells: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> EvalResult:
    """`evaluate` for a run directory: its training cells from RUN/annotated.h5ad, the B = 0
    refit from RUN/nograph/ when `gim train` saved one (refit otherwise), and the simulated truth
    when `test` carries it."""
    ann_p = Path(run_dir) / _keys.ANNOTATED
    if not ann_p.exists():
        raise InputError(f"{ann_p} is missing: the baselines need the training cells")
    train = train_cells(read_h5ad(ann_p))
    nograph = None
    if "gim_nograph" in methods:
        if (Path(run_dir) / _keys.NOGRAPH / _keys.MODEL_META).exists():
            nograph = GimRun.load(Path(run_dir) / _keys.NOGRAPH)
        else:
            log.info("refitting the GIM with B = 0 on the %d training cells", train.n_obs)
            nograph = fit_nograph(run, train, device=device)
    truth = test.uns.get(_keys.UNS_TRUTH)
    return evaluate(
        run,
        test,
        train=train,
        nograph=nograph,
        methods=methods,
        drug_features=drug_features,
        truth=truth if isinstance(truth, dict) else None,
        n_cells=n_cells,
        seed=seed,
    )
