"""Tables of the screens suite: mean ± SE over units (held-out drugs, KOs, pairs; pooled over
seeds), and GIM − best baseline with its paired SE and a verdict (> 2 SE: win / loss, else tie)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench._common import fmt
from gimcli.evaluation.metrics import HIGHER_IS_BETTER

SHOW = ("r2_mean", "pearson_delta", "energy_distance")
ORDER = (
    "gim",
    "control",
    "perturbed_mean",
    "perturbed_mean_dose",
    "additive",
    "ridge",
    "nearest",
    "oracle",
    "ceiling",
)
NOT_BASELINES = ("gim", "oracle", "ceiling")
KIND_ORDER = ("unseen drug", "unseen dose", "unseen pair", "unseen KO")


def mean_se(v) -> dict:
    v = np.asarray([x for x in v if x is not None and np.isfinite(x)], float)
    if not len(v):
        return {"mean": None, "se": None, "n": 0}
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v))}


def compare(wide: pd.DataFrame, metric: str, baselines: list[str], *, gim: str = "gim") -> dict:
    """GIM against the best baseline (by mean over the units) on one metric, paired over units:
    diff > 0 means GIM is better; verdict win / loss beyond 2 paired SE, else tie."""
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    means = {b: wide[b].mean() for b in baselines if b in wide and wide[b].notna().any()}
    if not means:
        return {"best": None, "verdict": "–"}
    best = max(means, key=lambda b: sign * means[b])
    if gim not in wide or wide[gim].isna().all():
        return {"best": best, "best_mean": float(means[best]), "verdict": "refused"}
    diff = (sign * (wide[gim] - wide[best])).dropna()
    s = mean_se(diff)
    se = s["se"]
    if se is None or se == 0:
        verdict = "tie" if s["mean"] == 0 else ("win" if s["mean"] > 0 else "loss")
    else:
        verdict = "win" if s["mean"] > 2 * se else "loss" if s["mean"] < -2 * se else "tie"
    return {"best": best, "best_mean": float(means[best]), "diff": s["mean"], "se": se,
            "n": s["n"], "verdict": verdict}  # fmt: skip


def summarise(results: list[dict]) -> dict:
    """Per screen: seeds, times, and per kind of held-out context the methods' mean ± SE and the
    comparisons; the direct-target tables; the knocked-out genes' ranks."""
    out: dict = {}
    for r in sorted(results, key=lambda r: (r["screen"], r["seed"])):
        s = out.setdefault(
            r["screen"],
            {"seeds": [], "info": {}, "time_s": {}, "refused": {}, "per": [], "targets": [],
             "pooled": {}, "ko_rank": [], "n_genes": r["n_genes"], "steps": r["steps"]},
        )  # fmt: skip
        s["seeds"].append(r["seed"])
        s["info"][r["seed"]] = r["info"]
        s["time_s"][r["seed"]] = r["time_s"]
        if r.get("refused"):
            s["refused"][r["seed"]] = {"conditions": r["refused"], "message": r.get("refusal")}
        s["per"] += [{**x, "seed": r["seed"]} for x in r.get("per_context", [])]
        s["targets"] += [{**x, "seed": r["seed"]} for x in r.get("targets", [])]
        if "targets_pooled" in r:
            s["pooled"][r["seed"]] = r["targets_pooled"]
        s["ko_rank"] += [{**x, "seed": r["seed"]} for x in r.get("ko_rank", [])]
    for s in out.values():
        s["tasks"] = _tasks(pd.DataFrame(s.pop("per")))
        s["target_table"] = _targets(pd.DataFrame(s["targets"]), s["pooled"])
    return out


def _tasks(per: pd.DataFrame) -> dict:
    if per.empty:
        return {}
    per = per.assign(uid=per["seed"].astype(str) + ":" + per["unit"].astype(str))
    units = per.groupby(["kind", "method", "uid"], sort=False)[list(SHOW)].mean().reset_index()
    tasks = {}
    kinds = sorted(units["kind"].unique(), key=lambda k: KIND_ORDER.index(k))
    for kind in kinds:
        u = units[units["kind"] == kind]
        scored = set(u.loc[u[list(SHOW)].notna().any(axis=1), "method"])
        methods = [m for m in ORDER if m in scored or (m == "gim" and m in set(u["method"]))]
        t = {"n_units": int(u["uid"].nunique()), "n_contexts": int(
            (per["kind"] == kind).sum() // max(1, per.loc[per["kind"] == kind, "method"].nunique())
        ), "methods": {}, "compare": {}}  # fmt: skip
        for m in methods:
            t["methods"][m] = {k: mean_se(u.loc[u["method"] == m, k]) for k in SHOW}
        for k in SHOW:
            wide = u.pivot_table(index="uid", columns="method", values=k, dropna=False)
            t["compare"][k] = compare(wide, k, [m for m in methods if m not in NOT_BASELINES])
        tasks[kind] = t
    return tasks


