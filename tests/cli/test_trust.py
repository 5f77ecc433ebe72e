"""Issue 10, "a tool a biologist can trust", through the CLI: fail before the first step, no
partial run directory, errors in gim.log and under --json (item 1, item 9's exit codes)."""

from __future__ import annotations

import json

import pytest

from tests.tiny import TRAIN_ARGS, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
IDENTITY = ["--dose-key", "dose", "-q"]  # the tiny screen without --feature-keys: identity


def test_heldout_identity_perturbation_fails_before_training(gim, tmp_path):
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    args = ["train", data, "--out", out, *IDENTITY, "--holdout-conditions", "drug01"]
    rc, stdout, err = gim(*args, "--steps", "5", "--json")
    assert rc == 3, err  # bad input, not 4 ("unusable run directory")
    msg = (
        "gim: error: held-out identity features cannot describe perturbations not seen in "
        "training: ['drug01']"
    )
    assert err.strip().startswith(msg) and len(err.strip().splitlines()) == 1, err
    assert {p.name for p in out.iterdir()} == {"gim.log"}  # no partial run directory
    log = (out / "gim.log").read_text()
    assert msg in log and "contexts (" not in log  # the error is logged; no step was taken
    obj = json.loads(stdout)
    assert obj["status"] == "error" and obj["exit_code"] == 3 and obj["type"] == "InputError"
    assert "drug01" in obj["error"]


def test_a_failure_after_training_leaves_no_partial_run_directory(gim, tmp_path, monkeypatch):
    import gimcli.workflow as wf
    from gimcli.errors import TrainingError

    def boom(*a, **k):
        raise TrainingError("disk full while writing eval_metrics.csv")

    monkeypatch.setattr(wf, "write_eval", boom)
    data = write_tiny(tmp_path / "tiny.h5ad")
    out = tmp_path / "run"
    rc, _, err = gim(
        "train", data, "--out", out, *TRAIN_ARGS, "--steps", "5", "--holdout-conditions", "drug01"
    )
    assert rc == 5 and "disk full" in err, err
    assert {p.name for p in out.iterdir()} == {"gim.log"}  # model.pt was written, then removed
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert "disk full while writing eval_metrics.csv" in (out / "gim.log").read_text()
