"""Scoring one trained screen: held-out contexts (GIM, the baselines, the oracle) and direct
targets of training contexts (GIM's target score against the |mean shift| / sd ranking).

GIM and the baselines of gimcli.evaluation.baselines are scored by `gim.evaluate`, once per kind
of held-out context; this module adds, on the same cells, PCA space and per-context seeds:

- oracle: cells drawn afresh from the true model of the context (simulations only; its mean is
  the true mean up to Monte Carlo error with ORACLE_CELLS cells);
- perturbed_mean_dose: the mean over perturbed training contexts at the dose nearest the query's
  (log scale), moved onto the same control cells as every mean baseline (screens with doses);
- ceiling (real screens, where no oracle exists): the R² over genes that the context's true mean
  would be expected to reach against its observed mean, 1 - sum_g v_g / sum_g (y_g - mean y)^2,
  v_g the sampling variance of the observed mean (the context's cells' variance / n; for a
  single sample, as a bulk well, the variance of the group's control samples). An estimate: a
  method scoring near it has little left to gain from any model of the mean;
- control / perturbed_mean when GIM refuses the contexts (identity features of an unseen KO):
  `gim.evaluate` then cannot describe them to any method, and GIM's row says "refused".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

import gimcli as gim
from gimcli.data.contexts import build_contexts, cell_context_labels, cell_keys
from gimcli.errors import GimError
from gimcli.evaluation import baselines as bl
from gimcli.evaluation import heldout
from gimcli.evaluation.metrics import METRICS, PCASpace
from gimcli.evaluation.truth import target_labels

ORACLE_CELLS = 1000
BASELINES = ("control", "perturbed_mean", "perturbed_mean_dose", "additive", "ridge", "nearest")


class Scorer:
    """What every method of one trained run is scored against (built once per run)."""

    def __init__(self, run, screen, *, seed: int):
        self.run, self.screen, self.seed = run, screen, seed
        a = screen.adata
        train = a[screen.mask]
        # only cells of contexts the model kept (as gimcli.evaluation.heldout.evaluate_split)
        keep = cell_context_labels(train.obs, run.meta.keys, run.contexts) != ""
        self.train, self.test = train[keep], a[~screen.mask]
        keys = run.meta.keys
        tr = build_contexts(
            self.train.obs,
            perturbation_key=keys.perturbation_key,
            control=keys.control,
            dose_key=keys.dose_key,
            covariate_keys=run.cov_keys or None,
            min_cells=1,
        )
        self.Xtr = heldout.log_expression(self.train, run)
        self.ref = bl.TrainReference.build(self.Xtr, tr.table, tr.cell_context, run.cov_keys)
        n = self.Xtr.shape[0]
        sub = np.random.default_rng(seed).choice(n, min(n, heldout._PCA_CELLS), False)
        self.space = PCASpace(self.Xtr[np.sort(sub)].toarray(), seed=seed)

    # -- held-out contexts ---------------------------------------------------------------------
    def heldout_rows(self) -> tuple[pd.DataFrame, list[str]]:
        """Per-context metrics of every method for every kind of held-out context, and the held-out
        conditions GIM refused. A kind GIM refuses as a whole is retried one condition at a time,
        so that the conditions it can predict are scored (e.g. unseen KOs of measured genes but
        not of unmeasured ones)."""
        kinds = self.screen.kind_of()
        test = self.test
        conds = test.obs["condition"].astype(str).to_numpy()
        key = list(zip(conds, self._dose_keys(test.obs), strict=True))
        kind = np.array([kinds.get(k, ("", ""))[0] for k in key], dtype=object)
        ctrl = conds == self.run.meta.keys.control
        parts, refused = [], []
        for kd in sorted({k for k in kind if k not in ("", "train")}):
            sel = kind == kd
            rows = self._score_kind(test[sel | ctrl])
            if rows is None:
                rows = [self._score_kind(test[(conds == c) | ctrl]) for c in np.unique(conds[sel])]
                if all(r is None for r in rows):  # refused as a whole: no retry per condition
                    refused += sorted(set(conds[sel]))
                    rows = [self._score_kind(test[sel | ctrl], refused=True)]
                else:
                    for c, r in zip(np.unique(conds[sel]), rows, strict=True):
                        if r is None:
                            refused.append(c)
                            rows.append(self._score_kind(test[(conds == c) | ctrl], refused=True))
                rows = pd.concat([r for r in rows if r is not None], ignore_index=True)
            parts.append(rows.assign(kind=kd))
        per = pd.concat(parts, ignore_index=True)
        ku = {k: v[1] for k, v in kinds.items()}
        pairs = zip(per["condition"], per["dose"].astype(str), strict=True)
        per["unit"] = [ku.get(k, k[0]) for k in pairs]
        return per, refused

    def _score_kind(self, sub, *, refused: bool = False) -> pd.DataFrame | None:
        """Rows of every method on the held-out contexts of `sub` (None when GIM refuses them);
        with `refused`: the baselines that need no features, and empty GIM rows."""
        extra = ["oracle"] if self.screen.sample is not None else []
        if refused:
            rows = self._extra(*self._cells(sub), [*extra, "control", "perturbed_mean"])
            gim_rows = rows[rows["method"] == "control"].assign(method="gim")
            gim_rows[list(METRICS)] = np.nan
            return pd.concat([gim_rows, rows], ignore_index=True)
        try:
            res = gim.evaluate(
                self.run, sub, train=self.train, methods=_GIM_METHODS, seed=self.seed
            )
        except GimError as e:
            self.refusal = str(e)
            return None
        extra += ["perturbed_mean_dose"] if self.run.meta.keys.dose_key else []
        rows = pd.DataFrame(res.summary["per_context"])
        held, Xte = self._cells(sub)
        parts = [rows, self._extra(held, Xte, extra)]
        if self.screen.sample is None:
            parts.append(self._ceiling(held, Xte, rows))
        return pd.concat(parts, ignore_index=True)

    def _dose_keys(self, obs: pd.DataFrame) -> list[str]:
        return cell_keys(obs, self.run.meta.keys)["dose"].astype(str).tolist()

    def _cells(self, test) -> tuple:
        """The held-out contexts of `test` and its cells' log expression (built once per kind)."""
        return heldout._Heldout.of(self.run, test), heldout.log_expression(test, self.run)

    def _extra(self, held, Xte, methods: list[str]) -> pd.DataFrame:
        """Rows of the methods gim.evaluate does not have, scored as it scores its own."""
        run, ref = self.run, self.ref
        preds = {}
        for name in methods:
            if name == "oracle":
                preds[name] = self._oracle(held)
                continue
            means = np.stack([_MEANS[name](ref, q) for q in held.queries])
            preds[name] = heldout._baseline_cells(
                run, held, means, ref, n_cells=None, seed=self.seed
            )
        return heldout._score_contexts(run, held, Xte, ref, preds, self.space, seed=self.seed)

    def _ceiling(self, held, Xte, like: pd.DataFrame) -> pd.DataFrame:
        """Rows of the noise ceiling (module docstring): r2_mean only, per held-out context of
        `held` (cells `Xte`)."""
        run, ref = self.run, self.ref
        rows = []
        for k in range(len(held.table)):
            X = Xte[np.flatnonzero(held.cell_ctx == k)].toarray().astype(np.float64)
            y = X.mean(0)
            if len(X) > 1:
                v = X.var(0, ddof=1) / len(X)
            else:  # one sample: its noise read from the group's control samples
                v = self.Xtr[ref.ctrl_rows[held.queries[k].group]].toarray().var(0, ddof=1)
            ss = float(((y - y.mean()) ** 2).sum())
            row = held.table.iloc[k]
            rows.append(
                {
                    **{c: row[c] for c in ["condition", "dose", *run.cov_keys]},
                    "method": "ceiling",
                    "r2_mean": 1 - float(v.sum()) / ss if ss > 0 else np.nan,
                }
            )
        return pd.DataFrame(rows).reindex(columns=like.columns)

    def _oracle(self, held) -> tuple[np.ndarray, list[np.ndarray]]:
        by_key = {(c.condition, c.dose): c for c in self.screen.contexts}
        rng = np.random.default_rng([self.seed, 99])
        cells = []
        for k in range(len(held.table)):
            row = held.table.iloc[k]
            ctx = by_key[(row["condition"], str(row["dose"]))]
            raw = self.screen.sample(ctx, ORACLE_CELLS, rng)
            fresh = gim_anndata(raw, self.screen.adata.var_names)
            cells.append(heldout.log_expression(fresh, self.run).toarray().astype(np.float64))
        return np.stack([c.mean(0) for c in cells]), cells

    # -- direct targets of training contexts ---------------------------------------------------
    def target_scores(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, str]:
        """Training contexts (condition, dose) x genes: GIM's target score (explain's `log_odds`
        when it has one, else the posterior probability `prob`) and |mean shift| / control sd."""
        run, ref = self.run, self.ref
        d = len(run.genes)
        # every gene ranked: explain lists only confident targets (prob >= 0.5) by default
        ex = gim.explain(run, top_targets=d, n_downstream=0, min_prob=0.0)
        col = "log_odds" if "log_odds" in ex.columns else "prob"
        ex = ex[ex["kind"] == "target"].astype({"dose": str})
        wide = ex.pivot_table(index=["condition", "dose"], columns="gene", values=col)
        wide = wide.reindex(columns=run.genes)
        ctx = ref.contexts.astype({"dose": str})
        keys = list(zip(ctx["condition"], ctx["dose"], strict=True))
        gim_score = wide.reindex(pd.MultiIndex.from_tuples(keys)).to_numpy(float)
        shift = np.zeros_like(gim_score)
        for i, g in enumerate(ctx["group"]):
            c = self.Xtr[ref.ctrl_rows[g]].toarray()
            shift[i] = np.abs(ref.means[i] - c.mean(0)) / np.maximum(c.std(0), 1e-3)
        return ctx[["condition", "dose"]].reset_index(drop=True), gim_score, shift, col

    def target_rows(self) -> tuple[pd.DataFrame, dict]:
        """Per training unit (drug, KO): average precision of each ranking over its contexts, and
        the pooled AUPRC over all training contexts."""
        truth = self.screen.truth
        ctx, S_gim, S_shift, col = self.target_scores()
        L, rows = target_labels(self.run, truth)
        tc = self.run.contexts.astype({"dose": str})
        lab_of = {(tc.iloc[k]["condition"], tc.iloc[k]["dose"]): L[i] for i, k in enumerate(rows)}
        Y = np.stack([lab_of.get(k, np.zeros(L.shape[1])) for k in ctx.itertuples(index=False)])
        units = self.screen.kind_of()
        unit = np.array([units.get(tuple(k), ("", k[0]))[1] for k in ctx.itertuples(index=False)])
        out = []
        for u in np.unique(unit):
            sel = unit == u
            if Y[sel].sum() == 0:
                continue
            for m, S in (("gim", S_gim), ("mean_shift", S_shift)):
                ap = average_precision_score(Y[sel].ravel(), np.nan_to_num(S[sel]).ravel())
                out.append({"unit": u, "method": m, "ap": float(ap)})
        pooled = {
            "score": col,
            "gim": float(average_precision_score(Y.ravel(), np.nan_to_num(S_gim).ravel())),
            "mean_shift": float(average_precision_score(Y.ravel(), S_shift.ravel())),
        }
        return pd.DataFrame(out), pooled


