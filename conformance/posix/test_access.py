"""Permission to change a directory, the sticky bit for rename and rmdir, and truncate, as other
users (forked children with setresuid/setgroups): errnos and times against tmpfs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.stamps import lstats, moved
from conformance.posix.users import as_user
from conformance.rules import rule

SOURCE = "POSIX.1-2017 2.4 file access permissions"
AREA = "posix"
ALICE, BOB, CAROL = 20001, 20002, 20003


pytestmark = pytest.mark.usefixtures("enforced_permissions")


def as_(uid: int, call: Callable[[], Any]) -> Any:
    return as_user(uid, uid, (), call)


@rule("POSIX-PERM-004", "Without write permission on a directory another user can neither add a name "
      "to it (open O_CREAT, mkdir, mkfifo, symlink, link) nor remove or rename one (unlink, rmdir, "
      "rename): EACCES, and no time changes", source=f"{SOURCE}; POSIX open(), mkdir(), mkfifo(), "
      "symlink(), link(), unlink(), rmdir(), rename(): EACCES", area=AREA)
def test_directory_write_permission(twin: Twin, features: frozenset[str]) -> None:
    def setup(root: Path) -> None:
        os.chmod(root, 0o777)
        os.mkdir(root / "ro", 0o755)
        (root / "ro" / "f").write_bytes(b"")
        os.mkdir(root / "ro" / "sub")
        (root / "bobs").write_bytes(b"")
        os.chown(root / "bobs", BOB, BOB)

    twin.same(setup, "setup")
    steps: list[tuple[str, Callable[[Path], object]]] = [
        ("open O_CREAT", lambda ro: os.close(os.open(ro / "new", os.O_CREAT | os.O_WRONLY, 0o644))),
        ("mkdir", lambda ro: os.mkdir(ro / "new")),
        ("unlink", lambda ro: os.unlink(ro / "f")),
        ("rmdir", lambda ro: os.rmdir(ro / "sub")),
        ("rename within", lambda ro: os.rename(ro / "f", ro / "g")),
        ("rename out", lambda ro: os.rename(ro / "f", ro.parent / "g")),
        ("rename in", lambda ro: os.rename(ro.parent / "bobs", ro / "bobs"))]
    if "mknod" in features:
        steps.append(("mkfifo", lambda ro: os.mkfifo(ro / "new")))
    if "symlink" in features:
        steps.append(("symlink", lambda ro: os.symlink("f", ro / "new")))
    if "hardlink" in features:
        steps.append(("link", lambda ro: os.link(ro.parent / "bobs", ro / "new")))
    look = lstats(".", "ro", "ro/f", "ro/sub", "bobs")
    for what, call in steps:
        def as_bob(root: Path, call: Callable[[Path], object] = call) -> object:
            return as_(BOB, lambda: call(root / "ro"))

        outcome, times = moved(twin, as_bob, f"bob: {what} in a 0755 directory of root's", look)
        assert outcome.error == "EACCES" and times == {name: "" for name in (".", "ro", "ro/f", "ro/sub",
                                                                             "bobs")}
    assert twin.same_listing("ro") == ["f", "sub"]


@rule("POSIX-PERM-005", "In a sticky directory a user who owns neither the directory nor the entry "
      "cannot rename it away, rename over it or rmdir it (EPERM); the directory's owner can",
      source=f"{SOURCE}; POSIX rename(), rmdir(): S_ISVTX", area=AREA)
def test_sticky_rename_rmdir(twin: Twin) -> None:
    def setup(root: Path) -> None:
        os.mkdir(root / "s")
        os.chown(root / "s", CAROL, CAROL)
        os.chmod(root / "s", 0o1777)
        for name, owner in (("alices", ALICE), ("bobs", BOB)):
            (root / "s" / name).write_bytes(name.encode())
            os.chown(root / "s" / name, owner, owner)
        os.mkdir(root / "s" / "alicesdir")
        os.chown(root / "s" / "alicesdir", ALICE, ALICE)

    twin.same(setup, "setup")
    look = lstats("s", "s/alices", "s/bobs", "s/alicesdir")
    unchanged = {"s": "", "s/alices": "", "s/bobs": "", "s/alicesdir": ""}
    for what, call in [("rename alice's file away", lambda s: os.rename(s / "alices", s / "x")),
                       ("rename over alice's file", lambda s: os.rename(s / "bobs", s / "alices")),
                       ("rmdir alice's directory", lambda s: os.rmdir(s / "alicesdir"))]:
        def as_bob(root: Path, call: Callable[[Path], object] = call) -> object:
            return as_(BOB, lambda: call(root / "s"))

        outcome, times = moved(twin, as_bob, f"bob: {what}", look)
        assert outcome.error == "EPERM" and times == unchanged
    twin.same(lambda r: as_(CAROL, lambda: os.rename(r / "s" / "alices", r / "s" / "carols")),
              "carol, the directory's owner, renames alice's file")
    twin.same(lambda r: as_(CAROL, lambda: os.rmdir(r / "s" / "alicesdir")),
              "carol removes alice's directory")
    assert twin.same_listing("s") == ["bobs", "carols"]


@rule("POSIX-TRUNC-002", "truncate by a user without write permission fails with EACCES and changes "
      "nothing; with write permission it succeeds", source="POSIX.1-2017 truncate(): EACCES",
      area=AREA)
def test_truncate_permission(twin: Twin) -> None:
    def setup(root: Path) -> None:
        for name, mode in (("r", 0o644), ("w", 0o646)):
            (root / name).write_bytes(b"0123456789")
            os.chown(root / name, ALICE, ALICE)
            os.chmod(root / name, mode)

    twin.same(setup, "alice's files")
    look = lstats("r", "w")
    outcome, times = moved(twin, lambda r: as_(BOB, lambda: os.truncate(r / "r", 2)), "bob truncates r",
                           look)
    assert outcome.error == "EACCES" and times == {"r": "", "w": ""}
    outcome, times = moved(twin, lambda r: as_(BOB, lambda: os.truncate(r / "w", 2)), "bob truncates w",
                           look)
    assert outcome.ok and times == {"r": "", "w": "mc"}
    assert (twin.same_stat("r", "r")["size"], twin.same_stat("w", "w")["size"]) == (10, 2)
