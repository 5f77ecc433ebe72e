"""Ablations of the model's choices on benchmarks 1, 2 and 4: each variant reruns them with one
TrainConfig change (`bench/run_all.py --set`) and bench/ABLATIONS.md tabulates the headline numbers.

    python bench/studies/ablations.py            # ~6 min on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE.parent))

from bench import run_all  # noqa: E402

VARIANTS = {
    "default": [],
    "no spike (non-targets shift exactly 0)": ["spike_sd=0"],
    "fixed shifts (u = m exactly; no spike)": ["shift_sd=0", "spike_sd=0"],
    "learned tau": ["shift_sd=-1"],
    "no weight decay": ["weight_decay=0"],
}


def headline(res: dict) -> dict:
    def kind(bench, k, m):
        rows = [r for r in res[bench]["by_kind"] if r["kind"] == k and r["method"] == m]
        return rows[0] if rows else {}

    out = {}
    for bench, k, label in (
        ("sim", "unseen dose", "sim dose"),
        ("sim", "unseen combination", "sim pairs"),
        ("sim", "unseen drug", "sim drugs"),
        ("norman", "held-out pair (K562)", "Norman pairs"),
        ("sciplex", "unseen dose", "sci-Plex dose"),
        ("sciplex", "unseen drug", "sci-Plex drugs"),
    ):
        g = kind(bench, k, "gim")
        out[f"{label} R²"] = g.get("r2_mean")
        out[f"{label} energy"] = g.get("energy_distance")
    t = res["sim"]["targets"]
    out["sim target AUROC"] = sum(r["gim_auroc"] for r in t) / len(t)
    out["sim target AUPRC"] = sum(r["gim_auprc"] for r in t) / len(t)
    out["sim graph AUROC"] = sum(r["graph_auroc"] for r in t) / len(t)
    out["sci-Plex target AUROC"] = res["sciplex"]["targets"]["gim"]["train"]["auroc"]
    out["sci-Plex target AUPRC"] = res["sciplex"]["targets"]["gim"]["train"]["auprc"]
    return out


def main() -> int:
    rows, t0 = {}, time.perf_counter()
    for name, sets in VARIANTS.items():
        out = HERE / "ablations" / ("_".join(s.replace("=", "") for s in sets) or "default")
        argv = ["--only", "sim,norman,sciplex", "--out", str(out.with_suffix(".md"))]
        for s in sets:
            argv += ["--set", s]
        run_all.main(argv)
        rows[name] = headline(json.loads(out.with_suffix(".json").read_text()))
    cols = list(next(iter(rows.values())))
    lines = [
        "# Ablations",
        "",
        f"`python bench/studies/ablations.py` ({(time.perf_counter() - t0) / 60:.1f} min on 2 CPU "
        "cores): benchmarks 1, 2 "
        "and 4 of bench/RESULTS.md rerun with one TrainConfig change each (full tables in "
        "bench/ablations/). "
        "R² and energy distance of GIM on held-out contexts; target and graph AUROC/AUPRC on "
        "training contexts "
        "(simulated: mean over the 4 systems).",
        "",
        "| variant | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | " + " | ".join("–" if r[c] is None else f"{r[c]:.3f}" for c in cols) + " |"
        )
    (HERE / "ABLATIONS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'ABLATIONS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
