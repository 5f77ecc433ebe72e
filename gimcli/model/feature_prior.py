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
what the features add to it through the gates (on_j - s_j, off_j - s_j) by w, and what they add
through one ridge over all contexts (r_j - s_j, the same ridge as an ungated gene's, gates
ignored) by v: a, w and v in [0, 1] are the bounded least-squares weights of the three parts'
out-of-fold predictions of the training drugs' direct shifts (5 folds over drugs). Gates chosen
from a few hit drugs can separate the training drugs and still guess about new ones; the ridge
does not split them (20 fingerprinted drugs, 4-5 hit drugs per gate: unseen drugs 0.965 with
the gates alone, 0.971 with v, ridge 0.972; bench/NOTES.md item 21). Where features do not
predict effects (a screen of 10 drugs: bench/RESULTS.md, benchmark 1) w and v fall towards 0
and a new drug towards a times the shared response (a near 1 where drugs share one, near 0
where they do not), and `chosen["cv_skill"]` (the fraction of the direct shifts' sum of squares
that the weighted out-of-fold predictions explain) says how far the prior is worth trusting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

_CS = (0.1, 0.3, 1.0, 3.0, 10.0)  # L1 logistic inverse penalties tried by cross-validation
_PCA_KS = (2, 3, 5, 10, 20)  # principal components of the drugs' features tried for a gate
_PCA_CS = (0.1, 1.0, 10.0, 100.0)  # ... and L2 inverse penalties on them
_ALPHAS = np.logspace(-1, 4, 11)  # ridge penalties tried by leave-one-out cross-validation
_MIN_CLASS = 3  # drugs per class (target / not) below which a gene gets no classifier
_GATE_KINDS = ("features", "pcs")  # a gate's kind, by its code in `FeaturePrior.choices`


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
    pooled: object  # one multi-output ridge over all contexts and genes (ungated genes, v)
    chosen: dict  # drugs, gated genes, the median C, the weight and skill of cross-validation
    shared: object = None  # ridge of the direct shift on the dose basis and covariates alone
    weight: float = 1.0  # w: scale of what a new drug's features add (out-of-fold)
    shared_weight: float = 1.0  # a: scale of the response drugs share (out-of-fold)
    pooled_weight: float = 0.0  # v: scale of what features add through the ungated ridge
    span: _Span | None = None  # coordinates of features in the training drugs' span (ridges)

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
        oof, oof_pooled, oof_shared = (np.zeros_like(direct) for _ in range(3))
        for f in np.unique(fold):
            te = fold == f
            part = prior.refit(~te, *args, seed=seed)
            new = (np.asarray(feats)[te], np.asarray(dose_t)[te], np.asarray(cov)[te])
            p, on, off, oof_pooled[te] = part._predict_all(*new)
            oof[te] = p * on + (1 - p) * off
            oof_shared[te] = part.predict_shared(*new[1:])
        parts = [oof_shared, oof - oof_shared]
        if prior.gated.any():  # else the gated part is the pooled one: v would double w
            parts.append(oof_pooled - oof_shared)
        a, w, v = (*_bounded_weights(direct, *parts), 0.0)[:3]
        total = float((direct * direct).sum())
        resid = direct - sum(c * x for c, x in zip((a, w, v), parts, strict=False))
        skill = 1 - float((resid**2).sum()) / total if total > 0 else 0.0
        prior.weight, prior.shared_weight, prior.pooled_weight = w, a, v
        prior.chosen.update(
            cv_weight=w,
            cv_shared_weight=a,
            cv_pooled_weight=v,
            cv_skill=skill,
            cv_folds=int(len(np.unique(fold))),
        )
        return prior

    def choices(self) -> dict[str, np.ndarray]:
        """What `fit` chose by cross-validation, as arrays: per gene the gate's kind (-1 none, 0
        L1 on the features, 1 L2 on components), k and C, and [a, w, cv_skill, cv_folds, v]. A run
        directory keeps them, so that loading a run refits its prior without the gate search and
        the out-of-fold refits, the costly parts (`from_choices`)."""
        d = len(self.gated)
        kind, k, C = np.full(d, -1, np.int64), np.zeros(d, np.int64), np.zeros(d)
        for j, g in enumerate(self.gates):
            if g is not None:
                kind[j], k[j], C[j] = _GATE_KINDS.index(g.kind), g.k, g.C
        ch = self.chosen
        cv = [
            self.shared_weight,
            self.weight,
            ch.get("cv_skill", np.nan),
            ch.get("cv_folds", 0),
            self.pooled_weight,
        ]
        return {"gate_kind": kind, "gate_k": k, "gate_C": C, "cv": np.asarray(cv, np.float64)}

    @classmethod
    def from_choices(cls, choices: dict, *args: np.ndarray, seed: int = 0) -> FeaturePrior:
        """The prior `fit(*args, seed=seed)` gave, from its `choices()`: every gate and ridge is
        refitted on the same data with the same choices, so the predictions are the same to the
        bit. Raises ValueError if the choices do not belong to these data."""
        kind, k, C = (np.asarray(choices[n]) for n in ("gate_kind", "gate_k", "gate_C"))
        gated = _drug_labels(args[1], args[4])[-1]
        if len(gated) != len(kind) or not np.array_equal(gated, kind >= 0):  # before any fit
            raise ValueError(
                f"the feature prior's saved choices gate {int((kind >= 0).sum())} of {len(kind)} "
                f"genes, its data {int(gated.sum())} of {len(gated)}"
            )
        gates = {
            int(j): (_GATE_KINDS[kind[j]], int(k[j]), float(C[j])) for j in np.flatnonzero(gated)
        }
        prior = cls._fit(*args, seed=seed, choices=gates)
        # runs saved before v was fitted have four values (v = 0: the gates alone)
        a, w, skill, folds, v = (*(float(x) for x in choices["cv"]), 0.0)[:5]
        prior.shared_weight, prior.weight, prior.pooled_weight = a, w, v
        if folds > 0:
            prior.chosen.update(
                cv_weight=w,
                cv_shared_weight=a,
                cv_pooled_weight=v,
                cv_skill=skill,
                cv_folds=int(folds),
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
        """`predict` as a times the shared response, plus w times what the drug's features add
        to it through the gates, plus v times what they add through the ungated ridge (all
        cross-validated): a drug never measured."""
        p, on, off, pool = self._predict_all(feats, dose_t, cov)
        base = self.predict_shared(dose_t, cov)
        a, w, v = self.shared_weight, self.weight, self.pooled_weight
        rest = a * base + v * (pool - base)
        return p, rest + w * (on - base), rest + w * (off - base)

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
        from sklearn.linear_model import Ridge

        feats = np.asarray(feats, np.float64)
        direct = np.asarray(direct, np.float64)
        knots = np.unique(np.round(np.asarray(dose_t, float), 9))
        names, first, row_of, Y, gated = _drug_labels(drug, hit)
        Fd = feats[first]
        span = _Span.of(Fd)
        X = _design(span.coords(feats), dose_t, cov, knots)
        d = hit.shape[1]
        gates, on, off = [None] * d, [None] * d, [None] * d
        chosen_c = []
        pcs = _Components.of(Fd)
        for j in np.flatnonzero(gated):
            gates[j] = _gate_cv(Fd, Y[:, j], pcs, seed=seed, choice=(choices or {}).get(j))
            chosen_c.append(float(gates[j].C))
            sel = Y[row_of, j]
            on[j] = _RidgeLOO.fit(X[sel], direct[sel, j])
            off[j] = _RidgeLOO.fit(X[~sel], direct[~sel, j])
        pooled = _RidgeLOO.fit(X, direct)  # every gene (alpha per gene): what ungated genes use
        # per dose and group a mean over many drugs: a mild penalty only for the collinear basis
        # (cross-validating it over rows lets drugs' own effects shrink the dose response)
        shared = Ridge(alpha=1.0).fit(_shared_design(dose_t, cov, knots), direct)
        chosen = {
            "n_drugs": int(len(names)),
            "n_gated_genes": int(gated.sum()),
            "gate_C_median": float(np.median(chosen_c)) if chosen_c else None,
            "n_gates_on_components": int(sum(g.kind == "pcs" for g in gates if g is not None)),
        }
        return cls(knots, gated, gates, on, off, pooled, chosen, shared, span=span)

    def predict(
        self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prob, shift on target, shift off target), each (n, d), for drugs with features
        `feats` (n, F) at transformed doses `dose_t` (n,) in covariate groups `cov` (n, n_cov)."""
        return self._predict_all(feats, dose_t, cov)[:3]

    def predict_pooled(self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """(n, d) the shift of one ridge over all contexts per gene, gates ignored."""
        X = self._design(np.asarray(feats, np.float64), dose_t, cov)
        return self.pooled.predict(X).reshape(len(X), len(self.gated)).astype(np.float32)

    def _predict_all(self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray) -> tuple:
        """`predict`'s three arrays and `predict_pooled`'s, from one design matrix."""
        feats = np.asarray(feats, np.float64)
        X = self._design(feats, dose_t, cov)
        n, d = len(X), len(self.gated)
        prob = np.zeros((n, d))
        on = np.zeros((n, d))
        pool = self.pooled.predict(X).reshape(n, d)
        off = pool.copy()  # an ungated gene's shift is the pooled ridge's
        for j in np.flatnonzero(self.gated):
            prob[:, j] = self.gates[j].prob(feats)
            on[:, j] = self.on[j].predict(X)
            off[:, j] = self.off[j].predict(X)
        return tuple(x.astype(np.float32) for x in (prob, on, off, pool))

    def _design(self, feats: np.ndarray, dose_t: np.ndarray, cov: np.ndarray) -> np.ndarray:
        return _design(self.span.coords(feats) if self.span else feats, dose_t, cov, self.knots)


@dataclass
class _RidgeLOO:
    """A ridge regression with intercept whose penalty (one per target) is the one of least exact
    leave-one-out squared error among _ALPHAS, as scikit-learn's RidgeCV chooses it (alpha per
    target), from one SVD of the centred design: the feature prior fits thousands of them, and
    RidgeCV's covariance path recomputed the hat diagonal in O(n p^2) per penalty."""

    coef: np.ndarray  # (p,) or (p, targets)
    intercept: np.ndarray | float
    alpha: np.ndarray | float

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray) -> _RidgeLOO:
        xm, ym = X.mean(0), y.mean(0)
        if len(X) < 2:  # one row (an out-of-fold refit over two drugs): centred, nothing to fit
            coef = np.zeros((X.shape[1], *y.shape[1:]))
            alpha = _ALPHAS[0] if y.ndim == 1 else np.full(y.shape[1], _ALPHAS[0])
            return cls(coef, ym if y.ndim > 1 else float(ym), alpha)
        U, s, Vt = _thin_svd(X - xm)
        Y = (y - ym).reshape(len(y), -1)
        UtY = U.T @ Y
        U2 = U * U
        loo = np.empty((len(_ALPHAS), Y.shape[1]))
        for i, a in enumerate(_ALPHAS):
            f = s * s / (s * s + a)
            resid = (Y - U @ (f[:, None] * UtY)) / (1 - 1 / len(X) - U2 @ f)[:, None]
            loo[i] = (resid * resid).mean(0)
        alpha = _ALPHAS[np.argmin(loo, 0)]  # first of ties, as RidgeCV
        coef = Vt.T @ ((s[:, None] / (s[:, None] ** 2 + alpha[None, :])) * UtY)
        intercept = ym - xm @ coef.reshape(X.shape[1], -1).squeeze()
        if y.ndim == 1:
            return cls(coef[:, 0], float(np.squeeze(intercept)), float(alpha[0]))
        return cls(coef, intercept, alpha)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef + self.intercept


