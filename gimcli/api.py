"""The public library API: one function per `gim` command, re-exported by the package root.

    import gimcli as gim
    run = gim.train(adata, covariate_keys="cell_type", holdout_combinations="all", steps=600)
    run.evaluation.table                       # held-out scores (with a split)
    pred = gim.predict(run, conditions="KLF1+MAP2K6", covariate={"cell_type": "k562"})
    targets = gim.explain(run, top_targets=5)

Every option is keyword-only and has the name and default of the command's flag (`--dose-key`
is `dose_key=None`, `--steps` is `steps=2000`); comma lists may be given as Python lists. The CLI
commands (gimcli/cli/) call exactly these functions with their parsed flags, so a notebook can do
everything the CLI does (docs/api.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from gimcli import _keys
from gimcli.config import DataKeys, TrainConfig
from gimcli.errors import ConfigError, InputError
from gimcli.evaluation.heldout import EvalResult
from gimcli.gimrun import GimRun

log = logging.getLogger(__name__)
_D = TrainConfig()
PLOT_MAX = 24  # conditions one --plot figure draws

# Options of `train` that are TrainConfig fields (the rest read the data or steer the run).
_CONFIG_OPTIONS = (
    "n_top_genes",
    "min_cells_per_context",
    "steps",
    "lr",
    "weight_decay",
    "target_cost",
    "l1_graph",
    "shift_sd",
    "spike_sd",
    "shift_prior_sd",
    "objective",
    "fix_graph",
    "batch_contexts",
    "max_cells_per_context",
    "restarts",
    "seed",
    "precision",
    "batching",
)


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    """A comma list (the CLI's form) or a sequence of names; None when empty."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    items = [v.strip() for v in items if v.strip()]
    return items or None


def _numbers(value: str | Sequence[float] | float | None, *, option: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return [float(value)]
    items = _names(value) if isinstance(value, str) else list(value)
    try:
        return [float(v) for v in items] if items else None
    except (TypeError, ValueError):
        raise InputError(f"--{option} {value!r}: expected comma-separated numbers") from None


def _pairs(value: dict | str | Sequence[str] | None, *, option: str) -> dict[str, str]:
    """KEY=VALUE items (repeatable flag), one 'KEY=VALUE' string, or a dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for v in [value] if isinstance(value, str) else value:
        if "=" not in v:
            raise InputError(f"--{option} {v!r}: expected KEY=VALUE")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


def _load_run(run: GimRun | str | Path) -> tuple[GimRun, Path | None]:
    if isinstance(run, GimRun):
        return run, None
    return GimRun.load(run), Path(run)


def _features_table(features: str | Path | pd.DataFrame | None, **kw) -> pd.DataFrame | None:
    from gimcli.data.features import read_feature_csv

    if features is None or isinstance(features, pd.DataFrame):
        return features
    return read_feature_csv(str(features), **kw)


def _record(values: dict[str, Any], invocation: dict | None) -> dict:
    """What model.json records of the options: every value, where it came from (the CLI's
    sources: flag, env, file, default; a library call: argument or default) and the config
    file."""
    import inspect

    sig = inspect.signature(train).parameters
    vals = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
    vals = {
        k: v for k, v in vals.items() if v is None or isinstance(v, str | int | float | bool | list)
    }
    if invocation:
        return {**invocation, "values": {**vals, **invocation.get("values", {})}}
    sources = {k: "default" if sig[k].default == v else "argument" for k, v in vals.items()}
    return {"values": vals, "sources": sources, "config_file": None}


def train(
    data: str | Path | ad.AnnData,
    *,
    out: str | Path | None = None,
    perturbation_key: str = "condition",
    control: str = "control",
    dose_key: str | None = None,
    covariate_keys: str | Sequence[str] | None = None,
    smiles_key: str | None = None,
    drug_features: str | Path | None = None,
    feature_keys: str | Sequence[str] | None = None,
    counts_layer: str | None = None,
    combination_sep: str = "+",
    perturbed_gene_key: str | None = None,
    input_kind: str = "auto",
    min_cells: int = 0,
    n_top_genes: int = _D.n_top_genes,
    min_cells_per_context: int = _D.min_cells_per_context,
    steps: int = _D.steps,
    lr: float = _D.lr,
    weight_decay: float = _D.weight_decay,
    target_cost: float = _D.target_cost,
    l1_graph: float = _D.l1_graph,
    shift_sd: float = _D.shift_sd,
    spike_sd: float = _D.spike_sd,
    shift_prior_sd: float = _D.shift_prior_sd,
    objective: str = _D.objective,
    fix_graph: bool = False,
    batch_contexts: int = _D.batch_contexts,
    max_cells_per_context: int = _D.max_cells_per_context,
    restarts: int = _D.restarts,
    seed: int = _D.seed,
    deterministic: bool = False,
    checkpoint_every: float = 0.0,
    resume: bool = False,
    holdout_conditions: str | Sequence[str] | None = None,
    holdout_doses: str | Sequence[float] | None = None,
    holdout_combinations: str | Sequence[str] | None = None,
    holdout_covariate: str | dict | None = None,
    split_key: str | None = None,
    baseline_refit: bool = True,
    device: str = "auto",
    precision: str = _D.precision,
    batching: str = _D.batching,
    backed: bool = False,
    threads: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    invocation: dict | None = None,
) -> GimRun:
    """Fit a GIM to a perturbation screen (`gim train`).

    Parameters
    ----------
    data
        The screen: an AnnData (cells x genes; counts or log-normalised) or an .h5ad path.
    out
        Run directory to write (model.pt, model.json, metrics.csv, annotated.h5ad, report.html,
        gim.log is the CLI's; with a split eval_metrics.csv/.json and nograph/). None: nothing is
        written; save later with ``run.save(path)``.
    perturbation_key, control, dose_key, covariate_keys, smiles_key, feature_keys, counts_layer
        Where the screen keeps the perturbation (``A+B`` is a combination), the control label,
        the dose, covariates (comma list or list), SMILES, numeric features and raw counts.
    drug_features
        CSV with columns name,smiles; its names are never split into combinations.
    perturbed_gene_key
        obs column naming the gene each perturbation targets (guides -> genes); without it a
        name that is a gene, or a guide label whose stem before `_<digits>` is one, is mapped.
    input_kind
        What X (or `counts_layer`) holds: auto (counts or log-normalised, detected) | counts |
        log | continuous (z-scored, batch-corrected, arcsinh cytometry, log-ratios: negative
        values allowed, used as given, genes selected by variance, predictions in that space).
    min_cells
        Model only genes detected (non-zero) in at least this many cells (0: no filter; the
        perturbed genes of a genetic screen are always kept).
    combination_sep
        The separator of a combination's components (default '+'); 'none': every name is one
        perturbation (README, "Combinations").
    n_top_genes, min_cells_per_context, steps, lr, weight_decay, target_cost, l1_graph, shift_sd,
    spike_sd, shift_prior_sd, objective, fix_graph, batch_contexts, max_cells_per_context,
    restarts, seed, precision, batching
        Training options: the fields of `gimcli.config.TrainConfig` (their defaults and reasons
        are in docs/design.md, "Defaults and why").
    deterministic
        Deterministic GPU kernels (CPU runs are bit-identical from `seed` alone).
    checkpoint_every, resume
        Minutes between checkpoints to ``out/checkpoint.pt``; continue from one (needs `out`).
    holdout_conditions, holdout_doses, holdout_combinations, holdout_covariate, split_key
        Cells to hold out and score (as `gim train --holdout-*`); the scores are in
        ``run.evaluation`` (an `EvalResult`: ``.table``, ``.summary``).
    baseline_refit
        With a holdout, also refit the GIM with B = 0 and score it (gim_nograph, nograph/).
    device
        auto | cpu | cuda[:N].
    backed
        Read an .h5ad path in chunks from disk (files larger than memory); under torchrun each
        process reads only its rows.
    threads
        torch CPU threads per process; 0: OMP_NUM_THREADS when set, else SLURM_CPUS_PER_TASK
        or the CPU affinity, divided among torchrun's processes on the node. Recorded in
        model.json (training.threads).
    overwrite
        Replace a run directory that already holds a model.
    progress
        Called as ``progress(step, row)`` at every evaluation of the objective.
    invocation
        How the options were given (the CLI passes values and their sources); recorded in
        model.json "options". Library calls record their arguments.

    Returns
    -------
    GimRun
        The trained model; ``run.evaluation`` holds the held-out scores with a split,
        ``run.outputs`` the files written and seconds per part.
    """
    values = {k: v for k, v in locals().items() if k not in ("data", "progress", "invocation")}
    from gimcli.data.io import check_run_dir
    from gimcli.evaluation.splits import Holdout
    from gimcli.model.precision import check_precision
    from gimcli.training.distributed import env_rank, env_world_size
    from gimcli.training.fitting import resolve_device
    from gimcli.workflow import train_to_directory

    cfg = _config({k: values[k] for k in _CONFIG_OPTIONS})
    if threads < 0:
        raise InputError("--threads must be >= 0 (0: from the CPU allocation)")
    if checkpoint_every < 0:
        raise InputError("--checkpoint-every must be >= 0 minutes")
    if (resume or checkpoint_every) and out is None:
        raise InputError("--resume/--checkpoint-every need a run directory (out)")
    distributed = env_world_size() > 1
    if distributed and (resume or checkpoint_every):
        raise InputError(
            "--resume/--checkpoint-every are not supported under torchrun yet; run one process"
        )
    out = Path(out) if out is not None else None
    if out is not None and env_rank() == 0:
        check_run_dir(out, overwrite=overwrite)
    check_precision(precision, resolve_device(device))
    atomic: list[str] = []
    if drug_features:  # read again by the workflow; here to refuse a bad file early
        atomic = _features_table(drug_features, smiles=True)["name"].str.strip().tolist()
    try:
        keys = DataKeys(
            perturbation_key=perturbation_key,
            control=control,
            dose_key=dose_key,
            covariate_keys=_names(covariate_keys),
            smiles_key=smiles_key,
            feature_keys=_names(feature_keys),
            counts_layer=counts_layer,
            combination_sep=combination_sep,
            atomic_names=atomic,
            input_kind=input_kind,
            min_cells=min_cells,
            perturbed_gene_key=perturbed_gene_key,
        )
    except ConfigError as e:
        raise InputError(f"--{e.field.replace('_', '-')} {e.value!r}: {e.rule}") from None
    cov = _pairs(holdout_covariate, option="holdout-covariate") if holdout_covariate else {}
    holdout = Holdout(
        conditions=_names(holdout_conditions) or [],
        doses=_numbers(holdout_doses, option="holdout-doses") or [],
        combinations=_names(holdout_combinations) or [],
        covariate=next(iter(cov.items()), None),
        split_key=split_key,
    )
    res = train_to_directory(
        data if isinstance(data, ad.AnnData) else Path(data),
        out,
        keys=keys,
        config=cfg,
        drug_features=Path(drug_features) if drug_features else None,
        holdout=holdout,
        device=device,
        backed=backed,
        threads=threads,
        deterministic=deterministic,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
        options=_record(values, invocation),
        baseline_refit=baseline_refit,
    )
    return res.run


def _config(options: dict) -> TrainConfig:
    """TrainConfig from the options; a refused value is named by its flag."""
    try:
        return TrainConfig(**options)
    except ConfigError as e:
        raise InputError(f"--{e.field.replace('_', '-')} {e.value!r}: {e.rule}") from None


def _conditions(conditions, conditions_file) -> list[str] | None:
    """--conditions (comma list) and --conditions-file (one name per line: names with commas)."""
    names = _names(conditions) or []
    if conditions_file is not None:
        p = Path(conditions_file)
        try:
            lines = p.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--conditions-file {p}: cannot read ({e})") from None
        names += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        if not names:
            raise InputError(f"--conditions-file {p}: no condition names in it")
    return names or None


def _requests(run, *, features, conditions, doses, covariate):
    from gimcli.prediction import build_requests

    return build_requests(
        run,
        features=_features_table(features),
        conditions=_names(conditions),
        doses=_numbers(doses, option="doses"),
        covariates=_pairs(covariate, option="covariate"),
    )


def predict(
    run: GimRun | str | Path,
    *,
    out: str | Path | None = None,
    features: str | Path | pd.DataFrame | None = None,
    conditions: str | Sequence[str] | None = None,
    conditions_file: str | Path | None = None,
    doses: str | Sequence[float] | None = None,
    covariate: dict | Sequence[str] | None = None,
    n_cells: int = 0,
    map_targets: bool = False,
    noise: str = "controls",
    with_controls: bool = True,
    seed: int = 0,
    overwrite: bool = False,
) -> ad.AnnData | dict:
    """Predict the cells of perturbations, measured or not (`gim predict`).

    Parameters
    ----------
    run
        A `GimRun` or a run directory.
    out
        .h5ad to write, streamed a chunk of conditions at a time (large predictions never sit in
        memory). None: return the AnnData.
    features
        A table (or CSV path) of new perturbations: name + smiles or the numeric feature
        columns, optional dose and covariate columns.
    conditions
        Perturbations or combinations (``A+B``) the model knows: comma list or list.
    conditions_file
        A file of condition names, one per line (for names with commas); added to `conditions`.
    doses
        Doses to predict each perturbation at (comma list or list).
    covariate
        ``{"cell_line": "K562"}`` or ``["cell_line=K562"]``; default every training group.
    n_cells
        Cells per condition; 0: every reference control cell of its group once (up to 500; the
        cells' mean is then exactly the predicted mean).
    map_targets
        Move cells by the MAP targets (prob > 0.5) instead of the expected shift E[u].
    noise
        controls: training control cells moved by the predicted change (the SEM counterfactual,
        sparsity kept: docs/design.md, "Predictions") | gaussian: sample the fitted noise.
    with_controls
        Also write the training control cells of every requested group, labelled with the control
        label in the training perturbation column, so that ``cell-eval run -ap PRED -ar REAL
        --pert-col <key> --control-pert <control>`` and pertpy's distances to the controls work
        on the file as it is.
    seed
        Seed of the cells; a condition's cells depend on (seed, condition) only.
    overwrite
        Replace an existing `out`.

    Returns
    -------
    AnnData or dict
        The predicted cells (X log-normalised; obs: the perturbation under the training column
        name, dose, covariates, ``gim_similarity``, ``gim_source``; layers ``gim_mean``,
        ``gim_target_prob``; obsm ``X_pca``; uns['gim']); with `out`, the summary of the file
        written (out, n_obs, n_conditions, conditions).
    """
    from gimcli.data.io import check_output_file
    from gimcli.prediction import predict as predict_cells
    from gimcli.prediction import write_predictions
    from gimcli.provenance import provenance

    if out is not None:
        check_output_file(Path(out), overwrite=overwrite)
    model, run_dir = _load_run(run)
    conditions = _conditions(conditions, conditions_file)
    req, new = _requests(
        model, features=features, conditions=conditions, doses=doses, covariate=covariate
    )
    opts = {
        "n_cells": n_cells or None,
        "seed": seed,
        "map_targets": map_targets,
        "noise": noise,
        "with_controls": with_controls,
    }
    inputs: dict[str, Any] = {"features": features if isinstance(features, str | Path) else None}
    if run_dir is not None:
        inputs |= {
            "model": run_dir / _keys.MODEL_WEIGHTS,
            "model_meta": run_dir / _keys.MODEL_META,
        }
    prov = {"provenance": provenance(seed=seed, inputs=inputs).to_dict()}
    if out is None:
        pred = predict_cells(model, req, new, **opts)
        pred.uns[_keys.UNS].update(prov)
        return pred
    summary = write_predictions(model, req, out, new, extra_uns=prov, **opts)
    return {"out": str(out), **summary}


def explain(
    run: GimRun | str | Path,
    *,
    top_targets: int = 10,
    min_prob: float = 0.5,
    n_downstream: int = 5,
    conditions: str | Sequence[str] | None = None,
    conditions_file: str | Path | None = None,
    features: str | Path | pd.DataFrame | None = None,
    doses: str | Sequence[float] | None = None,
    covariate: dict | Sequence[str] | None = None,
    graph: bool = False,
    top_edges: int = 100,
    plot: str | Path | None = None,
) -> pd.DataFrame:
    """Direct targets per perturbation and downstream genes, or the learned graph (`gim explain`).

    Parameters
    ----------
    run
        A `GimRun` or a run directory.
    top_targets, n_downstream
        Direct targets (by posterior log-odds, which do not saturate where probabilities reach
        1.0) and strongest downstream genes listed per condition.
    min_prob
        List a gene as a direct target only when its target probability is at least this; a
        condition without one is named in ``df.attrs["without_targets"]`` ("no confident direct
        targets").
    conditions
        Conditions to explain (default: every training condition); ones not trained on (e.g. a
        new combination) are explained from the network's prior.
    conditions_file
        A file of condition names, one per line (for names with commas).
    features
        A table (or CSV path) of new perturbations, as for `predict`.
    doses, covariate
        Doses for conditions/features not in training; covariate values to restrict to.
    graph, top_edges
        List the `top_edges` strongest learned causal edges (source, target, weight) instead.
    plot
        Also draw the targets of each condition to this PNG (the first 24; a warning says so).

    Returns
    -------
    DataFrame
        One row per condition and gene (condition, dose, covariates, kind, gene, prob, log_odds,
        shift, effect, rank), or per edge with `graph`.
    """
    from gimcli.explanation import graph_table, target_table, training_requests

    conditions = _conditions(conditions, conditions_file)
    if features is not None and conditions:
        raise InputError(
            "give --conditions or --features, not both (the CSV lists what to explain)"
        )
    model, _ = _load_run(run)
    if graph:
        return graph_table(model, top=top_edges)
    new: dict = {}
    if features is not None:
        req, new = _requests(
            model, features=features, conditions=None, doses=doses, covariate=covariate
        )
    else:
        conds = _names(conditions)
        if conds:  # B+A is A+B: the canonical spelling the run keys its contexts by
            conds = model.meta.keys.combinations.canonical_names(conds)
        cov = _pairs(covariate, option="covariate")
        req = training_requests(model, conds, cov)
        unseen = [c for c in conds or [] if c not in set(req["condition"])]
        if unseen:  # not trained on (e.g. a new combination): explain from the network's prior
            extra, new = _requests(
                model, features=None, conditions=unseen, doses=doses, covariate=cov
            )
            req = pd.concat([req, extra], ignore_index=True)
    if not 0 <= min_prob <= 1:
        raise InputError(f"--min-prob {min_prob:g}: must be between 0 and 1")
    df = target_table(
        model, req, new, top=top_targets, n_downstream=n_downstream, min_prob=min_prob
    )
    if new:  # perturbations not trained on: say when they are extrapolations, as predict does
        from gimcli.prediction import applicability, warn_low_similarity

        warn_low_similarity(model, applicability(model, req, new)["similarity"], what="explained")
    if plot is not None:
        from gimcli.data.io import atomic_path
        from gimcli.report.plots import targets_bars

        cols = ["condition", "dose", *model.cov_keys]
        drawn = df
        if len(req) > PLOT_MAX:  # the table is still whole; the figure shows the first ones
            first = req.head(PLOT_MAX).astype(str)
            drawn = df.astype({c: str for c in cols}).merge(first, on=cols)
            log.warning(
                "--plot: drawing the first %d of %d conditions (narrow with --conditions or "
                "--covariate to choose them)",
                PLOT_MAX,
                len(req),
            )
        png = targets_bars(drawn, label_cols=cols)
        with atomic_path(plot) as tmp:
            tmp.write_bytes(png)
    return df


def evaluate(
    run: GimRun | str | Path,
    test: ad.AnnData | str | Path,
    *,
    out: str | Path | None = None,
    methods: str | Sequence[str] | None = None,
    drug_features: str | Path | pd.DataFrame | None = None,
    n_cells: int = 0,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    train: ad.AnnData | None = None,
) -> EvalResult:
    """Score a run on held-out cells against the baselines (`gim evaluate`).

    Parameters
    ----------
    run
        A run directory (its annotated.h5ad gives the training cells, nograph/ the B = 0 refit),
        or a `GimRun` with `train`.
    test
        The held-out cells (AnnData or .h5ad; control cells are not scored).
    out
        Directory for eval_metrics.csv/.json (default: the run directory; None with a `GimRun`:
        nothing is written).
    methods
        Methods to score (comma list or list; default gim and every baseline).
    drug_features
        Table or CSV (name,smiles) for held-out drugs without SMILES in the data.
    n_cells
        Predicted cells per context; 0: every reference control cell once. The GIM's cells are
        those of ``predict(run, n_cells=n_cells, seed=seed)``, and every metric is
        computed from them.
    seed
        Seed of the predicted cells and of subsampling.
    device
        Device for refitting the B = 0 baseline (when the run has no nograph/).
    overwrite
        Replace existing eval_metrics files in `out`.
    train
        The training cells, for a `GimRun` that has no run directory.

    Returns
    -------
    EvalResult
        ``.table`` (one row per held-out context and method, plus aggregates) and ``.summary``.
    """
    from gimcli.data.io import read_h5ad
    from gimcli.evaluation.heldout import (
        METHODS,
        evaluate_saved_run,
        write_eval,
    )
    from gimcli.evaluation.heldout import evaluate as evaluate_run
    from gimcli.training.fitting import resolve_device

    chosen = tuple(_names(methods) or METHODS)
    bad = sorted(set(chosen) - set(METHODS))
    if bad:
        raise InputError(f"--methods {bad}: choose from {list(METHODS)}")
    if n_cells and n_cells < 2:
        raise InputError("--n-cells must be >= 2 (or 0: every reference control cell once)")
    model, run_dir = _load_run(run)
    if out is None and run_dir is not None:
        out = run_dir
    out = Path(out) if out is not None else None
    if out is not None:
        if not overwrite and ((out / _keys.EVAL_CSV).exists() or (out / _keys.EVAL_JSON).exists()):
            raise InputError(
                f"{out} already holds {_keys.EVAL_CSV}; pass --overwrite to replace it"
            )
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory")
    resolve_device(device)
    if run_dir is not None and not (run_dir / _keys.ANNOTATED).exists():
        raise InputError(
            f"{run_dir / _keys.ANNOTATED} is missing: the baselines need the training cells"
        )
    if run_dir is None and train is None:
        raise InputError("a GimRun without a run directory needs train= (its training cells)")
    feats = _features_table(drug_features, smiles=True)
    test_data = test if isinstance(test, ad.AnnData) else read_h5ad(test)
    opts = {"methods": chosen, "drug_features": feats, "n_cells": n_cells or None, "seed": seed}
    if run_dir is not None:
        res = evaluate_saved_run(model, run_dir, test_data, device=device, **opts)
    else:
        truth = test_data.uns.get(_keys.UNS_TRUTH)
        res = evaluate_run(
            model, test_data, train=train, truth=truth if isinstance(truth, dict) else None, **opts
        )
    if out is not None:
        write_eval(res, out)
    return res


def simulate(
    *,
    out: str | Path | None = None,
    n_genes: int = 20,
    n_drugs: int = 12,
    doses: str | Sequence[float] = "10,100,1000",
    n_cells: int = 60,
    n_control: int = 300,
    n_combos: int = 0,
    n_cell_lines: int = 1,
    graph: str = "cyclic",
    degree: float = 1.5,
    n_targets: int = 2,
    features: str = "numeric",
    smiles_csv: str | Path | None = None,
    counts: bool = False,
    library_size: float = 2000.0,
    seed: int = 0,
    overwrite: bool = False,
) -> ad.AnnData:
    """A synthetic screen with a known causal graph and known direct targets (`gim simulate`).

    Parameters
    ----------
    out
        .h5ad to write (and OUT.truth.json beside it); None: only return it.
    n_genes, n_drugs, doses, n_cells, n_control, n_combos, n_cell_lines
        Genes, drugs, doses (comma list or list), cells per perturbed condition, control cells per
        cell line, random drug pairs (at the top dose), cell lines (covariate 'cell_line').
    graph, degree
        cyclic | dag, and mean parents per gene.
    n_targets
        Direct targets per drug.
    features, smiles_csv
        numeric (obs f0..) | smiles (obs 'smiles'); CSV name,smiles of the drugs to use.
    counts, library_size
        Write Poisson counts (mean `library_size` per cell) instead of log-normalised values.
    seed
        Random seed.
    overwrite
        Replace an existing `out`.

    Returns
    -------
    AnnData
        The screen; the truth (graph B, targets) in uns['gim_truth'].
    """
    from gimcli.data.io import check_output_file, write_h5ad, write_text
    from gimcli.simulation import simulate as sim

    if graph not in ("cyclic", "dag"):
        raise InputError(f"--graph {graph!r}: expected cyclic or dag")
    if features not in ("numeric", "smiles"):
        raise InputError(f"--features {features!r}: expected numeric or smiles")
    if min(n_genes, n_drugs, n_cells, n_control, n_cell_lines) < 1 or n_targets > n_genes:
        raise InputError("sizes must be >= 1 and --n-targets <= --n-genes")
    if library_size <= 0:
        raise InputError(f"--library-size {library_size:g}: must be > 0")
    if out is not None:
        check_output_file(Path(out), overwrite=overwrite)
    smiles = None
    if smiles_csv is not None:
        df = _features_table(smiles_csv, smiles=True)
        smiles = dict(zip(df["name"], df["smiles"], strict=True))
    try:
        adata = sim(
            n_genes=n_genes,
            n_drugs=n_drugs,
            doses=tuple(_numbers(doses, option="doses") or ()),
            n_cells=n_cells,
            n_control=n_control,
            n_combos=n_combos,
            n_cell_lines=n_cell_lines,
            graph=graph,
            degree=degree,
            n_targets=n_targets,
            features=features,
            smiles=smiles,
            counts=counts,
            library_size=library_size,
            seed=seed,
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    if out is not None:
        out = Path(out)
        write_h5ad(adata, out)
        truth = adata.uns[_keys.UNS_TRUTH]
        truth_json = {
            "genes": adata.var_names.tolist(),
            "B": truth["B"].tolist(),
            "targets": truth["targets"].to_dict("records"),
            "drug_targets": truth["drug_targets"].to_dict("records"),
            "params": truth["params"],
        }
        write_text(json.dumps(truth_json), out.with_suffix(".truth.json"))
    return adata


__all__ = ["GimRun", "EvalResult", "train", "predict", "explain", "evaluate", "simulate"]
