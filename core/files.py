"""Atomic file writing and hashing, shared by the exporter and the runtime."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import DeployError, OutputError
from core.signals import interrupts_deferred


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


TEMP_MARK = ".part"
# Temporaries that exist right now; `remove_temporaries` deletes them when a signal unwinds the program, in
# case the signal landed inside the cleanup itself (between bytecodes of a `finally`).
_LIVE: set[Path] = set()


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is one of `atomic_path`'s temporaries (`.NAME.XXXX.part.EXT`): never an input."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK + "." in name


@contextlib.contextmanager
def _tracked(make: Callable[[], Path]) -> Iterator[Path]:
    """A temporary file or folder made by `make`, removed on every exit. Making and removing happen with
    interrupts deferred (a signal in between would leave it behind), and it is registered meanwhile for
    `remove_temporaries`."""
    with interrupts_deferred():
        path = make()
        _LIVE.add(path)
    try:
        yield path
    finally:
        with interrupts_deferred():
            _remove(path)
        _LIVE.discard(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _temporary_file(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TEMP_MARK}{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
    except OSError:
        os.unlink(tmp)
        raise
    return Path(tmp)


@dataclass(frozen=True)
class Checked:
    """An existing file as it was when it was checked: a commit with `replace=Checked` replaces that very
    file (same device, inode, size and modification time) and nothing else."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> Checked:
        st = os.stat(path, follow_symlinks=False)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# How a commit may treat what is at the target: True replaces anything (the exporter's own files), a
# Checked replaces only the file that was checked, False or None replaces nothing.
Replace = bool | Checked | None


@contextlib.contextmanager
def atomic_path(path: str | Path, *, replace: Replace = True) -> Iterator[Path]:
    """Yield a temporary path in `path`'s directory (same suffix, so writers that look at it still work);
    move it onto `path` if the block succeeds, delete it otherwise. Readers never see a partial file.

    Without `replace` the commit is an exclusive hard link, so two concurrent runs can never silently replace
    each other's result; with a `Checked` it replaces that checked file only (`_replace_checked`). Either
    way an OutputError says what was found instead.
    """
    path = Path(path)
    with _tracked(lambda: _temporary_file(path)) as tmp:
        yield tmp
        with interrupts_deferred():
            if replace is True:
                os.replace(tmp, path)
            elif isinstance(replace, Checked):
                _replace_checked(tmp, path, replace)
            else:
                _claim(tmp, path)


def _appeared(path: Path) -> OutputError:
    return OutputError(f"{path}: appeared while this run was working (another process wrote it); not replaced")


def _claim(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path` only if nothing is there: a hard link is atomic and exclusive. Where the filesystem
    has no hard links (FAT, some network shares) the name is claimed with O_EXCL first, then replaced."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise _appeared(path) from None
        os.replace(tmp, path)


def _replace_checked(tmp: Path, path: Path, checked: Checked) -> None:
    """Replace `path` with `tmp` only if `path` is still the file that was checked. What is at `path` is
    first moved aside (a rename: atomic, whatever it is); only when the file moved aside is the checked
    one does the result go in (exclusively) and the old file go. Anything else is put back, so a file that
    took the checked one's place meanwhile is never replaced."""
    aside = _temporary_file(path)
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # the checked file went away meanwhile: nothing is replaced
        aside.unlink()
        _claim(tmp, path)
        return
    except BaseException:
        aside.unlink()
        raise
    if Checked.of(aside) != checked:
        try:
            _claim(aside, path)  # back where it was
        except OutputError:
            raise OutputError(
                f"{path}: changed while this run was working, and another file took its name meanwhile; the "
                f"changed file is kept as {aside.name}"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()  # after a hard link both names are that file; without links it was moved
        raise OutputError(f"{path}: changed while this run was working (not the earlier result that was checked); not replaced")
    try:
        _claim(tmp, path)
    finally:
        aside.unlink()  # the checked earlier result: replaced, or given up to a file that appeared meanwhile


@contextlib.contextmanager
def temporary_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder inside `parent`, removed with its contents on every exit."""
    with _tracked(lambda: Path(tempfile.mkdtemp(prefix=prefix, dir=parent))) as folder:
        yield folder


def remove_temporaries() -> None:
    """Delete every temporary file or folder still alive (after a signal unwound the program)."""
    for path in list(_LIVE):
        _remove(path)
        _LIVE.discard(path)


def make_writable_folder(folder: Path, label: str) -> None:
    """Create `folder` (with its parents) to write into, or raise DeployError saying in one line, under
    `label` (e.g. the flag that named it), why it cannot be used: checked before any long work."""
    if folder.exists() and not folder.is_dir():
        raise DeployError(f"{label}{folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployError(f"{label}{folder}: cannot create or write there ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):  # a read-only mount says so here too, also to root
        raise DeployError(f"{label}{folder}: cannot create or write there (not writable)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
