"""Output folders: every writer (``run --out``, ``simulate --out``, any future one) claims its
folder through :func:`claim_dir` and, when it replaces the whole folder, writes through
:func:`atomic_dir`.

Rules (each tested):

- A folder is written only if it is absent, empty, or *ours*: it holds the writer's marker file
  (``.bayesmeta-report``, ``.bayesmeta-simulation``). A non-empty folder without the marker is
  refused with one line, untouched: ``--out thesis`` can never overwrite a user's files.
- A symbolic link is never replaced by a real directory: the folder written is the link's
  target (resolved once, up front), and the link keeps pointing at it. A link to nothing is
  refused.
- Replacing a folder leaves nothing behind: the previous content is moved aside under a
  hidden name and deleted once the new folder is in place; a folder moved aside by a run that
  was killed (SIGKILL, power loss) is deleted by the next run when it holds our marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from bayesmeta.exceptions import BayesMetaError

__all__ = ["claim_dir", "atomic_dir", "write_atomic"]

#: entries a folder may hold and still count as empty
_IGNORABLE = (".gitkeep", ".DS_Store")


def _resolve(path: Path, option: str) -> Path:
    """The real folder ``path`` names (symlinks resolved), or a one-line refusal."""
    p = Path(os.path.abspath(path))
    if p.is_symlink() and not p.exists():
        raise BayesMetaError(
            f"{option} {p} is a symbolic link to {os.readlink(p)!r}, which does not exist; "
            "refusing to replace the link. Create the link's target or choose another folder.")
    real = Path(os.path.realpath(p))
    if real.exists() and not real.is_dir():
        raise BayesMetaError(f"{option} {p} is a file, not a folder. Choose a folder with "
                             f"{option}.")
    return real


def claim_dir(path, *, marker: str, option: str = "--out", what: str = "output folder",
              legacy=None) -> Path:
    """Check that ``path`` may be written by the owner of ``marker``; return the real folder.

    Parameters
    ----------
    path : the folder the user named (may be a symlink, may not exist yet).
    marker : file name whose presence makes a non-empty folder ours.
    option : how the user named the folder, for messages (``--out``).
    what : what the writer writes (``"report"``), for messages.
    legacy : optional predicate ``folder -> bool`` accepting a folder written before the
        marker existed.

    Returns
    -------
    Path
        The real (symlink-resolved) folder; it is not created.

    Raises
    ------
    BayesMetaError
        A file, a dangling link, or a non-empty folder that is not ours.
    """
    real = _resolve(Path(path), option)
    if real.is_dir():
        names = {e.name for e in real.iterdir()}
        if names - set(_IGNORABLE) and marker not in names and not (legacy and legacy(real)):
            shown = Path(os.path.abspath(path))
            where = f" (which leads to {real})" if shown != real else ""
            raise BayesMetaError(
                f"output folder {shown}{where} exists, is not empty and is not a bayesmeta "
                f"{what} (no {marker} file); refusing to write into it. Choose an empty or new "
                f"folder with {option}.")
    return real


def _sweep_moved_aside(real: Path, marker: str):
    """Delete ``.<name>.old-*`` folders (our previous content moved aside by a run that was
    killed before it could delete them): only those holding our marker."""
    for p in real.parent.glob(f".{real.name}.old-*"):
        if p.is_dir() and not p.is_symlink() and (p / marker).exists():
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target, *, marker: str, marker_text: str = "", option: str = "--out",
               what: str = "output folder", keep=(".gitkeep",)):
    """Yield a fresh temporary folder that replaces ``target`` on success.

    The temporary folder sits beside the real target (same file system, so renames are atomic).
    On any exception (including ``KeyboardInterrupt``/``SystemExit``) it is removed and the
    target is left exactly as it was. The target is claimed with :func:`claim_dir` first; a
    symlinked target stays a symlink (its target folder is what is replaced). Files named in
    ``keep`` survive the replacement.
    """
    real = claim_dir(target, marker=marker, option=option, what=what)
    real.parent.mkdir(parents=True, exist_ok=True)
    _sweep_moved_aside(real, marker)
    tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-", dir=real.parent))
    old = None
    try:
        yield tmp
        for name in keep:
            if (real / name).exists():
                (tmp / name).touch()
        (tmp / marker).write_text(marker_text, encoding="utf-8")
        if real.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-", dir=real.parent))
            old.rmdir()
            os.replace(real, old)
            try:
                os.replace(tmp, real)
            except BaseException:
                os.replace(old, real)
                old = None
                raise
        else:
            os.replace(tmp, real)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_atomic(path, data: bytes | str):
    """Write one file by writing a hidden temporary file beside it and renaming it: a reader
    (or a resumed run) never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
