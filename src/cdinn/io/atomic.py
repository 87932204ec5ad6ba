"""Atomic file writes: a reader never sees a partial file, a failed write leaves nothing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    The temporary file lives in the destination directory so that the final
    :func:`os.replace` is atomic on POSIX file systems.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=suffix or dest.suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    # mkstemp creates the file 0600; give it the permissions an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Delete the temporary files that killed writers of ``dest`` left behind.

    A temporary is ``.NAME.PID.XXXX.tmp``; it is stale when process PID no longer runs.
    Returns the files removed.
    """
    removed = []
    for tmp in dest.parent.glob(f".{glob_escape(dest.name)}.*.tmp"):
        pid = tmp.name[len(dest.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:  # alive, another user's
            pass
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters made literal."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written and is none of ``inputs``.

    ``inputs`` are every file the command reads (positional inputs, masks, supports, results a
    report reads, ``FILE::KEY`` forms included), compared after resolving symlinks. With
    ``folder``, ``path`` is a directory to write into (it may exist); else a file (it must not
    be a directory). The nearest existing parent must be a writable directory.

    Raises
    ------
    InputError
        One line naming the problem.
    """
    from cdinn.errors import InputError

    out = Path(path)
    if out.exists() and out.is_dir() != folder:
        raise InputError(f"output {out}: exists and is {'a file, not a folder' if folder else 'a folder, not a file'}")
    parent = out.parent if not folder or not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"output {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output {out}: cannot write in {parent} (permission denied)")
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(str(item).split("::")[0]).resolve()
        if resolved == source:
            raise InputError(f"output {out} is one of the inputs ({item}); refusing to overwrite it")
    return out
