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
