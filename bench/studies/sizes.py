"""Study: do the screens suite's verdicts hold across the sizes of real screens?

make bench runs one size (120-150 training drugs, 4 doses, 50 genes, 16 features). Issue 9's range
is 60-200 training drugs, 15-40 held out, 3-6 doses, 20-100 genes, 8-32 feature dimensions; real
screens start at tens of drugs, so 20 and 35 training drugs are points too. This
sweep moves one factor at a time from the bench size, plus two corners, on the four simulated drug
screens (seeds 0 and 1, the bench's training steps), and writes bench/SIZES.md and SIZES.json:
per point and screen, GIM against the best baseline on unseen drugs and unseen doses (R² and
energy), the share of the best baseline's gap to the oracle that GIM closes, and target AP
against the |mean shift| ranking.

    python bench/studies/sizes.py --jobs 2                 # every point (~16-20 min on 2 cores)
    python bench/studies/sizes.py --only 60-drugs,20-genes # some points
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCREENS = ("linear-dag", "cyclic-fingerprints", "nonlinear-counts", "mixed")
SIX_DOSES = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
THREE_DOSES = (10.0, 1000.0, 100000.0)
# Point -> generator arguments replacing the bench size's (bench/screens/run.py sizes()).
POINTS = {
    "bench": {},
    "20-drugs": dict(n_train=20, n_held=15),  # below the issue's range: screens of tens of drugs
    "35-drugs": dict(n_train=35, n_held=15),
    "60-drugs": dict(n_train=60, n_held=15),
    "200-drugs": dict(n_train=187 - 40, n_held=40),  # fingerprints: sci-Plex3 has 187 compounds
    "20-genes": dict(n_genes=20),
    "100-genes": dict(n_genes=100),
    "3-doses": dict(doses=THREE_DOSES),
    "6-doses": dict(doses=SIX_DOSES),
    "8-features": dict(n_features=8),
    "32-features": dict(n_features=32),
    "small-corner": dict(n_train=60, n_held=15, n_genes=20, doses=THREE_DOSES, n_features=8),
    "large-corner": dict(n_train=60, n_held=15, n_genes=100, doses=SIX_DOSES, n_features=32),
}


def row(point: str, name: str, s: dict) -> dict:
    out = {"point": point, "screen": name, "info": next(iter(s["info"].values()))}
    for kind, t in s["tasks"].items():
        c, e = t["compare"]["r2_mean"], t["compare"]["energy_distance"]
        m = t["methods"]
        g, o = m["gim"]["r2_mean"]["mean"], m.get("oracle", {}).get("r2_mean", {}).get("mean")
        b = c.get("best_mean")
        out[kind] = {
            "units": t["n_units"],
            "gim": g,
            "best": c.get("best"),
            "best_r2": b,
            "oracle": o,
            "diff": c.get("diff"),
            "se": c.get("se"),
            "verdict": c.get("verdict"),
            "energy": e.get("verdict"),
            "gap_closed": (g - b) / (o - b) if o is not None and b is not None and o > b else None,
        }
    tt = s["target_table"]
    if tt:
        out["targets"] = {
            "gim": tt["per_unit"]["gim"]["mean"],
            "mean_shift": tt["per_unit"]["mean_shift"]["mean"],
            "verdict": tt["compare"]["verdict"],
        }
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# The screens suite across sizes",
        "",
        f"Produced by `python bench/studies/sizes.py` ({meta['jobs']} jobs, wall "
        f"{meta['wall_s'] / 60:.1f} min, {meta['steps']} training steps, seeds {meta['seeds']}). "
        "Each point changes the bench size's generator arguments (bench/screens/run.py `sizes()`: "
        "120 training + 30 held-out drugs, 150 + 30 for fingerprints, 4 doses, 50 genes, 16 "
        "continuous features, 50 cells per context) as listed; screens as in bench/SCREENS.md. "
        "GIM − best baseline by R² paired over held-out units (drugs over their doses; "
        "held-out doses of training drugs), win / loss beyond 2 SE; gap = share of the best "
        "baseline's distance to the oracle that GIM closes; AP = direct-target average precision "
        "per training unit, GIM / |mean shift|. The fingerprint screen's features are the "
        "compounds' Morgan fingerprints, so `n_features` does not change it (its 8- and "
        "32-feature rows repeat the bench row).",
        "",
        "| point | changed | screen | unseen drug: GIM, best (oracle) | GIM − best ± SE | "
        "energy | gap | unseen dose: GIM − best ± SE | energy | AP GIM / shift |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x, d=3):
        return "–" if x is None else f"{x:.{d}f}"

    for r in rows:
        u, h, t = r.get("unseen drug", {}), r.get("unseen dose", {}), r.get("targets", {})
        changed = ", ".join(f"{k}={v}" for k, v in POINTS[r["point"]].items()) or "–"
        lines.append(
            f"| {r['point']} | {changed} | {r['screen']} | {f(u.get('gim'))}, {u.get('best')} "
            f"{f(u.get('best_r2'))} ({f(u.get('oracle'))}) | {f(u.get('diff'))} ± "
            f"{f(u.get('se'))} **{u.get('verdict')}** | {u.get('energy')} | "
            f"{f(u.get('gap_closed'), 2)} | {f(h.get('diff'))} ± {f(h.get('se'))} "
            f"**{h.get('verdict')}** | {h.get('energy')} | {f(t.get('gim'))} / "
            f"{f(t.get('mean_shift'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from bench.screens.run import STEPS, suite

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(POINTS), help="comma list of points")
    ap.add_argument("--screens", default=",".join(SCREENS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "SIZES.md"))
    args = ap.parse_args(argv)
    points = args.only.split(",")
    bad = sorted(set(points) - set(POINTS))
    if bad:
        raise SystemExit(f"--only {bad}: choose from {list(POINTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, t0 = [], time.perf_counter()
    for point in points:
        res = suite(
            only=args.screens.split(","), seeds=seeds, jobs=args.jobs, overrides=POINTS[point]
        )
        rows += [row(point, n, s) for n, s in res["screens"].items()]
        print(f"{point}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        # Written after every point: a sweep cut off keeps the points it finished.
        meta = {"jobs": args.jobs, "wall_s": time.perf_counter() - t0, "steps": STEPS["bench"],
                "seeds": seeds}  # fmt: skip
        out = Path(args.out)
        out.write_text(markdown(rows, meta))
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
