"""GimRun: a trained model and everything needed to use it; one run directory on disk.

run/model.pt holds tensors only (loaded with weights_only=True); run/model.json holds the rest
as plain JSON, typed by gimcli.schema.RunMeta (docs/design.md, "The run directory").
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gimcli import _keys
from gimcli._version import __version__
from gimcli.config import TrainConfig
from gimcli.data.contexts import covariate_onehot, dose_parts, dose_transform
from gimcli.data.features import FeatureSpec, component_descriptors, perturbed_genes
from gimcli.data.io import atomic_path
from gimcli.data.preprocess import PreprocessInfo
from gimcli.errors import (
    CheckpointMismatch,
    GimError,
    InputError,
    ModelError,
    weights_only_reason,
)
from gimcli.model.module import ContextBatch, GIMModule
from gimcli.provenance import file_sha256, json_default
from gimcli.schema import MODEL_FORMAT_VERSION, RunMeta


@dataclass
class GimRun:
    """A trained GIM: the module, what model.json records (`meta`) and the arrays model.pt keeps
    beside the weights."""

    module: GIMModule
    meta: RunMeta
    comp_feats: np.ndarray  # (n_components, F) features of the training components
    std_mean: np.ndarray  # (G, d) control mean per covariate group
    std_sd: np.ndarray  # (G, d)
    posterior: np.ndarray | None = None  # (K, d) posterior target probability per training context
    posterior_shift: np.ndarray | None = (
        None  # (K, d) posterior mean shift u of a gene if targeted (standardised)
    )
    posterior_spike: np.ndarray | None = None  # (K, d) ... if not targeted
    posterior_logodds: np.ndarray | None = None  # (K, d) posterior log-odds of being a target
    context_direct: np.ndarray | None = None  # (K, d) observed direct shift A (mean x)
    ref_cells: np.ndarray | None = (
        None  # (n, d) log-normalised control cells (counterfactual predictions)
    )
    ref_group: np.ndarray | None = None  # (n,) covariate group of each reference cell
    # what the feature prior chose by cross-validation (FeaturePrior.choices) and the dose
    # residual's weight at a dose no drug was measured at: saved, so that loading a run refits
    # the prior in one pass instead of searching again (bench/NOTES.md, "Cost")
    feature_prior_choices: dict | None = None
    dose_weight_new: float | None = None
    # what `gimcli.train` made beside the model (not saved in model.pt): the held-out scores
    # (an EvalResult) when trained with a split, and {"files": ..., "timings": ...}
    evaluation: Any = None
    outputs: dict = field(default_factory=dict)

    # -- views of the metadata ---------------------------------------------------------------
    @property
    def genes(self) -> list[str]:
        return self.meta.preprocess.genes

    @property
    def spec(self) -> FeatureSpec:
        return self.meta.features

    @property
    def config(self) -> TrainConfig:
        return self.meta.config

    @property
    def preprocess_info(self) -> PreprocessInfo:
        return self.meta.preprocess

    @property
    def cov_keys(self) -> list[str]:
        return self.meta.covariates.keys

    @property
    def groups(self) -> pd.DataFrame:
        return self.meta.covariates.table

    @property
    def target_score(self) -> np.ndarray | None:
        """(K, d) the score to rank a training context's direct targets by: the posterior log-odds
        (the probability itself saturates at 1.0 and ties), or the probability for older runs."""
        return self.posterior_logodds if self.posterior_logodds is not None else self.posterior

    @property
    def contexts(self) -> pd.DataFrame:
        return pd.DataFrame(self.meta.contexts)

    def component_features(
        self,
        names: list[str],
        *,
        obs: pd.DataFrame | None = None,
        table: pd.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Feature rows of `names`: training components as trained, new ones featurised with the
        training spec from a features table (name, smiles or the numeric columns) or from the
        cells of `obs` (read with the training keys)."""
        out = {n: self.comp_feats[i] for i, n in enumerate(self.meta.components) if n in names}
        new = [n for n in names if n not in out]
        if new:
            raw = component_descriptors(self.spec, new, obs=obs, keys=self.meta.keys, table=table)
            out.update(self.spec.featurize(raw))
        return out

    def group_index(self, cov_values: pd.DataFrame) -> np.ndarray:
        """Row of the standardisation table for each row of covariate values."""
        if not self.cov_keys:
            return np.zeros(len(cov_values), dtype=np.int64)
        g = self.groups.astype(str)
        key = pd.MultiIndex.from_frame(g[self.cov_keys])
        idx = key.get_indexer(pd.MultiIndex.from_frame(cov_values[self.cov_keys].astype(str)))
        if (idx < 0).any():
            bad = cov_values.iloc[int(np.flatnonzero(idx < 0)[0])][self.cov_keys].to_dict()
            raise InputError(
                f"covariates {bad} were not in training (known groups: {g.to_dict('records')})"
            )
        return idx

    def context_batch(
        self,
        components: list[list[str]],
        doses: list[list[float]],
        cov_values: pd.DataFrame,
        new_features: dict[str, np.ndarray] | None = None,
    ) -> ContextBatch:
        """Network inputs for contexts given by component names, their doses and covariates."""
        names = self.meta.components
        new_features = new_features or {}
        extra = [n for cl in components for n in cl if n not in names and n not in new_features]
        if extra:
            raise InputError(f"no features for {sorted(set(extra))[:10]}")
        vocab = names + [n for n in new_features if n not in names]
        feats = (
            np.concatenate(
                [self.comp_feats, np.stack([new_features[n] for n in vocab[len(names) :]])]
            )
            if len(vocab) > len(names)
            else self.comp_feats
        )
        gene_of = {g: i for i, g in enumerate(self.genes)}
        # a new knock-out's gene: its name, or a guide label's stem (data.features.perturbed_genes)
        new_gene = (
            perturbed_genes(vocab[len(names) :], self.genes) if self.spec.kind == "identity" else {}
        )
        comp_gene = np.array(
            self.meta.comp_gene
            + [gene_of.get(new_gene.get(n, ""), -1) for n in vocab[len(names) :]],
            dtype=np.int64,
        )
        C = max(1, max(len(c) for c in components))
        idx = -np.ones((len(components), C), np.int64)
        dz = np.zeros((len(components), C))
        pos = {n: i for i, n in enumerate(vocab)}
        for k, (cl, dl) in enumerate(zip(components, doses, strict=True)):
            for c, (n, x) in enumerate(zip(cl, dl, strict=True)):
                idx[k, c] = pos[n]
                dz[k, c] = x
        cov = covariate_onehot(cov_values, self.cov_keys, self.meta.covariates.categories)
        return ContextBatch.gather(
            feats, idx, dose_transform(dz, self.meta.dose_scale), cov, comp_gene
        )

    @torch.no_grad()
    def interventions(
        self,
        requests: pd.DataFrame,
        new_features: dict[str, np.ndarray] | None = None,
        *,
        use_posterior: bool = True,
    ) -> Interventions:
        """Per request (condition, dose, <covariates>) and component: target probability and shift.

        A request that is a training context takes that context's exact posterior; otherwise each
        component measured alone in training at the same dose and covariate group takes the
        posterior of that single context (a component's intervention is shared by every context it
        is in), and the rest take the network's prior pi(features), m(features)."""
        rule = self.meta.keys.combinations.with_atomic(new_features or {})
        comps = [rule.split(c) for c in requests["condition"]]
        doses = [dose_parts(d) for d in requests["dose"]]
        cb = self.context_batch(comps, doses, requests, new_features)
        logits, shifts = self.module.interventions(cb)
        mask = cb.comp_mask.unsqueeze(-1)
        prob = (torch.sigmoid(logits) * mask).numpy().copy()
        log_odds = torch.where(mask, logits, torch.full_like(logits, _NO_COMPONENT)).numpy().copy()
        shift = shifts.numpy().copy()
        spike = np.zeros_like(shift)
        measured = np.zeros(prob.shape[:2], bool)
        whole_k = np.zeros(len(comps), bool)  # a measured combination
        if use_posterior and self.posterior is not None and self.posterior_shift is not None:
            whole, single = self._posterior_index
            cov_rows = self._cov_tuples(requests)
            for k, (cl, dl, covs) in enumerate(zip(comps, doses, cov_rows, strict=True)):
                i = whole.get((tuple(cl), tuple(np.round(dl, 9)), covs))
                if (
                    i is not None and len(cl) > 1
                ):  # a measured combination: its own posterior on component 0
                    prob[k], shift[k], log_odds[k] = 0.0, 0.0, _NO_COMPONENT
                    prob[k, 0], shift[k, 0], spike[k, 0], log_odds[k, 0] = self._posterior_of(i)
                    measured[k] = whole_k[k] = True
                    continue
                for c, (name, dz) in enumerate(zip(cl, dl, strict=True)):
                    i = single.get((name, round(dz, 9), covs))
                    if i is not None:
                        prob[k, c], shift[k, c], spike[k, c], log_odds[k, c] = self._posterior_of(i)
                        measured[k, c] = True
            if self._dose_base_is_feature_prior:  # training drugs at unmeasured doses
                own = [
                    (k, c, self._feature_of[n])
                    for k, cl in enumerate(comps)
                    for c, n in enumerate(cl)
                    if not measured[k, c] and n in self._feature_of
                ]
                self._apply_feature_prior(
                    own, doses, requests, prob, shift, spike, log_odds, new=False
                )
            self._dose_residual(comps, doses, cov_rows, measured, shift, spike)
            self._across_groups(comps, doses, requests, measured, prob, shift, spike, log_odds)
            self._combination_departure(comps, requests, whole_k, shift, spike)
        if self.spec.kind == "identity":
            self._unseen_knockouts(comps, requests, cb, prob, shift, spike, log_odds)
        elif use_posterior:
            self._new_drugs(
                comps, doses, requests, new_features or {}, prob, shift, spike, log_odds
            )
        return Interventions(prob=prob, shift=shift, spike=spike, log_odds=log_odds)

    def _dose_residual(self, comps, doses, cov_rows, measured, shift, spike) -> None:
        """A training component at a dose it was not measured at (in place): its prior plus w
        times its residual at its measured doses, interpolated linearly in transformed dose (held
        constant past the ends). With features, the prior is the feature prior and the residual
        the observed minus its direct shift; with identity features, the network's prior and the
        posterior minus it. w in [0, 1] is fitted by leave-one-dose-out over the interior doses
        of training components (`_dose_residuals`; 1 where no component has one), at a dose no
        training drug was measured at
        with the feature prior refitted without that dose: the residual carries what the drug's
        own cells said that the smooth prior did not."""
        table, w_known, w_new = self._dose_residuals
        if max(w_known, w_new) <= 0:
            return
        # the doses training drugs were measured at (the feature prior's knots)
        knots = np.unique(self._singles[2]) if self._dose_base_is_feature_prior else None
        for k, (cl, dl, covs) in enumerate(zip(comps, doses, cov_rows, strict=True)):
            for c, (name, dz) in enumerate(zip(cl, dl, strict=True)):
                entry = table.get((name, covs))
                if measured[k, c] or entry is None:
                    continue
                t, R = entry
                t0 = float(dose_transform(np.asarray([dz]), self.meta.dose_scale)[0])
                known = knots is None or bool(np.isclose(knots, t0, atol=1e-9).any())
                delta = (w_known if known else w_new) * _interp_rows(t0, t, R)
                shift[k, c] += delta  # on and off target alike: E[u] moves by delta
                spike[k, c] += delta

    def _across_groups(self, comps, doses, requests, measured, prob, shift, spike, log_odds):
        """A perturbation measured alone in other covariate groups (cell lines) but in none at
        this one (in place): its base there plus w times its mean residual over the groups where
        it was measured (observed direct shift minus the base), w in [0, 1] by leave-one-group-out
        over training perturbations measured in two or more groups (`_group_transfer`). The base:
        with identity features (whose network prior knows little of it), the group's shared
        response (`_unseen_profile`), and a knock-out's own gene keeps the mean of its measured
        shifts; with features, the feature prior already in place. On the Norman / McFaline
        lines w is ~0: what a perturbation does beyond the shared response does not carry from
        one line to the next (bench/NOTES.md)."""
        table, w = self._group_transfer
        if not table:
            return
        _, rest, _, _ = self._unseen_profile
        groups = self.group_index(requests)
        for k, (cl, dl, covs) in enumerate(
            zip(comps, doses, self._cov_tuples(requests), strict=True)
        ):
            for c, (name, dz) in enumerate(zip(cl, dl, strict=True)):
                entry = table.get((name, round(dz, 9)))
                if measured[k, c] or entry is None or (name, covs) in self._measured_alone_in:
                    continue
                mean_r, _, own_j, own_shift, own_lo = entry
                if self.spec.kind != "identity":  # on the feature prior in place
                    shift[k, c] += w * mean_r
                    spike[k, c] += w * mean_r
                    continue
                g = int(groups[k])
                prob[k, c], log_odds[k, c] = 0.0, _NO_COMPONENT
                shift[k, c] = spike[k, c] = rest[g] + w * mean_r
                if own_j >= 0:
                    prob[k, c, own_j], log_odds[k, c, own_j] = 1.0, own_lo
                    shift[k, c, own_j] = spike[k, c, own_j] = own_shift
                measured[k, c] = True

    @cached_property
    def _group_transfer(self) -> tuple[dict, float]:
        """Per (perturbation, dose) measured alone in training: its mean residual (d) over the
        groups it was measured in (observed direct shift minus its base there, own gene zeroed),
        their number, its own gene (-1 if none), that gene's mean shift and log-odds; and the
        leave-one-group-out weight w of the mean residual (0 without any perturbation measured in
        two or more groups)."""
        if self.posterior is None or self.posterior_shift is None or len(self.std_mean) < 2:
            return {}, 0.0
        identity = self.spec.kind == "identity"
        if not identity and not self._dose_base_is_feature_prior:
            return {}, 0.0  # the network's prior for a drug in a new group: nothing to add to
        _, _, _, share = self._unseen_profile
        keeps, sums = self._shared_sums
        rd = self._observed_direct
        groups = self.group_index(self.contexts)
        prior = (
            None
            if identity
            else dict(zip(self._singles[0], self._feature_prior_of_singles, strict=True))
        )

        def base_of(k):  # the group's shared response without k, or the feature prior
            if prior is not None:
                return prior[k]
            return share[groups[k]] * _mean_of_others(*sums[groups[k]], rd[k], keeps[k])

        by: dict = {}
        for (name, dz, _), k in self._posterior_index[1].items():
            by.setdefault((name, dz), []).append(k)
        table, num, den = {}, 0.0, 0.0
        for (name, dz), ks in by.items():
            R = np.stack([np.where(keeps[k], rd[k] - base_of(k), 0.0) for k in ks])
            j = int(self._gene_of.get(name, -1))
            own = (
                (float(self._posterior_direct[ks, j].mean()),
                 float(self.target_score[ks, j].mean()))
                if j >= 0 else (0.0, _NO_COMPONENT)
            )  # fmt: skip
            table[(name, dz)] = (R.mean(0), len(ks), j, *own)
            if len(R) > 1:
                for i in range(len(R)):
                    v = np.delete(R, i, 0).mean(0)
                    num, den = num + float(v @ R[i]), den + float(v @ v)
        w = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0
        return table, w

    @cached_property
    def _measured_alone_in(self) -> set[tuple[str, tuple[str, ...]]]:
        """(perturbation, covariates) of every training context of one perturbation."""
        return {(n, covs) for n, _, covs in self._posterior_index[1]}

    def _combination_departure(self, comps, requests, whole_k, shift, spike) -> None:
        """A combination not measured as a whole (in place): the sum of its components'
        interventions plus the departure from additivity that training combinations showed
        (gimcli.model.interaction), on component 0's shift on and off target alike."""
        fit = self._interaction
        if fit is None:
            return
        groups = self.group_index(requests)
        for k, cl in enumerate(comps):
            if len(cl) < 2 or whole_k[k]:
                continue
            delta = fit.predict(cl, int(groups[k]))
            if delta is not None:
                shift[k, 0] += delta
                spike[k, 0] += delta

    @cached_property
    def _interaction(self):
        """The departure from additivity of this run's training combinations whose components
        were all measured alone at the same doses and covariates (None without any)."""
        from gimcli.model.interaction import fit_interaction

        if self.posterior is None or self.posterior_shift is None:
            return None
        whole, single = self._posterior_index
        R, names, rows = [], [], []
        for (cl, dl, covs), i in whole.items():
            parts = [single.get((n, dz, covs)) for n, dz in zip(cl, dl, strict=True)]
            if len(cl) < 2 or any(j is None for j in parts):
                continue
            R.append(self._observed_direct[i] - self._posterior_direct[parts].sum(0))
            names.append(list(cl))
            rows.append(i)
        if not R:
            return None
        groups = self.group_index(self.contexts.iloc[rows])
        fit = fit_interaction(np.stack(R), names, groups)
        return fit if fit.mean else None

    @cached_property
    def _singles(self) -> tuple[list[int], pd.DataFrame, np.ndarray, np.ndarray] | None:
        """The training contexts of one perturbation: their rows, table, transformed doses and
        covariate one-hot (None without any, or without posteriors)."""
        rows = sorted(self._posterior_index[1].values())
        if not rows or self.posterior is None or self.posterior_shift is None:
            return None
        sub = self.contexts.iloc[rows].reset_index(drop=True)
        dose_t = dose_transform(
            np.asarray([dose_parts(d)[0] for d in sub["dose"]]), self.meta.dose_scale
        )
        cov = covariate_onehot(sub, self.cov_keys, self.meta.covariates.categories)
        return rows, sub, dose_t, cov

    @cached_property
    def _dose_base_is_feature_prior(self) -> bool:
        """Whether unmeasured doses of training drugs build on the feature prior: with features,
        and only where some drug has an interior dose, so that leave-one-dose-out checks the
        residual on it (benchmark 1: 3 doses, the middle one held out, no interior dose; the
        feature prior of 10 drugs alone lost to the network's in-sample dose curve there, 0.895
        vs 0.969)."""
        if self.spec.kind == "identity" or self._feature_prior is None:
            return False
        sub = self._singles[1]
        doses = Counter(zip(sub["condition"].astype(str), self._cov_tuples(sub), strict=True))
        return max(doses.values()) >= 3

    @cached_property
    def _feature_prior_of_singles(self) -> np.ndarray:
        """(n, d) the feature prior's mean direct shift at each training context of one drug
        (`_singles` order)."""
        rows, sub, t, cov = self._singles
        names = sub["condition"].astype(str)
        p, on, off = self._feature_prior.predict(
            np.stack([self._feature_of[n] for n in names]), t, cov
        )
        return p * on + (1 - p) * off

    @cached_property
    def _dose_residuals(self) -> tuple[dict, float, float]:
        """Per (component, covariates) measured alone: its transformed doses (sorted) and
        residuals (n, d); the weight w of the interpolated residual at a dose other training
        drugs were measured at, and w at a dose none was (with the feature prior as base; the
        same w otherwise)."""
        if self._singles is None:
            return {}, 0.0, 0.0
        rows, sub, t, cov = self._singles
        if self._dose_base_is_feature_prior:
            prior = self._feature_prior_of_singles
            direct = self._observed_direct[rows]
        else:
            cb = self.context_batch(
                [[str(c)] for c in sub["condition"]], [dose_parts(d) for d in sub["dose"]], sub
            )
            with torch.no_grad():
                logits, shifts = self.module.interventions(cb)
            prior = (torch.sigmoid(logits) * shifts)[:, 0].numpy()
            direct = self._posterior_direct[rows]
        keys = list(zip(sub["condition"].astype(str), self._cov_tuples(sub), strict=True))
        groups: dict = {}
        for i in np.argsort(t, kind="stable"):  # each group's rows sorted by dose
            groups.setdefault(keys[i], []).append(int(i))
        resid = direct - prior
        table = {key: (t[idx], resid[idx]) for key, idx in groups.items()}
        w = _leave_one_dose_out(groups, t, lambda m, idx: resid[idx])
        if not self._dose_base_is_feature_prior:
            return table, w, w
        if self.dose_weight_new is not None:  # saved with the run
            return table, w, self.dose_weight_new
        # A dose no training drug was measured at is not a knot of the feature prior, whose
        # residuals are then larger than at a knot it fitted (benchmark 4: w 0.71 in-sample, R²
        # 0.981; with w 1, 0.987): refit the prior without each interior dose level to check it.
        level = np.round(t, 9)
        refits = {}
        for L in sorted({level[idx[m]] for idx in groups.values() for m in range(1, len(idx) - 1)}):
            part = self._feature_prior.refit(
                level != L, *self._feature_prior_args, seed=self.config.seed
            )
            p, on, off = part.predict(self._feature_prior_args[0], t, cov)
            refits[L] = direct - (p * on + (1 - p) * off)
        w_new = _leave_one_dose_out(groups, t, lambda m, idx: refits[level[idx[m]]][idx])
        return table, w, w_new

    def _unseen_knockouts(self, comps, requests, cb, prob, shift, spike, log_odds) -> None:
        """Identity features know nothing of a perturbation not seen in training, so the network's
        output for it is a guess. Instead (in place): every gene gets the covariate group's mean
        direct shift over training perturbations (the response they share) as a non-target shift;
        its own gene, when measured, is a target with the median direct shift that training
        knock-outs gave their own gene, and the cascade of that shift through B is kept with the
        weight w that predicted the training knock-outs best, each from the others
        (`_unseen_profile`): total = A^-1 rest + own e_j + w (A^-1 - I) own e_j."""
        known = set(self.meta.components)
        unseen = [(k, c) for k, cl in enumerate(comps) for c, n in enumerate(cl) if n not in known]
        if not unseen or self.posterior is None or self.posterior_shift is None:
            return
        own, rest, weight, _ = self._unseen_profile
        B = self.module.sem.weights().detach().numpy()
        groups = self.group_index(requests)
        comp_gene = cb.comp_gene.numpy()
        for k, c in unseen:
            g, j = groups[k], int(comp_gene[k, c])
            prob[k, c], shift[k, c], spike[k, c] = 0.0, 0.0, rest[g]
            log_odds[k, c] = _NO_COMPONENT
            if j >= 0 and np.isfinite(own[g, 0]):
                prob[k, c, j], shift[k, c, j], log_odds[k, c, j] = 1.0, own[g, 0], own[g, 1]
                # A^-1 d = A^-1 rest + own e_j + w (A^-1 - I) own e_j for d = rest + own e_j
                # - (1 - w) own B e_j
                spike[k, c] = rest[g] - (1 - weight[g]) * own[g, 0] * B[:, j]
                spike[k, c, j] = 0.0

    def _new_drugs(self, comps, doses, requests, new_features, prob, shift, spike, log_odds):
        """A component never measured, with features (in place): its intervention from the
        feature prior fitted to the training contexts (gimcli.model.feature_prior), in place of
        the network's pi(features), m(features), which weight decay shrinks."""
        new = [
            (k, c, new_features[n])
            for k, cl in enumerate(comps)
            for c, n in enumerate(cl)
            if n not in self._feature_of and n in new_features
        ]
        self._apply_feature_prior(new, doses, requests, prob, shift, spike, log_odds, new=True)

    def _apply_feature_prior(self, items, doses, requests, prob, shift, spike, log_odds, *, new):
        """Components `items` [(request k, component c, features)] take the feature prior's
        intervention (in place); `new`: never measured, so with the shifts scaled by the prior's
        cross-validated weight (a training drug's unmeasured dose adds its own residual instead,
        `_dose_residual`)."""
        if not items or self._feature_prior is None:
            return
        ks = [k for k, _, _ in items]
        dz = [doses[k][c] for k, c, _ in items]
        cov = covariate_onehot(requests.iloc[ks], self.cov_keys, self.meta.covariates.categories)
        fp = self._feature_prior
        p, on, off = (fp.predict_new if new else fp.predict)(
            np.stack([f for *_, f in items]),
            dose_transform(np.asarray(dz, float), self.meta.dose_scale),
            cov,
        )
        for i, (k, c, _) in enumerate(items):
            q = np.clip(p[i], 1e-6, 1 - 1e-6)
            prob[k, c], shift[k, c], spike[k, c] = p[i], on[i], off[i]
            log_odds[k, c] = np.log(q) - np.log1p(-q)

    @cached_property
    def _feature_of(self) -> dict[str, np.ndarray]:
        return {n: self.comp_feats[i] for i, n in enumerate(self.meta.components)}

    @cached_property
    def _feature_prior_args(self) -> tuple | None:
        """FeaturePrior.fit's arguments: each single-perturbation training context's features,
        drug, transformed dose, covariates, target calls and observed direct shift (None with
        fewer than 2 such drugs or without posteriors)."""
        if self._singles is None:
            return None
        rows, sub, dose_t, cov = self._singles
        names = sub["condition"].astype(str).to_numpy()
        if len(set(names)) < 2:
            return None
        feats = np.stack([self._feature_of[n] for n in names])
        return feats, names, dose_t, cov, self.posterior[rows] > 0.5, self._observed_direct[rows]

    @cached_property
    def _feature_prior(self):
        """The FeaturePrior of this run's single-perturbation training contexts (None with fewer
        than 2 such drugs or without posteriors)."""
        from gimcli.model.feature_prior import FeaturePrior

        args = self._feature_prior_args
        if args is None:
            return None
        if self.feature_prior_choices is None:
            return FeaturePrior.fit(*args, seed=self.config.seed)
        try:
            return FeaturePrior.from_choices(
                self.feature_prior_choices, *args, seed=self.config.seed
            )
        except (ValueError, KeyError, IndexError) as e:
            raise ModelError(
                f"{_keys.MODEL_WEIGHTS}: its feature prior does not fit the run's training "
                f"contexts ({e}); retrain"
            ) from e

    @cached_property
    def _unseen_profile(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per covariate group: (median own-gene direct shift, its median log-odds) of training
        single knock-outs of measured genes (NaN where a group has none); the mean observed direct
        shift (d; A times the mean change, unshrunk: the posterior shrinks each context's small
        shifts, and the shared response is their mean) of its training perturbations, each
        context's own gene left out, times the share
        in [0, 1] of it that predicts each training perturbation from the others, each counted
        once (a screen whose perturbations act differently, as inhibitors of a signalling network
        do, gets less of the mean than one with a common response); and the weight in
        [0, 1] of the own shift's cascade through B, by least squares over the training knock-outs
        of measured genes, each predicted from the others (1 where there are fewer than 3); and
        the share itself (G,)."""
        tc = self.contexts
        G, d = len(self.std_mean), len(self.genes)
        direct = self._posterior_direct
        with torch.no_grad():
            total = self.module.sem.propagate(torch.from_numpy(direct.astype(np.float32))).numpy()
            A_inv = self.module.sem.propagate(torch.eye(d)).numpy().T  # column j: A^-1 e_j
        score = self.target_score
        groups = self.group_index(tc) if len(tc) else np.zeros(0, np.int64)
        own = np.full((G, 2), np.nan)
        rest = np.zeros((G, d), np.float32)
        weight = np.ones(G, np.float32)
        shares = np.zeros(G, np.float32)
        all_keeps, sums = self._shared_sums
        rd = self._observed_direct  # unshrunk: the mean of many contexts' small shifts
        for g in range(G):
            keeps = [(k, keep) for k, keep in all_keeps.items() if groups[k] == g]
            if not keeps:
                continue
            kos = [  # (context, own gene) of single knock-outs of measured genes
                (k, self._gene_of[str(tc["condition"].iloc[k])])
                for k, keep in keeps
                if not keep.all()
                and len(self.meta.keys.combinations.split(str(tc["condition"].iloc[k]))) == 1
            ]
            S, N = sums[g]

            # how much of the shared response a perturbation shares: each one's direct shift
            # (its own gene left out) on the others' mean, by least squares (1 with fewer than 3)
            loo = [
                (_mean_of_others(S, N, rd[k], keep), np.where(keep, rd[k], 0.0))
                for k, keep in keeps
            ]
            # each perturbation counts once, whatever its size (weight 1 / |y|^2): the share that
            # predicts a typical one, so two strong activators do not set every inhibitor's share
            # (pooled least squares gave held-out inhibitors half the activators' mean: mse 0.041
            # against 0.028 for control; bench/NOTES.md item 16)
            wts = [1.0 / max(float(y @ y), 1e-12) for _, y in loo]
            den = sum(wt * float(r @ r) for wt, (r, _) in zip(wts, loo, strict=True))
            num = sum(wt * float(r @ y) for wt, (r, y) in zip(wts, loo, strict=True))
            share = float(np.clip(num / den, 0, 1)) if den else 0.0
            share = share if len(keeps) >= 3 else 1.0
            rest[g], shares[g] = share * S / np.maximum(N, 1), share
            if not kos:
                continue
            eff = np.array([direct[k, j] for k, j in kos])
            own[g] = np.median(eff), np.median([score[k, j] for k, j in kos])
            if len(kos) < 3:
                continue
            num = den = 0.0
            for i, (k, j) in enumerate(kos):
                r_k = share * _mean_of_others(S, N, rd[k], dict(keeps)[k])
                o = np.median(np.delete(eff, i))
                resid = total[k] - A_inv @ r_k - o * np.eye(d)[j]
                v = o * (A_inv[:, j] - np.eye(d)[j])
                num, den = num + resid @ v, den + v @ v
            weight[g] = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0
        return own, rest, weight, shares

    @cached_property
    def _gene_of(self) -> dict[str, int]:
        """Training component -> index of its own (knocked-out) gene, -1 where none."""
        return dict(zip(self.meta.components, self.meta.comp_gene, strict=True))

    @cached_property
    def _shared_sums(self) -> tuple[dict[int, np.ndarray], dict[int, tuple]]:
        """Per perturbed training context: (d,) bool, False at the genes its components knock
        out; per covariate group: the sums S and counts N per gene of its contexts' observed
        direct shifts, those own genes left out (the shared response is S / N)."""
        tc, rd = self.contexts, self._observed_direct
        groups = self.group_index(tc) if len(tc) else np.zeros(0, np.int64)
        keeps, sums = {}, {}
        for k in np.flatnonzero(~tc["is_control"].astype(bool).to_numpy()):
            keep = np.ones(len(self.genes), bool)
            for n in self.meta.keys.combinations.split(str(tc["condition"].iloc[k])):
                if self._gene_of.get(n, -1) >= 0:
                    keep[self._gene_of[n]] = False
            keeps[int(k)] = keep
            S, N = sums.setdefault(int(groups[k]), (np.zeros(rd.shape[1]), np.zeros(rd.shape[1])))
            S += np.where(keep, rd[k], 0.0)
            N += keep
        return keeps, sums

    @property
    def _observed_direct(self) -> np.ndarray:
        """(K, d) the observed direct shift (the posterior mean for runs saved without it)."""
        return self.context_direct if self.context_direct is not None else self._posterior_direct

    @cached_property
    def _posterior_direct(self) -> np.ndarray:
        """(K, d) posterior mean direct shift E[u] of each training context, on and off target."""
        spike = self.posterior_spike if self.posterior_spike is not None else 0.0
        return self.posterior * self.posterior_shift + (1 - self.posterior) * spike

    def _posterior_of(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        spike = self.posterior_spike[i] if self.posterior_spike is not None else 0.0
        if self.posterior_logodds is not None:
            lo = self.posterior_logodds[i]
        else:  # a run saved before the log-odds were kept: from the (rounded) probability
            p = np.clip(self.posterior[i], 1e-7, 1 - 1e-7)
            lo = np.log(p) - np.log1p(-p)
        return self.posterior[i], self.posterior_shift[i], spike, lo

    def _cov_tuples(self, table: pd.DataFrame) -> list[tuple[str, ...]]:
        """Each row's covariate values as strings (() per row without covariates)."""
        if not self.cov_keys:
            return [()] * len(table)
        return list(table[self.cov_keys].astype(str).itertuples(index=False, name=None))

    @cached_property
    def _posterior_index(self) -> tuple[dict, dict]:
        """Perturbed training contexts by (components, doses, covariates), and single-component ones
        by (component, dose, covariates): built once per run (predict calls it per chunk)."""
        whole, single = {}, {}
        tc = self.contexts
        cov_rows = self._cov_tuples(tc)
        for i, (cond, dose, is_ctrl, covs) in enumerate(
            zip(tc["condition"], tc["dose"], tc["is_control"], cov_rows, strict=True)
        ):
            if is_ctrl:
                continue
            cl = self.meta.keys.combinations.split(str(cond))
            dl = tuple(np.round(dose_parts(dose), 9))
            whole[(tuple(cl), dl, covs)] = i
            if len(cl) == 1:
                single[(cl[0], dl[0], covs)] = i
        return whole, single

    # -- persistence -------------------------------------------------------------------------
    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"module.{k}": v.detach().cpu() for k, v in self.module.state_dict().items()}
        tensors["comp_feats"] = torch.from_numpy(np.asarray(self.comp_feats, np.float32))
        tensors["std_mean"] = torch.from_numpy(self.std_mean)
        tensors["std_sd"] = torch.from_numpy(self.std_sd)
        if self.posterior is not None:
            tensors["posterior"] = torch.from_numpy(np.asarray(self.posterior, np.float32))
        for name in ("posterior_shift", "posterior_spike", "posterior_logodds", "context_direct"):
            if getattr(self, name) is not None:
                tensors[name] = torch.from_numpy(np.asarray(getattr(self, name), np.float32))
        if self.spec.kind != "identity" and self._feature_prior is not None:
            for k, v in self._feature_prior.choices().items():
                tensors[f"{_FEATURE_PRIOR}{k}"] = torch.from_numpy(v)
            if self._dose_base_is_feature_prior:
                tensors["dose_weight_new"] = torch.tensor(
                    self._dose_residuals[2], dtype=torch.float64
                )
        if self.ref_cells is not None:
            tensors["ref_cells"] = torch.from_numpy(np.asarray(self.ref_cells, np.float32))
            tensors["ref_group"] = torch.from_numpy(np.asarray(self.ref_group, np.int64))
        with atomic_path(out / _keys.MODEL_WEIGHTS) as tmp:
            torch.save(tensors, tmp)
            # model.json names the model.pt it belongs with: a half-replaced run dir is detected
            meta = replace(self.meta, weights_sha256=file_sha256(tmp)).to_json()
        with atomic_path(out / _keys.MODEL_META) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, default=json_default))

    @classmethod
    def load(cls, run_dir: str | Path) -> GimRun:
        """Load on the CPU: prediction and explanation are small dense algebra."""
        run_dir = Path(run_dir)
        meta_p, w_p = run_dir / _keys.MODEL_META, run_dir / _keys.MODEL_WEIGHTS
        for p in (meta_p, w_p):
            if not p.exists():
                raise ModelError(f"{run_dir}: not a gim run directory (missing {p.name})")
        try:
            meta = json.loads(meta_p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{meta_p}: corrupt model metadata ({e})") from e
        if not isinstance(meta, dict) or meta.get("format_version") != MODEL_FORMAT_VERSION:
            got = meta.get("format_version") if isinstance(meta, dict) else None
            raise CheckpointMismatch(
                f"{meta_p}: model format {got!r}, this gim {__version__} reads format "
                f"{MODEL_FORMAT_VERSION}; retrain"
            )
        want = meta.get("weights_sha256")
        if want is not None and file_sha256(w_p) != want:
            raise ModelError(
                f"{w_p}: does not match {meta_p.name} (SHA-256 differs): the run directory is "
                "incomplete, was replaced halfway or was modified; restore it or retrain"
            )
        try:
            t = torch.load(w_p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # weights_only refused an object: never unpickle it
            raise ModelError(
                f"{w_p}: holds pickled objects other than tensors; refused, since loading it "
                f"could run code ({weights_only_reason(e)})"
            ) from e
        except Exception as e:  # truncated file, wrong format
            raise ModelError(
                f"{w_p}: cannot load weights safely ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]})"
            ) from e
        if not isinstance(t, dict):
            raise ModelError(f"{w_p}: expected a dict of tensors")
        try:
            meta = RunMeta.from_json(meta)
            module = GIMModule.from_config(
                meta.config,
                d=len(meta.genes),
                n_features=int(meta.n_features),
                n_cov=int(meta.n_cov),
            )
            module.load_state_dict(
                {k[len("module.") :]: v for k, v in t.items() if k.startswith("module.")}
            )
            arrays = {k: t[k].numpy() for k in _OPTIONAL_ARRAYS if k in t}
            choices = {
                k[len(_FEATURE_PRIOR) :]: v.numpy()
                for k, v in t.items()
                if k.startswith(_FEATURE_PRIOR)
            }
            if "dose_weight_new" in t:
                arrays["dose_weight_new"] = float(t["dose_weight_new"])
            run = cls(
                module=module.to("cpu", torch.float32).eval(),
                meta=meta,
                comp_feats=t["comp_feats"].numpy(),
                std_mean=t["std_mean"].numpy(),
                std_sd=t["std_sd"].numpy(),
                feature_prior_choices=choices or None,
                **arrays,
            )
        except _MISMATCH as e:
            raise ModelError(
                f"{run_dir}: model files do not match each other ({type(e).__name__}: "
                f"{str(e)[:160]})"
            ) from e
        return run


@dataclass
class Interventions:
    """Per request and component (K,C,d): target probability, and shift if targeted and if not
    (the spike; 0 for the network's prior), in standardised units."""

    prob: np.ndarray
    shift: np.ndarray
    spike: np.ndarray
    log_odds: np.ndarray  # (K,C,d) log-odds of prob; _NO_COMPONENT where a component is absent

    @property
    def prob_any(self) -> np.ndarray:
        return 1 - np.prod(1 - self.prob, axis=1)

    @property
    def log_odds_any(self) -> np.ndarray:
        """(K,d) log-odds that any component targets the gene, in log space: the ranking score,
        which keeps ordering genes whose probability is 1.0 in float32."""
        lo = self.log_odds.astype(np.float64)
        log_none = -np.logaddexp(0.0, lo).sum(1)  # sum_c log(1 - p_c)
        with np.errstate(divide="ignore"):
            exact = np.log(-np.expm1(log_none)) - log_none
        # all p_c tiny: log(1 - P(none)) = logsumexp_c(lo_c) to first order (exact underflows)
        small = np.logaddexp.reduce(lo, axis=1)
        return np.where(log_none > -1e-8, small, exact).astype(np.float32)

    def direct(self, *, map_targets: bool = False) -> np.ndarray:
        """(K,d) the direct shift u, expected (E[u]) or with the MAP targets (prob > 0.5)."""
        z = (self.prob > 0.5).astype(np.float32) if map_targets else self.prob
        return (z * self.shift + (1 - z) * self.spike).sum(1).astype(np.float32)


# What a model.json that does not fit its model.pt (or this gim) raises while loading.
_MISMATCH = (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError, GimError)
_FEATURE_PRIOR = "feature_prior."  # model.pt's keys of FeaturePrior.choices()
# Arrays model.pt may hold beside the weights (runs without posteriors or controls lack some).
_OPTIONAL_ARRAYS = (
    "posterior",
    "posterior_shift",
    "posterior_spike",
    "posterior_logodds",
    "context_direct",
    "ref_cells",
    "ref_group",
)


def _mean_of_others(S: np.ndarray, N: np.ndarray, own: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The mean direct shift of the other perturbations of a group, from the group's sums S and
    counts N per gene and one perturbation's own shift (counted where `keep`)."""
    return np.where(N - keep > 0, (S - np.where(keep, own, 0)) / np.maximum(N - keep, 1), 0)


def _leave_one_dose_out(groups: dict, t: np.ndarray, residuals) -> float:
    """The least-squares weight in [0, 1] of each group's residual at an interior dose predicted
    by interpolating its residuals at the other doses; `residuals(m, idx)` gives the group's
    residuals (rows idx, sorted by dose) as seen with its m-th dose left out. With no interior
    dose there is nothing to check a smaller weight on: 1, a drug's own measured doses
    interpolated, as the additive baseline does (benchmark 1, 2 training doses per drug: R² 0.967
    with w 0, the network's dose curve, against 0.977 with w 1 and 0.977 for additive)."""
    if not any(len(idx) > 2 for idx in groups.values()):
        return 1.0
    num = den = 0.0
    for idx in groups.values():
        for m in range(1, len(idx) - 1):  # interior doses, each from its neighbours
            R = residuals(m, idx)
            rest = [q for q in range(len(idx)) if q != m]
            P = _interp_rows(float(t[idx[m]]), t[np.asarray(idx)[rest]], R[rest])
            num, den = num + float(P @ R[m]), den + float(P @ P)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0


def _interp_rows(t0: float, t: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Rows R (n, d) at sorted points t, linearly interpolated at t0 (constant past the ends)."""
    if len(t) == 1 or t0 <= t[0]:
        return R[0]
    if t0 >= t[-1]:
        return R[-1]
    i = int(np.searchsorted(t, t0, side="right"))
    a = (t0 - t[i - 1]) / (t[i] - t[i - 1])
    return (1 - a) * R[i - 1] + a * R[i]


# The log-odds of a component a context does not have (log(0) without infinities in the sums).
_NO_COMPONENT = -1e4
