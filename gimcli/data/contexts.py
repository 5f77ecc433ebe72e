"""Contexts: one perturbation at one dose in one covariate group (e.g. cell line).

All cells of a context share one draw of atomic interventions; the objective integrates the
targets out per context, from per-context sufficient statistics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gimcli.config import DataKeys
from gimcli.data.combinations import DEFAULT, Combinations
from gimcli.data.features import COMBO_SEP
from gimcli.errors import InputError

log = logging.getLogger(__name__)


def format_dose(x: float) -> str:
    return f"{x:g}"


def dose_parts(dose: str) -> list[float]:
    """The numbers of a canonical dose string ('100', '100+10'; see canonical_doses)."""
    return [float(x) for x in str(dose).split(COMBO_SEP)]


def parse_dose(value, n_components: int, *, column: str) -> list[float]:
    """A dose cell is a number, or `a+b` with one number per component of a combination."""
    parts = str(value).split(COMBO_SEP)
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"column {column!r}: dose {value!r} is not a number") from None
    if any(not np.isfinite(v) or v < 0 for v in nums):
        raise InputError(f"column {column!r}: dose {value!r} must be finite and >= 0")
    if len(nums) == 1:
        return nums * max(n_components, 1)
    if len(nums) != n_components:
        raise InputError(
            f"column {column!r}: dose {value!r} has {len(nums)} parts for {n_components} components"
        )
    return nums


def canonical_dose(value, n_components: int, *, column: str) -> str:
    """The canonical string of a dose cell: one number per component ('100+100' for a pair)."""
    return COMBO_SEP.join(format_dose(x) for x in parse_dose(value, n_components, column=column))


def canonical_doses(
    pert: np.ndarray,
    raw: np.ndarray | None,
    *,
    control: str,
    dose_key: str | None,
    strict: bool = True,
    rule: Combinations = DEFAULT,
) -> np.ndarray:
    """The dose of each cell as contexts key it: '' for controls, one number per component of a
    combination ('1' each without a dose column). Each (perturbation, dose) pair is parsed once;
    with strict=False an unparseable dose gives None instead of an InputError."""
    raw = np.full(len(pert), "1", dtype=object) if raw is None else raw
    canon: dict[tuple, str | None] = {}
    for p, d in set(zip(pert, raw, strict=True)):
        if p == control:
            canon[(p, d)] = ""
            continue
        try:
            canon[(p, d)] = canonical_dose(d, len(rule.split(p)), column=dose_key or "dose")
        except InputError:
            if strict:
                raise
            canon[(p, d)] = None
    return np.array([canon[(p, d)] for p, d in zip(pert, raw, strict=True)], dtype=object)


def canonical_conditions(
    pert: pd.Series, doses: pd.Series | None, rule: Combinations = DEFAULT
) -> tuple[pd.Series, pd.Series | None]:
    """Each cell's condition (and dose) in canonical spelling: a combination's components sorted,
    a per-component dose reordered with them (gimcli.data.combinations). Computed once per
    distinct pair."""
    raw = doses if doses is not None else pd.Series("", index=pert.index)
    pairs = pd.DataFrame({"p": pert.to_numpy(), "d": raw.to_numpy()})
    uniq = pairs.drop_duplicates()
    canon = [rule.canonical(p, d) for p, d in zip(uniq["p"], uniq["d"], strict=True)]
    if all(c == (p, d) for c, p, d in zip(canon, uniq["p"], uniq["d"], strict=True)):
        return pert, doses
    uniq = uniq.assign(cp=[c[0] for c in canon], cd=[c[1] for c in canon])
    merged = pairs.merge(uniq, on=["p", "d"], how="left")
    new_p = pd.Series(merged["cp"].to_numpy(), index=pert.index)
    new_d = None if doses is None else pd.Series(merged["cd"].to_numpy(), index=pert.index)
    return new_p, new_d


def dose_transform(dose: np.ndarray, scale: float) -> np.ndarray:
    """log10(1 + dose) / scale: doses of a screen span decades, effects follow log dose."""
    return np.log10(1.0 + np.asarray(dose, dtype=np.float64)) / scale


@dataclass
class Contexts:
    table: pd.DataFrame  # per context: condition, dose, <covariates>, n_cells, is_control
    components: np.ndarray  # (K, C) index into comp_names, -1 = none
    comp_dose: np.ndarray  # (K, C) raw dose per component
    cov_group: np.ndarray  # (K,) index into groups
    groups: pd.DataFrame  # (G, n_cov) covariate combinations
    cov_keys: list[str]
    cov_categories: dict[str, list[str]]
    comp_names: list[str]
    cell_context: np.ndarray  # (n_cells,) context index, -1 = dropped

    @property
    def n_contexts(self) -> int:
        return len(self.table)

    def cov_onehot(self) -> np.ndarray:
        return covariate_onehot(self.groups, self.cov_keys, self.cov_categories)


def covariate_onehot(
    groups: pd.DataFrame, keys: list[str], cats: dict[str, list[str]]
) -> np.ndarray:
    blocks = []
    for k in keys:
        c = cats[k]
        idx = pd.Index(c).get_indexer(groups[k].astype(str))
        if (idx < 0).any():
            bad = groups[k].astype(str)[idx < 0].iloc[0]
            raise InputError(f"covariate {k}={bad!r} not seen in training (known: {c})")
        blocks.append(np.eye(len(c), dtype=np.float32)[idx])
    return np.concatenate(blocks, 1) if blocks else np.zeros((len(groups), 0), np.float32)


def _require_column(obs: pd.DataFrame, col: str, what: str) -> pd.Series:
    if col not in obs.columns:
        raise InputError(f"{what} column {col!r} not in obs (have {list(obs.columns)[:20]})")
    s = obs[col]
    if s.isna().any():
        rows = obs.index[s.isna()][:3].tolist()
        raise InputError(
            f"{what} column {col!r} has {int(s.isna().sum())} missing values, e.g. cells {rows}"
        )
    return s


def build_contexts(
    obs: pd.DataFrame,
    *,
    perturbation_key: str = "condition",
    control: str = "control",
    dose_key: str | None = None,
    covariate_keys: list[str] | None = None,
    min_cells: int = 3,
    combinations: Combinations = DEFAULT,
) -> Contexts:
    """The contexts of a screen's cells: one per (perturbation, canonical dose, covariate group).

    Perturbed contexts with fewer than `min_cells` cells are skipped (with a warning); their
    cells get context -1. Every covariate group needs control cells (they standardise it).
    """
    cov_keys = list(covariate_keys or [])
    pert = _require_column(obs, perturbation_key, "perturbation").astype(str).str.strip()
    covs = pd.DataFrame(
        {k: _require_column(obs, k, "covariate").astype(str) for k in cov_keys}, index=obs.index
    )
    doses = _require_column(obs, dose_key, "dose").astype(str) if dose_key else None
    pert, doses = canonical_conditions(pert, doses, combinations)
    is_ctrl = (pert == control).to_numpy()
    if not is_ctrl.any():
        examples = pert.unique()[:5].tolist()
        raise InputError(
            f"no control cells: no value {control!r} in obs[{perturbation_key!r}] "
            f"(e.g. {examples}); set --control"
        )
    groups, cell_group = _covariate_groups(covs, cov_keys, is_ctrl)
    dose_str = canonical_doses(
        pert.to_numpy(),
        None if doses is None else doses.to_numpy(),
        control=control,
        dose_key=dose_key,
        rule=combinations,
    )
    key = pd.DataFrame({"condition": pert.to_numpy(), "dose": dose_str, "_group": cell_group})
    table, cell_context = _context_table(key, control=control, min_cells=min_cells)
    comp_names, components, comp_dose = _component_matrix(table, control, combinations)
    gidx = table.pop("_group").to_numpy()
    for k in cov_keys:
        table[k] = groups[k].to_numpy()[gidx]
    return Contexts(
        table=table[["condition", "dose", *cov_keys, "n_cells", "is_control"]],
        components=components,
        comp_dose=comp_dose,
        cov_group=gidx.astype(np.int64),
        groups=groups[cov_keys] if cov_keys else pd.DataFrame(index=[0]),
        cov_keys=cov_keys,
        cov_categories={k: sorted(covs[k].unique().tolist()) for k in cov_keys},
        comp_names=comp_names,
        cell_context=cell_context,
    )


def _covariate_groups(
    covs: pd.DataFrame, cov_keys: list[str], is_ctrl: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """The covariate groups (sorted) and each cell's group; refuses a group without controls."""
    if not cov_keys:
        return pd.DataFrame(index=[0]), np.zeros(len(covs), dtype=np.int64)
    groups = covs.drop_duplicates().sort_values(cov_keys).reset_index(drop=True)
    ctrl_groups = covs[is_ctrl].drop_duplicates()
    merged = groups.merge(ctrl_groups, how="left", indicator=True)
    lacking = merged[merged["_merge"] == "left_only"][cov_keys]
    if len(lacking):
        desc = ", ".join(f"{k}={v}" for k, v in lacking.iloc[0].items())
        raise InputError(
            f"no control cells for {desc} ({len(lacking)} covariate group(s) without controls)"
        )
    gkey = pd.MultiIndex.from_frame(groups) if len(cov_keys) > 1 else pd.Index(groups[cov_keys[0]])
    ckey = pd.MultiIndex.from_frame(covs) if len(cov_keys) > 1 else pd.Index(covs[cov_keys[0]])
    return groups, gkey.get_indexer(ckey)


