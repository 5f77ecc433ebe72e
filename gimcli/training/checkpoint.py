"""Training checkpoints: periodic and on preemption signals, and resuming from them.

A checkpoint is a plain dict of tensors plus one JSON string of metadata (format version, gim
version, config, input hash, step, history, numpy RNG state), so it loads with
`torch.load(weights_only=True)`: no pickled objects, no code run from the file. It holds everything
the loop's future depends on (weights, Adam state, every RNG, best state, early-stopping counter),
so a resumed run takes the same steps as an uninterrupted one and ends with the same weights.

Signals: SIGTERM (scancel, preemption, end of the time limit) and SIGUSR1 (SLURM
`--signal=USR1@90`) both save at the end of the current step, then stop with `Preempted`
(exit code 75, EX_TEMPFAIL: "try again"). We stop on USR1 too rather than continue: the job has
seconds left, and a clean exit lets a wrapper `scontrol requeue` before SIGKILL arrives.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gimcli import _keys
from gimcli._version import __version__
from gimcli.config import DataKeys, TrainConfig
from gimcli.data.io import atomic_path
from gimcli.errors import CheckpointMismatch, Preempted, weights_only_reason
from gimcli.provenance import json_default

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_SIGNALS = ("SIGTERM", "SIGUSR1")


class Checkpointer:
    """Saves training state to `path` every `every_min` minutes and on SIGTERM/SIGUSR1.

    Parameters
    ----------
    path
        The checkpoint file (`RUN/checkpoint.pt`).
    every_min
        Minutes between periodic saves; 0 or None: only on signals.
    resume
        Continue from `path` if it exists (a fresh start otherwise, so that a requeued job can
        always run the same command line).
    fingerprint
        JSON-able facts that must be equal for a checkpoint to be resumed (config, input hash, ...).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        every_min: float | None = None,
        resume: bool = False,
        fingerprint: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.every_s = float(every_min) * 60.0 if every_min else None
        self.fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))
        self.state: dict[str, Any] | None = (
            load_checkpoint(self.path, self.fingerprint) if resume else None
        )
        self.meta: dict[str, Any] = json.loads(self.state["meta"]) if self.state is not None else {}
        self.restart = 0
        self.prior: tuple[dict, dict] | None = (
            None  # (state dict, history) of the best finished restart
        )
        self._signal: str | None = None
        self._last = time.monotonic()
        self._old_handlers: dict[int, Any] = {}

    # -- signals ---------------------------------------------------------------------------
    def __enter__(self) -> Checkpointer:
        for name in _SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)
        self._old_handlers.clear()

    def _on_signal(self, signum, frame) -> None:  # only set a flag: the loop saves between steps
        self._signal = signal.Signals(signum).name

    # -- restarts (gimcli.training.fitting) ------------------------------------------------
    @property
    def first_restart(self) -> int:
        return int(self.meta.get("restart", 0))

    def prior_best(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(state dict, History fields) of the best restart finished before the checkpoint."""
        if self.state is None or "prior" not in self.meta:
            return None
        sd = {k[len("prior.") :]: v for k, v in self.state.items() if k.startswith("prior.")}
        return sd, self.meta["prior"]

    def begin_restart(self, r: int, best: tuple[dict, dict] | None) -> None:
        """Restart `r` begins; `best` (state dict, History fields) is the best finished one."""
        self.restart, self.prior = r, best
        if self.state is not None and r != self.first_restart:
            self.state, self.meta = None, {}  # the checkpoint belonged to an earlier restart

    # -- the loop's two hooks (gimcli.training.loop.optimise) --------------------------------
    def restore(
        self, module, opt, rng: np.random.Generator, gen: torch.Generator, hist
    ) -> tuple[int, dict | None, int]:
        """Load the saved loop state into the given objects; returns (first step, best state,
        evaluations without improvement). (0, None, 0) when there is nothing to resume."""
        if self.state is None:
            return 0, None, 0
        s, m = self.state, self.meta
        module.load_state_dict(
            {k[len("module.") :]: v for k, v in s.items() if k.startswith("module.")}
        )
        opt.load_state_dict(s["optimizer"])
        rng.bit_generator.state = m["numpy_rng"]
        gen.set_state(s["rng.generator"])
        torch.set_rng_state(s["rng.torch"])
        if (
            "rng.cuda" in s
            and torch.cuda.is_available()
            and len(s["rng.cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(s["rng.cuda"])
        hist.rows = list(m["history"]["rows"])
        hist.best_val = float(m["history"]["best_val"])
        hist.best_step = int(m["history"]["best_step"])
        best = {k[len("best.") :]: v for k, v in s.items() if k.startswith("best.")} or None
        log.info("resuming from %s at step %d (restart %d)", self.path, m["step"], self.restart)
        self.state = None  # consumed: a later restart starts fresh
        return int(m["step"]), best, int(m["bad_evals"])

    def after_step(
        self, step: int, module, opt, rng, gen, hist, best_state, bad_evals: int
    ) -> None:
        """Save when the timer is due or a signal came; after a signal, stop with `Preempted`."""
        due = self.every_s is not None and time.monotonic() - self._last >= self.every_s
        if not (due or self._signal):
            return
        self.save(step + 1, module, opt, rng, gen, hist, best_state, bad_evals)
        if self._signal:
            raise Preempted(
                f"{self._signal} received: checkpoint saved to {self.path} at step {step + 1} "
                f"(restart {self.restart}); run the same command with --resume to continue"
            )

    def save(self, step: int, module, opt, rng, gen, hist, best_state, bad_evals: int) -> None:
        tensors: dict[str, Any] = {
            f"module.{k}": v.detach().cpu() for k, v in module.state_dict().items()
        }
        if best_state is not None:
            tensors.update({f"best.{k}": v.detach().cpu() for k, v in best_state.items()})
        if self.prior is not None:
            tensors.update({f"prior.{k}": v.detach().cpu() for k, v in self.prior[0].items()})
        tensors["optimizer"] = _to_cpu(opt.state_dict())
        tensors["rng.generator"] = gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():  # nothing draws from it today; cheap insurance for new layers
            tensors["rng.cuda"] = torch.cuda.get_rng_state_all()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "gim_version": __version__,
            "fingerprint": self.fingerprint,
            "step": step,
            "restart": self.restart,
            "bad_evals": bad_evals,
            "numpy_rng": rng.bit_generator.state,
            "history": {"rows": hist.rows, "best_val": hist.best_val, "best_step": hist.best_step},
        }
        if self.prior is not None:
            meta["prior"] = self.prior[1]
        # JSON, not pickle: ints of any size (the PCG64 state), NaN/inf as JS literals
        tensors["meta"] = json.dumps(meta, default=json_default)
        with atomic_path(self.path) as tmp:
            torch.save(tensors, tmp)
        self._last = time.monotonic()
        log.info("checkpoint saved to %s at step %d", self.path, step)

    def finished(self) -> None:
        """The run's outputs are written: the checkpoint is stale, remove it."""
        self.path.unlink(missing_ok=True)


def run_checkpointer(
    out: Path,
    *,
    every_min: float,
    resume: bool,
    config: TrainConfig,
    keys: DataKeys,
    input_sha256: str | None,
    device: str,
    drug_features_sha256: str | None = None,
    holdout: dict | None = None,
) -> Checkpointer:
    """The checkpointer of `gim train --out OUT`: OUT/checkpoint.pt, tied to the config, the
    input's hash, the data keys, the drug table's hash, the split and the device type (a CPU
    checkpoint resumes on CPU)."""
    fp = {
        "config": config.to_dict(),
        "input_sha256": input_sha256,
        "keys": keys.to_dict(),
        "drug_features_sha256": drug_features_sha256,
        "holdout": holdout,
        "device": device.split(":")[0],
    }
    path = Path(out) / _keys.CHECKPOINT
    if not resume and path.exists():
        log.warning("%s exists and will be replaced; pass --resume to continue from it", path)
    return Checkpointer(path, every_min=every_min, resume=resume, fingerprint=fp)


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's dict, or None when there is none; refuses one from another run."""
    if not path.exists():
        log.info("--resume: no checkpoint at %s; starting from the beginning", path)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(state["meta"])
    except Exception as e:  # truncated file, pickled objects (refused, never run), not a checkpoint
        raise CheckpointMismatch(
            f"{path}: cannot load checkpoint safely ({type(e).__name__}: "
            f"{weights_only_reason(e)}); delete it to start over"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(
            f"{path}: checkpoint format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"this gim {__version__} reads format {CHECKPOINT_FORMAT}; delete it to start over"
        )
    diff = _first_difference(meta.get("fingerprint", {}), fingerprint)
    if diff:
        k, there, now = diff
        raise CheckpointMismatch(
            f"{path}: checkpoint is from a different run ({k}: {_short(there)} there, "
            f"{_short(now)} now); rerun with the same data and options, "
            "or delete it to start over"
        )
    return state


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) of the first place two JSON values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(
                a.get(k, "<absent>"), b.get(k, "<absent>"), f"{key}.{k}" if key else k
            )
            if d:
                return d
        return None
    return None if a == b else (key, a, b)


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "..."


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
