"""What the user chose, frozen and checked where it is made.

`TrainConfig` feeds the CLI defaults, the checkpoint and uns['gim']['params']; `DataKeys` names
where a screen keeps what gim reads. Both refuse values they cannot take with a
`gimcli.errors.ConfigError` that names the field (the CLI maps fields to its flags).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from gimcli.errors import ConfigError

# scanpy's highly_variable_genes flavors (only "seurat" is available with --backed).
HVG_FLAVORS = ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    # preprocessing
    n_top_genes: int = 2000
    hvg_flavor: str = "seurat"  # works on log data; recorded so results can be reproduced
    target_sum: float = 1e4
    # 1: a bulk screen (L1000, pseudobulk) has one sample per drug and dose; a context of one cell
    # is still evidence (its mean), and the pooled within-context sd needs none of its own
    min_cells_per_context: int = 1
    # features
    fp_radius: int = 2
    fp_bits: int = 2048
    fp_chirality: bool = True
    # network
    # "hill" helped the B = 0 ablation on held-out doses (bench 4: R² 0.972 -> 0.983) but hurt the
    # full GIM (0.939 -> 0.937; pairs 0.982 -> 0.911 on bench 1): an option, not the default
    dose_response: Literal["hill", "mlp"] = "mlp"
    # Shifts are drawn once per context and integrated out (gimcli.model.objective): on a target
    # u ~ N(m, shift_sd^2), off one u ~ N(0, spike_sd^2); > 0 fixed, < 0 learned per gene starting
    # at |value|, 0 exact (u = m, resp. 0: the format-1 model). Fixed tau = 1 with a learned spike
    # won on bench/ABLATIONS.md; with u = m exactly, a target whose shift the network had not yet
    # learned got posterior ~0 and no gradient, and stayed missed (target AUROC 0.887 -> 0.989).
    # The spike starts at 0.1, not 0.3: from 0.3 a gene shifted in one context only (a KO's own
    # gene) could be absorbed by its growing spike before the target route was learned (Papalexi
    # seed 0: JAK2's spike 0.39, STAT3's KO gene at rank 226; bench/NOTES.md item 10).
    shift_sd: float = 1.0
    spike_sd: float = -0.1
    # sd of a Gaussian prior N(0, sd^2) on the network's shift m of every component and gene (0:
    # none). Without one, the m of a gene the network calls a non-target has a vanishing gradient
    # that Adam still follows at full step: 30% of Papalexi's genes drifted past |m| = 2 sd (STAT3
    # to +5.8 in every KO), which then ruled them out as targets wherever they moved by less. A
    # weak prior is enough to stop the drift (Adam again) and barely shrinks real shifts: sd 10
    # beat sd 3 on L1000 doses and mixed targets (bench/NOTES.md item 19)
    shift_prior_sd: float = 10.0
    hidden: int = 128
    # one hidden layer: the network is fitted to a few dozen to a few hundred perturbations; two
    # fitted training drugs better and unseen ones worse on the screens bench (bench/NOTES.md)
    n_layers: int = 1
    # causal model
    fix_graph: bool = False  # B = 0: the "no causal model" ablation
    l1_graph: float = (
        0.03  # nats per cell per unit |B|; best of 0.003-0.1 on 4 simulated 20-gene systems (bench)
    )
    # target prior: each used target costs this many nats (a cost on usage, not on pi:
    # docs/design.md, "The objective")
    # nats per used target; 1.0 on 3 simulated 20-gene systems: target AUROC/AUPRC 0.944/0.752 vs
    # 0.925/0.621 at 0.5, 0.914/0.767 at 2.0, 0.874/0.715 at 4.0 (bench/RESULTS.md has more)
    target_cost: float = 1.0
    # optimisation
    objective: Literal["schedule", "exact", "relaxed"] = "schedule"
    structure_first: float = 0.6  # share of steps on the relaxed bound before the exact marginal
    temperature: float = 0.5
    steps: int = 2000
    lr: float = 0.01
    # decoupled (AdamW) decay of the network's weight matrices: keeps pi and m of unseen drugs near
    # the training range (unseen simulated drugs R² -0.18 without, 0.82 at 0.1; bench/ABLATIONS.md);
    # 0.3: at 1.0 held-out doses lost to the B = 0 refit and ridge (bench 1: 0.934 vs 0.951; bench
    # 4: 0.974 vs 0.981), at 0.3 they win (0.969, 0.984); unseen drugs move within noise
    weight_decay: float = 0.3
    # full: every step uses all cells through per-context sums (gimcli/training/stats.py);
    # sampled: batch_contexts contexts and up to max_cells_per_context cells each per step
    batching: Literal["full", "sampled"] = "full"
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"  # of the d x d matmuls of a step
    batch_contexts: int = 256
    max_cells_per_context: int = 256
    val_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 8  # evaluations without improvement before stopping (exact phase only)
    restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _KIND[f.name]
            if kind is bool:
                if not isinstance(value, bool):
                    raise ConfigError(f.name, value, "must be true or false")
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ConfigError(f.name, value, "must be an integer")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ConfigError(f.name, value, "must be a number")
                if not math.isfinite(value):
                    raise ConfigError(f.name, value, "must be finite")
            elif value not in kind:
                raise ConfigError(f.name, value, f"expected one of {', '.join(kind)}")
            if f.name in _RANGES:
                ok, rule = _RANGES[f.name]
                if not ok(value):
                    raise ConfigError(f.name, value, rule)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of `to_dict`; a key that is not a field is refused (a typo must not
        silently give the default)."""
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise ConfigError(k, d[k], "not a TrainConfig field")
        return cls(**d)

    def replace(self, **kw: Any) -> TrainConfig:
        return replace(self, **kw)


