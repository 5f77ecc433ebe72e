"""Checkpoints: a run interrupted by a real signal and resumed ends bit-for-bit where an
uninterrupted run ends; checkpoints from another run or with pickled code are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from gimcli.config import TrainConfig
from gimcli.errors import CheckpointMismatch, Preempted
from gimcli.training.checkpoint import Checkpointer
from tests.tiny import TRAIN_ARGS, tiny_screen, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.drop(columns="seconds"), b.drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_sigusr1_interrupt_then_resume_equals_uninterrupted(gim, tmp_path):
    data = write_tiny(tmp_path / "tiny.h5ad")
    steps = "240"
    run, ref = tmp_path / "run", tmp_path / "ref"
    args = [str(data), *TRAIN_ARGS, "--steps", steps]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gimcli",
            "train",
            *args,
            "--out",
            str(run),
            "--checkpoint-every",
            "0.005",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ckpt = run / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "SIGUSR1 received: checkpoint saved to" in err and "--resume" in err
    assert "Traceback" not in err
    saved = torch.load(ckpt, weights_only=True)
    step = json.loads(saved["meta"])["step"]
    assert 0 < step < int(steps)
    assert not (run / "model.json").exists() and not (run / "model.pt").exists()

    rc, _, err = gim("train", *args, "--out", run, "--resume")
    assert rc == 0, err
    assert not ckpt.exists()  # stale once the run is written
    rc, _, err = gim("train", *args, "--out", ref)
    assert rc == 0, err
    a, b = _weights(run), _weights(ref)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "resumed weights differ from the uninterrupted run"
    )
    _same_rows(pd.read_csv(run / "metrics.csv"), pd.read_csv(ref / "metrics.csv"))
    # and the check can fail: the checkpointed weights were not yet the final ones
    assert not torch.equal(saved["module.sem.B"], a["module.sem.B"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_resume_inside_a_later_restart_in_exact_phase(tmp_path, sig):
    """Library level, with a signal at a chosen step: restart 1 of 2, exact phase, so the
    best state, the early-stopping counter and the best finished restart all come back."""
    from gimcli.config import DataKeys
    from gimcli.training.fitting import fit_run

    adata = tiny_screen()
    cfg = TrainConfig(steps=60, restarts=2, eval_every=10, seed=5)
    keys = DataKeys(dose_key="dose", feature_keys=["f0", "f1", "f2"])
    kw = dict(keys=keys, config=cfg, device="cpu")
    ref, ref_hist = fit_run(adata, **kw)

    calls = []

    def send_at_restart1_step40(step, row):
        calls.append(step)
        if len(calls) == 12:  # restart 0 evaluates at 0..50 and 59 (7), restart 1 at 0..40 (5)
            os.kill(os.getpid(), sig)

    path = tmp_path / "ckpt.pt"
    fp = {"config": cfg.to_dict()}
    with pytest.raises(Preempted, match=sig.name), Checkpointer(path, fingerprint=fp) as ck:
        fit_run(adata, **kw, checkpoint=ck, progress=send_at_restart1_step40)
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    assert meta["restart"] == 1 and meta["step"] == 41 and "prior" in meta
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    with Checkpointer(path, resume=True, fingerprint=fp) as ck:
        run, hist = fit_run(adata, **kw, checkpoint=ck)
    sa, sb = run.module.state_dict(), ref.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert hist.best_step == ref_hist.best_step and hist.best_val == ref_hist.best_val
    _same_rows(pd.DataFrame(hist.rows), pd.DataFrame(ref_hist.rows))
    np.testing.assert_array_equal(run.posterior, ref.posterior)


def test_checkpoint_from_another_run_or_with_code_is_refused(tmp_path):
    from gimcli.training.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"meta": json.dumps({"format": 1, "fingerprint": {"config": {"steps": 10}}})}, path)
    with pytest.raises(
        CheckpointMismatch, match=r"different run \(config.steps: 10 there, 20 now\)"
    ):
        load_checkpoint(path, {"config": {"steps": 20}})
    marker = tmp_path / "pwned"
    torch.save({"meta": _Evil(str(marker))}, path)
    with pytest.raises(
        CheckpointMismatch, match="cannot load checkpoint safely.*GLOBAL posix.system"
    ):
        load_checkpoint(path, {})
    assert not marker.exists()
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointMismatch, match="cannot load checkpoint safely"):
        load_checkpoint(path, {})


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
