"""Permission checks made as other users (a forked child with setresuid/setgroups)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.users import as_user
from conformance.rules import rule

SOURCE = "POSIX.1-2017 2.4 file access permissions; Linux man-pages path_resolution(7)"
AREA = "posix"
ALICE, BOB, STAFF = 20001, 20002, 20100


pytestmark = pytest.mark.usefixtures("enforced_permissions")


def _setup(root: Path) -> None:
    os.chmod(root, 0o777)
    (root / "own").write_bytes(b"alice's")
    os.chown(root / "own", ALICE, STAFF)
    os.chmod(root / "own", 0o640)
    os.mkdir(root / "private", 0o700)
    os.chown(root / "private", ALICE, ALICE)
    (root / "private" / "f").write_bytes(b"")
    os.mkdir(root / "sticky")
    os.chmod(root / "sticky", 0o1777)
    (root / "sticky" / "alices").write_bytes(b"")
    os.chown(root / "sticky" / "alices", ALICE, ALICE)


@rule("POSIX-PERM-001", "Owner, group and other bits decide: the group may read but not write, "
      "others may do neither (EACCES)", source=SOURCE, area=AREA)
def test_owner_group_other(twin: Twin) -> None:
    twin.same(_setup, "setup")

    def read_as(uid: int, groups: tuple[int, ...]) -> Callable[[Path], object]:
        return lambda root: as_user(uid, uid, groups, lambda: (root / "own").read_bytes())

    assert twin.same(read_as(BOB, (STAFF,)), "group member reads").value == b"alice's"
    assert twin.same(read_as(BOB, ()), "other reads").error == "EACCES"

    def write_as_group_member(root: Path) -> object:
        return as_user(BOB, BOB, (STAFF,), lambda: os.open(root / "own", os.O_WRONLY))

    assert twin.same(write_as_group_member, "group member writes").error == "EACCES"


@rule("POSIX-PERM-002", "Without search permission on a directory nothing inside resolves (EACCES)",
      source=SOURCE, area=AREA)
def test_search_permission(twin: Twin) -> None:
    twin.same(_setup, "setup")

    def stat_as_bob(root: Path) -> object:
        return as_user(BOB, BOB, (), lambda: os.stat(root / "private" / "f").st_size)

    assert twin.same(stat_as_bob, "stat through a 0700 directory").error == "EACCES"


@rule("POSIX-PERM-003", "In a sticky directory only the owner of a file (or of the directory) "
      "may remove it (EPERM)", source=f"{SOURCE}; POSIX unlink(): S_ISVTX", area=AREA)
def test_sticky_directory(twin: Twin) -> None:
    twin.same(_setup, "setup")

    def unlink_as(uid: int) -> Callable[[Path], object]:
        return lambda root: as_user(uid, uid, (), lambda: os.unlink(root / "sticky" / "alices"))

    assert twin.same(unlink_as(BOB), "bob unlinks alice's file").error == "EPERM"
    twin.same(unlink_as(ALICE), "alice unlinks her file")