def _context_table(
    key: pd.DataFrame, *, control: str, min_cells: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Unique (condition, dose, _group) rows with their cell counts, small perturbed ones
    dropped, and each cell's row (-1 when dropped)."""
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(key))
    table = uniques.to_frame(index=False)
    table.columns = ["condition", "dose", "_group"]
    counts = np.bincount(codes, minlength=len(table))
    table["n_cells"] = counts
    small = (counts < min_cells) & (table["condition"] != control).to_numpy()
    if small.any():
        log.warning(
            "skipping %d context(s) with fewer than %d cells (%d cells), e.g. %s",
            int(small.sum()),
            min_cells,
            int(counts[small].sum()),
            table.loc[small, "condition"].iloc[0],
        )
    perturbed = (table["condition"] != control).to_numpy()
    if perturbed.any() and small[perturbed].all():
        raise InputError(
            f"every perturbed context ({int(perturbed.sum())}, {int(counts[perturbed].sum())} "
            f"cells) has fewer than {min_cells} cells (min_cells_per_context) and was dropped; "
            "nothing is left to train on (one well per drug and dose, e.g. a bulk plate?)"
        )
    keep_idx = np.flatnonzero(~small)
    remap = -np.ones(len(table), dtype=np.int64)
    remap[keep_idx] = np.arange(len(keep_idx))
    table = table.iloc[keep_idx].reset_index(drop=True)
    table["is_control"] = table["condition"] == control
    return table, remap[codes]


