"""RUN/report.html: what was fitted, how training went, what the model says, how it scores."""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from gimcli import _keys
from gimcli.data.io import write_text
from gimcli.report import plots

log = logging.getLogger(__name__)

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}
h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 7px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:.85em}
img{max-width:100%}"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, *, max_rows: int = 40) -> str:
    return df.head(max_rows).to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def build_report(run_dir: str | Path, *, title: str | None = None) -> str:
    """The HTML of RUN/report.html: the run, its diagnostics, learning curve, direct targets,
    strongest edges, held-out metrics (when RUN has them) and parameters."""
    from gimcli.gimrun import GimRun

    run_dir = Path(run_dir)
    run = GimRun.load(run_dir)
    name = html.escape(title or str(run_dir))
    parts = [f"<h1>gim run report: {name}</h1>", *_warnings_section(run), _run_section(run)]
    diag = pd.DataFrame([run.meta.diagnostics.to_dict()])
    parts.append(
        _section(
            "Causal model diagnostics",
            _table(diag) + '<p class="note">A = I - B must stay well '
            "conditioned; a spectral radius of B at or above 1 means B cannot be read as a stable "
            "feedback system, although the equilibrium model stays defined.</p>",
        )
    )
    metrics_p = run_dir / _keys.METRICS
    if metrics_p.exists():
        hist = pd.read_csv(metrics_p)
        if len(hist):
            parts.append(
                _section(
                    "Learning curve",
                    _img(
                        plots.learning_curve(hist, best_step=run.meta.training.best_step),
                        "learning curve",
                    ),
                )
            )
    parts += _model_sections(run)
    ev_csv = run_dir / _keys.EVAL_CSV
    ev_json = run_dir / _keys.EVAL_JSON
    if ev_json.exists() or ev_csv.exists():
        parts.append(
            _section("Held-out evaluation against baselines", _eval_section(ev_csv, ev_json))
        )
    config = run.meta.config.to_dict()
    params = pd.DataFrame(sorted(config.items()), columns=["parameter", "value"])
    parts.append(_section("Parameters", _table(params, max_rows=200)))
    body = "\n".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gim report</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _warnings_section(run) -> list[str]:
    """The health warnings of the fit (gimcli.training.health), first and highlighted."""
    if not run.meta.warnings:
        return []
    items = "".join(
        f"<li><b>{html.escape(w['check'])}</b>: {html.escape(w['message'])}</li>"
        for w in run.meta.warnings
    )
    return [
        '<div class="warning" style="background:#fff3cd;border:2px solid #d39e00;'
        'padding:0.5em 1em"><h2>Warnings: this fit may not be believable</h2>'
        f"<ul>{items}</ul></div>"
    ]


def _run_section(run) -> str:
    meta, tr = run.meta, run.meta.training
    inp = meta.input_dict()
    summary = pd.DataFrame(
        [
            ("input", inp.get("path", "")),
            ("input SHA-256", inp.get("sha256", "")[:16] + "…"),
            ("cells trained on", tr.n_cells),
            ("genes modelled", len(run.genes)),
            ("contexts", len(meta.contexts)),
            ("perturbations (components)", len(meta.components)),
            ("features", meta.features.kind),
            ("covariates", ", ".join(run.cov_keys) or "none"),
            ("device", tr.device),
            ("steps run / best step", f"{tr.steps_run} / {tr.best_step}"),
            ("training time (s)", round(tr.train_seconds, 1)),
            ("seed", meta.seed),
            ("versions", ", ".join(f"{k} {v}" for k, v in meta.versions.items())),
        ],
        columns=["", "value"],
    )
    return _section("Run", _table(summary))


def _model_sections(run) -> list[str]:
    """What the model says: direct targets of the training contexts, strongest edges."""
    from gimcli.data.contexts import context_labels
    from gimcli.explanation import graph_table

    parts = []
    if run.posterior is not None:
        tc = run.contexts
        pert = ~tc["is_control"].astype(bool).to_numpy()
        labels = context_labels(tc[pert], run.cov_keys)
        if pert.any():
            heatmap = plots.target_heatmap(run.posterior[pert], labels, run.genes)
            parts.append(
                _section(
                    "Direct targets (posterior probability)",
                    _img(heatmap, "target heatmap")
                    + '<p class="note">Training contexts x the genes most often named as direct '
                    "targets; `gim explain RUN` lists them.</p>",
                )
            )
    edges = graph_table(run, top=25)
    parts.append(
        _section(
            "Strongest learned causal edges",
            _table(edges) + '<p class="note">weight = B[target, source] in standardised units '
            "(pooled within-context sd).</p>",
        )
    )
    return parts


def _eval_section(ev_csv: Path, ev_json: Path) -> str:
    """Aggregated held-out metrics (method x metric), drawn and tabulated."""
    agg = None
    if ev_json.exists():
        data = json.loads(ev_json.read_text())
        rows = data.get("aggregate") if isinstance(data, dict) else None
        if isinstance(rows, dict) and rows:  # {method: {metric: value}} (gimcli.evaluation.heldout)
            agg = pd.DataFrame.from_dict(rows, orient="index").reset_index(names="method")
        elif rows:
            agg = pd.DataFrame(rows)
    if agg is None and ev_csv.exists():
        agg = pd.read_csv(ev_csv)
        if "scope" in agg.columns:
            agg = agg[agg["scope"] == "aggregate"].dropna(axis=1, how="all")
    if agg is None or agg.empty:
        return "<p>(no held-out metrics)</p>"
    out = _table(agg, max_rows=100)
    long = _long_metrics(agg)
    if long is not None and len(long):
        out = (
            _img(
                plots.metric_bars(
                    long, method_col="method", metric_col="metric", value_col="value"
                ),
                "held-out metrics",
            )
            + out
        )
    return out


def _long_metrics(agg: pd.DataFrame) -> pd.DataFrame | None:
    if {"method", "metric", "value"} <= set(agg.columns):
        return agg[["method", "metric", "value"]]
    if "method" in agg.columns:
        num = [
            c
            for c in agg.columns
            if c not in ("method", "n_contexts", "n_cells")
            and np.issubdtype(agg[c].dtype, np.number)
        ]
        if num:
            return agg.melt(id_vars="method", value_vars=num, var_name="metric", value_name="value")
    return None


def write_report(run_dir: str | Path, *, title: str | None = None) -> Path | None:
    """Write RUN/report.html; a failure is logged as a warning and never fails the run."""
    out = Path(run_dir) / _keys.REPORT
    try:
        write_text(build_report(run_dir, title=title), out)
    except Exception as e:  # the report is a convenience: never lose a trained model over it
        log.warning("could not write %s: %s: %s", out, type(e).__name__, e)
        return None
    return out
