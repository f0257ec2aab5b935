"""Byte-range (POSIX, per owner) and whole-file (flock, per open file) locks of one inode."""

from __future__ import annotations

import errno
import fcntl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from targets.reference.fs_types import MAX_FILE_SIZE, AccessMode, FsError, LockWouldBlock

F_RDLCK, F_WRLCK, F_UNLCK = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK
OFFSET_MAX = MAX_FILE_SIZE


@dataclass(frozen=True)
class Range:
    """A POSIX lock: ``start``..``end`` inclusive."""

    owner: int
    start: int
    end: int
    type: int
    pid: int


def _conflict(a: int, b: int) -> bool:
    return a == F_WRLCK or b == F_WRLCK


@dataclass
class Locks:
    """The list is kept like the kernel's: grouped by owner in the order owners came, each
    owner's ranges by start; F_GETLK reports the first conflicting range in that order."""

    posix: list[Range] = field(default_factory=list)
    flocks: dict[int, tuple[int, int]] = field(default_factory=dict)  # owner -> (type, fh)

    @staticmethod
    def _check(start: int, end: int, kind: int) -> None:
        if kind not in (F_RDLCK, F_WRLCK, F_UNLCK) or start < 0 or end < start or end > OFFSET_MAX:
            raise FsError(errno.EINVAL)

    def test(self, owner: int, start: int, end: int, kind: int) -> Range | None:
        """The first lock of another owner that would block this one (F_GETLK)."""
        self._check(start, end, kind)
        if kind == F_UNLCK:
            raise FsError(errno.EINVAL)
        return next((r for r in self.posix if r.owner != owner and r.start <= end and start <= r.end
                     and _conflict(r.type, kind)), None)

    def set(self, owner: int, start: int, end: int, kind: int, pid: int, wait: bool = False) -> None:
        """F_SETLK(W): take, change or drop a range; own ranges split and merge as on Linux."""
        self._check(start, end, kind)
        if kind != F_UNLCK and self.test(owner, start, end, kind) is not None:
            raise LockWouldBlock(wait)
        mine: list[Range] = []
        for r in (r for r in self.posix if r.owner == owner):
            if r.end < start or r.start > end:
                mine.append(r)
                continue
            if r.start < start:
                mine.append(Range(owner, r.start, start - 1, r.type, r.pid))
            if r.end > end:
                mine.append(Range(owner, end + 1, r.end, r.type, r.pid))
        if kind != F_UNLCK:
            for r in [r for r in mine if r.type == kind and r.start <= end + 1 and start <= r.end + 1]:
                mine.remove(r)
                start, end = min(start, r.start), max(end, r.end)
            mine.append(Range(owner, start, end, kind, pid))
        order = list(dict.fromkeys(r.owner for r in self.posix if r.owner != owner or mine))
        if mine and owner not in order:
            order.append(owner)
        self.posix = sorted([r for r in self.posix if r.owner != owner] + mine,
                            key=lambda r: (order.index(r.owner), r.start))

    def drop_owner(self, owner: int) -> None:
        """close(): a process loses all its POSIX locks on the file."""
        self.posix = [r for r in self.posix if r.owner != owner]

    def flock(self, owner: int, fh: int, kind: int, wait: bool = False) -> None:
        """flock(2) with F_RDLCK (LOCK_SH), F_WRLCK (LOCK_EX) or F_UNLCK; a failed conversion
        loses the lock held before, as on Linux."""
        if kind not in (F_RDLCK, F_WRLCK, F_UNLCK):
            raise FsError(errno.EINVAL)
        held = self.flocks.get(owner)
        if held is not None and held[0] == kind:
            return
        self.flocks.pop(owner, None)
        if kind == F_UNLCK:
            return
        if any(_conflict(other, kind) for o, (other, _) in self.flocks.items() if o != owner):
            raise LockWouldBlock(wait)
        self.flocks[owner] = (kind, fh)

    def drop_fh(self, fh: int) -> None:
        """The last close of an open file releases its flock."""
        self.flocks = {o: held for o, held in self.flocks.items() if held[1] != fh}

    def __bool__(self) -> bool:
        return bool(self.posix or self.flocks)


class LockOps:
    """F_GETLK, F_SETLK(W) and flock over a filesystem's open handles, with the locks kept in
    memory by ``_lock_key(handle)`` (the model's inode, the host backend's nodeid)."""

    locks: dict[int, Locks]

    if TYPE_CHECKING:
        def _handle(self, fh: int, *, directory: bool = False) -> AccessMode: ...

    def _lock_key(self, handle: AccessMode) -> int:
        raise NotImplementedError

    def _locks(self, fh: int) -> tuple[AccessMode, Locks]:
        handle = self._handle(fh)
        return handle, self.locks.setdefault(self._lock_key(handle), Locks())

    def getlk(self, fh: int, owner: int, start: int, end: int, type: int,
              pid: int = 0) -> tuple[int, int, int, int]:
        """F_GETLK: (start, end, type, pid) of a blocking lock, or the request with F_UNLCK."""
        _, locks = self._locks(fh)
        found = locks.test(owner, start, end, type)
        if found is None:
            return start, end, F_UNLCK, 0
        return found.start, found.end, found.type, found.pid

    def setlk(self, fh: int, owner: int, start: int, end: int, type: int, pid: int = 0,
              wait: bool = False) -> None:
        """F_SETLK / F_SETLKW: a conflict raises LockWouldBlock (EAGAIN; ``.wait`` tells the server
        to retry it later); read locks need a readable handle, write locks a writable one."""
        handle, locks = self._locks(fh)
        if type != F_UNLCK and not (handle.readable if type == F_RDLCK else handle.writable):
            raise FsError(errno.EBADF)
        locks.set(owner, start, end, type, pid, wait)

    def flock(self, fh: int, owner: int, type: int, wait: bool = False) -> None:
        """flock(2) as FUSE passes it: F_RDLCK (shared), F_WRLCK (exclusive) or F_UNLCK."""
        _, locks = self._locks(fh)
        locks.flock(owner, fh, type, wait)
