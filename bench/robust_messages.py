"""Print the exact one-line message and exit code of every bad-input case (issue 5's record).

    .venv/bin/python bench/robust_messages.py
Runs the real CLI in-process on corrupted copies of the tiny simulated screen in a temp dir.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gimcli.cli import main  # noqa: E402
from tests.cli.test_bad_input import CASES, _Evil, write_legacy_h5ad  # noqa: E402
from tests.tiny import TRAIN_ARGS, tiny_screen, write_tiny  # noqa: E402


def gim(*args) -> tuple[int, str]:
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        rc = main([str(a) for a in args])
    return rc, err.getvalue().strip()


def show(name: str, rc: int, msg: str) -> None:
    print(f"{name:32s} exit {rc}: {msg}")


def main_() -> None:
    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp(prefix="gim_msgs_"))
    for name, (corrupt, extra, _) in sorted(CASES.items()):
        p = d / f"{name}.h5ad"
        corrupt(tiny_screen()).write_h5ad(p)
        show(
            name, *gim("train", p, "--out", d / f"run_{name}", *TRAIN_ARGS, "--steps", "5", *extra)
        )
    good = write_tiny(d / "good.h5ad")
    for name, content in {
        "empty_file": b"",
        "text_file": b"a,b\n1,2\n",
        "truncated_file": good.read_bytes()[: good.stat().st_size // 2],
    }.items():
        p = d / f"{name}.h5ad"
        p.write_bytes(content)
        show(name, *gim("train", p, "--out", d / "r", *TRAIN_ARGS))
    show("missing_file", *gim("train", d / "nope.h5ad", "--out", d / "r", *TRAIN_ARGS))
    write_legacy_h5ad(d / "legacy.h5ad")
    show(
        "legacy_pre07_layout (works)",
        *gim("train", d / "legacy.h5ad", "--out", d / "leg", *TRAIN_ARGS, "--steps", "5"),
    )
    rc, _ = gim("train", good, "--out", d / "run", *TRAIN_ARGS, "--steps", "5")
    run = d / "run"

    def predict(r):
        return gim(
            "predict", r, "--conditions", "drug00", "--doses", "100", "--out", d / "p.h5ad", "-q"
        )

    import shutil

    def variant(tag, fn):
        r = shutil.copytree(run, d / tag)
        fn(r)
        show(tag, *predict(r))

    def evil(r):
        torch.save({"module.sem.B": _Evil(str(d / "pwned"))}, r / "model.pt")
        m = json.loads((r / "model.json").read_text())
        m.pop("weights_sha256")
        (r / "model.json").write_text(json.dumps(m))

    variant("model_malicious_pickle", evil)
    print(f"{'':32s} code ran: {(d / 'pwned').exists()}")
    variant(
        "model_truncated",
        lambda r: (r / "model.pt").write_bytes((r / "model.pt").read_bytes()[:5000]),
    )
    variant("model_json_missing", lambda r: (r / "model.json").unlink())
    variant("model_json_corrupt", lambda r: (r / "model.json").write_text('{"format_vers'))

    def future(r):
        m = json.loads((r / "model.json").read_text())
        m["format_version"] = 99
        (r / "model.json").write_text(json.dumps(m))

    variant("model_incompatible_version", future)
    rc, msg = gim("train", good, "--out", d / "ck", *TRAIN_ARGS, "--steps", "5")
    torch.save(
        {"meta": json.dumps({"format": 1, "fingerprint": {"config": {}}})},
        d / "ck2" / "checkpoint.pt",
    ) if (d / "ck2").mkdir() is None else None
    show(
        "checkpoint_other_run",
        *gim("train", good, "--out", d / "ck2", *TRAIN_ARGS, "--steps", "5", "--resume"),
    )
    from gimcli.data.preprocess import transform_new
    from gimcli.gimrun import GimRun

    info = GimRun.load(run).preprocess_info
    a = tiny_screen()
    for tag, sub in (("genes_1_missing_of_8", a[:, 1:].copy()),):
        try:
            transform_new(sub, info, where="test.h5ad")
            show(tag, 0, "ok")
        except Exception as e:
            show(tag, getattr(e, "exit_code", 1), f"gim: error: {e}")


if __name__ == "__main__":
    main_()
