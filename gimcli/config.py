"""One frozen configuration that feeds the CLI defaults, the checkpoint and uns['gim']['params']."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


@dataclass(frozen=True)
class TrainConfig:
    # preprocessing
    n_top_genes: int = 2000
    hvg_flavor: str = "seurat"  # works on log data; recorded so results can be reproduced
    target_sum: float = 1e4
    min_cells_per_context: int = 3
    # features
    fp_radius: int = 2
    fp_bits: int = 2048
    fp_chirality: bool = True
    # network
    # "hill" helped the B = 0 ablation on held-out doses (bench 4: R² 0.972 -> 0.983) but hurt the
    # full GIM (0.939 -> 0.937; pairs 0.982 -> 0.911 on bench 1), so it is an option, not the default
    dose_response: Literal["hill", "mlp"] = "mlp"
    # Shifts are drawn once per context and integrated out (gimcli.model.objective): on a target
    # u ~ N(m, shift_sd^2), off one u ~ N(0, spike_sd^2); > 0 fixed, < 0 learned per gene starting at
    # |value|, 0 exact (u = m, resp. 0: the format-1 model). Fixed tau = 1 with a learned spike won on
    # bench/ABLATIONS.md; with u = m exactly, a target whose shift the network had not yet learned got
    # posterior ~0 and no gradient, and stayed missed (simulated target AUROC 0.887 -> 0.989).
    shift_sd: float = 1.0
    spike_sd: float = -0.3
    hidden: int = 128
    n_layers: int = 2
    # causal model
    fix_graph: bool = False  # B = 0: the "no causal model" ablation
    l1_graph: float = (
        0.03  # nats per cell per unit |B|; best of 0.003-0.1 on 4 simulated 20-gene systems (bench)
    )
    # target prior: each used target costs this many nats (a cost on usage, not on pi; DESIGN §2)
    # nats per used target; 1.0 on 3 simulated 20-gene systems: target AUROC/AUPRC 0.944/0.752 vs
    # 0.925/0.621 at 0.5, 0.914/0.767 at 2.0, 0.874/0.715 at 4.0 (bench/RESULTS.md has more)
    target_cost: float = 1.0
    # optimisation
    objective: Literal["schedule", "exact", "relaxed"] = "schedule"
    structure_first: float = 0.6  # share of steps on the relaxed bound before the exact marginal
    temperature: float = 0.5
    steps: int = 2000
    lr: float = 0.01
    # decoupled (AdamW) decay of the network's weight matrices: keeps pi and m of unseen drugs near the
    # training range (unseen simulated drugs R² -0.18 without, 0.82 at 0.1; bench/ABLATIONS.md)
    weight_decay: float = 0.1
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **kw: Any) -> TrainConfig:
        return replace(self, **kw)
