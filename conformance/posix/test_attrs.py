"""chmod, chown (with suid/sgid clearing), utimensat, statfs: against tmpfs."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.users import as_user
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


@rule("POSIX-CHMOD-001", "chmod sets the permission bits, suid, sgid and sticky included",
      source=f"{POSIX} chmod()", area=AREA)
def test_chmod(twin: Twin) -> None:
    twin.same(lambda r: (r / "f").write_bytes(b""), "create")
    for mode in (0o600, 0o7755, 0o1777, 0o000):
        def chmod(root: Path, mode: int = mode) -> None:
            os.chmod(root / "f", mode)

        twin.same(chmod, f"chmod {mode:o}")
        assert twin.same_stat("f", f"after chmod {mode:o}")["mode"] == mode


@rule("POSIX-CHOWN-001", "chown by root changes owner and group and clears suid/sgid of an "
      "executable file", source=f"{POSIX} chown(); Linux: setattr_should_drop_suidgid", area=AREA)
def test_chown_clears_suid(twin: Twin) -> None:
    twin.same(lambda r: ((r / "f").write_bytes(b""), os.chmod(r / "f", 0o6755)), "suid file")
    twin.same(lambda r: os.chown(r / "f", 1234, 5678), "chown")
    view = twin.same_stat("f", "after chown")
    assert (view["uid"], view["gid"]) == (1234, 5678)
    assert view["mode"] == 0o755, f"suid/sgid kept: {view['mode']:o}"


@rule("POSIX-WRITE-001", "A write by a non-root owner clears the file's suid bit (and sgid when "
      "group-executable)", source="Linux: file_remove_privs on write", area=AREA)
def test_write_clears_suid(twin: Twin, features: frozenset[str]) -> None:
    if "other_users" not in features:
        pytest.skip("not applicable: other users cannot use the target")
    def setup(root: Path) -> None:
        (root / "f").write_bytes(b"")
        os.chown(root / "f", 4321, 4321)
        os.chmod(root / "f", 0o6775)
        os.chmod(root, 0o777)

    twin.same(setup, "suid file owned by 4321")

    def write_as_owner(root: Path) -> int:
        return as_user(4321, 4321, (), lambda: (root / "f").write_bytes(b"data"))

    twin.same(write_as_owner, "write as the owner")
    assert twin.same_stat("f", "after write")["mode"] == 0o775


@rule("POSIX-UTIMENS-001", "utimensat sets atime and mtime to the nanosecond, UTIME_OMIT keeps one, "
      "UTIME_NOW takes the clock", source=f"{POSIX} utimensat()", area=AREA)
def test_utimens(twin: Twin) -> None:
    twin.same(lambda r: (r / "f").write_bytes(b""), "create")
    twin.same(lambda r: os.utime(r / "f", ns=(1_000_000_001, 2_000_000_002)), "set both")
    got = twin.same(lambda r: (os.stat(r / "f").st_atime_ns, os.stat(r / "f").st_mtime_ns), "times")
    assert got.value == (1_000_000_001, 2_000_000_002)

    def omit_atime(root: Path) -> tuple[int, int]:
        fd = os.open(root / "f", os.O_RDONLY)
        try:
            _futimens(fd, UTIME_OMIT, 5_000_000_005)
            st = os.fstat(fd)
            return st.st_atime_ns, st.st_mtime_ns
        finally:
            os.close(fd)

    assert twin.same(omit_atime, "UTIME_OMIT atime").value == (1_000_000_001, 5_000_000_005)
    before = os.stat(twin.target / "f").st_mtime_ns
    twin.same(lambda r: os.utime(r / "f"), "UTIME_NOW")
    assert os.stat(twin.target / "f").st_mtime_ns >= before


def _futimens(fd: int, atime_ns: int, mtime_ns: int) -> None:
    """futimens(2) with raw timespec values, so UTIME_OMIT/UTIME_NOW can be passed."""

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    def spec(ns: int) -> Timespec:
        if ns in (UTIME_NOW, UTIME_OMIT):
            return Timespec(0, ns)
        return Timespec(ns // 1_000_000_000, ns % 1_000_000_000)

    times = (Timespec * 2)(spec(atime_ns), spec(mtime_ns))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.futimens(fd, times) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@rule("POSIX-STATFS-001", "statvfs answers a block size and free counts no larger than the totals",
      source=f"{POSIX} statvfs()", area=AREA)
def test_statfs(twin: Twin) -> None:
    st = os.statvfs(twin.target)
    assert st.f_bsize > 0 and st.f_bfree <= st.f_blocks and st.f_bavail <= st.f_blocks
    assert st.f_ffree <= st.f_files or st.f_files == 0
    assert st.f_namemax > 0
