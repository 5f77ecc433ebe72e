"""Screen-scale performance benchmark of `gim train` on sci-Plex-shaped simulated screens.

    python bench/perf/run.py --cells 50000 --genes 1000 --conditions 500          # CPU target
    python bench/perf/run.py --cells 300000,1000000 --genes 2000 --conditions 2000 \
        --device cuda --precision tf32                                           # GPU targets

Per size: `gim simulate` writes the screen (cached in --work), then `gim train --json` runs in a
fresh process (or under torchrun with --nproc N) and is measured from outside: end-to-end wall
time and its parts (read, prepare = preprocess + statistics, train, write), peak RSS of the
process (os.wait4) against the in-memory CSR size of the file's matrix, steady-state training
throughput, time to convergence (best validation step), peak GPU memory and, on CUDA, achieved
FLOP/s of the training steps against a measured dense-matmul peak. Each run is appended to
results.jsonl beside this file and RESULTS.md is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# sci-Plex3: 188 drugs x 4 doses x 3 cell lines; conditions are split the same way here.
DOSES = "10,100,1000,10000"
N_LINES = 3
N_FEATURES = 8  # numeric drug features f0..f7 (SMILES would cap the drugs at the built-in list)
# Vendor dense peaks (TFLOP/s, SXM) to put the measured matmul peak in context.
SPEC_TFLOPS = {
    "H100": {"fp32": 67, "tf32": 494.7, "bf16": 989.4},
    "H200": {"fp32": 67, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156, "bf16": 312},
}


def screen_shape(cells: int, conditions: int) -> dict:
    """Drugs, cells per condition and controls for ~`conditions` perturbed conditions."""
    n_doses = len(DOSES.split(","))
    n_drugs = max(1, round(conditions / (n_doses * N_LINES)))
    n_cond = n_drugs * n_doses * N_LINES
    n_control = max(50, int(0.05 * cells / N_LINES))  # ~5% controls, as in sci-Plex
    n_cells = max(5, round((cells - n_control * N_LINES) / n_cond))
    return {"n_drugs": n_drugs, "n_cells": n_cells, "n_control": n_control, "conditions": n_cond}


def generate(path: Path, cells: int, genes: int, conditions: int, seed: int) -> dict:
    shape = screen_shape(cells, conditions)
    if not path.exists():
        cmd = [
            sys.executable,
            "-m",
            "gimcli",
            "simulate",
            "--out",
            str(path),
            "--n-genes",
            str(genes),
            "--n-drugs",
            str(shape["n_drugs"]),
            "--doses",
            DOSES,
            "--n-cells",
            str(shape["n_cells"]),
            "--n-control",
            str(shape["n_control"]),
            "--n-cell-lines",
            str(N_LINES),
            "--counts",
            "--library-size",
            str(genes // 2),
            "--features",
            "numeric",
            "--seed",
            str(seed),
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        shape["simulate_seconds"] = time.perf_counter() - t
    return shape


def csr_bytes(path: Path) -> dict:
    """Size of the file's X as an in-memory float32 CSR (int32 indices, int64 indptr)."""
    import h5py

    with h5py.File(path, "r") as f:
        X = f["X"]
        n_obs, n_vars = (int(v) for v in X.attrs["shape"])
        nnz = int(X["data"].shape[0])
    return {
        "n_obs": n_obs,
        "n_vars": n_vars,
        "nnz": nnz,
        "csr_bytes": nnz * 8 + (n_obs + 1) * 8,
        "file_bytes": path.stat().st_size,
    }


def run_train(data: Path, out: Path, args) -> tuple[dict, float, int, float]:
    """`gim train --json` in a fresh process tree: (summary, wall s, peak RSS bytes, CPU s)."""
    feats = ",".join(f"f{i}" for i in range(N_FEATURES))
    gim = [
        "-m",
        "gimcli",
        "train",
        str(data),
        "--out",
        str(out),
        "--dose-key",
        "dose",
        "--covariate-keys",
        "cell_line",
        "--feature-keys",
        feats,
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--batching",
        args.batching,
        "--json",
        "--overwrite",
        "-q",
    ]
    if args.backed:
        gim.append("--backed")
    if getattr(args, "threads", 0):
        gim += ["--threads", str(args.threads)]
    if args.nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(args.nproc),
            *gim,
        ]
    else:
        cmd = [sys.executable, *gim]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"gim train failed with exit code {p.returncode}")
    # ru_maxrss: KiB on Linux. Under torchrun this is the largest single process (one rank).
    cpu = usage.ru_utime + usage.ru_stime  # on a shared machine: what a quiet one would need
    return json.loads(stdout.strip().splitlines()[-1]), wall, usage.ru_maxrss * 1024, cpu


