"""The intervention of a perturbation never measured, read from its features: per-gene target
classifiers and shift regressions fitted, after training, to what the trained model says of each
training context (docs/design.md, "Read-outs").

The network's pi(features), m(features) is fitted through the ELBO, beside the SEM and under
weight decay; with tens to hundreds of drugs it learns where a drug acts but shrinks how much
(bench/NOTES.md, issue 9: on a linear screen of 108 drugs the true target gates alone would take
the held-out error from ridge's 0.123 to the oracle's 0.045). This prior closes that amortisation
gap with models a screen of that size can fit:

- gate_j(f) = P(the drug hits gene j): a logistic regression on the drug's features of the label
  "some training context of the drug has j as a target (posterior p > 0.5)". A drug either hits a
  gene or not; its dose decides only how much, so the label is per drug. Cross-validated log-loss
  over drugs chooses, per gene, between L1 on the features (a target read from a few features) and
  L2 on the first k principal components of the drugs' features (k in 2-20: a target read from
  the main directions of drug space, as from 2048 sparse, redundant fingerprint bits), and the
  penalty. On the fingerprint screen of bench/SCREENS.md the held-out gates' AP rose from 0.90 to
  0.97-0.98 with components; on screens whose rule reads raw features L1 stays chosen.
- on_j(f, t, c) and off_j(f, t, c): ridge regressions (alpha by leave-one-out cross-validation) of
  the contexts' observed direct shift (A times their cells' mean change from the controls: the
  unshrunk shift, where the posterior shrinks a bulk screen's single sample to its prior) on
  [features, features x dose, a hat basis of dose, covariates], over the contexts of drugs that
  hit j and over the rest.

A new drug's intervention on gene j is a target with probability gate_j and shift on_j, and
otherwise shifts by off_j. Of each shift, the part the training drugs share at that dose in that
covariate group (s: a ridge on the dose basis and covariates alone, no features) is scaled by a,
and what the features add to it (on_j - s_j, off_j - s_j) by w: a and w in [0, 1] are the
bounded least-squares weights of the two parts' out-of-fold predictions of the training drugs'
direct shifts (5 folds over drugs). Where features do not predict effects (a screen of 10 drugs:
bench/RESULTS.md, benchmark 1) w falls towards 0 and a new drug towards a times the shared
response (a near 1 where drugs share one, near 0 where they do not), and `chosen["cv_skill"]`
(the fraction of the direct shifts' sum of squares that the weighted out-of-fold predictions
explain) says how far the prior is worth trusting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

_CS = (0.1, 0.3, 1.0, 3.0, 10.0)  # L1 logistic inverse penalties tried by cross-validation
_PCA_KS = (2, 3, 5, 10, 20)  # principal components of the drugs' features tried for a gate
_PCA_CS = (0.1, 1.0, 10.0, 100.0)  # ... and L2 inverse penalties on them
_ALPHAS = np.logspace(-1, 4, 11)  # ridge penalties tried by leave-one-out cross-validation
_MIN_CLASS = 3  # drugs per class (target / not) below which a gene gets no classifier


def dose_basis(t: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """(n, len(knots)) piecewise-linear hat functions of transformed dose: exact at each training
    dose, linear between, held constant beyond the ends."""
    t = np.clip(np.asarray(t, float), knots[0], knots[-1])
    eye = np.eye(len(knots))
    return np.stack([np.interp(t, knots, eye[i]) for i in range(len(knots))], 1)


def drug_folds(drug: np.ndarray, *, seed: int = 0, n_folds: int = 5) -> np.ndarray:
    """(K,) the cross-validation fold of each context: drugs, not contexts, are split, so that a
    drug's doses are never on both sides."""
    drug = np.asarray(drug).astype(str)
    names = np.unique(drug)
    perm = np.random.default_rng(seed).permutation(len(names))
    fold_of = dict(zip(names, perm % n_folds, strict=True))
    return np.array([fold_of[n] for n in drug])


