"""GIMModule: tensors in, a small loss dataclass out (no data handling, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from gimcli.config import TrainConfig
from gimcli.model.causal import LinearSEM
from gimcli.model.interventions import InterventionNet
from gimcli.model.objective import (
    Marginal,
    exact_log_marginal,
    exact_marginal,
    relaxed_loglik,
    sufficient_stats,
)
from gimcli.model.precision import matmul_precision


@dataclass
class ContextBatch:
    """Per-context inputs of the network (K contexts, up to C components each)."""

    feats: torch.Tensor  # (K, C, F)
    dose_t: torch.Tensor  # (K, C)
    cov: torch.Tensor  # (K, n_cov)
    comp_gene: torch.Tensor  # (K, C)
    comp_mask: torch.Tensor  # (K, C) bool

    @classmethod
    def gather(
        cls,
        comp_feats: np.ndarray,
        components: np.ndarray,
        dose_t: np.ndarray,
        cov: np.ndarray,
        comp_gene_of: np.ndarray,
    ) -> ContextBatch:
        """Per-context inputs from per-component rows (numpy in, tensors out).

        `components` (K, C) indexes `comp_feats` and `comp_gene_of` (-1: no component);
        `dose_t` (K, C) is the transformed dose; `cov` (K, n_cov) the covariate one-hot.
        """
        mask = components >= 0
        idx = np.where(mask, components, 0)
        feats = comp_feats[idx] * mask[..., None]
        cg = np.where(mask, comp_gene_of[idx], -1)
        return cls(
            feats=torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            dose_t=torch.from_numpy(np.where(mask, dose_t, 0).astype(np.float32)),
            cov=torch.from_numpy(np.ascontiguousarray(cov, dtype=np.float32)),
            comp_gene=torch.from_numpy(cg.astype(np.int64)),
            comp_mask=torch.from_numpy(mask),
        )

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.feats, self.dose_t, self.cov, self.comp_gene, self.comp_mask)

    def to(self, device) -> ContextBatch:
        return ContextBatch(*(t.to(device) for t in self._tensors()))

    def select(self, idx: torch.Tensor) -> ContextBatch:
        """The contexts `idx` (a tensor of indices on this batch's device)."""
        return ContextBatch(*(t[idx] for t in self._tensors()))


@dataclass
class CellBatch:
    x: torch.Tensor  # (cells, d) standardised
    ctx: torch.Tensor  # (cells,) index into the context batch
    scale: torch.Tensor  # (K,) whole-context cells / sampled cells
    contexts: ContextBatch
    precision: str = "fp32"  # of the cells x d x d residual matmul (gimcli.model.precision)

    def residual_stats(self, sem: LinearSEM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S1, S2 (K x d) and n (K) of the residuals A x - b (see gimcli.training.stats for the
        same from precomputed per-context sums)."""
        with matmul_precision(self.precision, self.x.device):
            r = sem.residuals(self.x)
        return sufficient_stats(r.to(self.x.dtype), self.ctx, self.scale.shape[0], self.scale)


@dataclass
class LossOutput:
    loss: torch.Tensor
    nll: torch.Tensor  # per cell, without penalties
    l1: torch.Tensor


class GIMModule(nn.Module):
    def __init__(
        self,
        d: int,
        n_features: int,
        n_cov: int,
        *,
        hidden: int = 128,
        n_layers: int = 2,
        fix_graph: bool = False,
        dose_response: str = "mlp",
        shift_sd: float = 1.0,
        spike_sd: float = -0.1,
    ):
        super().__init__()
        self.sem = LinearSEM(d, fix_graph=fix_graph)
        self.net = InterventionNet(
            n_features,
            n_cov,
            d,
            hidden=hidden,
            n_layers=n_layers,
            dose_response=dose_response,
            shift_sd=shift_sd,
            spike_sd=spike_sd,
        )

    @classmethod
    def from_config(cls, config: TrainConfig, *, d: int, n_features: int, n_cov: int) -> GIMModule:
        """The module a TrainConfig describes, over `d` genes (the one way to build it: training
        and loading a run must agree)."""
        return cls(
            d,
            n_features,
            n_cov,
            hidden=config.hidden,
            n_layers=config.n_layers,
            fix_graph=config.fix_graph,
            dose_response=config.dose_response,
            shift_sd=config.shift_sd,
            spike_sd=config.spike_sd,
        )

    def interventions(self, c: ContextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(c.feats, c.dose_t, c.cov, c.comp_gene)

    def loss(
        self,
        batch: CellBatch,
        *,
        mode: Literal["exact", "relaxed"],
        target_cost: float,
        l1_graph: float,
        temperature: float = 0.5,
        generator: torch.Generator | None = None,
        shift_prior_sd: float = 0.0,
    ) -> LossOutput:
        if mode not in ("exact", "relaxed"):  # never a silent fallback (TrainConfig checks first)
            raise ValueError(f"unknown objective mode {mode!r}")
        S1, S2, n = batch.residual_stats(self.sem)
        logits, shifts = self.interventions(batch.contexts)
        ls, lt, lsp = self.sem.log_sd(), self.net.log_tau, self.net.log_spike
        if mode == "exact":
            ll = exact_log_marginal(
                S1, S2, n, logits, shifts, batch.contexts.comp_mask, ls, target_cost, lt, lsp
            )
        else:  # relaxed
            ll = relaxed_loglik(
                S1,
                S2,
                n,
                logits,
                shifts,
                batch.contexts.comp_mask,
                ls,
                target_cost,
                temperature,
                generator,
                lt,
                lsp,
            )
        n_tot = n.sum()
        nll = -(n_tot * self.sem.logdet() + ll.sum()) / n_tot
        l1 = self.sem.weights().abs().sum()
        loss = nll + l1_graph * l1
        if shift_prior_sd > 0:  # log N(m; 0, sd^2) of every component's shift, per cell as nll
            m = shifts * batch.contexts.comp_mask.unsqueeze(-1)
            loss = loss + 0.5 * (m * m).sum() / (shift_prior_sd**2 * n_tot)
        return LossOutput(loss=loss, nll=nll.detach(), l1=l1.detach())

    @torch.no_grad()
    def posterior(self, batch: CellBatch, *, target_cost: float, stats=None) -> Marginal:
        """Exact posterior of each context's interventions given its cells (`stats`: their
        residual_stats, when the caller has them already)."""
        S1, S2, n = stats if stats is not None else batch.residual_stats(self.sem)
        logits, shifts = self.interventions(batch.contexts)
        return exact_marginal(
            S1,
            S2,
            n,
            logits,
            shifts,
            batch.contexts.comp_mask,
            self.sem.log_sd(),
            target_cost,
            self.net.log_tau,
            self.net.log_spike,
        )
