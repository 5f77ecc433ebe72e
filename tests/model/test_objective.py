"""The exact marginal against brute-force enumeration, and gradients against finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gimcli.model.causal import LinearSEM
from gimcli.model.module import CellBatch, ContextBatch, GIMModule
from gimcli.model.objective import (
    exact_log_marginal,
    exact_marginal,
    gene_loglik,
    sufficient_stats,
)


@pytest.fixture(autouse=True)
def _float64():
    """Brute force in float64, for these tests only: a module-level set_default_dtype leaked into
    every test collected after this file (float64 modules meeting float32 data)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _normal_logpdf(x, mu, s):
    return -0.5 * math.log(2 * math.pi) - math.log(s) - (x - mu) ** 2 / (2 * s * s)


def _tiny_problem(seed=0, K=3, C=2, d=3, n=5):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(K * n, d, generator=g)
    ctx = torch.arange(K).repeat_interleave(n)
    logits = torch.randn(K, C, d, generator=g)
    shifts = torch.randn(K, C, d, generator=g) * 2
    mask = torch.tensor([[True, True], [True, False], [False, False]])[:K]
    log_sigma = torch.randn(d, generator=g) * 0.3
    return r, ctx, logits, shifts, mask, log_sigma


def test_gene_loglik_matches_sum_of_normal_logpdfs():
    r, ctx, *_, log_sigma = _tiny_problem()
    S1, S2, n = sufficient_stats(r, ctx, 3)
    mu = torch.tensor([0.3, -1.0, 2.0])
    got = gene_loglik(S1, S2, n[:, None], mu, log_sigma)
    for k in range(3):
        for j in range(3):
            want = sum(
                _normal_logpdf(float(r[i, j]), float(mu[j]), math.exp(float(log_sigma[j])))
                for i in range(len(r))
                if ctx[i] == k
            )
            assert abs(float(got[k, j]) - want) < 1e-9


@pytest.mark.parametrize("tau,spike", [(None, None), (0.8, None), (0.8, 0.3)])
def test_exact_marginal_equals_brute_force_enumeration(tau, spike):
    """Sum over every joint assignment of component targets z_cj, per context and gene; with shift
    sds, each context's n cells are jointly N(mu 1, sigma^2 I + v 1 1^T), v = spike^2 + |z| tau^2,
    and the posterior mean shift is the Gaussian conditional mean."""
    r, ctx, logits, shifts, mask, log_sigma = _tiny_problem()
    cost = 0.7
    lt = None if tau is None else torch.full((3,), math.log(tau))
    ls = None if spike is None else torch.full((3,), math.log(spike))
    S1, S2, n = sufficient_stats(r, ctx, 3)
    got = exact_marginal(S1, S2, n, logits, shifts, mask, log_sigma, cost, lt, ls)
    # training's log marginal alone is the same number
    lm = exact_log_marginal(S1, S2, n, logits, shifts, mask, log_sigma, cost, lt, ls)
    assert torch.equal(lm, got.log_marginal)
    for k in range(3):
        comps = [c for c in range(2) if mask[k, c]]
        for j in range(3):
            s = math.exp(float(log_sigma[j]))
            x = r[ctx == k, j]
            ones = torch.ones(len(x))
            total, any_mass, comp_mass, u_target, u_null = 0.0, 0.0, [0.0, 0.0], 0.0, 0.0
            for z in itertools.product([0, 1], repeat=len(comps)):
                p = 1.0
                mu = 0.0
                for c, zc in zip(comps, z, strict=True):
                    pi = float(torch.sigmoid(logits[k, c, j]))
                    p *= pi if zc else 1 - pi
                    mu += zc * float(shifts[k, c, j])
                v = (spike or 0.0) ** 2 + sum(z) * (tau or 0.0) ** 2
                cov = s * s * torch.eye(len(x)) + v * torch.outer(ones, ones)
                like = math.exp(torch.distributions.MultivariateNormal(mu * ones, cov).log_prob(x))
                u_mean = mu + float(
                    v * ones @ torch.linalg.solve(cov, x - mu * ones)
                )  # E[u | z, cells]
                w = p * like * math.exp(-cost * sum(z))
                total += w
                if any(z):
                    any_mass += w
                    u_target += w * u_mean
                else:
                    u_null = u_mean
                for c, zc in zip(comps, z, strict=True):
                    if zc:
                        comp_mass[c] += w
            assert abs(float(got.log_marginal[k, j]) - math.log(total)) < 1e-8
            assert abs(float(got.post_any[k, j]) - any_mass / total) < 1e-8
            if comps:
                want_lo = math.log(any_mass) - math.log(total - any_mass)
                assert abs(float(got.log_odds[k, j]) - want_lo) < 1e-7
            assert abs(float(got.u_target[k, j]) - u_target / total) < 1e-8
            assert abs(float(got.u_null[k, j]) - u_null) < 1e-8
            for c in comps:
                assert abs(float(got.post_component[k, c, j]) - comp_mass[c] / total) < 1e-8


