"""Benchmarks sized like real screens (issue 9): simulated drug screens with 100-150 training
drugs and learnable hidden rules (linear DAG, cyclic with fingerprints, nonlinear counts, mixed
interventions), a knock-out screen with pairs, the L1000 plate and the Papalexi knock-outs; the
oracle beside the baselines. `python bench/screens/run.py` runs it alone (bench/SCREENS.md);
`make bench` runs it through `bench.screens.run.run(cfg)`.

- generators.py: the simulated screens and their rules (documented there)
- real.py: the real screens' adapters
- score.py: GIM, baselines and oracle on the held-out contexts; direct targets
- report.py: mean ± SE over units, paired verdicts, markdown
- run.py: the jobs (one process each), sizes --quick / default / --full
"""
