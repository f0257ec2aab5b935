"""Owners and groups, as other users: of new files, in set-group-ID directories, and who may
chmod, chown and set times (forked children with setresuid/setgroups), against tmpfs.

Left out: a write by a user outside a file's group clears S_ISGID of a file that is not
group-executable on tmpfs (setattr_should_drop_sgid), but through FUSE the kernel's fuse_setattr
kills S_ISGID only when the file is group-executable unless the daemon asked for
FUSE_HANDLE_KILLPRIV(_V2), so no daemon without those flags could show it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.stamps import lstats, moved
from conformance.posix.users import as_user
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"
ALICE, BOB = 20001, 20002
ALICE_GID, BOB_GID, STAFF, OTHERS = 20101, 20102, 20100, 20103


def need(features: frozenset[str], *needed: str) -> None:
    for feature in needed:
        if feature not in features:
            what = ("other users cannot use the target" if feature == "other_users" else
                    "the target does not enforce permissions for other users" if feature == "permissions"
                    else f"the target does not offer {feature}")
            pytest.skip(f"not applicable: {what} ({feature} missing)")


def alice(call: Callable[[], Any], groups: tuple[int, ...] = ()) -> Any:
    return as_user(ALICE, ALICE_GID, groups, call)


def bob(call: Callable[[], Any], groups: tuple[int, ...] = ()) -> Any:
    return as_user(BOB, BOB_GID, groups, call)


def _make_all(directory: Path, features: frozenset[str], file_mode: int = 0o644) -> None:
    """A file, a directory, a FIFO and a symlink in ``directory`` (those the target offers)."""
    os.umask(0o022)
    os.close(os.open(directory / "f", os.O_CREAT | os.O_WRONLY, file_mode))
    os.mkdir(directory / "d", 0o755)
    if "mknod" in features:
        os.mkfifo(directory / "p", 0o644)
    if "symlink" in features:
        os.symlink("f", directory / "l")


def _owners(twin: Twin, directory: str, features: frozenset[str]) -> dict[str, tuple[int, int, int]]:
    """(uid, gid, mode) of each new name, the same on both sides."""
    names = ["f", "d"] + (["p"] if "mknod" in features else []) + (["l"] if "symlink" in features else [])
    found = {}
    for name in names:
        view = twin.same_stat(f"{directory}/{name}", "new name", follow=False)
        found[name] = (view["uid"], view["gid"], view["mode"] if view["type"] != stat.S_IFLNK else 0)
    return found


@rule("POSIX-OWNER-001", "A file, directory, FIFO or symlink another user creates is owned by that "
      "user's uid and gid", source=f"{POSIX} open(), mkdir(), mkfifo(), symlink(): 'the user ID of "
      "the file shall be set to the effective user ID of the process'", area=AREA)
def test_owner_of_new_files(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users")
    twin.same(lambda r: (os.mkdir(r / "pub"), os.chmod(r / "pub", 0o777)), "setup")
    twin.same(lambda r: alice(lambda: _make_all(r / "pub", features), (STAFF,)), "alice creates")
    owners = _owners(twin, "pub", features)
    assert owners["f"] == (ALICE, ALICE_GID, 0o644) and owners["d"] == (ALICE, ALICE_GID, 0o755)
    assert all(owner[:2] == (ALICE, ALICE_GID) for owner in owners.values())


@rule("POSIX-OWNER-002", "In a set-group-ID directory what another user creates takes the directory's "
      "group, a new directory inherits S_ISGID, and a non-member's new file loses the S_ISGID it asks for",
      source=f"{POSIX} open(), mkdir(): group ID of a new file; Linux: inode_init_owner, "
      "mode_strip_sgid", area=AREA)
def test_setgid_directory(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users")

    def setup(root: Path) -> None:
        os.mkdir(root / "sg")
        os.chown(root / "sg", 0, STAFF)
        os.chmod(root / "sg", 0o2777)

    twin.same(setup, "setup")
    twin.same(lambda r: alice(lambda: _make_all(r / "sg", features, 0o2755)), "alice creates in sg")
    owners = _owners(twin, "sg", features)
    assert owners["f"] == (ALICE, STAFF, 0o755) and owners["d"] == (ALICE, STAFF, 0o2755)
    assert all(gid == STAFF for _uid, gid, _mode in owners.values())


@rule("POSIX-OWNER-003", "A file a non-root user creates keeps the S_ISUID and S_ISGID bits it asks "
      "for when the new file's group is the user's", source=f"{POSIX} open(): O_CREAT 'the access "
      "permission bits ... set to the value of the argument'; Linux strips S_ISGID only in "
      "set-group-ID directories (mode_strip_sgid)", area=AREA)
def test_new_file_keeps_setid(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users")
    twin.same(lambda r: (os.mkdir(r / "pub"), os.chmod(r / "pub", 0o777)), "setup")

    def create(root: Path) -> None:
        os.umask(0o022)
        os.close(os.open(root / "pub" / "f", os.O_CREAT | os.O_WRONLY, 0o6755))

    twin.same(lambda r: alice(lambda: create(r)), "alice creates with mode 6755")
    view = twin.same_stat("pub/f", "new set-ID file")
    assert (view["uid"], view["gid"], view["mode"]) == (ALICE, ALICE_GID, 0o6755)


@rule("POSIX-CHMOD-002", "chmod by a user who does not own the file fails with EPERM and changes "
      "neither the mode nor ctime; the owner's chmod succeeds", source=f"{POSIX} chmod(): EPERM",
      area=AREA)
def test_chmod_not_owner(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users", "permissions")
    twin.same(lambda r: ((r / "f").write_bytes(b""), os.chown(r / "f", ALICE, ALICE_GID),
                         os.chmod(r / "f", 0o666)), "alice's file")
    look = lstats("f")
    outcome, times = moved(twin, lambda r: bob(lambda: os.chmod(r / "f", 0o777)), "bob chmods", look)
    assert outcome.error == "EPERM" and times == {"f": ""}
    assert twin.same_stat("f", "after bob's chmod")["mode"] == 0o666
    outcome, times = moved(twin, lambda r: alice(lambda: os.chmod(r / "f", 0o600)), "alice chmods", look)
    assert outcome.ok and times == {"f": "c"}
    assert twin.same_stat("f", "after alice's chmod")["mode"] == 0o600


@rule("POSIX-CHMOD-003", "A non-root owner outside the file's group may chmod, but S_ISGID is dropped; "
      "an owner in the group keeps it", source=f"{POSIX} chmod(): 'S_ISGID ... shall be cleared'",
      area=AREA)
def test_chmod_drops_sgid(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users", "permissions")
    twin.same(lambda r: ((r / "f").write_bytes(b""), os.chown(r / "f", ALICE, STAFF)), "alice's file")
    twin.same(lambda r: alice(lambda: os.chmod(r / "f", 0o2755)), "chmod g+s outside the group")
    assert twin.same_stat("f", "outside the group")["mode"] == 0o755
    twin.same(lambda r: alice(lambda: os.chmod(r / "f", 0o2755), (STAFF,)), "chmod g+s in the group")
    assert twin.same_stat("f", "in the group")["mode"] == 0o2755


@rule("POSIX-CHOWN-002", "A non-root owner may change the group to one of its groups (ctime goes "
      "up), not to another group nor the owner to another user (EPERM, no time changes); "
      "chown(-1, -1) succeeds for anyone", source=f"{POSIX} chown(): EPERM, _POSIX_CHOWN_RESTRICTED",
      area=AREA)
def test_chown_by_owner(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users", "permissions")
    twin.same(lambda r: ((r / "f").write_bytes(b""), os.chown(r / "f", ALICE, ALICE_GID)), "alice's file")
    look = lstats("f")
    steps: list[tuple[str, Callable[[Path], None], str | None, str]] = [
        ("alice: group to STAFF, hers", lambda f: os.chown(f, -1, STAFF), None, "c"),
        ("alice: group to OTHERS, not hers", lambda f: os.chown(f, -1, OTHERS), "EPERM", ""),
        ("alice: owner to bob", lambda f: os.chown(f, BOB, -1), "EPERM", "")]
    for what, call, error, changed in steps:
        def as_alice(root: Path, call: Callable[[Path], None] = call) -> None:
            alice(lambda: call(root / "f"), (STAFF,))

        outcome, times = moved(twin, as_alice, what, look)
        assert outcome.error == error and times == {"f": changed}
    assert twin.same(lambda r: bob(lambda: os.chown(r / "f", -1, -1)), "bob: chown(-1, -1)").ok
    view = twin.same_stat("f", "after the chowns")
    assert (view["uid"], view["gid"]) == (ALICE, STAFF)


@rule("POSIX-CHOWN-003", "lchown changes a symlink's own owner and group, chown through a symlink "
      "its target's", source=f"{POSIX} lchown(), chown()", area=AREA)
def test_lchown(twin: Twin, features: frozenset[str]) -> None:
    need(features, "symlink")
    twin.same(lambda r: ((r / "f").write_bytes(b""), os.symlink("f", r / "l")), "setup")
    twin.same(lambda r: os.chown(r / "l", 1234, 5678, follow_symlinks=False), "lchown")
    link, target = twin.same_stat("l", "link", follow=False), twin.same_stat("f", "target")
    assert (link["uid"], link["gid"], target["uid"]) == (1234, 5678, 0)
    twin.same(lambda r: os.chown(r / "l", 4321, 8765), "chown through the link")
    link, target = twin.same_stat("l", "link", follow=False), twin.same_stat("f", "target")
    assert (link["uid"], target["uid"], target["gid"]) == (1234, 4321, 8765)


@rule("POSIX-UTIMENS-002", "Only the owner or root may set explicit times (EPERM, even with write "
      "permission); setting both to now needs the owner or write permission (else EACCES)",
      source=f"{POSIX} futimens(), utimensat(): EACCES, EPERM", area=AREA)
def test_utimens_permissions(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users", "permissions")

    def setup(root: Path) -> None:
        for name, mode in (("w", 0o666), ("r", 0o644)):
            (root / name).write_bytes(b"")
            os.chown(root / name, ALICE, ALICE_GID)
            os.chmod(root / name, mode)

    twin.same(setup, "alice's files")
    look = lstats("w", "r")
    past = (10**9, 10**9)
    steps = [("bob: w to now", lambda r: bob(lambda: os.utime(r / "w")), None, {"w": "mc", "r": ""}),
             ("bob: w to the past", lambda r: bob(lambda: os.utime(r / "w", ns=past)), "EPERM",
              {"w": "", "r": ""}),
             ("bob: r to now", lambda r: bob(lambda: os.utime(r / "r")), "EACCES", {"w": "", "r": ""}),
             ("alice: r to the past", lambda r: alice(lambda: os.utime(r / "r", ns=past)), None,
              {"w": "", "r": "c"})]
    for what, call, error, changed in steps:
        outcome, times = moved(twin, call, what, look)
        assert outcome.error == error and times == changed
    assert twin.same(lambda r: os.stat(r / "r").st_mtime_ns, "r's mtime").value == 10**9


@rule("POSIX-WRITE-002", "A write by a user who does not own the file clears S_ISUID, and S_ISGID "
      "when the file is group-executable", source="Linux: file_remove_privs, setattr_should_drop_sgid",
      area=AREA)
def test_write_by_other_clears_suid(twin: Twin, features: frozenset[str]) -> None:
    need(features, "other_users")

    def setup(root: Path) -> None:
        os.chmod(root, 0o777)
        for name, mode in (("x", 0o6777), ("nx", 0o6766)):
            (root / name).write_bytes(b"")
            os.chown(root / name, ALICE, STAFF)
            os.chmod(root / name, mode)

    twin.same(setup, "alice's set-ID files")
    for name in ("x", "nx"):
        def write(root: Path, name: str = name) -> int:
            return bob(lambda: (root / name).write_bytes(b"data"), (STAFF,))

        twin.same(write, f"bob (in the file's group) writes {name}")
    assert twin.same_stat("x", "group-executable")["mode"] == 0o777
    assert twin.same_stat("nx", "not group-executable")["mode"] == 0o2766
