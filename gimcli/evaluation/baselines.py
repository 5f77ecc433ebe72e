"""Baselines computed inside the tool on the same split as the GIM, in log-expression space.

Each baseline predicts a context's mean expression `p` from training cells only. Cells for the
distribution metrics are the training control cells of the context's covariate group shifted by
`p - c` (c = their mean): a baseline predicts a change of the mean, not a change of shape.

- control: p = c (no change).
- perturbed_mean: p = mean of all perturbed training cells of the group.
- additive: p = c + sum over components of that component's training effect (single-component
  contexts of the same group if it has one, else the mean over groups), interpolated linearly on
  a log scale between its nearest measured doses below and above, at its nearest dose past
  them. For a single drug at a held-out dose this is the interpolation of its own effects.
- ridge: p = c + Ridge([f, f*t, t, cov] -> mean - c) fitted on every perturbed training context;
  f = summed component features, t = summed transformed dose (the model's own dose transform),
  cov = covariate one-hot; the penalty is chosen by leave-one-out (RidgeCV).
- nearest: p = c + sum over components of the training effect of the most similar training
  component (Tanimoto on fingerprints, cosine otherwise), at the dose as in additive.
- gim_nograph: the GIM refit with B = 0 (TrainConfig(fix_graph=True)); gimcli.evaluation.heldout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli.data.combinations import DEFAULT, Combinations
from gimcli.data.contexts import covariate_onehot, dose_parts, dose_transform
from gimcli.model.feature_prior import dose_basis

MEAN_BASELINES = ("control", "perturbed_mean", "additive", "ridge", "nearest")
# Candidate ridge penalties (features are fingerprints bits or standardised numbers: O(1) scale).
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def _key(row, cov_keys: list[str]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in cov_keys)


def _mean_rows(X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    return np.asarray(X[rows].mean(0)).ravel()


@dataclass
class TrainReference:
    """What the baselines need from the training cells (log-expression over the model's genes)."""

    X: sp.csr_matrix
    cov_keys: list[str]
    ctrl_rows: dict[tuple, np.ndarray]  # control cells per covariate group
    ctrl_mean: dict[tuple, np.ndarray]
    pert_mean: dict[tuple, np.ndarray]
    contexts: (
        pd.DataFrame
    )  # perturbed training contexts: condition, dose, <covs>, group, components, doses
    means: np.ndarray  # (n_contexts, d) mean of each perturbed training context

    @classmethod
    def build(
        cls,
        X: sp.csr_matrix,
        table: pd.DataFrame,
        cell_context: np.ndarray,
        cov_keys: list[str],
        *,
        rule: Combinations = DEFAULT,
    ) -> TrainReference:
        """`table`/`cell_context` as gimcli.data.contexts.build_contexts makes them on training
        cells."""
        groups = [_key(r, cov_keys) for _, r in table.iterrows()]
        ctrl_rows: dict[tuple, list] = {}
        pert_rows: dict[tuple, list] = {}
        rows_of = (
            pd.Series(np.arange(len(cell_context)))[cell_context >= 0]
            .groupby(cell_context[cell_context >= 0])
            .apply(np.asarray)
        )
        means, keep = [], []
        for k, (g, is_ctrl) in enumerate(zip(groups, table["is_control"], strict=True)):
            rows = rows_of.get(k, np.zeros(0, np.int64))
            (ctrl_rows if is_ctrl else pert_rows).setdefault(g, []).append(rows)
            if not is_ctrl and len(rows):
                means.append(_mean_rows(X, rows))
                keep.append(k)
        ctrl_rows = {g: np.concatenate(v) for g, v in ctrl_rows.items()}
        ctx = table.iloc[keep].reset_index(drop=True).copy()
        ctx["group"] = [groups[k] for k in keep]
        ctx["components"] = [rule.split(c) for c in ctx["condition"]]
        ctx["doses"] = [dose_parts(d) for d in ctx["dose"]]
        return cls(
            X=X,
            cov_keys=cov_keys,
            ctrl_rows=ctrl_rows,
            ctrl_mean={g: _mean_rows(X, r) for g, r in ctrl_rows.items()},
            pert_mean={g: _mean_rows(X, np.concatenate(v)) for g, v in pert_rows.items()},
            contexts=ctx,
            means=np.stack(means) if means else np.zeros((0, X.shape[1])),
        )

    def control(self, g: tuple) -> np.ndarray:
        return (
            self.ctrl_mean[g] if g in self.ctrl_mean else np.mean(list(self.ctrl_mean.values()), 0)
        )

    def component_effect(self, comp: str, dose: float, g: tuple) -> np.ndarray | None:
        """Training effect (mean - control) of one component alone at `dose`: interpolated
        linearly on a log scale between its nearest measured doses below and above, else (past
        its doses) at its nearest dose."""
        c = self.contexts
        single = np.array([cl == [comp] for cl in c["components"]], bool)
        if not single.any():
            return None
        same = single & np.array([gg == g for gg in c["group"]], bool)
        use = same if same.any() else single
        x = np.log1p(np.array([v[0] for v in c["doses"]]))
        xs = np.unique(x[use])
        eff = [
            np.mean([self.means[i] - self.control(c["group"].iloc[i]) for i in rows], 0)
            for rows in (np.flatnonzero(use & np.isclose(x, v)) for v in xs)
        ]
        # the hat functions of the measured doses: linear between them, constant past the ends
        return dose_basis(np.log1p([float(dose)]), xs)[0] @ np.stack(eff)


def predict_control(ref: TrainReference, g: tuple) -> np.ndarray:
    return ref.control(g)


def predict_perturbed_mean(ref: TrainReference, g: tuple) -> np.ndarray:
    return ref.pert_mean[g] if g in ref.pert_mean else np.mean(list(ref.pert_mean.values()), 0)


def predict_additive(
    ref: TrainReference, comps: list[str], doses: list[float], g: tuple
) -> np.ndarray:
    out = ref.control(g).copy()
    for comp, dose in zip(comps, doses, strict=True):
        eff = ref.component_effect(comp, dose, g)
        if eff is None:
            return np.full_like(out, np.nan)
        out += eff
    return out


def predict_nearest(
    ref: TrainReference,
    comps: list[str],
    doses: list[float],
    g: tuple,
    features: dict[str, np.ndarray],
    similarity,
) -> np.ndarray:
    """`features`: every training and test component; `similarity(a, b)` as
    FeatureSpec.similarity."""
    singles = sorted({cl[0] for cl in ref.contexts["components"] if len(cl) == 1})
    if not singles:
        return np.full(ref.X.shape[1], np.nan)
    train_f = np.stack([features[n] for n in singles])
    out = ref.control(g).copy()
    for comp, dose in zip(comps, doses, strict=True):
        s = similarity(features[comp][None], train_f)[0]
        out += ref.component_effect(singles[int(np.argmax(s))], dose, g)
    return out


class RidgeBaseline:
    """Ridge from [f, f*t, t, cov] to the mean shift of each perturbed training context."""

    def __init__(
        self,
        ref: TrainReference,
        features: dict[str, np.ndarray],
        *,
        dose_scale: float,
        cov_categories: dict[str, list[str]],
    ):
        from sklearn.linear_model import RidgeCV

        self.features, self.dose_scale, self.cats, self.cov_keys = (
            features,
            dose_scale,
            cov_categories,
            ref.cov_keys,
        )
        c = ref.contexts
        Xin = self._design(list(c["components"]), list(c["doses"]), c)
        Y = ref.means - np.stack([ref.control(g) for g in c["group"]])
        self.model = RidgeCV(alphas=RIDGE_ALPHAS).fit(Xin, Y)

    def _design(
        self, comps: list[list[str]], doses: list[list[float]], covs: pd.DataFrame
    ) -> np.ndarray:
        rows = []
        for cl, dl in zip(comps, doses, strict=True):
            f = np.sum([self.features[n] for n in cl], 0)
            t = dose_transform(np.asarray(dl), self.dose_scale)
            ft = np.sum([self.features[n] * tt for n, tt in zip(cl, t, strict=True)], 0)
            rows.append(np.concatenate([f, ft, [t.sum()]]))
        cov = (
            covariate_onehot(covs, self.cov_keys, self.cats)
            if self.cov_keys
            else np.zeros((len(rows), 0))
        )
        return np.concatenate([np.asarray(rows, float), cov], 1)

    def predict(
        self,
        ref: TrainReference,
        comps: list[str],
        doses: list[float],
        cov_row: pd.DataFrame,
        g: tuple,
    ) -> np.ndarray:
        return ref.control(g) + self.model.predict(self._design([comps], [doses], cov_row))[0]


@dataclass
class Query:
    """One held-out context as a baseline sees it."""

    components: list[str]
    doses: list[float]  # one per component
    group: tuple[str, ...]  # covariate values
    covariates: pd.DataFrame  # its one row of covariates (the ridge's design)


def mean_baselines(
    ref: TrainReference,
    features: dict[str, np.ndarray],
    *,
    methods: tuple[str, ...] | list[str],
    similarity,
    dose_scale: float,
    cov_categories: dict[str, list[str]],
) -> dict[str, Callable[[Query], np.ndarray]]:
    """A predictor of the mean for each baseline of MEAN_BASELINES in `methods`, in that order.

    `features`: every training and held-out component; `similarity(a, b)` as
    FeatureSpec.similarity. The ridge is fitted here, once (NaN without perturbed training
    contexts to fit it on)."""

    def ridge() -> Callable[[Query], np.ndarray]:
        if not len(ref.contexts):
            return lambda q: np.full(ref.X.shape[1], np.nan)
        model = RidgeBaseline(ref, features, dose_scale=dose_scale, cov_categories=cov_categories)
        return lambda q: model.predict(ref, q.components, q.doses, q.covariates, q.group)

    makers: dict[str, Callable[[], Callable[[Query], np.ndarray]]] = {
        "control": lambda: lambda q: predict_control(ref, q.group),
        "perturbed_mean": lambda: lambda q: predict_perturbed_mean(ref, q.group),
        "additive": lambda: lambda q: predict_additive(ref, q.components, q.doses, q.group),
        "ridge": ridge,
        "nearest": lambda: (
            lambda q: predict_nearest(ref, q.components, q.doses, q.group, features, similarity)
        ),
    }
    return {name: makers[name]() for name in MEAN_BASELINES if name in methods}
