"""Linear cyclic structural equation model over standardised genes.

x = B x + b + u + eps,  diag(B) = 0,  eps ~ N(0, diag(sigma^2)).
With A = I - B and r = A x - b:  log p(x | u) = log|det A| + sum_j log N(r_j; u_j, sigma_j^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)
# Floor of the noise sd (standardised units, where the pooled within-context sd is 1): a gene
# constant in every context (a forced-in gene never detected) would otherwise let sigma -> 0 and the
# likelihood -> +inf.
LOG_SIGMA_MIN = math.log(1e-2)


class LinearSEM(nn.Module):
    def __init__(self, d: int, *, fix_graph: bool = False):
        super().__init__()
        self.d = d
        self.fix_graph = fix_graph
        self.B = nn.Parameter(torch.zeros(d, d), requires_grad=not fix_graph)
        self.b = nn.Parameter(torch.zeros(d))
        self.log_sigma = nn.Parameter(torch.zeros(d))
        self.register_buffer("offdiag", 1.0 - torch.eye(d))

    def log_sd(self) -> torch.Tensor:
        """log sigma per gene, floored (LOG_SIGMA_MIN)."""
        return self.log_sigma.clamp_min(LOG_SIGMA_MIN)

    def weights(self) -> torch.Tensor:
        """B with its diagonal held at zero (no self-loops)."""
        return self.B * self.offdiag

    def A(self) -> torch.Tensor:
        return torch.eye(self.d, device=self.B.device, dtype=self.B.dtype) - self.weights()

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """r = A x - b for rows x (cells x genes)."""
        return x @ self.A().T - self.b

    def logdet(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.A())[1]

    def mean(self, u: torch.Tensor) -> torch.Tensor:
        """Equilibrium mean A^{-1}(b + u) for rows u (contexts x genes)."""
        return torch.linalg.solve(self.A(), (self.b + u).T).T

    def propagate(self, u: torch.Tensor) -> torch.Tensor:
        """A^{-1} u: the total (direct + downstream) effect of shifts u."""
        return torch.linalg.solve(self.A(), u.T).T

    def sample(self, u: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cells x = A^{-1}(b + u + eps), one row of u per cell."""
        eps = torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
        return self.mean(u + eps * self.log_sd().exp())

    @torch.no_grad()
    def diagnostics(self) -> Diagnostics:
        """Conditioning of A and feedback strength of B (reported; rho >= 1 means B is no
        longer a stable feedback system, though A stays invertible)."""
        A = self.A().double()
        sv = torch.linalg.svdvals(A)
        rho = torch.linalg.eigvals(self.weights().double()).abs().max()
        return Diagnostics(
            A_min_singular=float(sv.min()),
            A_condition=float(sv.max() / sv.min().clamp_min(1e-30)),
            B_spectral_radius=float(rho),
            B_nnz=int((self.weights().abs() > DIAGNOSTIC_EDGE).sum()),
        )


# |B| above which an edge is counted in the diagnostics (standardised units).
DIAGNOSTIC_EDGE = 0.05


@dataclass(frozen=True)
class Diagnostics:
    """The causal model's health after training (model.json "diagnostics", the report)."""

    A_min_singular: float  # smallest singular value of A = I - B
    A_condition: float
    B_spectral_radius: float
    B_nnz: int  # edges with |B| > DIAGNOSTIC_EDGE; JSON key "B_nnz_0.05"

    def to_dict(self) -> dict[str, float]:
        return {
            "A_min_singular": self.A_min_singular,
            "A_condition": self.A_condition,
            "B_spectral_radius": self.B_spectral_radius,
            "B_nnz_0.05": self.B_nnz,
        }

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Diagnostics:
        return cls(
            A_min_singular=d["A_min_singular"],
            A_condition=d["A_condition"],
            B_spectral_radius=d["B_spectral_radius"],
            B_nnz=d["B_nnz_0.05"],
        )
