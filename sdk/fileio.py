"""File helpers: atomic writes, so that nothing is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination folder so that the final ``os.replace`` is atomic on POSIX and
    Windows. On any exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: Final destination. Its parent folder is created if needed.

    Yields:
        The temporary path to write to (it keeps the destination's suffix, for writers that look at it).
    """
    final = Path(path)
    tmp = temporary_beside(final)
    try:
        yield tmp
        publish(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it onto ``path`` only if the block succeeds.

    An existing ``path`` is moved aside, replaced by the new folder and then removed, so readers see the old folder
    or the new one, whole, never a mixture; on any exception the temporary folder is removed and ``path`` is left as
    it was.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the published folder from other users
    try:
        yield staging
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def temporary_beside(final: Path) -> Path:
    """Create an empty temporary file in ``final``'s folder (created if needed), keeping ``final``'s suffix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    return Path(tmp_name)


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file onto ``final`` atomically, with the permissions ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    os.replace(tmp, final)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def resolve_run_file(path: str | os.PathLike[str], name: str, error: type[Exception], remedy: str) -> Path:
    """``path`` itself when it is a file, or the file ``name`` in the run folder ``path`` (a model, a checkpoint).

    Raises:
        error: Neither exists; the message names the missing file and ends with ``remedy``.
    """
    p = Path(path)
    target = p / name if p.is_dir() else p
    if not target.is_file():
        raise error(f"{target} not found ({remedy})")
    return target
