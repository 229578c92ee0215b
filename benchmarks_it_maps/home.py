"""Where the package keeps its data, and how it writes there without ever leaving half-written files.

Every file or folder the package creates under the data home goes through :func:`atomic_file` or
:func:`atomic_dir`: the content is written to a temporary sibling first and renamed into place only when it is
complete, so an interrupted import, download or conversion leaves either the old state or the new one.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

HOME_ENV = "BRAINSCORE_ITMAPS_HOME"
DEFAULT_HOME = Path("~/.brainscore_itmaps")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(path: Path) -> None:
    """Delete temporary siblings of ``path`` left by a writer that was killed hard (its pid is in the name)."""
    for stale in path.parent.glob(f".{path.name}.*.partial"):
        parts = stale.name[len(path.name) + 2:].split(".")
        if parts and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def make_parent(path: Path) -> None:
    """Create ``path``'s folder; one clear error when something on the way is a file (``--out FILE/x``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder; choose an output path in a folder",
                                 str(above)) from None


def private_tempdir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named ``<prefix><pid>-...`` in the system temp dir; folders of the same prefix whose
    process is gone (killed before it could clean up) are removed first."""
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and stale.is_dir() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def data_home() -> Path:
    """The data home: ``$BRAINSCORE_ITMAPS_HOME`` or ``~/.brainscore_itmaps`` (created on first use)."""
    home = Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"the data home is not a folder; point {HOME_ENV} at a folder",
                                 str(home))
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was. Temporary files of writers that
    were killed hard (SIGKILL, power loss) carry their pid and are removed by the next write to the same path.
    """
    path = Path(path)
    created = _missing_folders(path.parent)
    make_parent(path)
    _remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file ordinary permissions
    try:
        yield tmp_path
        if tmp_path.is_file():  # writers that replace the file (safetensors) bring back mkstemp's 0600
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        _remove_empty_folders(created)  # a failed download leaves no empty leaderboard/ or weights/ folder
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty_folders(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first one another writer has filled meanwhile
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file left behind); released when the block ends, also
    when the process dies."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a C library without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # file system without RENAME_EXCHANGE
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (an existing one is swapped out).

    On any exception the temporary folder is deleted and ``path`` is untouched. Concurrent writers of the same
    folder (parallel imports, sweep workers) each build their own temporary folder; the swap itself holds an
    exclusive lock on the parent folder and is one atomic exchange where the system has one, so ``path`` never
    disappears, the last writer wins, and no ``.NAME.*.old`` folders are left (older leftovers are removed).
    """
    path = Path(path)
    make_parent(path)
    _remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        with _folder_lock(path.parent):
            for old in path.parent.glob(f".{path.name}.*.old"):  # left by writers before this lock existed
                shutil.rmtree(old, ignore_errors=True)
            if not path.exists():
                os.replace(tmp, path)
            elif not _exchange(tmp, path):  # two renames: path is missing for a moment (no atomic exchange)
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange it holds the previous content
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically (format from the file suffix unless given) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
    return path
