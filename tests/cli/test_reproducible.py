"""--seed makes CPU runs bit-identical through the CLI; every output records seed, versions and
the SHA-256 of its inputs; inputs are never modified."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch

from gimcli.provenance import file_sha256
from tests.tiny import TRAIN_ARGS, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(tmp_path):
    return write_tiny(tmp_path / "tiny.h5ad")


def _train(gim, data, out, *extra):
    rc, _, err = gim("train", data, "--out", out, *TRAIN_ARGS, "--steps", "80", *extra)
    assert rc == 0, err
    return torch.load(out / "model.pt", weights_only=True)


def test_seed_gives_bit_identical_cpu_runs(gim, data, tmp_path):
    digest = file_sha256(data)
    a = _train(gim, data, tmp_path / "a", "--seed", "7")
    b = _train(gim, data, tmp_path / "b", "--seed", "7")
    c = _train(gim, data, tmp_path / "c", "--seed", "8")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["module.sem.B"], c["module.sem.B"])  # the seed matters
    pa = ad.read_h5ad(tmp_path / "a" / "annotated.h5ad").varm["gim_target_prob"]
    pb = ad.read_h5ad(tmp_path / "b" / "annotated.h5ad").varm["gim_target_prob"]
    np.testing.assert_array_equal(pa.to_numpy(), pb.to_numpy())
    assert file_sha256(data) == digest  # the input was not written

    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert meta["seed"] == 7 and meta["input"]["sha256"] == digest
    assert meta["weights_sha256"] == file_sha256(tmp_path / "a" / "model.pt")
    assert (
        meta["versions"]["torch"] == torch.__version__
        and meta["provenance"]["deterministic"] is False
    )
    uns = ad.read_h5ad(tmp_path / "a" / "annotated.h5ad").uns["gim"]
    assert uns["seed"] == 7 and uns["input"]["sha256"] == digest and "torch" in uns["versions"]


def test_predict_is_reproducible_and_records_provenance(gim, data, tmp_path):
    run = tmp_path / "run"
    _train(gim, data, run)
    outs = []
    for name in ("p1.h5ad", "p2.h5ad"):
        rc, _, err = gim(
            "predict",
            run,
            "--conditions",
            "drug00,drug01",
            "--doses",
            "10,100",
            "--n-cells",
            "5",
            "--seed",
            "3",
            "--out",
            tmp_path / name,
            "-q",
        )
        assert rc == 0, err
        outs.append(ad.read_h5ad(tmp_path / name))
    np.testing.assert_array_equal(outs[0].X.toarray(), outs[1].X.toarray())
    prov = outs[0].uns["gim"]["provenance"]
    assert prov["seed"] == 3 and prov["versions"]["gim"]
    assert prov["inputs"]["model"]["sha256"] == file_sha256(run / "model.pt")
    assert prov["inputs"]["model_meta"]["sha256"] == file_sha256(run / "model.json")
    assert outs[0].uns["gim"]["model"]["input"]["sha256"] == file_sha256(data)


def test_deterministic_flag_is_recorded(gim, data, tmp_path):
    try:
        _train(gim, data, tmp_path / "d", "--deterministic")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    meta = json.loads((tmp_path / "d" / "model.json").read_text())
    assert meta["provenance"]["deterministic"] is True
