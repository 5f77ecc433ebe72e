"""Cost of fitting the feature prior (gimcli.model.feature_prior), which `gim train` pays once
when it saves a run with drug features, and of refitting it from the saved choices
(`FeaturePrior.from_choices`), which each `gim predict` on that run pays: a synthetic screen of
167 drugs x 4 doses x 3 lines (2004 contexts), 8 features, `--genes` genes of which `--gated`
have a target rule (so each gets a gate chosen by cross-validation and its out-of-fold refits).

    python bench/perf/feature_prior.py --genes 2000 --gated 400     # figures in bench/NOTES.md
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from gimcli.model.feature_prior import FeaturePrior  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drugs", type=int, default=167)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--gated", type=int, default=400)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n, F, d = args.drugs, 8, args.genes
    Fd = rng.normal(size=(n, F))
    hit = np.zeros((n, d), bool)
    hit[:, : args.gated] = Fd @ rng.normal(size=(F, args.gated)) > 1.0  # ~16% of drugs
    drug = np.repeat(np.arange(n), 12)
    t = np.tile(np.repeat([0.0, 0.33, 0.66, 1.0], 3), n)
    cov = np.tile(np.eye(3), (4 * n, 1))
    direct = hit[drug] * 2 * t[:, None] + 0.3 * rng.normal(size=(len(drug), d))
    fit_args = (Fd[drug], drug, t, cov, hit[drug], direct)
    t0 = time.perf_counter()
    fp = FeaturePrior.fit(*fit_args, seed=0)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()  # what loading a saved run does
    back = FeaturePrior.from_choices(fp.choices(), *fit_args, seed=0)
    wall_load = time.perf_counter() - t0
    new = rng.normal(size=(5, F))
    a, b = fp.predict_new(new, t[:5], cov[:5]), back.predict_new(new, t[:5], cov[:5])
    same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    print(
        f"{n} drugs, {len(drug)} contexts, {d} genes, {fp.chosen['n_gated_genes']} gated: "
        f"fit {wall:.1f} s, peak RSS {rss:.2f} GiB, w {fp.weight:.2f}; "
        f"from saved choices {wall_load:.1f} s (predictions identical: {same})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
