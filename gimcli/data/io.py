"""Read and validate `.h5ad` files; write every output atomically."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import anndata as ad

from gimcli.errors import InputError

log = logging.getLogger(__name__)


def read_h5ad(path: str | Path, *, backed: bool = False) -> ad.AnnData:
    """Read an AnnData file, turning every failure into one `InputError` that names the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an .h5ad file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    try:
        # anndata warns about duplicate names (we raise our own error below) and old layouts
        # (read fine); as log lines they keep the CLI's stderr to one line per problem
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            adata = ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as e:  # h5py/anndata raise many types for corrupt files
        raise InputError(f"{p}: cannot read as .h5ad ({type(e).__name__}: {_first_line(e)})") from e
    for w in caught:
        if "not unique" not in str(w.message):
            log.info("%s: %s: %s", p, w.category.__name__, _first_line(w.message))
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"{p}: has {adata.n_obs} cells x {adata.n_vars} genes; nothing to use")
    for names, what in ((adata.obs_names, "cell"), (adata.var_names, "gene")):
        if not names.is_unique:
            dup = names[names.duplicated(keep=False)]
            raise InputError(
                f"{p}: duplicated {what} names: {len(dup)} {what}s share {dup.nunique()} name(s), "
                f"e.g. {dup.unique()[:3].tolist()}"
            )
    return adata


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A process killed mid-write leaves the previous file (or none), never a partial one.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp_p = Path(tmp)
    try:
        yield tmp_p
        # mkstemp makes 0600 files; give the output the mode a plain open() would (umask)
        os.chmod(tmp_p, _default_mode())
        with open(tmp_p, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_p, p)
        _fsync_dir(p.parent)  # the rename itself survives a power cut
    finally:
        if tmp_p.exists():
            tmp_p.unlink()


@contextlib.contextmanager
def staged_dir(out: str | Path, *, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; if the block succeeds, move each of its
    entries into `out` (the names in `last` last: a run directory is complete once its model.json
    is there), else remove it. A failed or killed write never leaves a partial output in `out`;
    what `out` held before (a log, a checkpoint) is kept, entries of the same name replaced."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        entries = sorted(
            stage.iterdir(),
            key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0),
        )
        for src in entries:
            dst = out / src.name
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
        _fsync_dir(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_output_file(path: Path, *, overwrite: bool) -> None:
    """Refuse an output file that exists (without `overwrite`), is a directory, or whose parent
    is not a directory."""
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")
    if path.exists() and path.is_dir():
        raise InputError(f"{path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{parent} is not a directory")


def check_run_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse to write a run directory over a file, or over a trained model without
    `overwrite`."""
    from gimcli import _keys

    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} exists and is not a directory")
    if (path / _keys.MODEL_META).exists() and not overwrite:
        raise InputError(
            f"--out {path} already holds a trained model; pass --overwrite to replace it"
        )


class H5adAppender:
    """An .h5ad written in pieces of rows (cells), so that a large output never sits in memory:
    X (CSR) and the dense per-cell arrays (layers, obsm) are appended chunk by chunk; obs, var,
    varm and uns are written by `close`. The file reads back with `anndata.read_h5ad`.

    Used inside `atomic_path`: a failed write leaves no partial file at the destination.
    """

    _DENSE = ("layers", "obsm")

    def __init__(self, path: str | Path, *, compression: str | None = "gzip"):
        import h5py

        self.f = h5py.File(path, "w")
        self.f.attrs["encoding-type"] = "anndata"
        self.f.attrs["encoding-version"] = "0.1.0"
        self.kw = {"compression": compression} if compression else {}
        self.n_obs = 0
        from anndata.io import write_elem

        for group in (*self._DENSE, "varm"):  # mappings, with their encoding, filled later
            write_elem(self.f, group, {})

    def append(self, piece: ad.AnnData) -> None:
        """Append the rows of `piece`: X (sparse or dense), its layers and obsm (obs is written
        whole by `close`)."""
        import numpy as np
        import scipy.sparse as sp
        from anndata.io import sparse_dataset, write_elem

        X = sp.csr_matrix(piece.X)
        if "X" not in self.f:
            write_elem(self.f, "X", X, dataset_kwargs=self.kw)
        else:
            sparse_dataset(self.f["X"]).append(X)
        for kind in self._DENSE:
            for name, arr in getattr(piece, kind).items():
                arr = np.asarray(arr)
                key = f"{kind}/{name}"
                if key not in self.f:
                    kw = {**self.kw, "maxshape": (None, *arr.shape[1:])}
                    write_elem(self.f, key, arr, dataset_kwargs=kw)
                else:
                    ds = self.f[key]
                    ds.resize((self.n_obs + len(arr), *arr.shape[1:]))
                    ds[self.n_obs :] = arr
        self.n_obs += piece.n_obs

    def close(self, *, obs, var, varm: dict | None = None, uns: dict | None = None) -> None:
        """Write obs (one row per appended cell), var, varm and uns, and close the file."""
        from anndata.io import write_elem

        try:
            if len(obs) != self.n_obs:
                raise ValueError(f"obs has {len(obs)} rows for {self.n_obs} appended cells")
            write_elem(self.f, "obs", obs)
            write_elem(self.f, "var", var)
            for name, arr in (varm or {}).items():
                write_elem(self.f, f"varm/{name}", arr)
            write_elem(self.f, "uns", uns or {})
        finally:
            self.f.close()