@dataclass
class FeaturePrior:
    """Fitted gates and shift regressions (see the module docstring); `predict` gives the
    intervention of new drugs."""

    knots: np.ndarray  # sorted transformed training doses
    gated: np.ndarray  # (d,) bool: genes with a target classifier
    gates: list  # per gene: a fitted classifier, or None (ungated: `pooled`)
    on: list  # per gene: ridge of the shift on target (gated genes), else None
    off: list  # per gene: ridge of the shift off target, or None (then `pooled`)
    pooled: object  # one multi-output ridge over all contexts, for the ungated genes
    chosen: dict  # drugs, gated genes, the median C, the weight and skill of cross-validation
    shared: object = None  # ridge of the direct shift on the dose basis and covariates alone
    weight: float = 1.0  # w: scale of what a new drug's features add (out-of-fold)
    shared_weight: float = 1.0  # a: scale of the response drugs share (out-of-fold)

    @classmethod
    def fit(
        cls,
        feats: np.ndarray,  # (K, F) features of each training context's drug
        drug: np.ndarray,  # (K,) the drug of each context (any hashable)
        dose_t: np.ndarray,  # (K,) transformed dose
        cov: np.ndarray,  # (K, n_cov) covariate one-hot
        hit: np.ndarray,  # (K, d) bool: posterior calls the gene a target of the context
        direct: np.ndarray,  # (K, d) observed direct shift (standardised)
        *,
        seed: int = 0,
    ) -> FeaturePrior:
        """The prior of all contexts, with its weight w from out-of-fold predictions of each
        fold's drugs by the prior of the others (refitted with the gate choices of the full fit:
        the search over gates is the costly part, and a hyperparameter leaks far less than a
        fit)."""
        args = (feats, drug, dose_t, cov, hit, direct)
        prior = cls._fit(*args, seed=seed)
        names = np.unique(np.asarray(drug).astype(str))
        if len(names) < 2:
            return prior
        fold = drug_folds(drug, seed=seed)
        direct = np.asarray(direct, np.float64)
        oof, oof_shared = np.zeros_like(direct), np.zeros_like(direct)
        for f in np.unique(fold):
            te = fold == f
            part = prior.refit(~te, *args, seed=seed)
            p, on, off = part.predict(
                np.asarray(feats)[te], np.asarray(dose_t)[te], np.asarray(cov)[te]
            )
            oof[te] = p * on + (1 - p) * off
            oof_shared[te] = part.predict_shared(np.asarray(dose_t)[te], np.asarray(cov)[te])
        a, w = _bounded_weights(direct, oof_shared, oof - oof_shared)
        total = float((direct * direct).sum())
        resid = direct - a * oof_shared - w * (oof - oof_shared)
        skill = 1 - float((resid**2).sum()) / total if total > 0 else 0.0
        prior.weight, prior.shared_weight = w, a
        prior.chosen.update(
            cv_weight=w, cv_shared_weight=a, cv_skill=skill, cv_folds=int(len(np.unique(fold)))
        )
        return prior

    def refit(self, keep: np.ndarray, *args: np.ndarray, seed: int = 0) -> FeaturePrior:
        """The prior of the rows `keep` of `fit`'s arguments, with this fit's gate choices (the
        search over gates is the costly part, and a hyperparameter leaks far less than a fit):
        what out-of-fold checks refit."""
        choices = {j: g.choice for j, g in enumerate(self.gates) if g is not None}
        return type(self)._fit(*(np.asarray(a)[keep] for a in args), seed=seed, choices=choices)

    def predict_new(
        self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` as a times the shared response plus w times what the drug's features add
        to it (both cross-validated): a drug never measured."""
        p, on, off = self.predict(feats, dose_t, cov)
        base = self.predict_shared(dose_t, cov)
        a, w = self.shared_weight, self.weight
        return p, a * base + w * (on - base), a * base + w * (off - base)

    def predict_shared(self, dose_t: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """(n, d) the direct shift training drugs share at a dose in a covariate group."""
        t = np.asarray(dose_t, float)
        X = _shared_design(t, cov, self.knots)
        return self.shared.predict(X).reshape(len(t), len(self.gated)).astype(np.float32)

    @classmethod
    def _fit(
        cls,
        feats: np.ndarray,  # (K, F) features of each training context's drug
        drug: np.ndarray,  # (K,) the drug of each context (any hashable)
        dose_t: np.ndarray,  # (K,) transformed dose
        cov: np.ndarray,  # (K, n_cov) covariate one-hot
        hit: np.ndarray,  # (K, d) bool: posterior calls the gene a target of the context
        direct: np.ndarray,  # (K, d) observed direct shift (standardised)
        *,
        seed: int = 0,
        choices: dict | None = None,  # gene -> (kind, k, C) of a gate, fitted without search
    ) -> FeaturePrior:
        from sklearn.linear_model import Ridge, RidgeCV

        feats = np.asarray(feats, np.float64)
        direct = np.asarray(direct, np.float64)
        knots = np.unique(np.round(np.asarray(dose_t, float), 9))
        X = _design(feats, dose_t, cov, knots)
        names, first = np.unique(np.asarray(drug).astype(str), return_index=True)
        row_of = np.searchsorted(names, np.asarray(drug).astype(str))
        Y = np.zeros((len(names), hit.shape[1]), bool)  # per drug: hits gene j at some dose
        np.logical_or.at(Y, row_of, np.asarray(hit, bool))
        Fd = feats[first]
        n_pos = Y.sum(0)
        gated = (n_pos >= _MIN_CLASS) & (len(names) - n_pos >= _MIN_CLASS)
        d = hit.shape[1]
        gates, on, off = [None] * d, [None] * d, [None] * d
        chosen_c = []
        ridge = lambda: RidgeCV(alphas=_ALPHAS)  # noqa: E731
        pcs = _Components.of(Fd)
        for j in np.flatnonzero(gated):
            gates[j] = _gate_cv(Fd, Y[:, j], pcs, seed=seed, choice=(choices or {}).get(j))
            chosen_c.append(float(gates[j].C))
            sel = Y[row_of, j]
            on[j] = ridge().fit(X[sel], direct[sel, j])
            off[j] = ridge().fit(X[~sel], direct[~sel, j])
        rest = np.flatnonzero(~gated)
        pooled = (
            RidgeCV(alphas=_ALPHAS, alpha_per_target=True).fit(X, direct[:, rest])
            if len(rest)
            else None
        )
        # per dose and group a mean over many drugs: a mild penalty only for the collinear basis
        # (cross-validating it over rows lets drugs' own effects shrink the dose response)
        shared = Ridge(alpha=1.0).fit(_shared_design(dose_t, cov, knots), direct)
        chosen = {
            "n_drugs": int(len(names)),
            "n_gated_genes": int(gated.sum()),
            "gate_C_median": float(np.median(chosen_c)) if chosen_c else None,
            "n_gates_on_components": int(sum(g.kind == "pcs" for g in gates if g is not None)),
        }
        return cls(knots, gated, gates, on, off, pooled, chosen, shared)

    def predict(
        self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prob, shift on target, shift off target), each (n, d), for drugs with features
        `feats` (n, F) at transformed doses `dose_t` (n,) in covariate groups `cov` (n, n_cov)."""
        feats = np.asarray(feats, np.float64)
        X = _design(feats, dose_t, cov, self.knots)
        n, d = len(X), len(self.gated)
        prob = np.zeros((n, d))
        on = np.zeros((n, d))
        off = np.zeros((n, d))
        for j in np.flatnonzero(self.gated):
            prob[:, j] = self.gates[j].predict_proba(feats)[:, 1]
            on[:, j] = self.on[j].predict(X)
            off[:, j] = self.off[j].predict(X)
        rest = np.flatnonzero(~self.gated)
        if len(rest):
            off[:, rest] = self.pooled.predict(X).reshape(n, len(rest))
        return tuple(x.astype(np.float32) for x in (prob, on, off))


@dataclass
class _Components:
    """Principal directions of the training drugs' features, scores scaled to unit variance."""

    mean: np.ndarray
    axes: np.ndarray  # (k_max, F)
    scale: np.ndarray  # (k_max,)

    @classmethod
    def of(cls, F: np.ndarray) -> _Components:
        mean = F.mean(0)
        _, S, Vt = np.linalg.svd(F - mean, full_matrices=False)
        keep = S > 1e-8 * max(S[0], 1e-300) if len(S) else np.zeros(0, bool)
        k = int(min(max(_PCA_KS, default=0), keep.sum(), len(F) - 2))
        return cls(mean, Vt[:k], S[:k] / np.sqrt(len(F)))

    def scores(self, X: np.ndarray, k: int) -> np.ndarray:
        return (X - self.mean) @ self.axes[:k].T / self.scale[:k]


@dataclass
class _Gate:
    """A fitted gate: an L1 logistic regression on the features (`kind` "features") or an L2 one
    on the first k principal components ("pcs")."""

    kind: str
    k: int
    C: float
    model: object
    pcs: _Components | None = None

    @property
    def choice(self) -> tuple[str, int, float]:
        return self.kind, self.k, self.C

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(_gate_inputs(X, self.kind, self.k, self.pcs))


def _gate_inputs(X, kind, k, pcs):
    return X if kind == "features" else pcs.scores(X, k)


def _gate_model(kind: str, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    penalty = "l1" if kind == "features" else "l2"
    return LogisticRegression(
        C=C, penalty=penalty, solver="liblinear", max_iter=2000, random_state=seed
    )


def _gate_cv(X: np.ndarray, y: np.ndarray, pcs: _Components, *, seed: int, choice=None) -> _Gate:
    """The gate of least cross-validated log-loss (stratified folds over the drugs) among L1
    logistic regressions on the features (a target read from a few features) and L2 ones on the
    first k principal components of the drugs' features (a target read from the main directions
    of drug space, as from fingerprints, whose bits are sparse and redundant), refitted on all
    drugs. The components are those of all training drugs (unsupervised, no labels). `choice`
    (kind, k, C): fit that one without the search (the out-of-fold refits of FeaturePrior.fit
    reuse the choices of the full fit)."""
    from sklearn.model_selection import StratifiedKFold

    ks = [k for k in _PCA_KS if k <= len(pcs.scale)]
    with warnings.catch_warnings():  # scikit-learn >= 1.8 deprecates `penalty` (any kind)
        warnings.simplefilter("ignore")
        if choice is None or (choice[0] == "pcs" and choice[1] > len(pcs.scale)):
            grid = [("features", 0, C) for C in _CS] + [("pcs", k, C) for k in ks for C in _PCA_CS]
            n_min = int(min(y.sum(), len(y) - y.sum()))
            folds = StratifiedKFold(n_splits=min(5, n_min), shuffle=True, random_state=seed)
            loss = np.zeros(len(grid))
            for tr, te in folds.split(X, y):
                for i, (kind, k, C) in enumerate(grid):
                    m = _gate_model(kind, C, seed).fit(_gate_inputs(X[tr], kind, k, pcs), y[tr])
                    prob = m.predict_proba(_gate_inputs(X[te], kind, k, pcs))[:, 1]
                    loss[i] += _log_loss(y[te], prob)
            choice = grid[int(np.argmin(loss))]
        kind, k, C = choice
        model = _gate_model(kind, C, seed).fit(_gate_inputs(X, kind, k, pcs), y)
    return _Gate(kind, k, C, model, pcs if kind == "pcs" else None)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary log-loss, p clipped as scikit-learn's `log_loss` clips it: the same number
    without its input checks, which took 40% of a screen's feature prior (thousands of calls)."""
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _design(feats, dose_t, cov, knots) -> np.ndarray:
    """[features, features x centred dose, dose hat basis, covariates]: a drug's effect at a dose
    is linear in its features, with a slope in dose that its features set."""
    t = np.asarray(dose_t, float)
    tc = (t - knots.mean())[:, None]
    parts = [feats, feats * tc, dose_basis(t, knots), np.asarray(cov, float).reshape(len(t), -1)]
    return np.concatenate(parts, 1)


def _shared_design(dose_t, cov, knots) -> np.ndarray:
    """[dose hat basis, covariates]: what a drug does at a dose whatever its features."""
    t = np.asarray(dose_t, float)
    return np.concatenate([dose_basis(t, knots), np.asarray(cov, float).reshape(len(t), -1)], 1)


def _bounded_weights(y: np.ndarray, *X: np.ndarray) -> tuple[float, ...]:
    """The weights in [0, 1] of the predictions X that fit y best in least squares."""
    from scipy.optimize import lsq_linear

    A = np.stack([x.ravel() for x in X], 1)
    if not np.any(A):
        return tuple(0.0 for _ in X)
    return tuple(float(v) for v in lsq_linear(A, y.ravel(), bounds=(0.0, 1.0)).x)
