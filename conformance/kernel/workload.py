"""A syscall workload through the mount: what makes the kernel send most kinds of request.

It works in its own directory and removes everything it made, so that the kernel
drops (and forgets) every inode it was given for it before the unmount.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

CHUNK = 128 * 1024  # the reference server's max_write: one full WRITE


def run(root: Path, name: str) -> Path:
    """Run the workload in ``root/name`` (made here, removed at the end); returns that path."""
    work = root / name
    os.mkdir(work)
    _files(work)
    _names(work)
    _xattrs(work / "b")
    _directories(work)
    _open_unlinked(work)
    _tmpfile(work)
    _locks(work / "b")
    os.statvfs(work)
    for entry in os.listdir(work):
        os.unlink(work / entry)
    os.rmdir(work)
    return work


def _files(work: Path) -> None:
    fd = os.open(work / "a", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"x" * CHUNK)
        os.write(fd, b"y" * 5000)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.stat(work / "a")
    assert (work / "a").read_bytes()[-5000:] == b"y" * 5000
    fd = os.open(work / "a", os.O_RDWR)
    try:
        os.pread(fd, 100, CHUNK - 50)
        os.pwrite(fd, b"z" * 10, 3)
        os.ftruncate(fd, CHUNK)
        os.fstat(fd)
    finally:
        os.close(fd)
    os.chmod(work / "a", 0o600)
    os.utime(work / "a", (1, 2))
    os.truncate(work / "a", 4096)


def _names(work: Path) -> None:
    with os.scandir(work) as entries:
        for entry in entries:
            entry.stat()
    os.rename(work / "a", work / "b")
    os.link(work / "b", work / "c")
    os.stat(work / "c")
    (work / "d").write_bytes(b"d")
    os.rename(work / "d", work / "c")  # replaces a second name of b's inode
    os.symlink("b", work / "s")
    assert os.readlink(work / "s") == "b"
    os.stat(work / "s")
    os.unlink(work / "s")
    os.mkfifo(work / "fifo")
    os.unlink(work / "fifo")


def _xattrs(path: Path) -> None:
    os.setxattr(path, "user.fusecheck", b"value")
    assert os.getxattr(path, "user.fusecheck") == b"value"
    assert "user.fusecheck" in os.listxattr(path)
    os.removexattr(path, "user.fusecheck")


def _directories(work: Path) -> None:
    sub = work / "sub"
    os.mkdir(sub)
    (sub / "x").write_bytes(b"x")
    try:
        os.rmdir(sub)
    except OSError as exc:
        assert exc.errno == errno.ENOTEMPTY, exc
    os.listdir(sub)
    os.rename(sub / "x", work / "x")
    os.rmdir(sub)


def _open_unlinked(work: Path) -> None:
    """A file unlinked while open: the kernel forgets it after the last close."""
    fd = os.open(work / "open", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"still here")
        os.unlink(work / "open")
        assert os.pread(fd, 10, 0) == b"still here"
    finally:
        os.close(fd)


def _tmpfile(work: Path) -> None:
    try:
        fd = os.open(work, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.ENOSYS):
            return  # no FUSE_TMPFILE here: nothing to learn
        raise
    try:
        os.write(fd, b"tmp")
    finally:
        os.close(fd)


def _locks(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        with contextlib.suppress(OSError):  # a server may not lock; the requests are what counts
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
