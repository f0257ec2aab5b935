"""What a user may do with a path, asked the way a program asks: as that user, by trying it.

``rights`` gives a string like ``ls -l`` does: ``r`` opened for reading, ``w`` opened for
writing, ``x`` ``access(X_OK)`` granted, ``-`` refused with EACCES; any other error is
raised.  For a directory: ``r`` lists it, ``w`` creates (and removes) a file in it, ``x``
stats the entry named ``f`` inside.  Each call runs in a forked child (``as_user``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance.posix.oracle import Twin
from conformance.posix.users import as_user

ALICE, BOB, CAROL, DAVE = 20001, 20002, 20003, 20004
STAFF, TEAM, AUDIT, NOGROUP = 20100, 20101, 20102, 20103


def _allowed(call: Callable[[], Any]) -> bool:
    try:
        call()
    except OSError as exc:
        if exc.errno == errno.EACCES:
            return False
        raise
    return True


def _file_rights(path: Path) -> str:
    read = _allowed(lambda: os.close(os.open(path, os.O_RDONLY)))
    write = _allowed(lambda: os.close(os.open(path, os.O_WRONLY)))
    run = os.access(path, os.X_OK)
    return "".join(c if ok else "-" for c, ok in (("r", read), ("w", write), ("x", run)))


def _dir_rights(path: Path) -> str:
    probe = path / f"made-by-{os.getuid()}"

    def create() -> None:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)

    read = _allowed(lambda: os.listdir(path))
    write = _allowed(create)
    search = _allowed(lambda: os.stat(path / "f"))
    return "".join(c if ok else "-" for c, ok in (("r", read), ("w", write), ("x", search)))


def rights(path: Path) -> str:
    """This process's rights on ``path`` (see the module doc)."""
    return _dir_rights(path) if stat.S_ISDIR(os.stat(path).st_mode) else _file_rights(path)


def rights_as(uid: int, gid: int, groups: tuple[int, ...], relpath: str) -> Callable[[Path], str]:
    """For ``Twin.same``: the rights of uid/gid/groups on ``root / relpath``."""
    return lambda root: as_user(uid, gid, groups, lambda: rights(root / relpath))


def same_rights(twin: Twin, who: str, uid: int, relpath: str, *, gid: int | None = None,
                groups: tuple[int, ...] = ()) -> str:
    """The rights of a user on both trees; fails unless they agree. Returns tmpfs's answer."""
    outcome = twin.same(rights_as(uid, uid if gid is None else gid, groups, relpath),
                        f"{who}'s rights on {relpath}")
    return str(outcome.value) if outcome.ok else str(outcome.error)
