"""The GIM objective from per-context sufficient statistics.

For a context k with n_k cells and residuals r_i = A x_i - b, the targets of its components are
integrated out per gene (all cells of a context share one intervention):

  log p(X_k) = n_k log|det A| + sum_j logsumexp_S [ log w_S,j + sum_i log N(r_ij; mu_S,j, s_j^2) - c|S| ]

over subsets S of the context's components that target gene j (2 terms for a single perturbation,
4 for a pair), with w_S the Bernoulli prior weight, mu_S = sum_{c in S} m_c (shifts add), and c the
cost in nats of each used target. sum_i log N needs only S1 = sum_i r_i and S2 = sum_i r_i^2.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from gimcli.model.causal import LOG_2PI

# Stands in for log(0) of an absent component: -inf would give 0 * -inf = nan in the einsums.
_LOG_ZERO = -1e4


def sufficient_stats(
    r: torch.Tensor, ctx: torch.Tensor, n_contexts: int, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S1, S2 (K x d) and n (K) from cell residuals; `scale` (K) corrects for subsampled cells
    so the statistics estimate the whole context's."""
    d = r.shape[1]
    S1 = r.new_zeros(n_contexts, d).index_add_(0, ctx, r)
    S2 = r.new_zeros(n_contexts, d).index_add_(0, ctx, r * r)
    n = r.new_zeros(n_contexts).index_add_(0, ctx, torch.ones_like(ctx, dtype=r.dtype))
    if scale is not None:
        S1, S2, n = S1 * scale[:, None], S2 * scale[:, None], n * scale
    return S1, S2, n


def gene_loglik(S1, S2, n, mu, log_sigma):
    """sum_i log N(r_ij; mu_j, sigma_j^2) from sufficient statistics (broadcasts)."""
    inv_var = torch.exp(-2 * log_sigma)
    return -0.5 * n * (LOG_2PI + 2 * log_sigma) - 0.5 * inv_var * (S2 - 2 * mu * S1 + n * mu * mu)


def subsets(C: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """All subsets of C components as a (2^C, C) 0/1 matrix; row 0 is the empty set."""
    rows = list(itertools.product([0, 1], repeat=C))
    rows.sort(key=sum)
    return torch.tensor(rows, device=device, dtype=dtype)


def exact_marginal(S1, S2, n, logits, shifts, comp_mask, log_sigma, target_cost: float):
    """Per context and gene, the log marginal likelihood with targets summed out.

    Returns (log_marginal (K,d), posterior per component (K,C,d), posterior of any target (K,d)).
    """
    K, C, d = logits.shape
    P = subsets(C, logits.device, logits.dtype)
    m = comp_mask.unsqueeze(-1)
    lp1 = torch.where(m, F.logsigmoid(logits), torch.full_like(logits, _LOG_ZERO))
    lp0 = torch.where(m, F.logsigmoid(-logits), torch.zeros_like(logits))
    logw = torch.einsum("pc,kcd->kpd", P, lp1) + torch.einsum("pc,kcd->kpd", 1 - P, lp0)
    mu = torch.einsum("pc,kcd->kpd", P, shifts * m)
    ll = gene_loglik(S1[:, None], S2[:, None], n[:, None, None], mu, log_sigma)
    joint = logw + ll - target_cost * P.sum(1)[None, :, None]
    lm = torch.logsumexp(joint, 1)
    post = torch.softmax(joint, 1)
    return lm, torch.einsum("kpd,pc->kcd", post, P), 1 - post[:, 0]


def relaxed_loglik(
    S1, S2, n, logits, shifts, comp_mask, log_sigma, target_cost: float, temperature: float,
    generator: torch.Generator | None = None,
):
    """One-sample relaxed-Bernoulli (Gumbel-sigmoid) estimate of E_{z ~ pi}[log p(X | z)] - c E|z|."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    z = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    z = z * comp_mask.unsqueeze(-1)
    mu = (z * shifts).sum(1)
    return gene_loglik(S1, S2, n[:, None], mu, log_sigma) - target_cost * z.sum(1)
