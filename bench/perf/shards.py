"""Sharded reading at scale: `gim train --backed` on 1, 2 and 4 gloo processes (torchrun) of one
simulated screen of >= 2M cells x 2,000 genes, recording per-rank peak RSS, each stage's time and
the speed-up (issue 13).

    python bench/perf/shards.py --work /tmp/gim_scale --nproc 1,2,4 --steps 20

The screen is written once by `gim simulate --counts` (in chunks of cells; low library size keeps
it sparse) into --work and reused. Each run appends one line to shards.jsonl beside this file and
RESULTS.md is rebuilt (bench/perf/run.py keeps this section). Run one measurement at a time on a
shared machine: the point is memory per process, which does not depend on the neighbours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as perf  # noqa: E402  (bench/perf/run.py)

GB = 2**30


def generate(path: Path, cells: int, genes: int, conditions: int, library: float, seed: int):
    import subprocess

    if path.exists():
        return
    shape = perf.screen_shape(cells, conditions)
    cmd = [sys.executable, "-m", "gimcli", "simulate", "--out", str(path), "--n-genes", str(genes)]
    cmd += ["--n-drugs", str(shape["n_drugs"]), "--doses", perf.DOSES]
    cmd += ["--n-cells", str(shape["n_cells"]), "--n-control", str(shape["n_control"])]
    cmd += ["--n-cell-lines", str(perf.N_LINES), "--counts", "--library-size", str(library)]
    cmd += ["--features", "numeric", "--seed", str(seed)]
    subprocess.run(cmd, check=True)


def measure(data: Path, nproc: int, args) -> dict:
    out = args.work / f"shards_run_{nproc}"
    ns = argparse.Namespace(
        steps=args.steps,
        device="cpu",
        precision="fp32",
        batching="full",
        backed=True,
        nproc=nproc,
        threads=args.threads,
    )
    summary, wall, rss, cpu = perf.run_train(data, out, ns)
    meta = json.loads((out / "model.json").read_text())
    tr = meta["training"]
    if not args.keep:
        shutil.rmtree(out)
    t = summary["timings"]
    return {
        "nproc": nproc,
        "steps": tr["steps_run"],
        "wall_s": wall,
        "cpu_s": cpu,
        "read_s": t["read"],
        "prepare_s": t["prepare"],
        **{f"{k}_s": v for k, v in (tr.get("stage_seconds") or {}).items()},
        "train_s": t["train"],
        "write_s": t["write"],
        "rank_rss_bytes": tr.get("peak_rss_bytes"),
        "max_rss_bytes": rss,
        "threads": tr.get("threads"),
        "best_val_nll": tr["best_val_nll"],
    }


def section(rows: list[dict]) -> list[str]:
    """RESULTS.md's section of the sharded runs."""
    if not rows:
        return []
    lines = [
        "",
        "## Sharded reading: one screen, 1, 2 and 4 processes (issue 13)",
        "",
        "Made by `bench/perf/shards.py`: `gim train --backed` (1 process) or under `torchrun",
        "--nproc-per-node N` (gloo, CPU), `--steps` as noted: each process reads only its rows",
        "of the file in chunks (~20M stored values), in three passes (gene sums for HVG",
        "selection; per-context sums; pooled scatter), combined with all-reduces. `genes`,",
        "`sums`, `scatter` = the three passes; `prepare` = them + contexts/features + the",
        "reference cells; per-rank RSS = each process's peak (ru_maxrss) at the end of training;",
        "`max RSS` = the largest process seen from outside (includes rank 0's posterior and",
        "write). Speed-up = prepare time of 1 process / N processes. The machine has 2 cores:",
        "4 processes share them (and the neighbours' load).",
        "",
    ]
    hdr = (
        "| date | machine | screen (cells x genes, nnz, file GiB, CSR GiB) | procs | threads "
        "| steps "
        "| end-to-end | CPU time | read | genes | sums | scatter | prepare | train | write "
        "| per-rank peak RSS GiB | max RSS GiB | prepare speed-up |"
    )
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    base = {}
    for r in rows:
        key = r["screen"]["path"]
        x = r["result"]
        if x["nproc"] == 1:
            base[key] = x["prepare_s"]
    for r in rows:
        m, x, sc = r["machine"], r["result"], r["screen"]
        b = base.get(sc["path"])
        speed = f"{b / x['prepare_s']:.2f}" if b else "-"
        ranks = ", ".join(f"{v / GB:.2f}" for v in x["rank_rss_bytes"] or [])
        mach = f"{m['cpu']}, {m['cores']} cores" + (f" ({m['note']})" if m.get("note") else "")
        lines.append(
            f"| {m['date']} | {mach} | {sc['n_obs']:,} x {sc['n_vars']:,}, {sc['nnz'] / 1e6:.0f}M, "
            f"{sc['file_bytes'] / GB:.2f}, {sc['csr_bytes'] / GB:.2f} | {x['nproc']} "
            f"| {x['threads']} | {x['steps']} | {x['wall_s']:.0f} | {x['cpu_s']:.0f} "
            f"| {x['read_s']:.1f} | {x.get('genes_s', 0):.1f} | {x.get('sums_s', 0):.1f} "
            f"| {x.get('scatter_s', 0):.1f} | {x['prepare_s']:.1f} | {x['train_s']:.1f} "
            f"| {x['write_s']:.1f} | {ranks} | {x['max_rss_bytes'] / GB:.2f} | {speed} |"
        )
    return lines


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", type=int, default=2_000_000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--conditions", type=int, default=2000)
    ap.add_argument("--library-size", type=float, default=150.0)
    ap.add_argument("--nproc", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    ap.add_argument("--note", default="")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"screen_{args.cells}x{args.genes}_lib{args.library_size:g}.h5ad"
    generate(data, args.cells, args.genes, args.conditions, args.library_size, args.seed)
    screen = {"path": data.name, **perf.csr_bytes(data)}
    mach = perf.machine(args)
    jsonl = HERE / "shards.jsonl"
    for nproc in (int(v) for v in args.nproc.split(",")):
        t = time.perf_counter()
        res = measure(data, nproc, args)
        row = {"machine": mach, "screen": screen, "result": res}
        row["machine"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(res), f"({time.perf_counter() - t:.0f} s)", flush=True)
    rows = load(HERE / "results.jsonl")
    perf.write_results(HERE / "RESULTS.md", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