def _targets(t: pd.DataFrame, pooled: dict) -> dict:
    if t.empty:
        return {}
    t = t.assign(uid=t["seed"].astype(str) + ":" + t["unit"].astype(str))
    wide = t.pivot_table(index="uid", columns="method", values="ap")
    return {
        "score": next(iter(pooled.values()))["score"] if pooled else "prob",
        "per_unit": {m: mean_se(wide[m]) for m in ("gim", "mean_shift") if m in wide},
        "pooled": {m: mean_se([p[m] for p in pooled.values()]) for m in ("gim", "mean_shift")},
        "compare": compare(wide, "ap", ["mean_shift"]),
    }


def _ms(d: dict | None, empty: str = "–") -> str:
    if not d or d.get("mean") is None:
        return empty
    return fmt(d["mean"]) + (f" ± {d['se']:.3f}" if d.get("se") is not None else "")


def _info(info: dict) -> str:
    """The screen's description; per seed where the seeds' differ (e.g. the folds)."""
    if len(set(info.values())) == 1:
        return next(iter(info.values()))
    return "; ".join(f"seed {k}: {v}" for k, v in info.items())


def _cmp(c: dict) -> str:
    if not c.get("best") or c.get("diff") is None:
        return c.get("verdict", "–")
    se = f" ± {c['se']:.3f}" if c.get("se") is not None else ""
    return f"{c['diff']:+.3f}{se} vs {c['best']}: **{c['verdict']}**"