def _thin_svd(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U, s, Vt of X's nonzero singular values, from the eigenvectors of the smaller Gram matrix
    (a third of LAPACK's SVD time at 560 x 305; values below 1e-6 of the largest, which a
    penalty >= 0.1 makes negligible, are dropped)."""
    wide = X.shape[0] < X.shape[1]
    G = X @ X.T if wide else X.T @ X
    ev, vec = np.linalg.eigh(G)
    keep = ev > 1e-12 * max(ev[-1], 1e-300) if len(ev) else np.zeros(0, bool)
    ev, vec = ev[keep][::-1], vec[:, keep][:, ::-1]
    s = np.sqrt(ev)
    if wide:
        return vec, s, (X.T @ vec / s).T
    return X @ vec / s, s, vec.T


@dataclass
class _Span:
    """An orthonormal basis of the span of the training drugs' features where it is narrower
    than the features (2048 fingerprint bits, tens to hundreds of drugs). A ridge's coefficients
    are combinations of its (centred) design rows, so its feature coefficients lie in that span:
    a ridge on the coordinates in it gives the same fit, leave-one-out choice and predictions (a
    new drug's features enter only through their projection on the span), on a design of
    2 x rank instead of 2 x 2048 feature columns."""

    axes: np.ndarray | None  # (rank, F); None: the features themselves (rank = F)

    @classmethod
    def of(cls, F: np.ndarray) -> _Span:
        _, S, Vt = np.linalg.svd(F, full_matrices=False)
        keep = S > 1e-10 * max(S[0], 1e-300) if len(S) else np.zeros(0, bool)
        return cls(None if keep.sum() >= F.shape[1] else Vt[keep])

    def coords(self, X: np.ndarray) -> np.ndarray:
        return X if self.axes is None else X @ self.axes.T


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
    on the first k principal components ("pcs"), as its coefficients."""

    kind: str
    k: int
    C: float
    coef: np.ndarray  # (F,) or (k,)
    intercept: float
    pcs: _Components | None = None

    @property
    def choice(self) -> tuple[str, int, float]:
        return self.kind, self.k, self.C

    def prob(self, X: np.ndarray) -> np.ndarray:
        """(n,) P(target) of drugs with features X (n, F)."""
        Z = X if self.kind == "features" else self.pcs.scores(X, self.k)
        return expit(Z @ self.coef + self.intercept)


def _fit_gate(Z: np.ndarray, y: np.ndarray, kind: str, C: float, seed: int):
    """(coef, intercept) of the gate `kind` with inverse penalty C on inputs Z (drugs x inputs):
    L1 by liblinear; L2, on at most 20 components, by Newton's method on liblinear's objective
    (the intercept penalised like a coefficient), without scikit-learn's per-call checks, which
    cost more than the fits over a screen's thousands of them."""
    if kind == "pcs":
        return _logistic_l2(Z, y, C)
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():  # scikit-learn >= 1.8 deprecates `penalty` (any kind)
        warnings.simplefilter("ignore")
        m = LogisticRegression(
            C=C, penalty="l1", solver="liblinear", max_iter=2000, random_state=seed
        ).fit(Z, y)
    return m.coef_[0].astype(np.float64), float(m.intercept_[0])


def _logistic_l2(Z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """argmin over b of |b|^2 / 2 + C sum_i log(1 + exp(-s_i b.[z_i, 1])), s_i = +-1 (liblinear's
    L2 logistic regression, its intercept scaling 1): Newton steps, halved until the objective
    falls (it is strictly convex, so this converges from b = 0)."""
    A = np.hstack([Z, np.ones((len(Z), 1))])
    s = np.where(y, 1.0, -1.0)
    b = np.zeros(A.shape[1])

    def objective(b):
        return 0.5 * b @ b + C * np.logaddexp(0.0, -s * (A @ b)).sum()

    f = objective(b)
    for _ in range(100):
        q = expit(-s * (A @ b))  # P(the other class)
        grad = b - C * A.T @ (s * q)
        hess = np.eye(len(b)) + C * (A.T * (q * (1 - q))) @ A
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            cand = b - t * step
            f_cand = objective(cand)
            if f_cand <= f or t < 1e-8:
                break
            t *= 0.5
        b, f_old, f = cand, f, f_cand
        if f_old - f <= 1e-12 * max(1.0, abs(f)):
            break
    return b[:-1], float(b[-1])


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
    S = pcs.scores(X, max(ks, default=0))  # a gate on k components reads the first k columns

    def inputs(rows, kind, k):
        return X[rows] if kind == "features" else S[rows, :k]

    if choice is None or (choice[0] == "pcs" and choice[1] > len(pcs.scale)):
        grid = [("features", 0, C) for C in _CS] + [("pcs", k, C) for k in ks for C in _PCA_CS]
        n_min = int(min(y.sum(), len(y) - y.sum()))
        folds = StratifiedKFold(n_splits=min(5, n_min), shuffle=True, random_state=seed)
        loss = np.zeros(len(grid))
        for tr, te in folds.split(X, y):
            for i, (kind, k, C) in enumerate(grid):
                coef, b = _fit_gate(inputs(tr, kind, k), y[tr], kind, C, seed)
                loss[i] += _log_loss(y[te], expit(inputs(te, kind, k) @ coef + b))
        choice = grid[int(np.argmin(loss))]
    kind, k, C = choice
    coef, b = _fit_gate(inputs(slice(None), kind, k), y, kind, C, seed)
    return _Gate(kind, k, C, coef, b, pcs if kind == "pcs" else None)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary log-loss, p clipped as scikit-learn's `log_loss` clips it: the same number
    without its input checks, which took 40% of a screen's feature prior (thousands of calls)."""
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _drug_labels(drug, hit):
    """The drugs (names, first row of each, each row's drug), per drug whether it hits gene j at
    some dose (Y), and the genes with enough drugs on both sides for a gate."""
    names, first = np.unique(np.asarray(drug).astype(str), return_index=True)
    row_of = np.searchsorted(names, np.asarray(drug).astype(str))
    Y = np.zeros((len(names), np.shape(hit)[1]), bool)
    np.logical_or.at(Y, row_of, np.asarray(hit, bool))
    n_pos = Y.sum(0)
    return names, first, row_of, Y, (n_pos >= _MIN_CLASS) & (len(names) - n_pos >= _MIN_CLASS)


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