# Type (or the allowed values) of each TrainConfig field; ints are accepted where floats are.
_KIND: dict[str, Any] = {
    "n_top_genes": int,
    "hvg_flavor": HVG_FLAVORS,
    "target_sum": float,
    "min_cells_per_context": int,
    "fp_radius": int,
    "fp_bits": int,
    "fp_chirality": bool,
    "dose_response": ("hill", "mlp"),
    "shift_sd": float,
    "spike_sd": float,
    "shift_prior_sd": float,
    "hidden": int,
    "n_layers": int,
    "fix_graph": bool,
    "l1_graph": float,
    "target_cost": float,
    "objective": ("schedule", "exact", "relaxed"),
    "structure_first": float,
    "temperature": float,
    "steps": int,
    "lr": float,
    "weight_decay": float,
    "batching": ("full", "sampled"),
    "precision": PRECISIONS,
    "batch_contexts": int,
    "max_cells_per_context": int,
    "val_fraction": float,
    "eval_every": int,
    "patience": int,
    "restarts": int,
    "seed": int,
}


def _at_least(lo: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= lo), f"must be >= {lo:g}"


def _above(lo: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > lo), f"must be > {lo:g}"


_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n_top_genes": _at_least(1),
    "target_sum": _above(0),
    "min_cells_per_context": _at_least(1),
    "fp_radius": _at_least(0),
    "fp_bits": _at_least(1),
    "hidden": _at_least(1),
    "n_layers": _at_least(0),
    "l1_graph": _at_least(0),
    "shift_prior_sd": _at_least(0),
    "target_cost": _at_least(0),
    "structure_first": ((lambda v: 0 <= v <= 1), "must be between 0 and 1"),
    "temperature": _above(0),
    "steps": _at_least(1),
    "lr": _above(0),
    "weight_decay": _at_least(0),
    "batch_contexts": _at_least(1),
    "max_cells_per_context": _at_least(1),
    "val_fraction": ((lambda v: 0 <= v < 1), "must be >= 0 and < 1"),
    "eval_every": _at_least(1),
    "patience": _at_least(1),
    "restarts": _at_least(1),
    "seed": _at_least(0),
}


@dataclass(frozen=True)
class DataKeys:
    """Where a screen keeps what gim reads: obs columns and the layer of raw counts.

    Recorded in model.json ("keys") so that prediction, evaluation and the B = 0 refit read new
    data the way training read its own.
    """

    perturbation_key: str = "condition"
    control: str = "control"
    dose_key: str | None = None
    covariate_keys: tuple[str, ...] = ()
    smiles_key: str | None = None
    feature_keys: tuple[str, ...] = ()
    counts_layer: str | None = None
    # the combination rule (gimcli.data.combinations): the separator ('none': names are atomic)
    # and the names never split (those of the --drug-features CSV)
    combination_sep: str = "+"
    atomic_names: tuple[str, ...] = ()
    # what X holds: auto (counts or log-normalised, detected) | counts | log | continuous
    input_kind: str = "auto"
    # obs column naming the gene each cell's perturbation targets (guide -> gene; genetic screens)
    perturbed_gene_key: str | None = None
    # genes detected in fewer cells are not modelled (0: every gene may be)
    min_cells: int = 0

    def __post_init__(self) -> None:
        # lists (JSON, the CLI's comma lists) or None become tuples, so that the keys stay frozen
        for name in ("covariate_keys", "feature_keys", "atomic_names"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(name, value, "must be a list of column names, not one string")
            object.__setattr__(self, name, tuple(value or ()))
        for name in ("perturbation_key", "control", "combination_sep"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(name, getattr(self, name), "must be a non-empty string")
        object.__setattr__(self, "atomic_names", tuple(sorted(set(map(str, self.atomic_names)))))
        if self.input_kind not in ("auto", "counts", "log", "continuous"):
            raise ConfigError(
                "input_kind", self.input_kind, "expected auto, counts, log or continuous"
            )
        if (
            isinstance(self.min_cells, bool)
            or not isinstance(self.min_cells, int)
            or self.min_cells < 0
        ):
            raise ConfigError("min_cells", self.min_cells, "must be an integer >= 0")

    @property
    def combinations(self):
        """The combination rule these keys read names with (gimcli.data.combinations)."""
        from gimcli.combinations import Combinations

        return Combinations(self.combination_sep.strip(), frozenset(self.atomic_names))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["covariate_keys"], d["feature_keys"] = list(self.covariate_keys), list(self.feature_keys)
        d["atomic_names"] = list(self.atomic_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataKeys:
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise ConfigError(k, d[k], "not a DataKeys field")
        return cls(**d)
