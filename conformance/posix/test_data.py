"""fallocate, lseek SEEK_DATA/SEEK_HOLE, fsync."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.rules import rule

AREA = "posix"
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@rule("POSIX-FALLOCATE-001", "fallocate extends a file (zeros), KEEP_SIZE keeps its size, "
      "PUNCH_HOLE zeroes a range", source="Linux man-pages fallocate(2)", area=AREA)
def test_fallocate(twin: Twin, features: frozenset[str]) -> None:
    if "fallocate" not in features:
        pytest.skip("not applicable: the target does not offer fallocate")

    def run(root: Path) -> tuple[int, int, bytes]:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x" * 8192)
            _fallocate(fd, 0, 0, 16384)
            grown = os.fstat(fd).st_size
            _fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 65536)
            kept = os.fstat(fd).st_size
            _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
            return grown, kept, os.pread(fd, 8192, 0)
        finally:
            os.close(fd)

    grown, kept, data = twin.same(run, "fallocate").value
    assert (grown, kept) == (16384, 16384) and data == bytes(4096) + b"x" * 4096


@rule("POSIX-LSEEK-001", "lseek SEEK_DATA/SEEK_HOLE find data and the end; past the end: ENXIO",
      source="Linux man-pages lseek(2); kernel fuse_lseek (no writeback first)", area=AREA)
def test_seek_data_hole(twin: Twin) -> None:
    def run(root: Path) -> tuple[int, int]:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"data", 0)
            # with FUSE_WRITEBACK_CACHE the data may still be dirty in the kernel, and fuse_lseek
            # asks the daemon without writing it back: only what reached the daemon can count
            os.fsync(fd)
            return os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE)
        finally:
            os.close(fd)

    assert twin.same(run, "SEEK_DATA/SEEK_HOLE").value == (0, 4)

    def past(root: Path) -> int:
        fd = os.open(root / "f", os.O_RDONLY)
        try:
            return os.lseek(fd, 100, os.SEEK_DATA)
        finally:
            os.close(fd)

    assert twin.same(past, "SEEK_DATA past the end").error == "ENXIO"


@rule("POSIX-FSYNC-001", "fsync and fdatasync of a written file succeed and the data reads back",
      source="POSIX.1-2017 fsync()", area=AREA)
def test_fsync(twin: Twin) -> None:
    def run(root: Path) -> bytes:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"durable")
            os.fsync(fd)
            os.fdatasync(fd)
            return os.pread(fd, 100, 0)
        finally:
            os.close(fd)

    assert twin.same(run, "fsync").value == b"durable"
