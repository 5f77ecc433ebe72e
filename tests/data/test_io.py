"""Kill -9 during a write: the target is the previous file or absent, never a partial file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

# Writes a ~16 MB gzip-compressed h5ad (about a second of work) to argv[1]; argv[2] = "atomic" uses
# gim's writer, "direct" AnnData's own (the control that shows the kill lands mid-write).
_WRITER = """
import sys
import anndata as ad
import numpy as np
from gimcli.data.io import write_h5ad
a = ad.AnnData(np.random.default_rng(0).random((2000, 2000), dtype=np.float32))
if sys.argv[2] == "atomic":
    write_h5ad(a, sys.argv[1])
else:
    a.write_h5ad(sys.argv[1], compression="gzip")
"""


def _kill_mid_write(target: Path, mode: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), mode])
    watch = (
        (lambda: list(target.parent.glob(f".{target.name}.*.tmp")))
        if mode == "atomic"
        else (lambda: [target])
    )
    before = target.stat().st_mtime_ns if target.exists() else None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        grown = [
            p
            for p in watch()
            if p.exists()
            and p.stat().st_size > 1 << 20
            and (mode == "atomic" or p.stat().st_mtime_ns != before)
        ]
        if grown:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the writer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    return proc.wait(30)


def _readable(p: Path) -> bool:
    try:
        ad.read_h5ad(p)
        return True
    except Exception:
        return False


def test_sigkill_during_write_leaves_previous_file_or_none(tmp_path):
    from gimcli.data.io import write_h5ad

    # previous file present: it survives byte for byte
    target = tmp_path / "out.h5ad"
    write_h5ad(ad.AnnData(np.ones((3, 2), np.float32)), target)
    previous = target.read_bytes()
    assert _kill_mid_write(target, "atomic") == -signal.SIGKILL
    assert target.read_bytes() == previous
    assert ad.read_h5ad(target).shape == (3, 2)

    # no previous file: none appears
    fresh = tmp_path / "fresh.h5ad"
    assert _kill_mid_write(fresh, "atomic") == -signal.SIGKILL
    assert not fresh.exists()
    # the killed writer's temporary file is hidden beside the target, never under its name
    assert list(tmp_path.glob(".fresh.h5ad.*.tmp"))

    # control: a plain in-place write killed the same way leaves a broken file under the name
    direct = tmp_path / "direct.h5ad"
    write_h5ad(ad.AnnData(np.ones((3, 2), np.float32)), direct)
    assert _kill_mid_write(direct, "direct") == -signal.SIGKILL
    assert direct.read_bytes() != previous and not _readable(direct)


def test_atomic_outputs_follow_umask(tmp_path):
    import os

    from gimcli.data.io import write_text

    old = os.umask(0o022)
    try:
        write_text("x", tmp_path / "a.txt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_previous_and_cleans_up(tmp_path):
    from gimcli.data.io import atomic_path, write_text

    target = tmp_path / "t.csv"
    write_text("old\n", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
