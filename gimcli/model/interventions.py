"""The generative intervention network: features of a perturbation -> atomic interventions.

Per component (one drug or one perturbed gene) and per gene j: a target logit l_j
(pi_j = sigmoid(l_j)) and a shift m_j. Inputs: the component's features, its transformed dose,
the covariate one-hot (cell line). A combination is the union of its components.

Dose response "hill": the trunk sees features and covariates only; the shift is
m_j(features) * sigmoid(s * (dose_t - c)), a Hill curve in log dose with a per-perturbation
midpoint c and slope s > 0, and the target logit is linear in dose_t. Held-out doses are then
interpolated along a monotone curve rather than by an MLP of dose (bench/RESULTS.md, benchmark 4).
"mlp" (default): dose is one more input of the trunk (see config.py for the measurements).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Prior target probability at initialisation: few genes are direct targets.
INIT_TARGET_LOGIT = -3.0


# Initial Hill slope per unit of transformed dose (dose_t spans [0, 1] over the training doses).
_INIT_SLOPE = 6.0


class InterventionNet(nn.Module):
    def __init__(
        self,
        n_features: int,
        n_cov: int,
        d: int,
        *,
        hidden: int = 128,
        n_layers: int = 2,
        dose_response: str = "mlp",
        shift_sd: float = 1.0,
        spike_sd: float = -0.1,
    ):
        super().__init__()
        # sds of a context's shift around the network's m on targets (tau) and around 0 on
        # non-targets (spike), integrated out (gimcli.model.objective): > 0 fixed, < 0 learned per
        # gene (starting at |sd|), 0 exact
        for name, sd in (("log_tau", shift_sd), ("log_spike", spike_sd)):
            if sd > 0:
                self.register_buffer(name, torch.full((d,), math.log(sd)))
            else:
                setattr(
                    self, name, nn.Parameter(torch.full((d,), math.log(-sd))) if sd < 0 else None
                )
        self.hill = dose_response == "hill"
        layers: list[nn.Module] = []
        width = n_features + n_cov + (0 if self.hill else 1)
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.logit = nn.Linear(width + (1 if self.hill else 0), d)
        if self.hill:
            self.dose_head = nn.Linear(width, 2)  # midpoint c, raw slope
            nn.init.zeros_(self.dose_head.weight)
            nn.init.constant_(self.dose_head.bias, 0.0)
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
        covs = cov.unsqueeze(1).expand(K, C, cov.shape[-1])
        dose = dose_t.unsqueeze(-1)
        if self.hill:
            h = self.trunk(torch.cat([feats, covs], -1))
            logits = self.logit(torch.cat([h, dose], -1))
            c, raw = self.dose_head(h).unbind(-1)
            slope = _INIT_SLOPE * F.softplus(raw) / F.softplus(torch.zeros((), device=raw.device))
            shifts = self.shift(h) * torch.sigmoid(
                slope.unsqueeze(-1) * (dose - 0.5 - c.unsqueeze(-1))
            )
        else:
            h = self.trunk(torch.cat([feats, dose, covs], -1))
            logits = self.logit(h)
            shifts = self.shift(h)
        has_gene = comp_gene >= 0
        if has_gene.any():
            onehot = torch.zeros_like(logits)
            onehot.scatter_(
                -1, comp_gene.clamp_min(0).unsqueeze(-1), has_gene.unsqueeze(-1).to(logits.dtype)
            )
            logits = logits + self.self_logit * onehot
        return logits, shifts
