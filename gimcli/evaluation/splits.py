"""Train/test splits that reflect use: unseen conditions, doses, combinations, cell lines.

Every split returns a boolean *train* mask over cells. Control cells always stay in training
(they standardise every covariate group and are the reference of every metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from gimcli.data.combinations import DEFAULT, Combinations
from gimcli.data.contexts import canonical_conditions, canonical_doses, dose_parts
from gimcli.errors import InputError

_TRAIN_VALUES = {"train", "training", "true", "1"}
_TEST_VALUES = {"test", "heldout", "held-out", "holdout", "false", "0"}


@dataclass
class Holdout:
    """What to hold out. Options combine as: (conditions | doses | combinations) within the
    covariate value when one is given, or the whole covariate value when it is the only option."""

    conditions: list[str] = field(default_factory=list)
    doses: list[float] = field(default_factory=list)
    combinations: list[str] = field(default_factory=list)  # names, or ["all"]
    covariate: tuple[str, str] | None = None
    split_key: str | None = None

    def any(self) -> bool:
        return bool(
            self.conditions or self.doses or self.combinations or self.covariate or self.split_key
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["covariate"] = (
            None if self.covariate is None else f"{self.covariate[0]}={self.covariate[1]}"
        )
        return d


def _column(obs: pd.DataFrame, key: str, what: str) -> pd.Series:
    if key not in obs.columns:
        raise InputError(f"{what} column {key!r} not in obs (have {list(obs.columns)[:20]})")
    return obs[key]


def train_mask(
    obs: pd.DataFrame,
    holdout: Holdout,
    *,
    perturbation_key: str = "condition",
    control: str = "control",
    dose_key: str | None = None,
    combinations: Combinations = DEFAULT,
) -> np.ndarray:
    """Boolean mask, True for cells to train on. Raises InputError when a held-out value does not
    occur, when nothing or everything perturbed is held out."""
    rule = combinations
    pert = _column(obs, perturbation_key, "perturbation").astype(str).str.strip()
    pert, _ = canonical_conditions(pert, None, rule)
    is_ctrl = (pert == control).to_numpy()
    if holdout.split_key is not None:
        if holdout.conditions or holdout.doses or holdout.combinations or holdout.covariate:
            raise InputError("--split-key cannot be combined with the --holdout-* options")
        col = _column(obs, holdout.split_key, "split")
        if col.dtype == bool:
            train = col.to_numpy(bool)
        else:
            v = col.astype(str).str.strip().str.lower()
            bad = sorted(set(v) - _TRAIN_VALUES - _TEST_VALUES)
            if bad:
                raise InputError(
                    f"split column {holdout.split_key!r}: values {bad[:5]} are neither train nor "
                    "test"
                )
            train = v.isin(_TRAIN_VALUES).to_numpy()
        return _checked(train | is_ctrl, is_ctrl)

    held = np.zeros(len(obs), bool)
    if holdout.conditions:
        wanted = rule.canonical_names(holdout.conditions)
        missing = sorted(set(wanted) - set(pert))
        if missing:
            raise InputError(
                f"--holdout-conditions: {missing[:10]} not in obs[{perturbation_key!r}]"
            )
        held |= pert.isin(wanted).to_numpy()
    if holdout.doses:
        if dose_key is None:
            raise InputError("--holdout-doses needs --dose-key")
        raw = _column(obs, dose_key, "dose").astype(str).to_numpy()
        canon = canonical_doses(pert.to_numpy(), raw, control=control, dose_key=dose_key, rule=rule)
        vals = [dose_parts(d) if d else [] for d in canon]  # controls: no dose
        want = np.asarray(holdout.doses, float)
        hit = np.array([any(np.isclose(x, want).any() for x in v) for v in vals])
        if not (hit & ~is_ctrl).any():
            raise InputError(
                f"--holdout-doses {list(holdout.doses)}: no perturbed cell has these doses"
            )
        held |= hit
    if holdout.combinations:
        is_combo = np.array([rule.is_combination(p) for p in pert])
        if [c.lower() for c in holdout.combinations] == ["all"]:
            if not is_combo.any():
                raise InputError("--holdout-combinations all: the screen has no combinations (A+B)")
            held |= is_combo
        else:
            wanted = rule.canonical_names(holdout.combinations)
            missing = sorted(set(wanted) - set(pert[is_combo]))
            if missing:
                raise InputError(
                    f"--holdout-combinations: {missing[:10]} are not combinations in "
                    f"obs[{perturbation_key!r}]"
                )
            held |= pert.isin(wanted).to_numpy()
    if holdout.covariate is not None:
        key, value = holdout.covariate
        cov = _column(obs, key, "covariate").astype(str)
        in_value = (cov == value).to_numpy()
        if not in_value.any():
            raise InputError(
                f"--holdout-covariate {key}={value}: no cell has this value (have "
                f"{sorted(cov.unique())[:10]})"
            )
        held = (held & in_value) if held.any() else in_value
    return _checked(~held | is_ctrl, is_ctrl)


def _checked(train: np.ndarray, is_ctrl: np.ndarray) -> np.ndarray:
    pert = ~is_ctrl
    if not (pert & ~train).any():
        raise InputError("the split holds out no perturbed cell")
    if not (pert & train).any():
        raise InputError("the split holds out every perturbed cell; nothing is left to train on")
    return train
