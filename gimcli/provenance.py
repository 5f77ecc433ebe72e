"""Reproducibility: deterministic kernels, the provenance every output records, and JSON helpers.

On CPU a fixed `--seed` alone makes runs bit-for-bit identical (same machine, same versions, same
number of threads: the seeded RNGs drive every random choice, and CPU kernels do not race).
On CUDA, atomics in scatter/index kernels and cuBLAS workspaces make sums order-dependent;
`--deterministic` switches to deterministic kernels. Then two runs on the same GPU model and
software agree to within 1e-5 in the trained weights (they usually agree exactly; across GPU
models or versions nothing is promised). docs/design.md, "Reproducibility".

A leaf module: it imports nothing of gim but the version, so that every layer may use it.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gimcli._version import __version__

# Packages whose versions every output records.
_PACKAGES = ("torch", "numpy", "scipy", "anndata", "scanpy", "rdkit", "h5py")


def versions() -> dict[str, str]:
    """Versions of gim, Python and the packages results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"gim": __version__, "python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "absent"
    return out


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


@dataclass(frozen=True)
class Provenance:
    """What an output was made from and with: seed, versions, input files, kernels, threads."""

    seed: int | None
    versions: dict[str, str]
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {path, sha256}
    deterministic: bool = False
    torch_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        return cls(**d)


def provenance(
    *, seed: int | None = None, inputs: dict[str, str | Path | None] | None = None
) -> Provenance:
    """Seed, package versions and the SHA-256 of each input file (None entries are skipped)."""
    import torch

    files = {}
    for name, p in (inputs or {}).items():
        if p is None:
            continue
        p = Path(p)
        files[name] = {"path": str(p), "sha256": file_sha256(p) if p.is_file() else ""}
    return Provenance(
        seed=seed,
        versions=versions(),
        inputs=files,
        deterministic=torch.are_deterministic_algorithms_enabled(),
        torch_threads=torch.get_num_threads(),
    )


def set_deterministic(enabled: bool) -> None:
    """Use only deterministic torch kernels (errors, not silent nondeterminism, if one lacks)."""
    if not enabled:
        return
    import torch

    # cuBLAS needs a fixed workspace to be deterministic; must be set before CUDA initialises.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` for numpy scalars and arrays; anything else is a bug."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o)}")


def finite_json(o: Any) -> Any:
    """NaN/inf -> None throughout nested dicts and lists, so that the file is strict JSON."""
    if isinstance(o, dict):
        return {str(k): finite_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [finite_json(v) for v in o]
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    return o
