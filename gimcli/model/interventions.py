"""The generative intervention network: features of a perturbation -> atomic interventions.

Per component (one drug or one perturbed gene) and per gene j: a target logit l_j
(pi_j = sigmoid(l_j)) and a shift m_j. Inputs: the component's features, its transformed dose,
the covariate one-hot (cell line). A combination is the union of its components.
"""

from __future__ import annotations

import torch
from torch import nn

# Prior target probability at initialisation: few genes are direct targets.
INIT_TARGET_LOGIT = -3.0


class InterventionNet(nn.Module):
    def __init__(self, n_features: int, n_cov: int, d: int, *, hidden: int = 128, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features + 1 + n_cov
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.logit = nn.Linear(width, d)
        self.shift = nn.Linear(width, d)
        nn.init.zeros_(self.logit.weight)
        nn.init.constant_(self.logit.bias, INIT_TARGET_LOGIT)
        nn.init.normal_(self.shift.weight, std=0.01)
        nn.init.zeros_(self.shift.bias)
        # A perturbed gene that is itself measured (CRISPR screens) is a likely direct target:
        # one learned logit bonus lets this carry over to perturbations never seen in training.
        self.self_logit = nn.Parameter(torch.zeros(()))

    def forward(
        self,
        feats: torch.Tensor,  # (K, C, F)
        dose_t: torch.Tensor,  # (K, C)
        cov: torch.Tensor,  # (K, n_cov)
        comp_gene: torch.Tensor,  # (K, C) gene index of the component, -1 if none
    ) -> tuple[torch.Tensor, torch.Tensor]:
        K, C, _ = feats.shape
        inp = torch.cat([feats, dose_t.unsqueeze(-1), cov.unsqueeze(1).expand(K, C, cov.shape[-1])], -1)
        h = self.trunk(inp)
        logits = self.logit(h)
        shifts = self.shift(h)
        has_gene = comp_gene >= 0
        if has_gene.any():
            onehot = torch.zeros_like(logits)
            onehot.scatter_(-1, comp_gene.clamp_min(0).unsqueeze(-1), has_gene.unsqueeze(-1).to(logits.dtype))
            logits = logits + self.self_logit * onehot
        return logits, shifts