def test_log_odds_keep_ranking_where_the_probability_saturates():
    """Two genes with mean residuals of 3 and 6 sd over 50 cells: both have posterior 1.0 in
    float32 (a tie: any ranking among them is arbitrary); their log-odds order them by evidence."""
    torch.set_default_dtype(torch.float32)
    n = torch.tensor([50.0])
    S1 = torch.tensor([[150.0, 300.0, 0.0]])
    S2 = S1 * S1 / n + n  # unit within-context variance
    logits, shifts = torch.zeros(1, 1, 3), torch.zeros(1, 1, 3)
    mask = torch.tensor([[True]])
    got = exact_marginal(
        S1, S2, n, logits, shifts, mask, torch.zeros(3), 1.0, torch.zeros(3), torch.full((3,), -2.0)
    )
    assert float(got.post_any[0, 0]) == float(got.post_any[0, 1]) == 1.0
    lo = got.log_odds[0]
    assert 100 < float(lo[0]) < float(lo[1]) and float(lo[1]) > 3 * float(lo[0])
    assert float(lo[2]) < -2  # no shift: evidence against a target


def test_control_context_has_no_intervention():
    r, ctx, logits, shifts, mask, log_sigma = _tiny_problem()
    S1, S2, n = sufficient_stats(r, ctx, 3)
    got = exact_marginal(S1, S2, n, logits, shifts, mask, log_sigma, 0.0, torch.zeros(3))
    want = gene_loglik(S1[2], S2[2], n[2], torch.zeros(3), log_sigma)
    assert torch.allclose(got.log_marginal[2], want)
    assert torch.all(got.post_any[2] < 1e-6)


def test_sem_likelihood_is_a_normalised_density():
    """log p(x|u) of the SEM equals the Gaussian density of x = A^{-1}(b + u + eps)."""
    torch.manual_seed(0)
    sem = LinearSEM(3)
    with torch.no_grad():
        sem.B.copy_(torch.tensor([[0, 0.5, 0], [0, 0, -0.4], [0.3, 0, 0]]))
        sem.b.copy_(torch.tensor([0.1, -0.2, 0.3]))
        sem.log_sigma.copy_(torch.tensor([0.0, -0.3, 0.2]))
    x = torch.randn(4, 3)
    u = torch.tensor([1.0, 0.0, -0.5])
    r = sem.residuals(x)
    ours = 4 * sem.logdet() + sum(
        gene_loglik(r[:, j].sum(), (r[:, j] ** 2).sum(), 4.0, u[j], sem.log_sigma[j])
        for j in range(3)
    )
    Ainv = torch.linalg.inv(sem.A())
    cov = Ainv @ torch.diag(torch.exp(2 * sem.log_sigma)) @ Ainv.T
    mvn = torch.distributions.MultivariateNormal(sem.mean(u[None])[0], covariance_matrix=cov)
    assert torch.allclose(ours, mvn.log_prob(x).sum(), atol=1e-10)


