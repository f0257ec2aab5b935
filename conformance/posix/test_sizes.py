"""Large offsets, truncate's errnos through a descriptor, and what a descriptor allows after its
non-root creator made the file with mode 0000: against tmpfs."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.stamps import moved
from conformance.posix.users import as_user
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"
ALICE = 20001
GIB = 1 << 30


@rule("POSIX-RW-002", "pwrite and pread work at offsets past 2 GiB and 4 GiB: the size follows the "
      "last byte written and the gaps read as zeros", source=f"{POSIX} pwrite(), pread(); Linux: "
      "O_LARGEFILE is implied on 64-bit", area=AREA)
def test_large_offsets(twin: Twin) -> None:
    def run(root: Path) -> tuple[int, int, bytes, bytes, bytes]:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"two", 2 * GIB + 5)
            after_two = os.fstat(fd).st_size
            os.pwrite(fd, b"four", 4 * GIB + 7)
            return (after_two, os.fstat(fd).st_size, os.pread(fd, 13, 2 * GIB - 5),
                    os.pread(fd, 4096, 3 * GIB), os.pread(fd, 20, 4 * GIB))
        finally:
            os.close(fd)

    two, four, at_two, between, at_four = twin.same(run, "pwrite and pread past 2 and 4 GiB").value
    assert (two, four) == (2 * GIB + 8, 4 * GIB + 11)
    assert at_two == bytes(10) + b"two" and between == bytes(4096) and at_four == bytes(7) + b"four"
    assert twin.same_stat("f", "sparse file")["size"] == 4 * GIB + 11
    twin.same(lambda r: os.truncate(r / "f", 2 * GIB + 6), "truncate back past 2 GiB")
    assert twin.same_stat("f", "after the truncate")["size"] == 2 * GIB + 6


@rule("POSIX-TRUNC-003", "ftruncate through a read-only descriptor fails with EINVAL, and so does a "
      "negative length (truncate and ftruncate)", source=f"{POSIX} ftruncate(): EINVAL, truncate(): "
      "EINVAL; Linux gives EINVAL, not EBADF, for a descriptor not open for writing", area=AREA)
def test_truncate_errnos(twin: Twin) -> None:
    twin.same(lambda r: (r / "f").write_bytes(b"0123456789"), "setup")

    def on_fd(root: Path, flags: int, length: int) -> None:
        fd = os.open(root / "f", flags)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)

    assert twin.same(lambda r: on_fd(r, os.O_RDONLY, 2), "ftruncate read-only").error == "EINVAL"
    assert twin.same(lambda r: on_fd(r, os.O_RDWR, -1), "ftruncate to -1").error == "EINVAL"
    assert twin.same(lambda r: os.truncate(r / "f", -1), "truncate to -1").error == "EINVAL"
    assert twin.same_stat("f", "after the failures")["size"] == 10


def _fallocate(fd: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, 0, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _need_other_users(features: frozenset[str]) -> None:
    if "other_users" not in features:
        pytest.skip("not applicable: other users cannot use the target (other_users missing)")


@rule("POSIX-OPEN-007", "A file its non-root creator makes with mode 0000 through open(O_CREAT|O_RDWR) "
      "is still writable, readable and ftruncate-able through that descriptor",
      source=f"{POSIX} open(): 'the file permission bits ... shall not affect whether the file is "
      "opened for reading, writing, or for both' when O_CREAT creates it", area=AREA)
def test_mode_zero_creator(twin: Twin, features: frozenset[str]) -> None:
    _need_other_users(features)
    twin.same(lambda r: os.chmod(r, 0o777), "setup")

    def run(root: Path) -> tuple[int, bytes, int, int]:
        def as_alice() -> tuple[int, bytes, int, int]:
            fd = os.open(root / "f", os.O_CREAT | os.O_RDWR, 0)
            try:
                written = os.write(fd, b"secret data")
                data = os.pread(fd, 100, 0)
                os.ftruncate(fd, 6)
                return written, data, os.fstat(fd).st_size, os.fstat(fd).st_mode & 0o7777
            finally:
                os.close(fd)

        return as_user(ALICE, ALICE, (), as_alice)

    assert twin.same(run, "alice: create 0000, write, read, ftruncate").value == (11, b"secret data", 6, 0)
    assert twin.same(lambda r: (r / "f").read_bytes(), "content").value == b"secret"


@rule("POSIX-FALLOCATE-002", "fallocate works through the O_RDWR descriptor of a mode-0000 file its "
      "non-root creator just made, updates mtime and ctime, and fails with EINVAL for a zero length",
      source="Linux man-pages fallocate(2); POSIX.1-2017 posix_fallocate(): EINVAL", area=AREA)
def test_fallocate_mode_zero(twin: Twin, features: frozenset[str]) -> None:
    _need_other_users(features)
    if "fallocate" not in features:
        pytest.skip("not applicable: the target does not offer fallocate")
    twin.same(lambda r: os.chmod(r, 0o777), "setup")

    def run(root: Path) -> tuple[int, str]:
        def as_alice() -> tuple[int, str]:
            fd = os.open(root / "f", os.O_CREAT | os.O_RDWR, 0)
            try:
                _fallocate(fd, 0, 8192)
                size = os.fstat(fd).st_size
                try:
                    _fallocate(fd, 0, 0)
                    zero = "ok"
                except OSError as exc:
                    zero = os.strerror(exc.errno or 0)
                return size, zero
            finally:
                os.close(fd)

        return as_user(ALICE, ALICE, (), as_alice)

    assert twin.same(run, "alice: create 0000, fallocate").value == (8192, os.strerror(22))
    fds = {root: os.open(root / "f", os.O_RDWR) for root in (twin.target, twin.reference)}
    try:
        _, times = moved(twin, lambda r: _fallocate(fds[r], 4096, 16384), "fallocate past the end",
                         lambda r: {"f": os.fstat(fds[r])})
        assert times == {"f": "mc"}
    finally:
        for fd in fds.values():
            os.close(fd)
