"""The GIM objective from per-context sufficient statistics.

For a context k with n_k cells and residuals r_i = A x_i - b, the targets of its components are
integrated out per gene (all cells of a context share one intervention):

  log p(X_k) = n_k log|det A|
               + sum_j logsumexp_S [ log w_S,j + sum_i log N(r_ij; mu_S,j, s_j^2) - c|S| ]

over subsets S of the context's components that target gene j (2 terms for a single perturbation,
4 for a pair), with w_S the Bernoulli prior weight, mu_S = sum_{c in S} m_c (shifts add), and c the
cost in nats of each used target. sum_i log N needs only S1 = sum_i r_i and S2 = sum_i r_i^2.

Hierarchical spike-and-slab shifts (`log_tau`, `log_spike`): a context's shift is drawn once,
u_j ~ N(mu_S,j, spike_j^2 + |S| tau_j^2) (mu = 0 for the empty set S), and integrated out in closed
form. The evidence for a target then rests on the context's own mean residual, not on the network
having learned its shift yet: with u = mu exactly, a gene whose shift the network has not learned
gets posterior ~0, hence no gradient to learn that shift, and stays a missed target
(bench/NOTES.md).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

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


def gene_loglik(S1, S2, n, mu, log_sigma, var=None):
    """sum_i log N(r_ij; u_j, sigma_j^2) from sufficient statistics (broadcasts), with u_j = mu_j,
    or, given `var`, u_j ~ N(mu_j, var_j) shared by the n cells and integrated out: the sum of
    `_within_loglik` (the cells' scatter about their own mean) and `_mean_loglik` (their mean)."""
    return _within_loglik(S1, S2, n, log_sigma) + _mean_loglik(S1, n, mu, log_sigma, var)


def _within_loglik(S1, S2, n, log_sigma):
    """-n log(2 pi sigma^2) / 2 - (S2 - S1^2 / n) / (2 sigma^2): the part of the likelihood that no
    intervention changes, so the exact marginal adds it once, outside its sum over subsets."""
    inv_var = torch.exp(-2 * log_sigma)
    return -0.5 * n * (LOG_2PI + 2 * log_sigma) - 0.5 * inv_var * (S2 - S1 * S1 / n)


def _mean_loglik(S1, n, mu, log_sigma, var=None):
    """The mean residual's part: -n D^2 / (2 sigma^2 (1 + a)) - log(1 + a) / 2, with
    D = S1/n - mu and a = n var / sigma^2 (a = 0 without `var`)."""
    inv_var = torch.exp(-2 * log_sigma)
    D = S1 / n - mu
    if var is None:
        return -0.5 * n * D * D * inv_var
    a = n * var * inv_var
    return -0.5 * n * D * D * inv_var / (1 + a) - 0.5 * torch.log1p(a)


def shift_posterior_mean(S1, n, mu, log_sigma, var):
    """E[u_j | cells] under u_j ~ N(mu_j, var_j): mu shrunk towards the mean residual S1/n."""
    a = n * var * torch.exp(-2 * log_sigma)
    return mu + (S1 / n - mu) * a / (1 + a)


def subsets(C: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """All subsets of C components as a (2^C, C) 0/1 matrix; row 0 is the empty set."""
    rows = list(itertools.product([0, 1], repeat=C))
    rows.sort(key=sum)
    return torch.tensor(rows, device=device, dtype=dtype)


class Marginal(NamedTuple):
    log_marginal: torch.Tensor  # (K, d)
    post_component: torch.Tensor  # (K, C, d) posterior that component c targets gene j
    post_any: torch.Tensor  # (K, d) posterior that gene j is targeted at all
    u_target: torch.Tensor  # (K, d) E[u_j 1{j targeted}]: posterior mean direct shift from targets
    u_null: torch.Tensor  # (K, d) E[u_j | j not targeted] (the spike's shift; 0 without one)
    # (K, d) posterior log-odds that gene j is targeted at all: log P(any) - log P(none), computed
    # from the joint in log space, so it keeps ranking genes whose probability rounds to 1
    log_odds: torch.Tensor


def shift_var(n_targets: torch.Tensor, log_tau=None, log_spike=None):
    """Variance of a context's shift u_j given how many of its components target j (None: u is
    exactly the mean, for the point-mass spike and fixed shifts of format-1 models)."""
    if log_tau is None and log_spike is None:
        return None
    v = 0.0 if log_tau is None else n_targets * torch.exp(2 * log_tau)
    return v + (0.0 if log_spike is None else torch.exp(2 * log_spike))


def _subset_joint(
    S1, S2, n, logits, shifts, comp_mask, log_sigma, target_cost, log_tau=None, log_spike=None
):
    """(joint, within, mu, var, P): the log joint of each subset P of a context's components
    targeting gene j (K, 2^C, d), without the subset-independent `_within_loglik` (K, d)."""
    K, C, d = logits.shape
    P = subsets(C, logits.device, logits.dtype)
    m = comp_mask.unsqueeze(-1)
    lp1 = torch.where(m, F.logsigmoid(logits), torch.full_like(logits, _LOG_ZERO))
    lp0 = torch.where(m, F.logsigmoid(-logits), torch.zeros_like(logits))
    logw = torch.einsum("pc,kcd->kpd", P, lp1) + torch.einsum("pc,kcd->kpd", 1 - P, lp0)
    mu = torch.einsum("pc,kcd->kpd", P, shifts * m)
    nn_ = n[:, None, None]
    var = shift_var(P.sum(1)[None, :, None], log_tau, log_spike)
    ll = _mean_loglik(S1[:, None], nn_, mu, log_sigma, var)
    joint = logw + ll - target_cost * P.sum(1)[None, :, None]
    return joint, _within_loglik(S1, S2, n[:, None], log_sigma), mu, var, P


def exact_log_marginal(*args, **kwargs) -> torch.Tensor:
    """`exact_marginal(...).log_marginal` alone (K, d), from the same arguments: what training
    needs, without the posteriors."""
    joint, within, *_ = _subset_joint(*args, **kwargs)
    return torch.logsumexp(joint, 1) + within


def exact_marginal(
    S1,
    S2,
    n,
    logits,
    shifts,
    comp_mask,
    log_sigma,
    target_cost: float,
    log_tau=None,
    log_spike=None,
) -> Marginal:
    """Per context and gene, the log marginal likelihood with targets and shifts summed out:
    u_j ~ N(sum_{c in S} m_cj, spike^2 + |S| tau^2) for the subset S of components that target j
    (shift_var)."""
    joint, within, mu, var, P = _subset_joint(
        S1, S2, n, logits, shifts, comp_mask, log_sigma, target_cost, log_tau, log_spike
    )
    lm = torch.logsumexp(joint, 1) + within
    post = torch.softmax(joint, 1)
    nn_ = n[:, None, None]
    u = mu if var is None else shift_posterior_mean(S1[:, None], nn_, mu, log_sigma, var)
    return Marginal(
        lm,
        torch.einsum("kpd,pc->kcd", post, P),
        1 - post[:, 0],
        (post[:, 1:] * u[:, 1:]).sum(1),
        u[:, 0],
        torch.logsumexp(joint[:, 1:], 1) - joint[:, 0],
    )


def relaxed_loglik(
    S1,
    S2,
    n,
    logits,
    shifts,
    comp_mask,
    log_sigma,
    target_cost: float,
    temperature: float,
    generator: torch.Generator | None = None,
    log_tau=None,
    log_spike=None,
):
    """One-sample relaxed-Bernoulli (Gumbel-sigmoid) estimate of
    E_{z ~ pi}[log p(X | z)] - c E|z|."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    z = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    z = z * comp_mask.unsqueeze(-1)
    mu = (z * shifts).sum(1)
    var = shift_var(z.sum(1), log_tau, log_spike)
    return gene_loglik(S1, S2, n[:, None], mu, log_sigma, var) - target_cost * z.sum(1)