def test_loss_gradients_match_finite_differences():
    torch.manual_seed(1)
    d, K, C, F = 4, 3, 2, 5
    module = GIMModule(d, F, 1, hidden=6, n_layers=1).double()
    with torch.no_grad():
        module.sem.B.copy_(torch.randn(d, d) * 0.2)
        module.net.logit.weight.normal_(std=0.5)
    contexts = ContextBatch(
        feats=torch.randn(K, C, F),
        dose_t=torch.rand(K, C),
        cov=torch.ones(K, 1),
        comp_gene=torch.tensor([[0, -1], [1, 2], [-1, -1]]),
        comp_mask=torch.tensor([[True, False], [True, True], [False, False]]),
    )
    batch = CellBatch(
        x=torch.randn(12, d),
        ctx=torch.arange(K).repeat_interleave(4),
        scale=torch.tensor([1.0, 2.0, 1.5]),
        contexts=contexts,
    )

    params = [
        module.sem.B,
        module.sem.b,
        module.sem.log_sigma,
        module.net.logit.weight,
        module.net.shift.bias,
    ]

    def f(*ps):
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, v in zip(params, ps, strict=True):
                p.copy_(v)
        out = module.loss(batch, mode="exact", target_cost=1.0, l1_graph=0.0).loss
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
        return out

    module.zero_grad()
    module.loss(batch, mode="exact", target_cost=1.0, l1_graph=0.0).loss.backward()
    eps = 1e-6
    for i, p in enumerate(params):
        flat = p.detach().clone().view(-1)
        for idx in range(0, flat.numel(), max(1, flat.numel() // 6)):
            vals_p = [q.detach().clone() for q in params]
            vals_m = [q.detach().clone() for q in params]
            vals_p[i].view(-1)[idx] += eps
            vals_m[i].view(-1)[idx] -= eps
            fd = float((f(*vals_p) - f(*vals_m)).detach()) / (2 * eps)
            assert abs(fd - float(p.grad.view(-1)[idx])) < 1e-6 * max(1.0, abs(fd)), (i, idx)


def test_hill_dose_response_is_monotone_in_dose():
    from gimcli.model.interventions import InterventionNet

    torch.manual_seed(0)
    net = InterventionNet(5, 2, 7, hidden=8, n_layers=1, dose_response="hill")
    with torch.no_grad():
        net.dose_head.weight.normal_()
        net.dose_head.bias.normal_()
    feats = torch.randn(1, 1, 5).expand(11, 1, 5)
    dose = torch.linspace(0, 1, 11).unsqueeze(1)
    _, shifts = net(feats, dose, torch.ones(11, 2), -torch.ones(11, 1, dtype=torch.long))
    mag = shifts[:, 0].abs()
    assert torch.all(mag[1:] >= mag[:-1] - 1e-6)  # the effect grows with dose, never overshoots
    assert mag[-1].sum() > mag[0].sum()


def test_shift_prior_is_a_gaussian_log_density_that_pulls_untargeted_shifts_to_zero():
    """loss(sd) - loss(0) = sum of m^2 / (2 sd^2) over the present components, per cell; on a gene
    the network calls a non-target (pi ~ e^-30) the likelihood's gradient on its shift vanishes
    (Adam would still follow it at full step: the drift of bench/NOTES.md item 19) and the
    prior's points back to zero."""
    torch.manual_seed(2)
    d, K, C, F = 3, 3, 2, 4
    module = GIMModule(d, F, 1, hidden=5, n_layers=1).double()
    with torch.no_grad():
        module.net.logit.bias[2] = -30.0
        module.net.shift.bias.copy_(torch.tensor([0.5, -1.0, 4.0]))
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    contexts = ContextBatch(
        feats=torch.randn(K, C, F),
        dose_t=torch.rand(K, C),
        cov=torch.ones(K, 1),
        comp_gene=torch.full((K, C), -1),
        comp_mask=mask,
    )
    batch = CellBatch(
        x=torch.randn(12, d),
        ctx=torch.arange(K).repeat_interleave(4),
        scale=torch.tensor([1.0, 2.0, 1.5]),
        contexts=contexts,
    )
    kw = dict(mode="exact", target_cost=1.0, l1_graph=0.0)
    with torch.no_grad():
        _, m = module.interventions(contexts)
    n_tot = 4 * (1.0 + 2.0 + 1.5)
    want = float((m[mask] ** 2).sum()) / (2 * 10.0**2 * n_tot)
    got = module.loss(batch, shift_prior_sd=10.0, **kw).loss - module.loss(batch, **kw).loss
    assert abs(float(got.detach()) - want) < 1e-12
    grads = {}
    for sd in (0.0, 10.0):
        module.zero_grad()
        module.loss(batch, shift_prior_sd=sd, **kw).loss.backward()
        grads[sd] = float(module.net.shift.bias.grad[2])
    assert abs(grads[0.0]) < 1e-10
    assert grads[10.0] > 1e-4  # descent lowers the untargeted gene's shift of about +4 to 0
