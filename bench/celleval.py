"""cell-eval (the Arc Institute's perturbation-prediction scorer) on gim's own prediction files.

    python bench/celleval.py                    # Norman held-out pairs and a simulated screen
    python bench/celleval.py --only norman --cell-eval .venv-celleval/bin/cell-eval

Not part of `make test`: it needs cell-eval, which is no dependency of gim. Install it beside gim:
`python -m venv .venv-celleval && .venv-celleval/bin/pip install cell-eval==0.8.2`.

Per screen: `gim train` with a split (the library call of the CLI), then
`gim predict RUN --conditions <held-out> ... --out pred_gim.h5ad` through the real command line
(with its controls, as written by default), and a file of the same layout per baseline (the same
reference control cells moved by the baseline's predicted change under the same sparsity rule:
the very cells `gim evaluate` scores). real.h5ad holds the measured held-out cells and the
training control cells of the group. Then, unchanged:

    cell-eval run -ap pred_<method>.h5ad -ar real.h5ad --pert-col <key> --control-pert <control>

The table goes into bench/RESULTS.md (its own section, replaced on each run), with the largest
difference between gim's own R² / Pearson delta / MSE and cell-eval's on the same cells.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import anndata as ad  # noqa: E402

import gimcli as gim  # noqa: E402
from bench._common import setup  # noqa: E402
from gimcli import _keys  # noqa: E402
from gimcli.data.io import read_h5ad  # noqa: E402
from gimcli.evaluation import heldout  # noqa: E402
from gimcli.evaluation.metrics import r2_mean  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## 5. cell-eval on gim's prediction files"
WORK = HERE.parent / "runs" / "celleval"
METHODS = ("gim", "gim_nograph", "additive", "perturbed_mean", "control")
SHOWN = (
    "pearson_delta",
    "mse",
    "precision_at_N",
    "roc_auc",
    "pr_auc",
    "overlap_at_N",
    "de_direction_match",
    "discrimination_score_l1",
)
NORMAN = HERE.parents[1] / "shared" / "data" / "perturbseq"
NORMAN = NORMAN / "perturbench_devel_norman19_mcfaline23.h5ad"
HELD_PAIRS = ["KLF1+MAP2K6", "MAPK1+TGFBR2", "MAP2K3+MAP2K6", "KLF1+TGFBR2", "MAP2K3+SLC38A2"]
HELD_IN_LINE = {"T98G": "SGK1", "U87MG": "MAPK1", "A172": "TGFBR2"}


def _gim_cli() -> str:
    return str(Path(sys.executable).with_name("gim"))


def norman(work: Path) -> dict:
    """Benchmark 2's split (five K562 pairs; one perturbation per glioblastoma line), scored by
    cell-eval on the K562 pairs (cell-eval wants one control per file)."""
    adata = read_h5ad(NORMAN)
    cond, line = adata.obs["condition"].astype(str), adata.obs["cell_type"].astype(str)
    test = cond.isin(HELD_PAIRS).to_numpy()
    for ln, c in HELD_IN_LINE.items():
        test |= ((line == ln) & (cond == c)).to_numpy()
    adata.obs["bench_split"] = np.where(test, "test", "train")
    path = work / "norman.h5ad"
    adata.write_h5ad(path)
    return {
        "name": "Norman K562 held-out pairs",
        "data": path,
        "train": {
            "covariate_keys": "cell_type",
            "split_key": "bench_split",
            "steps": 600,
            "n_top_genes": 200,
        },
        "conditions": HELD_PAIRS,
        "covariate": {"cell_type": "k562"},
        "doses": None,
    }


def simulated(work: Path) -> dict:
    """A simulated screen in raw counts (sparse after normalisation), every pair held out."""
    screen = gim.simulate(
        n_genes=50,
        n_drugs=12,
        doses="10,100,1000",
        n_cells=100,
        n_control=300,
        n_combos=6,
        counts=True,
        library_size=2000.0,
        seed=0,
    )
    path = work / "sim.h5ad"
    screen.write_h5ad(path)
    pairs = sorted({c for c in screen.obs["condition"].astype(str) if "+" in c})
    return {
        "name": "simulated screen (counts, 50 genes), held-out pairs",
        "data": path,
        "train": {
            "dose_key": "dose",
            "feature_keys": [f"f{i}" for i in range(8)],
            "holdout_combinations": "all",
        },
        "conditions": pairs,
        "covariate": None,
        "doses": [1000],
    }


def _real_file(run, adata, res, out: Path) -> None:
    """The measured held-out cells of the predicted contexts and the training controls of their
    group, over the run's genes, log-normalised as in training."""
    keys = run.meta.keys
    ctx = res.contexts
    conds = set(ctx["condition"].astype(str))
    obs = adata.obs
    train = read_h5ad(out.parent / "run" / _keys.ANNOTATED)
    train = heldout.train_cells(train)
    cov = {k: str(ctx[k].iloc[0]) for k in run.cov_keys}
    sel_test = obs[keys.perturbation_key].astype(str).isin(conds).to_numpy()
    for k, v in cov.items():
        sel_test &= (obs[k].astype(str) == v).to_numpy()
    sel_ctrl = (train.obs[keys.perturbation_key].astype(str) == keys.control).to_numpy()
    for k, v in cov.items():
        sel_ctrl &= (train.obs[k].astype(str) == v).to_numpy()
    parts = []
    for a in (adata[sel_test], train[sel_ctrl]):
        X = heldout.log_expression(a, run)
        o = a.obs[[keys.perturbation_key, *run.cov_keys]].astype(str).copy()
        parts.append(ad.AnnData(X=X, obs=o, var=pd.DataFrame(index=run.genes)))
    real = ad.concat(parts)
    real.obs_names_make_unique()
    real.write_h5ad(out)


