"""Making the files the ACL rules look at, the same way in both trees."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from conformance.acl.access import ALICE, STAFF
from conformance.acl.xattr import Entry, set_acl
from conformance.posix.oracle import Twin
from conformance.posix.users import as_user


def make(root: Path, name: str, access: Sequence[Entry] | None = None, *, owner: int = ALICE,
         group: int = STAFF, mode: int = 0o644, directory: bool = False,
         default: Sequence[Entry] | None = None) -> None:
    """``root/name``, a file (or a directory holding an empty file ``f``) owned by owner:group,
    chmod'ed to ``mode``, then given the ACLs (written as root)."""
    path = root / name
    if directory:
        os.mkdir(path)
        (path / "f").write_bytes(b"")
    else:
        path.write_bytes(b"data")
    os.chown(path, owner, group)
    os.chmod(path, mode)
    if access is not None:
        set_acl(path, access)
    if default is not None:
        set_acl(path, default, default=True)


def create_as(uid: int, umask: int, relpath: str, mode: int, *, directory: bool = False
              ) -> Callable[[Path], None]:
    """For ``Twin.same``: uid creates ``root/relpath`` (open O_CREAT|O_EXCL or mkdir) under ``umask``."""

    def create(root: Path) -> None:
        def call() -> None:
            os.umask(umask)
            if directory:
                os.mkdir(root / relpath, mode)
            else:
                os.close(os.open(root / relpath, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))

        as_user(uid, uid, (), call)

    return create


def same_mode(twin: Twin, relpath: str, what: str) -> int:
    """The permission bits (with suid/sgid/sticky) of ``relpath``; fails unless both trees agree."""
    return twin.same_stat(relpath, what)["mode"]

