"""Perturbation features: RDKit Morgan fingerprints, numeric columns, or perturbation identity.

A *component* is one atomic perturbation (a drug, a guide's gene); a combination `A+B` has two.
Each feature spec maps component names to one row of a feature matrix and is stored in
model.json so that `predict` featurises new perturbations exactly as training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from gimcli.config import DataKeys, TrainConfig
from gimcli.errors import InputError

COMBO_SEP = "+"


def split_components(condition: str) -> list[str]:
    return [c.strip() for c in str(condition).split(COMBO_SEP) if c.strip()]


def _parse_smiles(smiles: str):
    from rdkit import Chem

    s = str(smiles).strip()
    mol = Chem.MolFromSmiles(s) if s else None
    if mol is None and " |" in s:  # ChemAxon CXSMILES suffix that older parsers reject
        mol = Chem.MolFromSmiles(s.split(" |", 1)[0])
    return mol


def morgan_fingerprints(
    smiles: dict[str, str], *, radius: int = 2, n_bits: int = 2048, chirality: bool = True
) -> dict[str, np.ndarray]:
    """Morgan fingerprints (largest fragment: counter-ions and salts stripped).

    Raises InputError naming *every* SMILES that does not parse.
    """
    from rdkit import RDLogger
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.Chem.MolStandardize import rdMolStandardize

    RDLogger.DisableLog("rdApp.*")
    gen = rdFingerprintGenerator.GetMorganGenerator(
        radius=radius, fpSize=n_bits, includeChirality=chirality
    )
    chooser = rdMolStandardize.LargestFragmentChooser()
    out, bad = {}, []
    for name, smi in smiles.items():
        mol = _parse_smiles(smi) if isinstance(smi, str) else None
        if mol is None:
            bad.append(f"{name}={smi!r}")
            continue
        mol = chooser.choose(mol)
        out[name] = gen.GetFingerprintAsNumPy(mol).astype(np.float32)
    if bad:
        raise InputError(f"unparseable SMILES for {len(bad)} perturbation(s): " + ", ".join(bad))
    return out


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity between binary rows of a (n x F) and b (m x F)."""
    a = (a > 0).astype(np.float32)
    b = (b > 0).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1, keepdims=True) + b.sum(1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-9)
    return an @ bn.T


