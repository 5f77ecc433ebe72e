"""Matplotlib figures of a run, returned as PNG bytes (Agg backend: no display needed)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def learning_curve(history: pd.DataFrame, *, best_step: int | None = None) -> bytes:
    """Training and validation objective (NLL per cell) against step, phases shaded, the best
    step (the model kept) marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(history["step"], history["train_nll"], label="train (batch)", lw=1)
    if history["val_nll"].notna().any():
        ax.plot(history["step"], history["val_nll"], label="validation (exact marginal)", lw=1.5)
    relaxed = history.loc[history["phase"] == "relaxed", "step"]
    if len(relaxed):
        ax.axvspan(relaxed.min(), relaxed.max(), color="0.9", label="relaxed-Bernoulli phase")
    if best_step is not None:
        ax.axvline(best_step, color="tab:green", ls="--", lw=1, label=f"best step {best_step}")
    ax.set_xlabel("step")
    ax.set_ylabel("negative log-likelihood per cell")
    lo, hi = np.nanpercentile(history[["train_nll", "val_nll"]].to_numpy(float), [0, 90])
    ax.set_ylim(lo - 0.05 * abs(lo), hi)
    ax.legend(fontsize=8)
    return _png(fig)


def target_heatmap(
    prob: np.ndarray, rows: list[str], genes: list[str], *, max_rows: int = 40, max_genes: int = 30
) -> bytes:
    """Target probability, contexts x the genes most often targeted."""
    plt = _plt()
    prob = np.asarray(prob)
    gsel = np.argsort(-prob.max(0), kind="stable")[:max_genes]
    rsel = np.argsort(-prob[:, gsel].max(1), kind="stable")[:max_rows]
    sub = prob[np.ix_(rsel, gsel)]
    fig, ax = plt.subplots(figsize=(0.28 * len(gsel) + 2.5, 0.22 * len(rsel) + 1.5))
    im = ax.imshow(sub, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(gsel)), [genes[j] for j in gsel], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rsel)), [rows[i] for i in rsel], fontsize=7)
    fig.colorbar(im, ax=ax, label="P(direct target)", shrink=0.6)
    return _png(fig)


def targets_bars(table: pd.DataFrame, *, label_cols: list[str]) -> bytes:
    """One panel per condition: direct-target probability of its top genes, bars coloured by the
    sign of the direct shift (what `gim explain --plot` draws)."""
    plt = _plt()
    t = table[table["kind"] == "target"]
    groups = list(t.groupby(label_cols, sort=False))
    n = max(len(groups), 1)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, g) in zip(axes.ravel(), groups, strict=False):
        key = key if isinstance(key, tuple) else (key,)
        colors = np.where(g["shift"].to_numpy() >= 0, "tab:red", "tab:blue")
        ax.barh(g["gene"].astype(str)[::-1], g["prob"].to_numpy()[::-1], color=colors[::-1])
        ax.set_xlim(0, 1)
        ax.set_title(" | ".join(str(k) for k in key if str(k)), fontsize=9)
        ax.set_xlabel("P(direct target)  (red: up, blue: down)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def metric_bars(agg: pd.DataFrame, *, method_col: str, metric_col: str, value_col: str) -> bytes:
    """Held-out metrics per method, one panel per metric."""
    plt = _plt()
    metrics = list(dict.fromkeys(agg[metric_col]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1, 3), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        sub = agg[agg[metric_col] == m]
        colors = ["tab:green" if str(x).lower() == "gim" else "0.6" for x in sub[method_col]]
        ax.bar(sub[method_col].astype(str), sub[value_col].to_numpy(float), color=colors)
        ax.set_title(m, fontsize=9)
        ax.tick_params(axis="x", rotation=70, labelsize=7)
    fig.tight_layout()
    return _png(fig)
