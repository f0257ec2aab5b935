"""open/creat, read/write, truncate, unlink: through the mount, against tmpfs."""

from __future__ import annotations

import os
from pathlib import Path

from conformance.posix.oracle import Twin
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"


def _write(path: Path, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT, mode: int = 0o644) -> int:
    fd = os.open(path, flags, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: Path, size: int = 1 << 16, offset: int = 0) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


@rule("POSIX-OPEN-001", "O_CREAT makes a regular file with the mode asked for, less the umask",
      source=f"{POSIX} open(): O_CREAT", area=AREA)
def test_creat_mode(twin: Twin) -> None:
    old = os.umask(0o022)
    try:
        twin.same(lambda r: os.close(os.open(r / "f", os.O_CREAT | os.O_WRONLY, 0o777)), "creat")
    finally:
        os.umask(old)
    view = twin.same_stat("f", "created file")
    assert view["mode"] == 0o755 and view["size"] == 0


@rule("POSIX-OPEN-002", "O_CREAT|O_EXCL on an existing name fails with EEXIST",
      source=f"{POSIX} open(): O_EXCL", area=AREA)
def test_creat_excl(twin: Twin) -> None:
    twin.same(lambda r: _write(r / "f", b"x"), "create")
    got = twin.same(lambda r: os.open(r / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY), "O_EXCL")
    assert got.error == "EEXIST"


@rule("POSIX-OPEN-003", "O_TRUNC empties an existing regular file",
      source=f"{POSIX} open(): O_TRUNC", area=AREA)
def test_trunc(twin: Twin) -> None:
    twin.same(lambda r: _write(r / "f", b"hello"), "create")
    twin.same(lambda r: os.close(os.open(r / "f", os.O_WRONLY | os.O_TRUNC)), "O_TRUNC")
    assert twin.same_stat("f", "after O_TRUNC")["size"] == 0


@rule("POSIX-OPEN-004", "With O_APPEND every write lands at the end of the file",
      source=f"{POSIX} write(): O_APPEND", area=AREA)
def test_append(twin: Twin) -> None:
    twin.same(lambda r: _write(r / "f", b"abc"), "create")

    def append(root: Path) -> bytes:
        fd = os.open(root / "f", os.O_WRONLY | os.O_APPEND)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"def")
        finally:
            os.close(fd)
        return _read(root / "f")

    assert twin.same(append, "append").value == b"abcdef"


@rule("POSIX-OPEN-005", "O_DIRECTORY on a regular file fails with ENOTDIR; O_NOFOLLOW on a "
      "symlink with ELOOP", source=f"{POSIX} open()", area=AREA)
def test_open_directory_nofollow(twin: Twin, features: frozenset[str]) -> None:
    twin.same(lambda r: _write(r / "f", b"x"), "create")
    assert twin.same(lambda r: os.open(r / "f", os.O_RDONLY | os.O_DIRECTORY),
                     "O_DIRECTORY").error == "ENOTDIR"
    if "symlink" in features:
        twin.same(lambda r: os.symlink("f", r / "l"), "symlink")
        assert twin.same(lambda r: os.open(r / "l", os.O_RDONLY | os.O_NOFOLLOW),
                         "O_NOFOLLOW").error == "ELOOP"


@rule("POSIX-RW-001", "What pwrite puts at an offset, pread gets back; a gap reads as zeros",
      source=f"{POSIX} pwrite(), pread(), lseek(): holes read as zero", area=AREA)
def test_pwrite_pread(twin: Twin) -> None:
    def scatter(root: Path) -> bytes:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"head", 0)
            os.pwrite(fd, b"tail", 10000)
            return os.pread(fd, 20000, 0)
        finally:
            os.close(fd)

    data = twin.same(scatter, "pwrite/pread").value
    assert data[:4] == b"head" and data[4:10000] == bytes(9996) and data[10000:] == b"tail"
    assert twin.same_stat("f", "after pwrite")["size"] == 10004


@rule("POSIX-TRUNC-001", "truncate grows a file with zeros and shrinks it, by path and by fd",
      source=f"{POSIX} truncate(), ftruncate()", area=AREA)
def test_truncate(twin: Twin) -> None:
    twin.same(lambda r: _write(r / "f", b"0123456789"), "create")
    twin.same(lambda r: os.truncate(r / "f", 4), "truncate to 4")
    assert twin.same(lambda r: _read(r / "f"), "read").value == b"0123"

    def grow(root: Path) -> bytes:
        fd = os.open(root / "f", os.O_RDWR)
        try:
            os.ftruncate(fd, 8)
        finally:
            os.close(fd)
        return _read(root / "f")

    assert twin.same(grow, "ftruncate to 8").value == b"0123" + bytes(4)


@rule("POSIX-UNLINK-001", "unlink removes the name, the data lives while a descriptor is open, "
      "and a second unlink fails with ENOENT", source=f"{POSIX} unlink()", area=AREA)
def test_unlink(twin: Twin) -> None:
    def open_unlink_read(root: Path) -> bytes:
        _write(root / "f", b"kept")
        fd = os.open(root / "f", os.O_RDONLY)
        try:
            os.unlink(root / "f")
            return os.pread(fd, 10, 0)
        finally:
            os.close(fd)

    assert twin.same(open_unlink_read, "read after unlink").value == b"kept"
    assert twin.same(lambda r: os.unlink(r / "f"), "second unlink").error == "ENOENT"
    assert twin.same_listing() == []