@dataclass(frozen=True)
class FeatureSpec:
    """How component names become feature vectors (model.json "features"): new perturbations are
    featurised exactly as training did."""

    kind: Literal["smiles", "numeric", "identity"]
    components: list[str] = field(default_factory=list)  # training components, in row order
    # smiles
    radius: int = 2
    n_bits: int = 2048
    chirality: bool = True
    smiles: dict[str, str] = field(default_factory=dict)
    # numeric
    columns: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    sd: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(**d)

    @property
    def n_features(self) -> int:
        if self.kind == "smiles":
            return self.n_bits
        if self.kind == "numeric":
            return len(self.columns)
        return len(self.components)

    def featurize(
        self, descriptors: dict[str, str] | dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Feature rows of components from their descriptors (`component_descriptors`)."""
        if self.kind == "smiles":
            return self.featurize_smiles(descriptors)
        if self.kind == "numeric":
            return self.featurize_numeric(descriptors)
        rows = {n: i for i, n in enumerate(self.components)}
        eye = np.eye(len(self.components), dtype=np.float32)
        # a perturbation not seen in training has no identity: a zero row (GimRun predicts it by
        # the unseen knock-out rule, docs/design.md "Read-outs")
        zero = np.zeros(len(self.components), np.float32)
        return {n: eye[rows[n]] if n in rows else zero for n in descriptors}

    def featurize_smiles(self, smiles: dict[str, str]) -> dict[str, np.ndarray]:
        return morgan_fingerprints(
            smiles, radius=self.radius, n_bits=self.n_bits, chirality=self.chirality
        )

    def featurize_numeric(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m, s = np.asarray(self.mean, np.float32), np.asarray(self.sd, np.float32)
        return {
            k: ((np.asarray(v, np.float32) - m) / s).astype(np.float32) for k, v in values.items()
        }

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Applicability: Tanimoto for fingerprints, cosine otherwise."""
        return tanimoto(a, b) if self.kind == "smiles" else cosine(a, b)


def numeric_spec(columns: list[str], values: dict[str, np.ndarray]) -> FeatureSpec:
    mat = np.stack(list(values.values()))
    sd = mat.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return FeatureSpec(
        kind="numeric",
        components=list(values),
        columns=list(columns),
        mean=mat.mean(0).tolist(),
        sd=sd.tolist(),
    )


def read_feature_csv(path: str, *, smiles: bool = False) -> pd.DataFrame:
    """A features CSV: a `name` column plus `smiles` (required with `smiles=True`) or numeric
    columns (+ optional dose/covariates)."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except Exception as e:
        raise InputError(f"{path}: cannot read as CSV ({e})") from e
    cols = {c.lower(): c for c in df.columns}
    if "name" not in cols:
        raise InputError(f"{path}: missing column 'name' (have {list(df.columns)})")
    df = df.rename(columns={cols["name"]: "name"})
    if "smiles" in cols:
        df = df.rename(columns={cols["smiles"]: "smiles"})
    if df["name"].isna().any():
        raise InputError(
            f"{path}: empty 'name' in row(s) {df.index[df['name'].isna()].tolist()[:10]}"
        )
    df["name"] = df["name"].astype(str)
    if smiles:
        require_smiles_column(df, where=str(path))
    return df


def require_smiles_column(table: pd.DataFrame, *, where: str) -> None:
    if "smiles" not in table.columns:
        raise InputError(f"{where}: missing column 'smiles'")


# -- descriptors: what featurisation reads, for training, prediction and evaluation alike -------
def _single_rows(obs: pd.DataFrame, perturbation_key: str) -> pd.Series:
    """Each cell's perturbation as a name: a component is described by the cells of it alone
    (SMILES may contain '+', so a combination's row cannot describe its components)."""
    return obs[perturbation_key].astype(str).str.strip()


def smiles_descriptors(
    names: list[str],
    *,
    obs: pd.DataFrame | None = None,
    perturbation_key: str = "condition",
    smiles_key: str | None = None,
    table: pd.DataFrame | None = None,
) -> dict[str, str]:
    """SMILES of each name: from `table` (columns name, smiles) when given, else from
    obs[smiles_key] (the first non-empty value on the cells of that component alone)."""
    if table is not None:
        require_smiles_column(table, where="the features table")
        smiles = dict(zip(table["name"], table["smiles"], strict=True))
        src = "--drug-features"
    elif obs is not None and smiles_key is not None:
        if smiles_key not in obs.columns:
            raise InputError(
                f"SMILES column {smiles_key!r} not in obs (have {list(obs.columns)[:20]})"
            )
        single = _single_rows(obs, perturbation_key)
        rows = obs.loc[single.isin(names), [smiles_key]].assign(_c=single)
        rows = rows[rows[smiles_key].notna() & (rows[smiles_key].astype(str).str.strip() != "")]
        smiles = rows.drop_duplicates("_c").set_index("_c")[smiles_key].astype(str).to_dict()
        src = f"obs[{smiles_key!r}]"
    else:
        smiles, src = {}, "the data (no SMILES column or table)"
    missing = [c for c in names if c not in smiles or pd.isna(smiles[c])]
    if missing:
        raise InputError(
            f"no SMILES in {src} for perturbation(s) {missing[:10]}"
            + (" ..." if len(missing) > 10 else "")
        )
    return {c: str(smiles[c]) for c in names}


def numeric_descriptors(
    names: list[str],
    columns: list[str] | tuple[str, ...],
    *,
    obs: pd.DataFrame | None = None,
    perturbation_key: str = "condition",
    table: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """Raw values of the numeric feature `columns` for each name: a table's row (columns name +
    `columns`) when given, else the mean over the cells of that component alone in obs."""
    columns = list(columns)
    if table is not None:
        miss = [c for c in columns if c not in table.columns]
        if miss:
            raise InputError(f"the features table lacks feature column(s) {miss} used in training")
        vals = table[columns].apply(pd.to_numeric, errors="coerce")
        bad = table["name"][vals.isna().any(axis=1)].tolist()
        if bad:
            raise InputError(f"non-numeric or empty feature values for {bad[:10]}")
        values = dict(zip(table["name"], vals.to_numpy(np.float32), strict=True))
    else:
        for k in columns:
            if k not in obs.columns:
                raise InputError(f"feature column {k!r} not in obs (have {list(obs.columns)[:20]})")
            if not pd.api.types.is_numeric_dtype(obs[k]):
                raise InputError(f"feature column {k!r} is not numeric")
        single = _single_rows(obs, perturbation_key)
        sub = obs.loc[single.isin(names), columns].assign(_c=single)
        vals = sub.groupby("_c", observed=True)[columns].mean()
        vals = vals[vals.notna().all(1)]
        values = {c: vals.loc[c].to_numpy(np.float32) for c in names if c in vals.index}
    missing = [c for c in names if c not in values]
    if missing:
        raise InputError(
            f"no values in feature columns {columns} for perturbation(s) {missing[:10]}"
        )
    out = {c: values[c] for c in names}
    if out and not np.isfinite(np.stack(list(out.values()))).all():
        raise InputError(f"feature columns {columns} contain infinite values")
    return out


def component_descriptors(
    spec: FeatureSpec,
    names: list[str],
    *,
    obs: pd.DataFrame | None = None,
    keys: DataKeys | None = None,
    table: pd.DataFrame | None = None,
) -> dict[str, str] | dict[str, np.ndarray]:
    """What `spec.featurize` reads for each name (SMILES, raw numeric values, or the name), from
    a features table or from the cells of `obs` read with `keys`."""
    keys = keys or DataKeys()
    where = {"obs": obs, "perturbation_key": keys.perturbation_key, "table": table}
    if spec.kind == "smiles":
        return smiles_descriptors(names, smiles_key=keys.smiles_key, **where)
    if spec.kind == "numeric":
        return numeric_descriptors(names, spec.columns, **where)
    return {n: n for n in names}


def training_features(
    obs: pd.DataFrame,
    comp_names: list[str],
    *,
    keys: DataKeys,
    drug_features: pd.DataFrame | None,
    config: TrainConfig,
) -> tuple[FeatureSpec, np.ndarray]:
    """The spec of a training run (SMILES with --smiles-key/--drug-features, numeric with
    --feature-keys, else identity) and one feature row per training component."""
    given = (keys.smiles_key, drug_features, keys.feature_keys or None)
    if sum(x is not None for x in given) > 1:
        raise InputError("give only one of --smiles-key, --drug-features, --feature-keys")
    if keys.smiles_key is not None or drug_features is not None:
        spec = FeatureSpec(
            kind="smiles",
            components=comp_names,
            radius=config.fp_radius,
            n_bits=config.fp_bits,
            chirality=config.fp_chirality,
        )
    elif keys.feature_keys:
        spec = FeatureSpec(kind="numeric", components=comp_names, columns=list(keys.feature_keys))
    else:
        spec = FeatureSpec(kind="identity", components=comp_names)
    raw = component_descriptors(spec, comp_names, obs=obs, keys=keys, table=drug_features)
    if spec.kind == "smiles":
        spec = replace(spec, smiles=dict(raw))
    elif spec.kind == "numeric":
        spec = numeric_spec(list(keys.feature_keys), raw)
    feats = spec.featurize(raw)
    return spec, np.stack([feats[c] for c in comp_names])
