"""GimRun: a trained model and everything needed to use it; one run directory on disk.

run/model.pt holds tensors only (loaded with weights_only=True); run/model.json holds the rest
as plain JSON, typed by gimcli.schema.RunMeta (docs/design.md, "The run directory").
"""

from __future__ import annotations

import json
import pickle
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
from gimcli.data.features import (
    FeatureSpec,
    component_descriptors,
    undescribable,
    undescribable_message,
)
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
    ref_cells: np.ndarray | None = (
        None  # (n, d) log-normalised control cells (counterfactual predictions)
    )
    ref_group: np.ndarray | None = None  # (n,) covariate group of each reference cell
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
            if unknown := undescribable(self.spec.kind, new, self.meta.components):
                raise InputError(undescribable_message(unknown))
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
        comp_gene = np.array(
            self.meta.comp_gene
            + [
                gene_of.get(n, -1) if self.spec.kind == "identity" else -1
                for n in vocab[len(names) :]
            ],
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
        prob = (torch.sigmoid(logits) * cb.comp_mask.unsqueeze(-1)).numpy().copy()
        shift = shifts.numpy().copy()
        spike = np.zeros_like(shift)
        if use_posterior and self.posterior is not None and self.posterior_shift is not None:
            whole, single = self._posterior_index
            cov_rows = self._cov_tuples(requests)
            for k, (cl, dl, covs) in enumerate(zip(comps, doses, cov_rows, strict=True)):
                i = whole.get((tuple(cl), tuple(np.round(dl, 9)), covs))
                if (
                    i is not None and len(cl) > 1
                ):  # a measured combination: its own posterior on component 0
                    prob[k], shift[k] = 0.0, 0.0
                    prob[k, 0], shift[k, 0], spike[k, 0] = self._posterior_of(i)
                    continue
                for c, (name, dz) in enumerate(zip(cl, dl, strict=True)):
                    i = single.get((name, round(dz, 9), covs))
                    if i is not None:
                        prob[k, c], shift[k, c], spike[k, c] = self._posterior_of(i)
        return Interventions(prob=prob, shift=shift, spike=spike)

    def _posterior_of(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spike = self.posterior_spike[i] if self.posterior_spike is not None else 0.0
        return self.posterior[i], self.posterior_shift[i], spike

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
        for name in ("posterior_shift", "posterior_spike"):
            if getattr(self, name) is not None:
                tensors[name] = torch.from_numpy(np.asarray(getattr(self, name), np.float32))
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
            run = cls(
                module=module.to("cpu", torch.float32).eval(),
                meta=meta,
                comp_feats=t["comp_feats"].numpy(),
                std_mean=t["std_mean"].numpy(),
                std_sd=t["std_sd"].numpy(),
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

    @property
    def prob_any(self) -> np.ndarray:
        return 1 - np.prod(1 - self.prob, axis=1)

    def direct(self, *, map_targets: bool = False) -> np.ndarray:
        """(K,d) the direct shift u, expected (E[u]) or with the MAP targets (prob > 0.5)."""
        z = (self.prob > 0.5).astype(np.float32) if map_targets else self.prob
        return (z * self.shift + (1 - z) * self.spike).sum(1).astype(np.float32)


# What a model.json that does not fit its model.pt (or this gim) raises while loading.
_MISMATCH = (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError, GimError)
# Arrays model.pt may hold beside the weights (runs without posteriors or controls lack some).
_OPTIONAL_ARRAYS = ("posterior", "posterior_shift", "posterior_spike", "ref_cells", "ref_group")
