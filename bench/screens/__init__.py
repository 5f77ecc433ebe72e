"""Benchmarks sized like real screens (issue 9): simulated drug screens with 100-150 training
drugs and learnable hidden rules (linear DAG, cyclic with fingerprints, nonlinear counts, mixed
interventions), a knock-out screen with pairs, the L1000 plate and the Papalexi knock-outs; the
oracle beside the baselines. `python bench/screens/run.py` runs it alone (bench/SCREENS.md);
`make bench` runs it through `run(cfg)` below.

- generators.py: the simulated screens and their rules (documented there)
- real.py: the real screens' adapters
- score.py: GIM, baselines and oracle on the held-out contexts; direct targets
- report.py: mean ± SE over units, paired verdicts, markdown
- run.py: the jobs (one process each), sizes --quick / default / --full
"""

from __future__ import annotations

JOBS = 2  # worker processes in make bench (2 cores)


def run(cfg, *, jobs: int = JOBS) -> dict:
    """make bench's entry (bench/run_all.py): the suite at its default size with `cfg` as every
    job's TrainConfig; writes bench/SCREENS.md/.json and returns the headline for RESULTS.md."""
    from bench.screens.run import ROOT, suite

    out = ROOT / "bench" / "SCREENS.md"
    res = suite(size="bench", jobs=jobs, out=str(out), base=cfg)
    md = (
        f"Seeds 0 and 1, {jobs} worker processes; every table, the rules and the timings are in "
        "[bench/SCREENS.md](SCREENS.md) (and SCREENS.json). Headline (mean ± SE over held-out "
        "units; verdict: GIM − best baseline beyond 2 paired SE):\n\n" + res["headline"]
    )
    return {"markdown": md, "wall_s": res["wall_s"], "screens": res["screens"]}