def _component_matrix(table: pd.DataFrame, control: str, rule: Combinations = DEFAULT):
    """Component names (sorted), and per context its components' indices (-1: none) and doses."""
    comp_lists = [
        [] if c else rule.split(p)
        for p, c in zip(table["condition"], table["is_control"], strict=True)
    ]
    comp_names = sorted({c for cl in comp_lists for c in cl})
    if control in comp_names:
        raise InputError(f"control value {control!r} appears inside a combination; rename it")
    C = max(1, max((len(cl) for cl in comp_lists), default=1))
    components = -np.ones((len(table), C), dtype=np.int64)
    comp_dose = np.zeros((len(table), C), dtype=np.float64)
    name_idx = {n: i for i, n in enumerate(comp_names)}
    for k, (cl, d) in enumerate(zip(comp_lists, table["dose"], strict=True)):
        ds = dose_parts(d) if cl else []
        for c, name in enumerate(cl):
            components[k, c] = name_idx[name]
            comp_dose[k, c] = ds[c]
    return comp_names, components, comp_dose


# -- contexts of cells given the keys a run was trained with -------------------------------------
def context_label(row: pd.Series | dict, cov_keys: list[str] | tuple[str, ...]) -> str:
    """'condition|dose=...|key=value': the name of a context in every output table."""
    parts = [str(row["condition"])]
    if row.get("dose", "") not in ("", None):
        parts.append(f"dose={row['dose']}")
    parts += [f"{k}={row[k]}" for k in cov_keys]
    return "|".join(parts)


def context_labels(contexts: pd.DataFrame, cov_keys: list[str] | tuple[str, ...]) -> list[str]:
    """context_label of every row of a context table (doses as strings)."""
    return [context_label(r, cov_keys) for _, r in contexts.astype({"dose": str}).iterrows()]


def cell_keys(obs: pd.DataFrame, keys: DataKeys, *, strict: bool = True) -> pd.DataFrame:
    """Per cell: condition, canonical dose and covariates as strings, keyed like the contexts.

    With strict=False an unparseable dose gives None (such a cell matches no context)."""
    rule = keys.combinations
    pert = obs[keys.perturbation_key].astype(str).str.strip()
    raw = obs[keys.dose_key].astype(str) if keys.dose_key else None
    pert, raw = canonical_conditions(pert, raw, rule)
    pert, raw = pert.to_numpy(), None if raw is None else raw.to_numpy()
    dose = canonical_doses(
        pert, raw, control=keys.control, dose_key=keys.dose_key, strict=strict, rule=rule
    )
    cells = pd.DataFrame({"condition": pert, "dose": dose})
    for k in keys.covariate_keys:
        if k not in obs.columns:
            raise InputError(f"covariate column {k!r} used in training is not in obs")
        cells[k] = obs[k].astype(str).to_numpy()
    return cells


def cell_context_labels(obs: pd.DataFrame, keys: DataKeys, contexts: pd.DataFrame) -> np.ndarray:
    """The label (context_label) of each cell's context in `contexts` ('' if none), by a table
    join, not a cell loop. A dose the contexts never saw (or an unparseable one) gets no label."""
    cols = ["condition", "dose", *keys.covariate_keys]
    labels = context_labels(contexts, keys.covariate_keys)
    table = contexts.astype({"dose": str})[cols].astype(str).assign(_label=labels)
    merged = cell_keys(obs, keys, strict=False).merge(table, on=cols, how="left")
    return merged["_label"].fillna("").to_numpy(dtype=object)


def perturbed_contexts(obs: pd.DataFrame, keys: DataKeys) -> tuple[pd.DataFrame, np.ndarray]:
    """Perturbed contexts of `obs` keyed like training (condition, canonical dose, covariates)
    with their cell counts, and the context index of each cell (-1 for control cells)."""
    cells = cell_keys(obs, keys)
    is_pert = (cells["condition"] != keys.control).to_numpy()
    cols = ["condition", "dose", *keys.covariate_keys]
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(cells[is_pert][cols]))
    table = uniq.to_frame(index=False)
    table.columns = cols
    table["n_cells"] = np.bincount(codes, minlength=len(table))
    cell = -np.ones(len(obs), np.int64)
    cell[is_pert] = codes
    return table, cell
