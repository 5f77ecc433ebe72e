"""Run every benchmark with fixed seeds and write bench/RESULTS.md (+ bench/RESULTS.json).

python bench/run_all.py            # the default set (< 30 min on 2 CPU cores)
python bench/run_all.py --only sim,datlinger
python bench/run_all.py --only sim_cost2   # benchmark 1 with target_cost 2 (not in the default)
python bench/run_all.py --only sim --set spike_sd=0 --out /tmp/R.md   # an ablation
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import _common  # noqa: E402
from gimcli.config import TrainConfig  # noqa: E402

# Training settings: the library defaults; the real screens use fewer steps and genes so that the
# whole bench fits ~30 min on 2 cores.
BENCH_CFG = {
    "sim": TrainConfig(),
    "sim_cost2": TrainConfig(target_cost=2.0),
    "norman": TrainConfig(steps=600, n_top_genes=200),
    "datlinger": TrainConfig(steps=600, n_top_genes=300),
    "sciplex": TrainConfig(),
    # issue 9's screens: modest steps so that ~16 jobs fit ~12 min on 2 processes
    "screens": TrainConfig(steps=1000),
    "lines": TrainConfig(steps=1000),
}
# benchmark -> module (sim_cost2 reruns benchmark 1 with the former default target cost 2.0, for
# tuning)
MODULE = {
    "sim": "sim",
    "sim_cost2": "sim",
    "norman": "norman",
    "datlinger": "datlinger",
    "sciplex": "sciplex",
    "screens": "screens.run",
    "lines": "lines",
}
TITLES = {
    "sim": "1. Simulated screens: unseen drugs, doses and combinations; targets and graph",
    "sim_cost2": "1b. Benchmark 1 again with target_cost = 2.0 (the former default; now 1.0): "
    "evidence for the choice",
    "norman": "2. Norman 2019 / McFaline-Figueroa Perturb-seq: held-out pairs, unseen perturbation "
    "per cell line",
    "datlinger": "3. Datlinger 2017 CROP-seq (raw counts): are the knocked-out genes named as "
    "direct targets?",
    "sciplex": "4. sci-Plex-shaped simulation with the real sci-Plex compounds and doses",
    "screens": "6. Screens sized like real ones: 100-150 training drugs, KO pairs, L1000, Papalexi",
    "lines": "7. Drugs across cell lines (simulated, 3 lines): a drug new to a line, unseen drugs",
}
# The default set of `make bench`; sim_cost2 (a tuning rerun of benchmark 1) only with --only.
DEFAULT = "sim,norman,datlinger,sciplex,screens,lines"


def write(
    results: dict,
    out: str,
    total: float,
    done: bool,
    note: str = "",
    cfgs: dict | None = None,
    sets: list[str] | None = None,
) -> None:
    import torch

    head = [
        "# gim benchmarks",
        "",
        "Produced by `python bench/run_all.py` (or `make bench`); fixed seeds. Total wall time "
        f"{total / 60:.1f} min "
        + ("" if done else "PARTIAL (not every benchmark has run yet) ")
        + f"on {platform.machine()} CPU, torch threads per process {_common.THREADS}, "
        f"torch {torch.__version__}. {note}"
        + (f" TrainConfig overrides in every benchmark: {sets}." if sets else ""),
        "",
        "Metrics (gimcli/evaluation/metrics.py): r2_mean = sklearn r2_score over genes of the "
        "held-out context's "
        "mean expression (log-normalised); r2_top20_de = the same on its 20 genes of largest |true "
        "change|; "
        "pearson_delta = Pearson of predicted vs true change against control; mse; energy_distance "
        "(Euclidean, "
        "PCA of training cells, <= 300 cells per side, fixed seed); mmd = RBF MMD² averaged over 4 "
        "bandwidths. "
        "Baselines (gimcli/evaluation/baselines.py): control (no change), perturbed_mean, additive "
        "(sum of the "
        "components' training effects, interpolated on log dose between the nearest measured "
        "doses), ridge (features, features x dose, "
        "dose, covariates "
        "-> mean shift), nearest (effect of the most similar training perturbation), gim_nograph "
        "(the GIM refit "
        "with B = 0).",
        "",
    ]
    body = []
    for name, r in results.items():
        cfg = (cfgs or BENCH_CFG)[name]
        body += [
            f"## {TITLES[name]}",
            "",
            f"Wall time: {r['bench_wall_s']:.0f} s (training steps {cfg.steps}, "
            f"n_top_genes {cfg.n_top_genes}, target_cost {cfg.target_cost}, l1_graph "
            f"{cfg.l1_graph}; "
            "other TrainConfig values at their defaults).",
            "",
            r["markdown"],
            "",
        ]
    # bench/celleval.py's section is made by that script (it needs cell-eval): carried over
    from bench.celleval import section_of

    kept = section_of(Path(out).read_text()) if Path(out).exists() else ""
    Path(out).write_text("\n".join(head + body) + (f"\n{kept}" if kept else ""))
    Path(out).with_suffix(".json").write_text(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "markdown"} for k, v in results.items()},
            indent=1,
            default=str,
        )
    )


def overrides(items: list[str]) -> dict:
    """KEY=VALUE strings -> TrainConfig fields, each value parsed as the field's default type."""
    defaults = TrainConfig().to_dict()
    out = {}
    for it in items:
        key, _, value = it.partition("=")
        if key not in defaults:
            raise SystemExit(f"--set {it}: no TrainConfig field {key!r}")
        kind = type(defaults[key])
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", default=DEFAULT, help=f"comma list of {', '.join(MODULE)}")
    ap.add_argument(
        "--jobs", type=int, default=2, help="worker processes of the screens suite (one job each)"
    )
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument(
        "--note", default="", help="A sentence on the machine (e.g. whether it was shared)."
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a TrainConfig field in every benchmark (repeatable), e.g. spike_sd=0.",
    )
    args = ap.parse_args(argv)
    cfgs = {k: v.replace(**overrides(args.set)) for k, v in BENCH_CFG.items()}
    _common.setup()
    import importlib
    import logging

    logging.basicConfig(level=logging.WARNING)
    results, t_all = {}, time.perf_counter()
    for name in args.only.split(","):
        mod = importlib.import_module(f"bench.{MODULE[name]}")
        t0 = time.perf_counter()
        extra = {"jobs": args.jobs} if name == "screens" else {}
        results[name] = mod.run(cfgs[name], **extra)
        results[name]["bench_wall_s"] = time.perf_counter() - t0
        print(f"{name}: {results[name]['bench_wall_s']:.0f} s", file=sys.stderr, flush=True)
        write(
            results,
            args.out,
            time.perf_counter() - t_all,
            done=False,
            note=args.note,
            cfgs=cfgs,
            sets=args.set,
        )  # a partial file survives a crash
    total = time.perf_counter() - t_all
    write(results, args.out, total, done=True, note=args.note, cfgs=cfgs, sets=args.set)
    print(f"wrote {args.out} in {total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