def _method_file(gim_pred: ad.AnnData, res, method: str, run, out: Path) -> None:
    """pred_<method>.h5ad: the GIM's file with each condition's cells replaced by the method's
    (same reference control cells, its own predicted change)."""
    key = run.meta.keys.perturbation_key
    p = gim_pred.copy()
    X = p.X.toarray()
    for k, cond in enumerate(res.contexts["condition"].astype(str)):
        rows = np.flatnonzero(p.obs[key].astype(str).to_numpy() == cond)
        X[rows] = res.cells[method][k]
    p.X = X
    p.write_h5ad(out)


def _cell_eval(exe: str, pred: Path, real: Path, key: str, control: str, out: Path) -> pd.DataFrame:
    cmd = [
        exe,
        "run",
        "-ap",
        str(pred),
        "-ar",
        str(real),
        "--pert-col",
        key,
        "--control-pert",
        control,
        "-o",
        str(out),
        "--num-threads",
        "1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return pd.read_csv(out / "results.csv")


def score(spec: dict, work: Path, exe: str) -> dict:
    t0 = time.perf_counter()
    run_dir = work / "run"
    run = gim.train(spec["data"], out=run_dir, overwrite=True, **spec["train"])
    adata = read_h5ad(spec["data"])
    keys = run.meta.keys
    # the held-out contexts cell-eval scores, with every method's cells (as gim evaluate makes)
    test = adata[adata.obs[keys.perturbation_key].astype(str).isin(spec["conditions"]).to_numpy()]
    for k, v in (spec["covariate"] or {}).items():
        test = test[(test.obs[k].astype(str) == v).to_numpy()]
    train = heldout.train_cells(read_h5ad(run_dir / _keys.ANNOTATED))
    nograph = gim.GimRun.load(run_dir / _keys.NOGRAPH)
    res = heldout.evaluate(run, test, train=train, nograph=nograph, keep_cells=True)
    # gim predict through the real command line, its controls written by default
    pred_path = work / "pred_gim.h5ad"
    cmd = [
        _gim_cli(),
        "predict",
        str(run_dir),
        "--conditions",
        ",".join(spec["conditions"]),
        "--out",
        str(pred_path),
        "--overwrite",
        "-q",
    ]
    for k, v in (spec["covariate"] or {}).items():
        cmd += ["--covariate", f"{k}={v}"]
    if spec["doses"]:
        cmd += ["--doses", ",".join(map(str, spec["doses"]))]
    subprocess.run(cmd, check=True)
    pred = ad.read_h5ad(pred_path)
    # the file's cells are the cells gim evaluate scored
    key = keys.perturbation_key
    same = max(
        float(np.abs(pred.X[(pred.obs[key].astype(str) == c).to_numpy()].toarray() - cells).max())
        for c, cells in zip(res.contexts["condition"].astype(str), res.cells["gim"], strict=True)
    )
    real_path = work / "real.h5ad"
    _real_file(run, adata, res, real_path)
    rows, checks = [], []
    per = res.table[res.table["scope"] == "context"].set_index(["condition", "method"])
    real = ad.read_h5ad(real_path)
    for method in METHODS:
        path = pred_path if method == "gim" else work / f"pred_{method}.h5ad"
        if method != "gim":
            _method_file(pred, res, method, run, path)
        ce = _cell_eval(exe, path, real_path, key, keys.control, work / f"ce_{method}")
        ce = ce.rename(columns={"perturbation": "condition"}).set_index("condition")
        rows.append({"method": method, **{m: ce[m].mean() for m in SHOWN if m in ce}})
        p_file = ad.read_h5ad(path)
        for cond in ce.index:
            own = per.loc[(cond, method)]
            y = np.asarray(real[(real.obs[key] == cond).to_numpy()].X.mean(0)).ravel()
            p = np.asarray(p_file[(p_file.obs[key] == cond).to_numpy()].X.mean(0)).ravel()
            checks.append(
                {
                    "method": method,
                    "condition": cond,
                    "d_pearson_delta": abs(own["pearson_delta"] - ce.loc[cond, "pearson_delta"]),
                    "d_mse": abs(own["mse"] - ce.loc[cond, "mse"]),
                    "d_r2": abs(own["r2_mean"] - r2_mean(y, p)),
                }
            )
    table = pd.DataFrame(rows).set_index("method")
    own = res.table[res.table["scope"] == "aggregate"].set_index("method")
    table["gim_r2_mean"] = own["r2_mean"].reindex(table.index)
    chk = pd.DataFrame(checks)
    return {
        "name": spec["name"],
        "n_contexts": len(res.contexts),
        "table": table,
        "max_diff": chk[["d_pearson_delta", "d_mse", "d_r2"]].max().to_dict(),
        "same_cells": same,
        "command": f"cell-eval run -ap {pred_path.name} -ar {real_path.name} --pert-col {key} "
        f"--control-pert {keys.control}",
        "wall_s": time.perf_counter() - t0,
    }


def markdown(results: list[dict], version: str) -> str:
    cols = ["gim_r2_mean", *SHOWN]
    parts = [
        SECTION,
        "",
        f"Produced by `python bench/celleval.py` (cell-eval {version}, its default `full` "
        "profile; not part of `make bench`). Each prediction file is what `gim predict` writes "
        "(predicted cells and, by default, the training control cells of the group, labelled "
        "`control`); the baselines' files have the same layout and controls, their cells being "
        "the same reference cells moved by the baseline's predicted change under the same sparsity "
        "rule (docs/design.md, 'Predictions'). real.h5ad: the measured held-out cells and the "
        "training controls of the group. Command, unchanged for every file:",
        "",
    ]
    for r in results:
        t = r["table"]
        lines = ["| method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for m, row in t.iterrows():
            vals = [f"{row[c]:.4g}" if c in row and np.isfinite(row[c]) else "–" for c in cols]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        d = r["max_diff"]
        parts += [
            f"**{r['name']}** ({r['n_contexts']} contexts, {r['wall_s']:.0f} s)",
            "",
            f"`{r['command']}`",
            "",
            *lines,
            "",
            "Means over the held-out contexts; gim_r2_mean is gim's own (cell-eval 0.8.2 has no "
            "R²). gim's own metrics vs cell-eval's on the same cells, largest difference over "
            f"contexts and methods: Pearson delta {d['d_pearson_delta']:.1e}, MSE "
            f"{d['d_mse']:.1e}; R² recomputed from the files' means {d['d_r2']:.1e}. The file of "
            "`gim predict` holds the cells `gim evaluate` scored (largest difference "
            f"{r['same_cells']:.1e}: float32 rounding of batched conditions).",
            "",
        ]
    return "\n".join(parts)


_SECTION_RE = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)


def section_of(text: str) -> str:
    """This benchmark's section of a RESULTS.md text ('' when absent); run_all.py keeps it."""
    m = _SECTION_RE.search(text)
    return m.group(0).rstrip() + "\n" if m else ""


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md."""
    old = path.read_text() if path.exists() else ""
    if _SECTION_RE.search(old):
        new = _SECTION_RE.sub(lambda _: text.rstrip() + "\n", old)
    else:
        new = old.rstrip() + "\n\n" + text
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SCREENS))
    ap.add_argument(
        "--cell-eval", default=str(HERE.parent / ".venv-celleval" / "bin" / "cell-eval")
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    setup()
    version = subprocess.run(
        [args.cell_eval, "run", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for name in [n for n in args.only.split(",") if n]:  # --only '': rewrite the section
        work = WORK / name
        work.mkdir(parents=True, exist_ok=True)
        spec = {"norman": norman, "sim": simulated}[name](work)
        r = score(spec, work, args.cell_eval)
        print(r["table"].to_string(float_format=lambda v: f"{v:.4f}"))
        print(json.dumps({k: r[k] for k in ("max_diff", "same_cells", "command")}))
        saved = {**r, "table": r["table"].reset_index().to_dict("records")}
        (work / "result.json").write_text(json.dumps(saved, default=float))
    # the section shows every screen scored so far (runs/celleval/<screen>/result.json)
    results = []
    for name in SCREENS:
        f = WORK / name / "result.json"
        if f.exists():
            r = json.loads(f.read_text())
            results.append({**r, "table": pd.DataFrame(r["table"]).set_index("method")})
    write_section(markdown(results, version.split()[-1]), Path(args.out))
    return 0


SCREENS = ("norman", "sim")


if __name__ == "__main__":
    sys.exit(main())