def baseline_rss() -> int:
    """Peak RSS of a process that only imports what `gim train` imports (torch, scanpy, ...)."""
    code = (
        "import torch, scanpy, anndata, gimcli.cli.train, gimcli.training.fitting, "
        "gimcli.training.outputs"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    _, _, usage = os.wait4(p.pid, 0)
    return usage.ru_maxrss * 1024


def step_flops(d: int, n_contexts: int, cells_per_step: float, batching: str) -> float:
    """Floating-point operations of one training step (forward + backward), matmuls and slogdet.

    full: S1 = sum_x A^T (K d^2) and A W (d^3), each 2 flops per multiply-add, x2 for backward;
    sampled: cells x A^T. slogdet: LU 2/3 d^3 forward, ~2 d^3 backward (the inverse).
    """
    lu = (2 / 3 + 2) * d**3
    if batching == "full":
        return 4 * n_contexts * d**2 + 4 * d**3 + lu
    return 4 * cells_per_step * d**2 + lu


def matmul_peak(device: str, precision: str) -> float | None:
    """Measured dense matmul FLOP/s at `precision` on CUDA (8192^3, best of 10)."""
    import torch

    from gimcli.model.precision import matmul

    if not device.startswith("cuda") and not (device == "auto" and torch.cuda.is_available()):
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize()
        t = time.perf_counter()
        matmul(a, b, precision)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def analyse(summary: dict, meta: dict, wall: float, rss: int, csr: dict, args) -> dict:
    tr = meta["training"]
    hist = meta["history"]
    counts = [c["n_cells"] for c in meta["contexts"]]
    val = [n - (int(n * meta["config"]["val_fraction"]) if n >= 10 else 0) for n in counts]
    n_train = sum(val)
    K, d = len(counts), len(meta["preprocess"]["genes"])
    if args.batching == "full":
        cells_per_step = n_train
    else:
        cfg = meta["config"]
        frac = min(1.0, cfg["batch_contexts"] / K)
        cells_per_step = frac * sum(min(n, cfg["max_cells_per_context"]) for n in val)
    half = hist[len(hist) // 2] if len(hist) > 2 else hist[0]
    last = hist[-1]
    steps_s = (last["step"] - half["step"]) / max(last["seconds"] - half["seconds"], 1e-9)
    best = next((r for r in hist if r["step"] == tr["best_step"]), last)
    res = {
        "cells": csr["n_obs"],
        "genes_in": csr["n_vars"],
        "genes": d,
        "contexts": K,
        "nnz": csr["nnz"],
        "device": tr["device"],
        "precision": args.precision,
        "batching": args.batching,
        "nproc": args.nproc,
        "backed": args.backed,
        "steps_run": tr["steps_run"],
        "best_step": tr["best_step"],
        "wall_s": wall,
        **{f"{k}_s": v for k, v in summary["timings"].items()},
        "steps_per_s": steps_s,
        "cells_per_step": cells_per_step,
        "cells_per_s": steps_s * cells_per_step,
        "time_to_best_s": best["seconds"],
        "best_val_nll": tr["best_val_nll"],
        "peak_rss_bytes": rss,
        "csr_bytes": csr["csr_bytes"],
        "rss_over_csr": rss / csr["csr_bytes"],
        "import_rss_bytes": args.base_rss,
        "data_rss_over_csr": (rss - args.base_rss) / csr["csr_bytes"],
        "file_bytes": csr["file_bytes"],
        "peak_gpu_bytes": tr.get("peak_gpu_bytes"),
        "threads": tr.get("threads"),
    }
    flops = step_flops(d, K, cells_per_step, args.batching) * steps_s
    res["train_tflops"] = flops / 1e12
    peak = matmul_peak(args.device, args.precision)
    if peak:
        res["matmul_peak_tflops"] = peak / 1e12
        res["flops_ratio"] = flops / peak
    return res


def machine(args) -> dict:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    from gimcli.provenance import versions

    v = versions()
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem / 2**30, 1),
        "gpu": gpu,
        **{k: v[k] for k in ("python", "torch", "numpy", "scipy", "anndata", "scanpy")},
        "gimcli": v["gim"],
        "commit": commit,
        "note": args.note,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_results(path: Path, rows: list[dict]) -> None:
    gb = 2**30
    lines = [
        "# gim performance benchmark",
        "",
        "Made by `bench/perf/run.py` from `results.jsonl` (one line per run; rerun to add rows).",
        "Screens: `gim simulate --counts`, 3 cell lines x 4 doses, ~5% controls, numeric drug "
        "features;",
        "`train` with default config unless noted. Times in seconds; `prepare` = preprocess + "
        "statistics;",
        "`cells/s` = training cells whose statistics enter a step x steps/s (steady state, 2nd "
        "half);",
        "`to best` = time to the best validation step; RSS = peak of the train process;",
        "CSR = the file's X as float32 CSR in memory; `(RSS - imports)/CSR` discounts the RSS of a",
        "process that only imports torch, scanpy and gim (~0.5 GiB), which dominates small "
        "screens.",
        "`CPU time` = user + system seconds of the train process: on a shared machine, a better "
        "guide",
        "than wall time to what a quiet one needs. TFLOP/s counts the step's matmuls and slogdet "
        "only.",
        "",
        "Rerun (quiet 2-core CPU, then one GPU):",
        "",
        "    python bench/perf/run.py --cells 50000 --genes 1000 --conditions 500 --label 'CPU "
        "target'",
        "    python bench/perf/run.py --cells 50000,300000,1000000 --genes 2000 --conditions 2000 "
        "\\",
        "        --device cuda --precision tf32 --label 'GPU targets'",
        "",
    ]
    hdr = (
        "| date | machine | note | cells x genes (modelled) | contexts | device | prec | batching "
        "| procs | threads | steps "
        "| end-to-end | CPU time | read | prepare | train | write | to best | cells/s | peak RSS "
        "GiB | CSR GiB | (RSS - imports)/CSR | GPU GiB "
        "| TFLOP/s (ratio to matmul peak) |"
    )
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in rows:
        m, x = r["machine"], r["result"]
        mach = f"{m['gpu'] or m['cpu']}, {m['cores']} cores" + (
            f" ({m['note']})" if m.get("note") else ""
        )
        gpu = f"{x['peak_gpu_bytes'] / gb:.1f}" if x.get("peak_gpu_bytes") else "-"
        fl = f"{x['train_tflops']:.3g}" + (
            f" ({x['flops_ratio']:.0%})" if x.get("flops_ratio") else ""
        )
        lines.append(
            f"| {m['date']} | {mach} | {r.get('label', '')} | {x['cells']:,} x {x['genes_in']:,} "
            f"({x['genes']:,}) "
            f"| {x['contexts']:,} | {x['device']} | {x['precision']} | {x['batching']} | "
            f"{x['nproc']} | {x.get('threads') or '-'} "
            f"| {x['steps_run']} | {x['wall_s']:.1f} | {x.get('cpu_s', float('nan')):.0f} | "
            f"{x['read_s']:.1f} | {x['prepare_s']:.1f} | {x['train_s']:.1f} "
            f"| {x['write_s']:.1f} | {x['time_to_best_s']:.1f} | {x['cells_per_s']:,.0f} | "
            f"{x['peak_rss_bytes'] / gb:.2f} "
            f"| {x['csr_bytes'] / gb:.2f} | {x['data_rss_over_csr']:.2f} | {gpu} | {fl} |"
        )
    lines += [
        "",
        "`threads` = torch CPU threads per process (`--threads`; `-`: not recorded, before it",
        "existed: torch's default or OMP_NUM_THREADS). GPU figures: no GPU was lent to the task",
        "that added sharded reading (issue 13; the `device` tool said 'not drawn'), so none are",
        "measured here yet; `bench/perf/run.py --device cuda --precision fp32|tf32|bf16` records",
        "them (peak GPU memory, cells/s, TFLOP/s against a measured 8192^3 matmul peak).",
    ]
    import shards  # bench/perf/shards.py: its section survives this rewrite

    lines += shards.section(shards.load(HERE / "shards.jsonl"))
    lines += ["", "Versions of each run:", ""]
    for r in rows:
        m = r["machine"]
        lines.append(
            f"- {m['date']}: commit {m['commit']}, python {m['python']}, torch {m['torch']}, "
            f"numpy {m['numpy']}, scipy {m['scipy']}, anndata {m['anndata']}, scanpy "
            f"{m['scanpy']}; "
            f"{m['cpu']}, {m['ram_gib']} GiB RAM"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", default="50000", help="comma list of cell counts")
    ap.add_argument("--genes", type=int, default=1000)
    ap.add_argument(
        "--conditions", type=int, default=500, help="perturbed conditions (drug x dose x line)"
    )
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--batching", default="full", choices=["full", "sampled"])
    ap.add_argument("--backed", action="store_true")
    ap.add_argument("--nproc", type=int, default=1, help="processes under torchrun")
    ap.add_argument("--threads", type=int, default=0, help="gim train --threads (0: auto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--work", type=Path, default=REPO / "bench" / "perf" / "_work", help="data and runs (large)"
    )
    ap.add_argument("--note", default="", help="e.g. 'shared machine'")
    ap.add_argument("--label", default="")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    mach = machine(args)
    args.base_rss = baseline_rss()
    jsonl = HERE / "results.jsonl"
    for cells in (int(c) for c in args.cells.split(",")):
        data = args.work / f"screen_{cells}x{args.genes}_{args.conditions}_s{args.seed}.h5ad"
        shape = generate(data, cells, args.genes, args.conditions, args.seed)
        csr = csr_bytes(data)
        out = args.work / f"run_{cells}x{args.genes}"
        summary, wall, rss, cpu = run_train(data, out, args)
        meta = json.loads((out / "model.json").read_text())
        res = analyse(summary, meta, wall, rss, csr, args)
        res["simulate_s"] = shape.get("simulate_seconds")
        res["cpu_s"] = cpu
        row = {
            "machine": mach,
            "label": args.label,
            "args": {k: str(v) for k, v in vars(args).items()},
            "result": res,
        }
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(res, indent=1))
        if not args.keep:
            shutil.rmtree(out)
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
    write_results(HERE / "RESULTS.md", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
