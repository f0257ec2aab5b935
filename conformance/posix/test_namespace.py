"""mkdir/rmdir, rename (and its flags), link, symlink/readlink, mknod: against tmpfs."""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.rules import rule

POSIX = "POSIX.1-2017"
LINUX = "Linux man-pages"
AREA = "posix"
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> None:
    """renameat2(2), which os does not offer."""
    if _libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def need(features: frozenset[str], feature: str) -> None:
    if feature not in features:
        pytest.skip(f"not applicable: the target does not offer {feature}")


@rule("POSIX-MKDIR-001", "mkdir makes an empty directory (nlink 2, the parent's nlink + 1); "
      "an existing name fails with EEXIST", source=f"{POSIX} mkdir()", area=AREA)
def test_mkdir(twin: Twin) -> None:
    twin.same(lambda r: os.mkdir(r / "d", 0o755), "mkdir")
    assert twin.same_stat("d", "new directory")["nlink"] == 2
    assert twin.same_stat(".", "parent")["nlink"] == 3
    assert twin.same(lambda r: os.mkdir(r / "d"), "mkdir again").error == "EEXIST"
    assert twin.same_listing("d") == []


@rule("POSIX-MKDIR-002", "mkdir keeps the sticky bit it is given (less the umask's bits)",
      source=f"{POSIX} mkdir(); Linux keeps S_ISVTX in mkdir's mode", area=AREA)
def test_mkdir_sticky(twin: Twin) -> None:
    old = os.umask(0o022)
    try:
        twin.same(lambda r: os.mkdir(r / "s", 0o1777), "mkdir 1777")
    finally:
        os.umask(old)
    assert twin.same_stat("s", "sticky directory")["mode"] == 0o1755


@rule("POSIX-RMDIR-001", "rmdir of a non-empty directory fails with ENOTEMPTY, of a file with "
      "ENOTDIR; of an empty one it succeeds", source=f"{POSIX} rmdir()", area=AREA)
def test_rmdir(twin: Twin) -> None:
    twin.same(lambda r: (os.mkdir(r / "d"), (r / "d" / "f").write_bytes(b"")), "populate")
    assert twin.same(lambda r: os.rmdir(r / "d"), "rmdir non-empty").error == "ENOTEMPTY"
    assert twin.same(lambda r: os.rmdir(r / "d" / "f"), "rmdir a file").error == "ENOTDIR"
    twin.same(lambda r: (os.unlink(r / "d" / "f"), os.rmdir(r / "d")), "empty, then rmdir")
    assert twin.same_listing() == []


@rule("POSIX-RENAME-001", "rename replaces a file atomically, moves a directory over an empty "
      "one, and refuses file-over-dir (EISDIR), dir-over-file (ENOTDIR), dir-into-itself (EINVAL)",
      source=f"{POSIX} rename()", area=AREA)
def test_rename(twin: Twin) -> None:
    def setup(root: Path) -> None:
        (root / "a").write_bytes(b"A")
        (root / "b").write_bytes(b"B")
        os.mkdir(root / "d")
        os.mkdir(root / "e")
        os.mkdir(root / "d" / "sub")

    twin.same(setup, "setup")
    twin.same(lambda r: os.rename(r / "a", r / "b"), "file over file")
    assert twin.same(lambda r: (r / "b").read_bytes(), "content").value == b"A"
    assert twin.same(lambda r: os.rename(r / "b", r / "d"), "file over dir").error == "EISDIR"
    assert twin.same(lambda r: os.rename(r / "e", r / "b"), "dir over file").error == "ENOTDIR"
    assert twin.same(lambda r: os.rename(r / "d", r / "d" / "sub" / "x"), "dir into itself"
                     ).error == "EINVAL"
    twin.same(lambda r: os.rename(r / "e", r / "d" / "sub"), "dir over empty dir")
    assert twin.same_listing() == ["b", "d"]


@rule("POSIX-RENAME-002", "renameat2 RENAME_NOREPLACE fails with EEXIST on an existing target; "
      "RENAME_EXCHANGE swaps two names", source=f"{LINUX} renameat2(2)", area=AREA)
def test_rename_flags(twin: Twin, features: frozenset[str]) -> None:
    need(features, "rename_exchange")
    twin.same(lambda r: ((r / "a").write_bytes(b"A"), (r / "b").write_bytes(b"B")), "setup")
    got = twin.same(lambda r: renameat2(r / "a", r / "b", RENAME_NOREPLACE), "NOREPLACE")
    assert got.error == "EEXIST"
    twin.same(lambda r: renameat2(r / "a", r / "b", RENAME_EXCHANGE), "EXCHANGE")
    assert twin.same_listing() == ["a", "b"]  # READDIR asks the filesystem, not the dcache
    assert twin.same(lambda r: (r / "a").read_bytes() + (r / "b").read_bytes(), "swapped"
                     ).value == b"BA"


@rule("POSIX-LINK-001", "link adds a name to the same file: nlink counts names, data is shared",
      source=f"{POSIX} link()", area=AREA)
def test_link(twin: Twin, features: frozenset[str]) -> None:
    need(features, "hardlink")
    twin.same(lambda r: ((r / "f").write_bytes(b"one"), os.link(r / "f", r / "g")), "link")
    assert twin.same_stat("f", "linked")["nlink"] == 2
    twin.same(lambda r: (r / "g").write_bytes(b"two"), "write through the second name")
    assert twin.same(lambda r: (r / "f").read_bytes(), "first name").value == b"two"
    twin.same(lambda r: os.unlink(r / "f"), "unlink one name")
    assert twin.same_stat("g", "after unlink")["nlink"] == 1


@rule("POSIX-SYMLINK-001", "symlink stores its target verbatim, readlink returns it, lstat sees "
      "a link and stat what it points to", source=f"{POSIX} symlink(), readlink()", area=AREA)
def test_symlink(twin: Twin, features: frozenset[str]) -> None:
    need(features, "symlink")
    twin.same(lambda r: ((r / "f").write_bytes(b"x"), os.symlink("f", r / "l"),
                         os.symlink("no/such/../target", r / "dangling")), "symlinks")
    assert twin.same(lambda r: os.readlink(r / "l"), "readlink").value == "f"
    assert twin.same(lambda r: os.readlink(r / "dangling"), "readlink").value == "no/such/../target"
    assert twin.same_stat("l", "lstat", follow=False)["type"] == stat.S_IFLNK
    assert twin.same_stat("l", "stat")["type"] == stat.S_IFREG
    assert twin.same(lambda r: os.stat(r / "dangling"), "stat dangling").error == "ENOENT"


@rule("POSIX-MKNOD-001", "mkfifo and mknod make a FIFO and a device node of the asked type",
      source=f"{POSIX} mkfifo(), mknod()", area=AREA)
def test_mknod(twin: Twin, features: frozenset[str]) -> None:
    need(features, "mknod")
    twin.same(lambda r: os.mkfifo(r / "p", 0o644), "mkfifo")
    assert twin.same_stat("p", "fifo")["type"] == stat.S_IFIFO
    twin.same(lambda r: os.mknod(r / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3)), "mknod chr")
    assert twin.same_stat("c", "chardev")["type"] == stat.S_IFCHR
    assert twin.same(lambda r: os.stat(r / "c").st_rdev, "rdev").value == os.makedev(1, 3)

