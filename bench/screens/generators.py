"""Simulated screens sized like real ones, with hidden rules a model can learn at this scale.

Every generator returns a `Screen`: the cells (train and held-out together), the training mask,
what each held-out context tests (`kind`) and the unit it is averaged over (`unit`: a held-out
drug, KO or pair), the true direct targets of every context, and `sample(context, n, rng)`, which
draws fresh cells of any context from the true model (the oracle's cells).

**Drug screens** (`drug_screen`). Drug k has features f_k: continuous (`n_features` dims, standard
normal) or the Morgan fingerprint (radius 2, 2048 bits, as gim featurises SMILES) of a real
sci-Plex3 compound. The rule reads a latent z_k in R^3: the first 3 feature dims (the other dims
are noise), or the top 3 principal components of the fingerprints (standardised; a linear function
of the bits). `n_candidates` genes can be targets; candidate gene j is a target of drug k iff
w_j . z_k > t_j, w_j a unit vector on 2 of the 3 latent dims and t_j the 75% quantile of
w_j . z over the screen's drugs (about 2 targets per drug, a half-space rule). Direction: fixed per
candidate gene (sign_j). Potency: the maximal shift is sign_j * s * (1 + 0.3 tanh(v_j . z_k)) noise
sd (s = `shift`), reached through a Hill curve of dose with slope 1.5 and
log10 EC50 = mid + 0.8 tanh(c . z_k) (mid = the middle of the dose range). So targets, direction
and potency are smooth, low-dimensional functions of the features that 60-200 drugs determine.

Mechanisms behind the rule:

- `dag` / `cyclic`: linear SEM x = B x + u + eps (about 1.5 parents per gene, spectral radius
  <= 0.7), shift interventions u_j = shift_j * sigma_j, expression = base + 0.4 x (log-normalised,
  clipped at 0): gim's own model class.
- `mixed`: the cyclic SEM with each candidate gene's mechanism fixed (a third each): a shift; a
  do-intervention of strength h (the Hill fraction): x_j = (1 - h) (B_j x + eps_j) + h v_j with
  v_j = the signed shift, the incoming edges cut in proportion and the gene's noise down to 30%;
  or a noise-scale intervention (eps_j sd times 1 + 1.5 h, the mean unchanged).
- `nonlinear`: a gene-regulatory DAG of Hill-type mechanisms on log rates,
  x_j = b_j + sum_i w_ij (2 H(exp(x_i - b_i)) - 1) + u_j + eps_j, H(a) = a^2 / (1 + a^2), so each
  parent moves a child by at most |w_ij| (0.6-1.2 log units) and saturates; shifts u_j in log units
  (0.4 x the sd-scaled shift); counts are negative binomial (gamma-Poisson, dispersion 8) around
  a log-normal library size (mean 3000 over the genes).

Held out: `n_held` drugs entirely (every dose; "unseen drug") and the dose `held_dose` of 40% of
the training drugs ("unseen dose"). Direct targets of a context are the candidate genes its drug
hits at a Hill fraction >= 0.1 (for `mixed`, all three kinds; a noise-scale target has no mean
shift).

**Knock-out screen** (`ko_screen`). The Hill DAG above with counts; a knock-out sets the gene's
log rate to b_j + log(0.1) (incoming edges cut). `n_ko` genes that have children are knocked out
alone, `n_pairs` random pairs of them together; held out: `n_held_pairs` pairs ("unseen pair") and
`n_held_ko` single knock-outs with no pair containing them ("unseen KO", a measured gene never
perturbed in training). Conditions are named by the knocked-out genes (identity features).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli.simulation import hill, random_graph

LATENT = 3  # dims of z the rule reads
SLOPE = 1.5  # Hill slope of the dose response
# A target counts as a direct target of a context (the truth the AUPRC is scored on) when its
# Hill fraction is at least this: below it the effect is a few hundredths of the top dose's.
MIN_STRENGTH = 0.1


@dataclass
class Context:
    """One condition at one dose: what the true model does to each gene."""

    condition: str
    dose: str  # "0" for controls and dose-free screens
    kind: str  # train | unseen drug | unseen dose | unseen pair | unseen KO
    unit: str  # what it is averaged over (drug, KO, pair)
    shift: np.ndarray  # (d,) shift interventions (sd units for linear, log units for Hill)
    do_strength: np.ndarray  # (d,) 0..1
    do_value: np.ndarray  # (d,)
    noise_scale: np.ndarray  # (d,) multiplier of the noise sd
    targets: dict[str, float] = field(default_factory=dict)  # gene -> signed effect


@dataclass
class Screen:
    name: str
    adata: ad.AnnData
    mask: np.ndarray  # training cells
    keys: dict  # DataKeys fields (dose_key, feature_keys / smiles_key)
    contexts: list[Context]
    sample: Callable[[Context, int, np.random.Generator], np.ndarray] | None
    truth: pd.DataFrame | None  # condition, dose, gene, shift of every perturbed context
    info: str = ""

    def kind_of(self) -> dict[tuple[str, str], tuple[str, str]]:
        return {(c.condition, c.dose): (c.kind, c.unit) for c in self.contexts}


def _blank(d: int) -> dict:
    return {
        "shift": np.zeros(d),
        "do_strength": np.zeros(d),
        "do_value": np.zeros(d),
        "noise_scale": np.ones(d),
    }


class LinearSEM:
    """x = B x + c + s * sigma * eps per context (B's rows scaled down for do-interventions)."""

    def __init__(self, d: int, rng: np.random.Generator, *, kind: str):
        self.B = random_graph(d, rng, kind="dag" if kind == "dag" else "cyclic")
        self.sigma = rng.uniform(0.7, 1.0, d) * 0.5
        self.base = rng.uniform(2.0, 3.5, d)
        self.scale = 0.4
        self.counts = False

    def sample(self, ctx: Context, n: int, rng: np.random.Generator) -> np.ndarray:
        h = ctx.do_strength
        B = self.B * (1 - h)[:, None]
        c = (1 - h) * ctx.shift * self.sigma + h * ctx.do_value * self.sigma
        s = ctx.noise_scale * ((1 - h) + 0.3 * h)
        eps = rng.normal(size=(n, len(c))) * (s * self.sigma)
        x = np.linalg.solve(np.eye(len(c)) - B, (c + eps).T).T
        return np.clip(self.base + self.scale * x, 0, None).astype(np.float32)


def _hill_act(a: np.ndarray) -> np.ndarray:
    return a * a / (1.0 + a * a)


class HillGRN:
    """A DAG of Hill-type mechanisms on log rates, with negative-binomial counts."""

    def __init__(self, d: int, rng: np.random.Generator, *, library: float = 3000.0):
        B = random_graph(d, rng, kind="dag")
        self.W = np.sign(B) * rng.uniform(0.6, 1.2, B.shape) * (B != 0)
        self.order = _topological(self.W)
        p = np.exp(rng.uniform(np.log(5), np.log(200), d))
        self.b = np.log(p / p.sum() * library)
        self.sigma = rng.uniform(0.15, 0.3, d)
        self.counts = True

    def log_rates(self, ctx: Context, n: int, rng: np.random.Generator) -> np.ndarray:
        d = len(self.b)
        eps = rng.normal(size=(n, d)) * (self.sigma * ctx.noise_scale)
        x = np.zeros((n, d))
        for j in self.order:
            parents = np.flatnonzero(self.W[j])
            reg = (2 * _hill_act(np.exp(x[:, parents] - self.b[parents])) - 1) @ self.W[j, parents]
            free = self.b[j] + reg + ctx.shift[j] + eps[:, j]
            h = ctx.do_strength[j]
            x[:, j] = (1 - h) * free + h * (self.b[j] + ctx.do_value[j] + 0.3 * eps[:, j])
        return x

    def sample(self, ctx: Context, n: int, rng: np.random.Generator) -> np.ndarray:
        mu = np.exp(self.log_rates(ctx, n, rng)) * rng.lognormal(0.0, 0.25, (n, 1))
        lam = mu * rng.gamma(8.0, 1 / 8.0, mu.shape)
        return rng.poisson(lam).astype(np.float32)


def _topological(W: np.ndarray) -> list[int]:
    """Genes in an order where every parent (W[j, i] != 0) comes before its child."""
    d, done, order = len(W), set(), []
    while len(order) < d:
        for j in range(d):
            if j not in done and all(i in done for i in np.flatnonzero(W[j])):
                done.add(j)
                order.append(j)
    return order


# -- drug features -----------------------------------------------------------------------------
def sciplex_smiles() -> dict[str, str]:
    """The sci-Plex3 compounds (chemCPA's table of Srivatsan et al. 2020), by name."""
    from bench.sciplex import SCIPLEX

    t = pd.read_csv(
        SCIPLEX / "chemcpa_trapnell_drugs_smiles.csv", header=None, names=["name", "smiles", "p"]
    )
    t = t[t["name"] != "control"].drop_duplicates("name")
    return dict(zip(t["name"].astype(str), t["smiles"].astype(str), strict=True))


def _standardise(Z: np.ndarray) -> np.ndarray:
    return (Z - Z.mean(0)) / np.maximum(Z.std(0), 1e-9)


def drug_features(
    kind: str, n: int, n_features: int, rng: np.random.Generator
) -> tuple[list[str], np.ndarray | dict[str, str], np.ndarray]:
    """(names, features: an array (n, F) or a name -> SMILES dict, latent z (n, LATENT))."""
    if kind == "fingerprint":
        from gimcli.data.features import morgan_fingerprints

        pool = sciplex_smiles()
        names = sorted(rng.choice(sorted(pool), size=min(n, len(pool)), replace=False).tolist())
        fps = morgan_fingerprints({k: pool[k] for k in names})
        X = np.stack([fps[k] for k in names]).astype(float)
        U, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
        return names, {k: pool[k] for k in names}, _standardise(U[:, :LATENT] * S[:LATENT])
    F = rng.normal(size=(n, n_features))
    return [f"drug{k:03d}" for k in range(n)], F, F[:, :LATENT].copy()


@dataclass
class DrugRule:
    """The hidden map from latent z to targets, direction, potency (module docstring)."""

    genes: np.ndarray  # (T,) candidate target genes
    W: np.ndarray  # (T, LATENT)
    thr: np.ndarray  # (T,)
    sign: np.ndarray  # (T,)
    V: np.ndarray  # (T, LATENT)
    c: np.ndarray  # (LATENT,)
    mechanism: np.ndarray  # (T,) 0 shift, 1 do, 2 noise scale
    mid: float
    shift: float

    @classmethod
    def draw(cls, Z, d, n_candidates, doses, rng, *, shift=2.5, mixed=False) -> DrugRule:
        T = n_candidates
        W = np.zeros((T, LATENT))
        for t in range(T):
            dims = rng.choice(LATENT, 2, replace=False)
            W[t, dims] = rng.normal(size=2)
        W /= np.linalg.norm(W, axis=1, keepdims=True)
        thr = np.quantile(Z @ W.T, 0.75, axis=0)
        mech = np.arange(T) % 3 if mixed else np.zeros(T, int)
        return cls(
            genes=rng.choice(d, T, replace=False),
            W=W,
            thr=thr,
            sign=rng.choice([-1.0, 1.0], T),
            V=rng.normal(size=(T, LATENT)) / np.sqrt(LATENT),
            c=rng.normal(size=LATENT) / np.sqrt(LATENT),
            mechanism=rng.permutation(mech),
            mid=float(np.mean(np.log10(doses))),
            shift=shift,
        )

    def context(self, z: np.ndarray, dose: float, d: int, *, log_units: float = 1.0) -> dict:
        """The interventions of a drug with latent `z` at `dose` (a _blank dict) and its targets
        {gene index: signed size}."""
        out = _blank(d)
        hit = (self.W @ z) > self.thr
        h = hill(dose, 10 ** (self.mid + 0.8 * np.tanh(self.c @ z)), SLOPE)
        size = self.sign * self.shift * (1 + 0.3 * np.tanh(self.V @ z)) * log_units
        targets = {}
        for t in np.flatnonzero(hit):
            j = self.genes[t]
            if self.mechanism[t] == 0:
                out["shift"][j] = size[t] * h
            elif self.mechanism[t] == 1:
                out["do_strength"][j], out["do_value"][j] = h, size[t]
            else:
                out["noise_scale"][j] = 1 + 1.5 * h
            if h >= MIN_STRENGTH:
                targets[int(j)] = float(size[t] * h)
        return {**out, "targets": targets}


def _assemble(name, model, contexts, n_cells, n_control, genes, obs_extra, keys, seed, info):
    """Cells of every context (controls first) as an AnnData with the training mask."""
    rng = np.random.default_rng([seed, 7])
    X, rows = [], []
    for c in contexts:
        n = n_control if c.condition == "control" else n_cells
        X.append(model.sample(c, n, rng))
        rows += [(c.condition, c.dose, c.kind)] * n
    obs = pd.DataFrame(rows, columns=["condition", "dose", "_kind"])
    obs.index = [f"c{i}" for i in range(len(obs))]
    for col, fn in obs_extra.items():
        obs[col] = fn(obs["condition"])
    mask = (obs.pop("_kind") == "train").to_numpy()
    adata = ad.AnnData(sp.csr_matrix(np.concatenate(X)), obs=obs, var=pd.DataFrame(index=genes))
    truth = pd.DataFrame(
        [
            (c.condition, c.dose, c.condition, genes[j], s)
            for c in contexts
            for j, s in c.targets.items()
        ],
        columns=["condition", "dose", "component", "gene", "shift"],
    )
    for c in contexts:
        c.targets = {genes[j]: s for j, s in c.targets.items()}
    return Screen(name, adata, mask, keys, contexts, model.sample, truth, info)


def drug_screen(
    *,
    name: str,
    mechanism: str = "dag",
    features: str = "continuous",
    n_train: int = 100,
    n_held: int = 25,
    doses: tuple[float, ...] = (10.0, 100.0, 1000.0, 10000.0),
    held_dose: float = 1000.0,
    n_genes: int = 50,
    n_candidates: int = 8,
    n_features: int = 16,
    n_cells: int = 40,
    n_control: int = 400,
    seed: int = 0,
) -> Screen:
    rng = np.random.default_rng(seed)
    d = n_genes
    genes = [f"G{j:02d}" for j in range(d)]
    model = HillGRN(d, rng) if mechanism == "nonlinear" else LinearSEM(d, rng, kind=mechanism)
    names, F, Z = drug_features(features, n_train + n_held, n_features, rng)
    names = list(names)
    rule = DrugRule.draw(Z, d, n_candidates, doses, rng, mixed=mechanism == "mixed")
    perm = rng.permutation(len(names))
    held = {names[i] for i in perm[:n_held]}
    train_drugs = [names[i] for i in perm[n_held:]]
    dose_held = set(rng.choice(train_drugs, int(0.4 * len(train_drugs)), replace=False))
    contexts = [Context("control", "0", "train", "", **_blank(d))]
    log_units = 0.4 if mechanism == "nonlinear" else 1.0
    for k, drug in enumerate(names):
        for dz in doses:
            iv = rule.context(Z[k], dz, d, log_units=log_units)
            if drug in held:
                kind = "unseen drug"
            elif drug in dose_held and dz == held_dose:
                kind = "unseen dose"
            else:
                kind = "train"
            targets = iv.pop("targets")
            contexts.append(Context(drug, f"{dz:g}", kind, drug, **iv, targets=targets))
    if features == "fingerprint":
        smi = F
        extra = {"smiles": lambda c: c.map(lambda x: smi.get(x, "")).astype(str)}
        keys = {"dose_key": "dose", "smiles_key": "smiles"}
    else:
        table = pd.DataFrame(F, index=names, columns=[f"f{i}" for i in range(F.shape[1])])
        extra = {col: (lambda c, col=col: c.map(table[col]).astype(float)) for col in table}
        keys = {"dose_key": "dose", "feature_keys": list(table.columns)}
    info = (
        f"{mechanism} mechanism, {features} features, {len(train_drugs)} training + {n_held} "
        f"held-out drugs x {len(doses)} doses, {d} genes ({n_candidates} candidate targets), "
        f"{n_cells} cells per context, {n_control} controls"
    )
    return _assemble(name, model, contexts, n_cells, n_control, genes, extra, keys, seed, info)


def ko_screen(
    *,
    name: str = "ko",
    n_genes: int = 50,
    n_ko: int = 20,
    n_pairs: int = 40,
    n_held_pairs: int = 12,
    n_held_ko: int = 3,
    n_cells: int = 60,
    n_control: int = 500,
    seed: int = 0,
) -> Screen:
    rng = np.random.default_rng(seed)
    d = n_genes
    genes = [f"G{j:02d}" for j in range(d)]
    model = HillGRN(d, rng)
    has_child = np.flatnonzero((model.W != 0).any(0))
    ko = rng.choice(has_child, min(n_ko, len(has_child)), replace=False)
    held_ko = set(ko[:n_held_ko].tolist())
    rest = [g for g in ko if g not in held_ko]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_pairs:
        a, b = sorted(rng.choice(rest, 2, replace=False).tolist())
        pairs.add((a, b))
    pairs_l = sorted(pairs)
    held_pairs = {pairs_l[i] for i in rng.permutation(len(pairs_l))[:n_held_pairs]}
    contexts = [Context("control", "0", "train", "", **_blank(d))]

    def knock(js, kind, unit):
        iv = _blank(d)
        for j in js:
            iv["do_strength"][j], iv["do_value"][j] = 1.0, np.log(0.1)
        # gim keys a dose-free screen's contexts with dose "1" per component
        cond, dose = "+".join(genes[j] for j in js), "+".join("1" for _ in js)
        contexts.append(Context(cond, dose, kind, unit, **iv, targets={int(j): -2.3 for j in js}))

    for j in sorted(ko.tolist()):
        knock([j], "unseen KO" if j in held_ko else "train", genes[j])
    for p in pairs_l:
        knock(list(p), "unseen pair" if p in held_pairs else "train", "+".join(genes[j] for j in p))
    info = (
        f"Hill-type regulatory DAG, {d} genes, negative-binomial counts; {len(ko)} single KOs "
        f"({n_held_ko} held out), {n_pairs} KO pairs ({n_held_pairs} held out), {n_cells} cells "
        f"per condition, {n_control} controls; identity features"
    )
    return _assemble(name, model, contexts, n_cells, n_control, genes, {}, {}, seed, info)
