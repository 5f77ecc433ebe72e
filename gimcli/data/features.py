"""Perturbation features: RDKit Morgan fingerprints, numeric columns, or perturbation identity.

A *component* is one atomic perturbation (a drug, a guide's gene); a combination `A+B` has two.
Each feature spec maps component names to one row of a feature matrix and is stored in
model.json so that `predict` featurises new perturbations exactly as training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

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


@dataclass
class FeatureSpec:
    """How component names become feature vectors; JSON-able."""

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


def read_feature_csv(path: str) -> pd.DataFrame:  # noqa: F821
    """A features CSV: a `name` column plus `smiles` or numeric columns (+ optional dose/covariates)."""
    import pandas as pd

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
    return df
