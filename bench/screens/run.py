"""Benchmarks sized like real screens: simulated drug and knock-out screens with the oracle beside
the baselines, the L1000 plate and the Papalexi knock-outs. Writes bench/SCREENS.md and
bench/SCREENS.json.

    python bench/screens/run.py --jobs 2             # the make-bench size, seeds 0 and 1 (~12 min)
    python bench/screens/run.py --quick --jobs 2     # tiny sizes (a smoke test, ~1 min)
    python bench/screens/run.py --full --jobs 2      # seeds 0-4, larger screens (not in make bench)
    python bench/screens/run.py --only ko-pairs,l1000 --out /tmp/S.md
    python bench/screens/run.py --only linear-dag --set n_train=60 n_held=15 --out /tmp/S.md

Each (screen, seed) is one job in its own process (OMP_NUM_THREADS=1, one torch thread), seeded:
the screen's data, the training and the scoring all take the job's seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Training steps per size: modest, so that the suite fits its ~12 min in make bench.
STEPS = {"quick": 150, "bench": 1000, "full": 1500}
SEEDS = {"quick": (0,), "bench": (0, 1), "full": (0, 1, 2, 3, 4)}
JOBS = 2  # worker processes in make bench (2 cores)
N_TOP_GENES = {"l1000": 150}  # the most variable landmark genes (gim's own HVG selection)


def sizes(size: str) -> dict[str, dict]:
    """Screen name -> generator arguments at this size."""
    drug = {
        "quick": dict(n_train=24, n_held=6, doses=(10.0, 1000.0, 100000.0), held_dose=1000.0),
        "bench": dict(n_train=120, n_held=30, n_cells=50),
        "full": dict(n_train=200, n_held=40, n_genes=60, n_cells=60, n_control=500),
    }[size]
    small = dict(n_genes=15, n_candidates=5, n_cells=20, n_control=150) if size == "quick" else {}
    fp = {**drug, **small}
    if size != "quick":  # sci-Plex3 has 187 compounds
        fp.update(n_train=150, n_held=30) if size == "bench" else fp.update(n_train=147)
    ko = {
        "quick": dict(n_genes=15, n_ko=8, n_pairs=10, n_held_pairs=4, n_held_ko=2, n_cells=30),
        "bench": dict(n_ko=24, n_pairs=50, n_held_pairs=15, n_held_ko=4),
        "full": dict(n_genes=60, n_ko=25, n_pairs=60, n_held_pairs=20, n_held_ko=5),
    }[size]
    return {
        "linear-dag": dict(mechanism="dag", features="continuous", **drug, **small),
        "cyclic-fingerprints": dict(mechanism="cyclic", features="fingerprint", **fp),
        "nonlinear-counts": dict(mechanism="nonlinear", features="continuous", **drug, **small),
        "mixed": dict(mechanism="mixed", features="continuous", **drug, **small),
        "ko-pairs": ko,
        "l1000": {},
        "papalexi-targets": {},
        "papalexi-heldout": {},
    }


SCREENS = tuple(sizes("bench"))
TITLES = {
    "linear-dag": "Simulated drug screen: linear DAG SEM, shift interventions",
    "cyclic-fingerprints": "Simulated drug screen: linear cyclic SEM, sci-Plex3 fingerprints",
    "nonlinear-counts": "Simulated drug screen: Hill-type regulatory DAG, negative-binomial counts",
    "mixed": "Simulated drug screen: cyclic SEM, mixed do / shift / noise-scale interventions",
    "ko-pairs": "Simulated knock-out screen: Hill-type regulatory DAG, counts, KO pairs",
    "l1000": "Real: LINCS L1000 plate LJP005 (A375, 24 h), bulk profiles",
    "papalexi-targets": "Real: Papalexi 2021 THP-1 knock-outs, the knocked-out gene as a target",
    "papalexi-heldout": "Real: Papalexi 2021 THP-1 knock-outs, held-out knock-outs",
}
# Relative cost, to start the longest jobs first.
COST = {"papalexi-targets": 5, "papalexi-heldout": 5, "cyclic-fingerprints": 4}


def build(name: str, seed: int, size: str, overrides: dict | None = None):
    """The screen at this size; `overrides`: generator arguments that replace the size's (simulated
    screens only; a size sweep, bench/studies/sizes.py)."""
    from bench.screens import generators as g
    from bench.screens import real

    kw = {**sizes(size)[name], **(overrides or {})}
    if name == "ko-pairs":
        return g.ko_screen(name=name, seed=seed, **kw)
    if name == "l1000":
        return real.l1000_screen(seed=seed)
    if name.startswith("papalexi"):
        return real.papalexi_screen(seed=seed, hold=name == "papalexi-heldout")
    return g.drug_screen(name=name, seed=seed, **kw)


def config(name: str, seed: int, base):
    """The job's TrainConfig: `base` (the library defaults but for the steps) with the job's
    seed, the screen's gene count and one cell per context allowed (bulk screens: one sample is a
    context; the default 3 would drop every L1000 context)."""
    return base.replace(
        seed=seed,
        n_top_genes=N_TOP_GENES.get(name, base.n_top_genes),
        min_cells_per_context=1,
    )


def run_job(job: tuple) -> dict:
    """One screen at one seed (name, seed, size, base TrainConfig[, generator overrides]): build,
    train, score. Runs in a worker process."""
    name, seed, size, base, *rest = job
    from bench.screens.score import Scorer, ko_ranks
    from gimcli.config import DataKeys
    from gimcli.training.fitting import fit_run

    t0 = time.perf_counter()
    screen = build(name, seed, size, rest[0] if rest else None)
    cfg = config(name, seed, base)
    t1 = time.perf_counter()
    run, _ = fit_run(
        screen.adata,
        keys=DataKeys(**screen.keys),
        config=cfg,
        device="cpu",
        train_mask=screen.mask,
    )
    t2 = time.perf_counter()
    scorer = Scorer(run, screen, seed=seed)
    out = {"screen": name, "seed": seed, "info": screen.info, "steps": cfg.steps}
    out["n_genes"] = len(run.genes)
    out["n_train_contexts"] = int((~run.contexts["is_control"].astype(bool)).sum())
    if (~screen.mask).any():
        per, refused = scorer.heldout_rows()
        out["per_context"] = per.to_dict("records")
        out["refused"] = refused
        out["refusal"] = getattr(scorer, "refusal", "")
    if screen.truth is not None and len(screen.truth):
        rows, pooled = scorer.target_rows()
        out["targets"] = rows.to_dict("records")
        out["targets_pooled"] = pooled
        if name.startswith("papalexi"):
            out["ko_rank"] = ko_ranks(scorer)
    out["time_s"] = {
        "data": t1 - t0,
        "train": t2 - t1,
        "score": time.perf_counter() - t2,
        "total": time.perf_counter() - t0,
    }
    return out


def worker_setup() -> None:
    """One thread per job (the jobs share the cores), and only errors printed."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    logging.getLogger("gimcli").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_jobs(jobs: list, n_jobs: int) -> list[dict]:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    jobs = sorted(jobs, key=lambda j: -COST.get(j[0], 1))
    if n_jobs <= 1:
        worker_setup()
        return [run_job(j) for j in jobs]
    import multiprocessing as mp

    results = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(n_jobs, initializer=worker_setup, maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(run_job, jobs):
            print(
                f"  {r['screen']} seed {r['seed']}: {r['time_s']['total']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            results.append(r)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny screens, one seed (a smoke test)")
    g.add_argument("--full", action="store_true", help="seeds 0-4 and larger screens")
    ap.add_argument("--only", default=",".join(SCREENS), help="comma list of screens")
    ap.add_argument("--seeds", default=None, help="comma list (default: 0,1; --full 0-4)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default per size)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one job each)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "SCREENS.md"))
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="ARG=VALUE",
        help="generator arguments of the simulated screens, e.g. n_train=60 doses=1,10,100",
    )  # fmt: skip
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "full" if args.full else "bench"
    result = suite(
        size=size,
        only=args.only.split(","),
        seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None,
        steps=args.steps,
        jobs=args.jobs,
        out=args.out,
        overrides=parse_overrides(args.set),
    )
    print(f"wrote {args.out} in {result['wall_s']:.0f} s", file=sys.stderr)
    return 0


def parse_overrides(items: list[str]) -> dict:
    """["n_train=60", "doses=1,10,100"] -> {"n_train": 60, "doses": (1.0, 10.0, 100.0)}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise SystemExit(f"--set {item!r}: expected ARG=VALUE")
        if "," in value or key == "doses":
            out[key] = tuple(float(v) for v in value.split(","))
        elif value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def suite(
    *,
    size="bench",
    only=SCREENS,
    seeds=None,
    steps=None,
    jobs=1,
    out=None,
    base=None,
    overrides=None,
) -> dict:
    """Run the screens, write OUT (.md and .json); returns the JSON-able results (and the
    headline markdown under "headline"). `base`: the TrainConfig of every job (default: the
    library's, with the size's steps or `steps`); `overrides`: generator arguments of the
    simulated drug screens that replace the size's."""
    from bench.screens import real
    from bench.screens.report import markdown, summarise
    from gimcli.config import TrainConfig

    bad = sorted(set(only) - set(SCREENS))
    if bad:
        raise SystemExit(f"--only {bad}: choose from {list(SCREENS)}")
    have = real.available()
    skipped = [n for n in only if not have.get(n.split("-")[0], True)]
    base = base or TrainConfig(steps=steps or STEPS[size])
    overrides = overrides or {}
    fixed = [n for n in only if overrides and "mechanism" not in sizes(size)[n]]
    if fixed:
        raise SystemExit(f"--set applies to the simulated drug screens only, not {fixed}")
    todo = [
        (n, s, size, base, overrides)
        for n in only
        if n not in skipped
        for s in (seeds or SEEDS[size])
    ]
    t0 = time.perf_counter()
    results = run_jobs(todo, jobs)
    wall = time.perf_counter() - t0
    summary = summarise(results)
    meta = {
        "size": size,
        "jobs": jobs,
        "wall_s": wall,
        "skipped": skipped,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread per job",
        "steps": base.steps,
        "overrides": overrides,
        "train_config": base.to_dict(),
    }
    md, headline = markdown(summary, meta, TITLES)
    if out:
        Path(out).write_text(md)
        Path(out).with_suffix(".json").write_text(
            json.dumps({"meta": meta, "screens": summary}, indent=1, default=_json)
        )
    return {"wall_s": wall, "headline": headline, "screens": summary, "meta": meta}


def run(cfg, *, jobs: int = JOBS) -> dict:
    """make bench's entry (bench/run_all.py): the suite at its default size with `cfg` as every
    job's TrainConfig; writes bench/SCREENS.md/.json and returns the headline for RESULTS.md."""
    out = ROOT / "bench" / "SCREENS.md"
    res = suite(size="bench", jobs=jobs, out=str(out), base=cfg)
    md = (
        f"Seeds 0 and 1, {jobs} worker processes; every table, the rules and the timings are in "
        "[bench/SCREENS.md](SCREENS.md) (and SCREENS.json). Headline (mean ± SE over held-out "
        "units; verdict: GIM − best baseline beyond 2 paired SE):\n\n"
        + res["headline"]
        + "\n\nThe same simulated screens across the sizes of real screens (20-187 training "
        "drugs, 3-6 doses, 20-100 genes, 8-32 features; `python bench/studies/sizes.py`, not "
        "run by make bench): [bench/SIZES.md](SIZES.md)."
    )
    return {"markdown": md, "wall_s": res["wall_s"], "screens": res["screens"]}


def _json(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