def markdown(summary: dict, meta: dict, titles: dict) -> tuple[str, str]:
    """SCREENS.md, and its headline table (which bench/RESULTS.md carries too)."""
    head = [
        "| screen | task | units | GIM | best baseline | oracle (ceiling) | GIM − best ± SE "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    body = []
    for name, s in summary.items():
        times = s["time_s"]
        body += [
            f"## {titles.get(name, name)}",
            "",
            f"`{name}`, seeds {s['seeds']}; {_info(s['info'])}. gim: {s['n_genes']} "
            f"genes, {s['steps']} training steps. Wall time per seed (data / train / score): "
            + "; ".join(
                f"seed {k}: {v['data']:.0f} / {v['train']:.0f} / {v['score']:.0f} s"
                for k, v in times.items()
            )
            + ".",
            "",
        ]
        for seed, v in s["refused"].items():
            body += [
                f'GIM refused (seed {seed}) {v["conditions"]}: "{v["message"]}"; its rows are '
                "empty there and its means and paired differences run over the rest.",
                "",
            ]
        for kind, t in s["tasks"].items():
            body += [
                f"**{kind}** ({t['n_units']} units over seeds, {t['n_contexts']} contexts; "
                "mean ± SE over units)",
                "",
                "| method | " + " | ".join(SHOW) + " |",
                "|---|" + "---|" * len(SHOW),
            ]
            for m, v in t["methods"].items():
                none = "refused" if m == "gim" else "–"
                body.append(f"| {m} | " + " | ".join(_ms(v[k], none) for k in SHOW) + " |")
            cmp = " | ".join(_cmp(t["compare"][k]) for k in SHOW)
            body.append(f"| **GIM − best** | {cmp} |")
            body.append("")
            c = t["compare"]["r2_mean"]
            g = t["methods"].get("gim", {}).get("r2_mean")
            o = t["methods"].get("oracle", {}).get("r2_mean")
            ceil = t["methods"].get("ceiling", {}).get("r2_mean")  # real screens
            o_cell = _ms(o) if o else f"({_ms(ceil)})" if ceil and ceil["mean"] is not None else "–"
            e = t["compare"]["energy_distance"]
            refused = "refused" if c.get("verdict") == "refused" else "–"
            head.append(
                f"| {name} | {kind} R² (energy: {e.get('verdict', '–')}) | {t['n_units']} | "
                f"{_ms(g, refused)} | {c.get('best') or '–'} {fmt(c.get('best_mean'))} | "
                f"{o_cell} | "
                f"{_cmp(c).split(' vs ')[0]} | {c.get('verdict', '–')} |"
            )
        tt = s["target_table"]
        if tt:
            body += [
                f"**direct targets of training contexts** (GIM's score: `{tt['score']}`; average "
                "precision per training unit, and AUPRC pooled over all training contexts per "
                "seed)",
                "",
                "| ranking | AP per unit | pooled AUPRC (over seeds) |",
                "|---|---|---|",
            ]
            for m in ("gim", "mean_shift"):
                label = "GIM" if m == "gim" else "\\|mean shift\\| / sd"
                body.append(f"| {label} | {_ms(tt['per_unit'].get(m))} | {_ms(tt['pooled'][m])} |")
            body += ["", f"GIM − |mean shift| ranking, per unit: {_cmp(tt['compare'])}", ""]
            c = tt["compare"]
            head.append(
                f"| {name} | direct targets, AP | {c.get('n', '–')} | "
                f"{_ms(tt['per_unit'].get('gim'))} | mean shift "
                f"{_ms(tt['per_unit'].get('mean_shift'))} | – | {_cmp(c).split(' vs ')[0]} | "
                f"{c.get('verdict', '–')} |"
            )
        if s["ko_rank"]:
            kr = pd.DataFrame(s["ko_rank"])
            body += [
                "**the knocked-out gene's rank in its own condition** (of "
                f"{int(kr['n_genes'].iloc[0])} genes; 1 = first)",
                "",
                "| seed | ranking | top-3 | median rank | ranks |",
                "|---|---|---|---|---|",
            ]
            for seed, k in kr.groupby("seed"):
                for m in ("gim", "mean_shift"):
                    ranks = ", ".join(f"{a} {b:g}" for a, b in zip(k["ko"], k[m], strict=True))
                    body.append(
                        f"| {seed} | {m} | {int((k[m] <= 3).sum())} of {len(k)} | "
                        f"{k[m].median():g} | {ranks} |"
                    )
                head.append(
                    f"| {name} | KO gene in top 3 (seed {seed}) | {len(k)} | "
                    f"{int((k['gim'] <= 3).sum())} (median rank {k['gim'].median():g}) | "
                    f"mean shift {int((k['mean_shift'] <= 3).sum())} (median "
                    f"{k['mean_shift'].median():g}) | – | – | – |"
                )
            body.append("")
    headline = "\n".join(head)
    intro = [
        "# gim on screens sized like real ones",
        "",
        f"Produced by `python bench/screens/run.py` (size `{meta['size']}`, `--jobs "
        f"{meta['jobs']}`; `make bench` runs it). Wall time {meta['wall_s'] / 60:.1f} min on "
        f"{meta['machine']}. Screens, rules and baselines: bench/screens/generators.py, "
        "bench/screens/real.py, bench/screens/score.py."
        + (f" Skipped (data missing): {meta['skipped']}." if meta["skipped"] else ""),
        "",
        "Metrics (gimcli/evaluation/metrics.py) per held-out context, averaged per unit (a "
        "held-out drug over its doses, a KO, a pair; units of all seeds pooled): r2_mean (R² "
        "over genes of the mean), pearson_delta (Pearson of the predicted vs true change "
        "against control), energy_distance (training-cell PCA). Baselines "
        "(gimcli/evaluation/baselines.py): control (no change), perturbed_mean (all perturbed "
        "training cells), perturbed_mean_dose (mean of the perturbed training contexts at the "
        "nearest dose), additive (sum of the components' training effects, interpolated on log "
        "dose between the nearest measured doses; pairs and held-out doses), ridge (features, "
        "features x dose, dose), nearest (the most similar training drug's effect). oracle: "
        "cells drawn afresh from the true model (simulations); ceiling "
        "(real screens, in parentheses in the headline): the R² the true mean would be expected to "
        "reach against the observed one, given the observed mean's sampling noise (for a bulk "
        "well, the control wells' variance; bench/screens/score.py). Verdict:"
        " GIM − best baseline (by mean) paired over units; win / loss beyond 2 SE, else tie; "
        "for energy distance lower is better and the difference is signed so that > 0 favours "
        "GIM.",
        "",
        "## Headline",
        "",
        headline,
        "",
    ]
    return "\n".join(intro + body), headline