def gim_anndata(X, genes):
    import anndata as ad
    import scipy.sparse as sp

    return ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=list(genes)))


def _nearest_dose_mean(ref: bl.TrainReference, q: bl.Query) -> np.ndarray:
    """Mean of the perturbed training contexts of the group at the dose nearest the query's."""
    c = ref.contexts
    t = np.log1p(np.sum(q.doses))
    dz = np.log1p(np.array([np.sum(x) for x in c["doses"]]))
    same = np.array([g == q.group for g in c["group"]], bool)
    same = same if same.any() else np.ones(len(c), bool)
    gap = np.abs(dz - t)
    best = same & np.isclose(gap, gap[same].min())
    return ref.means[best].mean(0)


_GIM_METHODS = ("gim", "control", "perturbed_mean", "additive", "ridge", "nearest")
_MEANS = {
    "perturbed_mean_dose": _nearest_dose_mean,
    "control": lambda ref, q: bl.predict_control(ref, q.group),
    "perturbed_mean": lambda ref, q: bl.predict_perturbed_mean(ref, q.group),
}


def ko_ranks(scorer: Scorer) -> list[dict]:
    """For each training KO whose gene is measured: that gene's rank in its own condition (1 =
    first; ties share their mean rank) by GIM's target score and by |mean shift| / sd."""
    from scipy.stats import rankdata

    ctx, S_gim, S_shift, col = scorer.target_scores()
    genes = list(scorer.run.genes)
    out = []
    for i, cond in enumerate(ctx["condition"]):
        if cond not in genes:
            continue
        j = genes.index(cond)
        row = {"ko": cond, "n_genes": len(genes), "score": col}
        for m, S in (("gim", S_gim), ("mean_shift", S_shift)):
            row[m] = float(rankdata(-np.nan_to_num(S[i], nan=-np.inf))[j])
        out.append(row)
    return out
