"""Shared pieces of the benchmarks: one training per screen with a combined split, results by
kind of held-out context (unseen dose / drug / combination ...), markdown tables."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from gimcli.config import DataKeys, TrainConfig
from gimcli.evaluation.heldout import evaluate_split
from gimcli.evaluation.metrics import HIGHER_IS_BETTER
from gimcli.training.fitting import fit_run

# Small models are dominated by per-op overhead: one thread per process avoids oversubscribing
# the 2 cores; override with GIM_BENCH_THREADS.
THREADS = int(os.environ.get("GIM_BENCH_THREADS", "1"))
SHOWN = ("r2_mean", "r2_top20_de", "pearson_delta", "mse", "energy_distance", "mmd")
ORDER = ("gim", "gim_nograph", "control", "perturbed_mean", "additive", "ridge", "nearest")


def setup() -> None:
    import torch

    torch.set_num_threads(THREADS)


def fit_and_score(adata, mask: np.ndarray, *, cfg: TrainConfig, **keys):
    """Train on adata[mask], then score GIM and every baseline on adata[~mask]."""
    t0 = time.perf_counter()
    run, _ = fit_run(adata, keys=DataKeys(**keys), config=cfg, device="cpu", train_mask=mask)
    res, nograph = evaluate_split(run, adata, mask, device="cpu", seed=cfg.seed)
    return run, nograph, res, time.perf_counter() - t0


def by_kind(per: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Mean of each metric per (kind of held-out context, method); `kinds` maps context label ->
    kind. The per-context rows ride along in `.attrs["per"]` for the verdicts' paired
    comparisons."""
    per = per.assign(kind=per["context"].map(kinds))
    per = per[per["kind"].notna()]
    out = per.groupby(["kind", "method"], sort=False)[list(SHOWN)].mean()
    out["n_contexts"] = per.groupby(["kind", "method"], sort=False)["r2_mean"].count()
    out.attrs["per"] = per
    return out


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def md_table(df: pd.DataFrame, cols: list[str], index_name: str) -> str:
    lines = ["| " + " | ".join([index_name, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        name = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        lines.append("| " + " | ".join([name, *[fmt(row[c]) for c in cols]]) + " |")
    return "\n".join(lines)


def kind_tables(tab: pd.DataFrame) -> str:
    """One markdown table per kind: methods x metrics, best baseline marked, GIM verdict."""
    parts = []
    per = tab.attrs.get("per")
    for kind in tab.index.get_level_values(0).unique():
        t = tab.loc[kind]
        t = t.loc[[m for m in ORDER if m in t.index]]
        parts.append(
            f"**{kind}** ({int(t['n_contexts'].max())} contexts)\n\n"
            + md_table(t, list(SHOWN), "method")
        )
        parts.append(verdict(t, None if per is None else per[per["kind"] == kind]))
    return "\n\n".join(parts)


def verdict(t: pd.DataFrame, per: pd.DataFrame | None = None) -> str:
    """Does GIM at least match the best baseline on mean R² and energy distance? With the
    per-context rows, the difference GIM - best is given with its paired standard error over
    contexts, and a shortfall smaller than one SE is called a tie rather than a loss."""
    out = []
    for m in ("r2_mean", "energy_distance"):
        base = t.drop(index="gim")[m].dropna()
        if "gim" not in t.index or not len(base):
            continue
        best = base.idxmax() if HIGHER_IS_BETTER[m] else base.idxmin()
        g = t.loc["gim", m]
        sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
        better = sign * (g - base[best])  # > 0: GIM better
        se, detail = np.nan, ""
        if per is not None:
            wide = per.pivot_table(index="context", columns="method", values=m)
            if {"gim", best} <= set(wide.columns):
                diff = (sign * (wide["gim"] - wide[best])).dropna()
                if len(diff) > 1:
                    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
                    detail = (
                        f" (GIM better by {better:+.4f} ± {se:.4f} SE over {len(diff)} contexts)"
                    )
        word = (
            "GIM matches or wins"
            if better >= 0
            else "tie: GIM short by less than 1 SE"
            if np.isfinite(se) and -better < se
            else "GIM LOSES"
        )
        out.append(f"{m}: GIM {g:.3f} vs best baseline {best} {base[best]:.3f}{detail} -> {word}")
    return "; ".join(out)


def mean_std(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    return "–" if not len(v) else f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}"
