"""Safe file output: every `-o`/`--out` writer and every run-folder file goes through here.

    write_text(path, text)          atomic replace of a regular file (or a new one)
    write_with(path, fn)            the same, with `fn(tmp_path)` producing the bytes
    os_error(path, exc, doing)      an OSError as a one-line SlmrecError

Guarantees: the bytes are written to a fresh, randomly named temporary file in the target's own
folder (opened with O_EXCL|O_NOFOLLOW, so a planted file or symlink is never followed), fsynced,
then renamed over the target, so readers see the old file or the new one, never half of one. The
target must be a regular file or absent: a symlink (unless `follow_symlinks`), a device, a FIFO,
a socket or a folder is refused before anything is written. Every OSError (missing folder,
read-only or full disk, permission) becomes one SlmrecError line naming the path.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable

from slmrec.errors import SlmrecError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def os_error(path: str | os.PathLike, exc: OSError, doing: str = "cannot write") -> SlmrecError:
    """One line for an OSError: what failed, on which path, and the system's reason."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif exc.errno == errno.EROFS:
        reason = "read-only file system"
    return SlmrecError.one(str(path), f"{doing}: {reason}")


def check_target(path: str | os.PathLike, *, follow_symlinks: bool = False) -> Path:
    """The path to write, after refusing what must not be replaced. Returns the real target
    (the link's target when `follow_symlinks`)."""
    p = Path(path).expanduser()
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise os_error(p, exc, "cannot inspect the output path") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not follow_symlinks:
            raise SlmrecError.one(str(p), "is a symbolic link; refusing to replace it (write to "
                                  "the link's target directly)")
        p = Path(os.path.realpath(p))
        try:
            st = os.stat(p)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise os_error(p, exc, "cannot inspect the output path") from None
    if st is not None:
        for test, what in _KINDS:
            if test(st.st_mode):
                raise SlmrecError.one(str(p), f"is {what}, not a regular file; choose a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise SlmrecError.one(str(p), f"folder '{parent}' does not exist; create it first")
    return p


def write_with(path: str | os.PathLike, produce: Callable[[Path], None], *,
               follow_symlinks: bool = False, fsync: bool = True) -> Path:
    """Atomically replace `path` with what `produce(tmp)` writes into the temp file `tmp`."""
    target = check_target(path, follow_symlinks=follow_symlinks)
    tmp = None
    try:
        for _ in range(16):
            name = target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp"
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                continue
            tmp = name
            os.close(fd)
            break
        if tmp is None:
            raise SlmrecError.one(str(target), "cannot create a temporary file next to it")
        produce(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise os_error(target, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def write_text(path: str | os.PathLike, text: str, *, follow_symlinks: bool = False,
               fsync: bool = True) -> Path:
    """Atomically replace `path` (a regular file or nothing) with `text` in UTF-8."""
    data = text.encode("utf-8")

    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return write_with(path, produce, follow_symlinks=follow_symlinks, fsync=fsync)
