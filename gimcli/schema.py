"""The run directory's model.json, written down: one frozen dataclass per part.

`RunMeta.to_json()` is model.json and `RunMeta.from_json()` reads it back; model.pt holds the
tensors (gimcli.gimrun). docs/design.md, "The run directory", describes every field. The layout is
format MODEL_FORMAT_VERSION: a change to it bumps the version, and loaders refuse other versions
(the run must be retrained).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd

from gimcli.config import DataKeys, TrainConfig
from gimcli.data.features import FeatureSpec
from gimcli.data.preprocess import PreprocessInfo
from gimcli.model.causal import Diagnostics
from gimcli.provenance import Provenance

# Bumped when model.json / model.pt change incompatibly; loaders refuse other versions.
MODEL_FORMAT_VERSION = 2


def _strict(cls, d: dict[str, Any]):
    """cls(**d), refusing keys that are not fields (a misspelt key must not pass silently)."""
    names = {f.name for f in fields(cls)}
    extra = sorted(set(d) - names)
    if extra:
        raise KeyError(f"{cls.__name__}: unknown key(s) {extra}")
    return cls(**d)


@dataclass(frozen=True)
class InputInfo:
    """The training file: path, SHA-256 and shape (model.json "input")."""

    path: str
    sha256: str
    n_obs: int
    n_vars: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Covariates:
    """Covariate columns, their categories (the one-hot order) and the covariate groups: the rows
    of the standardisation tables (model.json "covariates")."""

    keys: list[str]
    categories: dict[str, list[str]]
    groups: list[dict[str, str]]  # one record per group; [] without covariates

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def table(self) -> pd.DataFrame:
        """The groups as a table (one row, no columns, without covariates)."""
        g = pd.DataFrame(self.groups)
        return g if len(g.columns) else pd.DataFrame(index=[0])


@dataclass(frozen=True)
class TrainingSummary:
    """How training went (model.json "training")."""

    best_step: int
    best_val_nll: float
    stopped_early: bool
    steps_run: int
    train_seconds: float
    total_seconds: float
    device: str
    prepare_seconds: float
    peak_gpu_bytes: int | None
    n_cells: int  # cells trained on (in kept contexts)
    threads: int | None = None  # torch CPU threads per process (--threads, resolved)
    threads_source: str | None = None  # where that number came from
    peak_rss_bytes: list[int] | None = None  # per process (rank) at the end of training
    stage_seconds: dict[str, float] | None = None  # preparation stages (sharded reading)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunMeta:
    """Everything of a run but its tensors; `to_json` gives model.json in its key order."""

    format_version: int
    versions: dict[str, str]
    seed: int
    config: TrainConfig
    input: InputInfo | None  # None (JSON {}) when the library was not told the file
    keys: DataKeys
    preprocess: PreprocessInfo
    covariates: Covariates
    features: FeatureSpec
    n_features: int  # width of a component's feature row
    n_cov: int  # width of the covariate one-hot
    dose_scale: float  # dose_t = log10(1 + dose) / dose_scale
    components: list[str]  # training components, in the row order of comp_feats
    comp_gene: list[int]  # gene index of each component (identity features), else -1
    contexts: list[dict[str, Any]]  # condition, dose, <covariates>, n_cells, is_control
    training: TrainingSummary
    diagnostics: Diagnostics
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of metrics.csv
    provenance: Provenance | None = None  # set by `gim train`
    weights_sha256: str | None = None  # of the model.pt written with it (GimRun.save)
    # the options of `gim train` / gimcli.train as resolved: values, where each came from (flag,
    # env, file, default, argument) and the config file (docs/api.md, "Configuration")
    options: dict[str, Any] = field(default_factory=dict)
    # health checks of the fit (gimcli.training.health): {"check", "message"} records, written as
    # model.json diagnostics.warnings
    warnings: list[dict[str, str]] = field(default_factory=list)
    # what was held out of training and scored (gimcli.evaluation.splits.Holdout.to_dict); {}
    # without a split
    holdout: dict[str, Any] = field(default_factory=dict)

    @property
    def genes(self) -> list[str]:
        return self.preprocess.genes

    def input_dict(self) -> dict[str, Any]:
        """The training file's record as JSON ({} when unknown)."""
        return self.input.to_dict() if self.input is not None else {}

    def to_json(self) -> dict[str, Any]:
        out = {
            "format_version": self.format_version,
            "versions": self.versions,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "input": self.input_dict(),
            "keys": self.keys.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "covariates": self.covariates.to_dict(),
            "features": self.features.to_dict(),
            "n_features": self.n_features,
            "n_cov": self.n_cov,
            "dose_scale": self.dose_scale,
            "components": self.components,
            "comp_gene": self.comp_gene,
            "contexts": self.contexts,
            "training": self.training.to_dict(),
            "diagnostics": {**self.diagnostics.to_dict(), "warnings": self.warnings},
            "history": self.history,
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance.to_dict()
        if self.options:
            out["options"] = self.options
        if self.holdout:
            out["holdout"] = self.holdout
        if self.weights_sha256 is not None:
            out["weights_sha256"] = self.weights_sha256
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunMeta:
        """Read model.json; raises KeyError/TypeError/ValueError on a file that does not fit."""
        d = dict(d)
        diag = dict(d.pop("diagnostics"))
        d["warnings"] = diag.pop("warnings", [])
        d["diagnostics"] = diag
        nested = {
            "config": TrainConfig.from_dict(d.pop("config")),
            "input": _strict(InputInfo, d.pop("input")) if d.get("input") else None,
            "keys": DataKeys.from_dict(d.pop("keys")),
            "preprocess": _strict(PreprocessInfo, d.pop("preprocess")),
            "covariates": _strict(Covariates, d.pop("covariates")),
            "features": FeatureSpec.from_dict(d.pop("features")),
            "training": _strict(TrainingSummary, d.pop("training")),
            "diagnostics": Diagnostics.from_dict(d.pop("diagnostics")),
            "provenance": Provenance.from_dict(d.pop("provenance")) if "provenance" in d else None,
        }
        d.pop("input", None)
        return _strict(cls, {**d, **nested})
