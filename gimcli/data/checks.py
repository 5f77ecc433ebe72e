"""Value checks of an expression matrix, shared by the in-memory and the chunked readers.

Each check names the first offending cell and gene, so that a message points at the data.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from gimcli.errors import InputError

# Values checked when deciding "counts or log-normalised": enough to be sure, cheap on 1M cells.
DETECT_SAMPLE = 200_000


def data_values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


INPUT_KINDS = ("auto", "counts", "log", "continuous")


def check_values(
    X, *, where: str, obs_names=None, var_names=None, negative_ok: bool = False
) -> None:
    """NaN/inf values are never usable, negative ones only in continuous input (--input
    continuous); the message names the first."""
    vals = data_values(X)
    if vals.size and not np.isfinite(vals).all():
        i = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise InputError(
            f"{where}: contains NaN or infinite values, e.g. {vals[i]} at "
            f"{locate(X, i, obs_names, var_names)}"
        )
    if vals.size and vals.min() < 0 and not negative_ok:
        i = int(np.argmin(vals))
        raise InputError(
            f"{where}: contains negative values (min {vals[i]:.3g} at "
            f"{locate(X, i, obs_names, var_names)}); "
            "expected counts or log-normalised expression; for scaled, centred or other continuous "
            "measurements pass --input continuous"
        )


def locate(X, i: int, obs_names=None, var_names=None) -> str:
    """'cell <name>, gene <name>' of the i-th stored value of X (CSR data or dense ravel)."""
    if sp.issparse(X):
        r, c = int(np.searchsorted(X.indptr, i, side="right") - 1), int(X.indices[i])
    else:
        r, c = (int(v) for v in np.unravel_index(i, X.shape))
    cell = repr(str(obs_names[r])) if obs_names is not None else f"row {r}"
    gene = repr(str(var_names[c])) if var_names is not None else f"column {c}"
    return f"cell {cell}, gene {gene}"


def first_non_integer(vals: np.ndarray, *, chunk: int = 1 << 22) -> int:
    """Index of the first non-integer value, or -1; chunked to bound memory on large matrices."""
    for start in range(0, vals.size, chunk):
        v = vals[start : start + chunk]
        bad = np.flatnonzero(v != np.round(v))
        if bad.size:
            return start + int(bad[0])
    return -1


# log1p of any normalised expression stays far below this (log1p(1e6 CPM) = 13.8): larger
# non-integer values mean normalised-but-not-logged or corrected counts; neither can be used.
_MAX_LOG_VALUE = 30.0


def looks_like_counts(X) -> bool:
    vals = data_values(X)[:DETECT_SAMPLE]
    if vals.size == 0:
        return False
    return bool(np.all(vals == np.round(vals)) and vals.max() > 1)


def check_scale(X, is_counts: bool, *, where: str, obs_names=None, var_names=None) -> None:
    """Counts must be integers throughout; log-normalised data cannot reach count-like values."""
    vals = data_values(X)
    if not vals.size:
        return
    if is_counts:
        i = first_non_integer(vals)
        if i >= 0:
            raise InputError(
                f"{where}: integer counts mixed with non-integer values (e.g. {vals[i]:.4g} at "
                f"{locate(X, i, obs_names, var_names)}); were raw and normalised data concatenated?"
            )
    elif vals.max() > _MAX_LOG_VALUE:
        i = first_non_integer(vals)
        raise InputError(
            f"{where}: non-integer values up to {vals.max():.4g} (e.g. {vals[i]:.4g} at "
            f"{locate(X, i, obs_names, var_names)}): neither integer counts nor log-normalised "
            "data; "
            "round corrected counts or give log1p-normalised data"
        )


def check_counts_layer(X, is_counts: bool, *, where: str, obs_names=None, var_names=None) -> None:
    """--counts-layer promises integer counts: refuse a layer that does not hold them."""
    if is_counts:
        return
    vals = data_values(X)
    i = first_non_integer(vals)
    at = (
        f" (e.g. {vals[i]:.4g} at {locate(X, i, obs_names, var_names)})"
        if i >= 0
        else " (all values are 0 or 1)"
    )
    raise InputError(f"{where}: --counts-layer given but its values are not integer counts{at}")


def check_expression(
    X, *, where: str, obs_names=None, var_names=None, counts_layer: bool = False
) -> bool:
    """Every check on a matrix (or its first chunk); returns whether it holds counts."""
    return input_kind(X, "auto", where=where, obs_names=obs_names, var_names=var_names,
                      counts_layer=counts_layer) == "counts"  # fmt: skip


def input_kind(
    X, kind: str, *, where: str, obs_names=None, var_names=None, counts_layer: bool = False
) -> str:
    """The checked kind of a matrix: counts, log or continuous (--input; auto: counts when every
    value is an integer and some exceed 1, else log-normalised). Refuses an all-zero matrix and
    values that do not fit the kind, naming the first."""
    names = {"obs_names": obs_names, "var_names": var_names}
    if kind not in INPUT_KINDS:
        raise InputError(f"--input {kind!r}: expected one of {', '.join(INPUT_KINDS)}")
    check_values(X, where=where, negative_ok=kind == "continuous", **names)
    vals = data_values(X)
    if not vals.size or not np.any(vals):
        raise InputError(f"{where}: every value is 0; there is no expression to model")
    if kind == "continuous":
        return kind
    is_counts = looks_like_counts(X)
    if kind == "counts" and not is_counts:
        check_counts_layer(X, False, where=f"{where} (--input counts)", **names)
    if kind == "log" and is_counts:
        is_counts = False  # integer-valued log data (e.g. 0/1/2) as the user says
    if counts_layer:
        check_counts_layer(X, is_counts, where=where, **names)
    check_scale(X, is_counts, where=where, **names)
    return "counts" if is_counts else "log"
