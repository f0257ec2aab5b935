"""Locks between processes: POSIX record locks (fcntl) and flock, conflicts, waiting, signals."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from conformance.posix.oracle import Twin
from conformance.posix.users import Child
from conformance.rules import rule

AREA = "posix"
T = TypeVar("T")
#: How long a waiter must stay blocked before the holder lets go (or a signal comes)
WAIT = 0.3
ANSWER = 10.0


class _Alarm(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Alarm


def _holder(fd: int) -> int:
    """The pid F_GETLK reports for a write lock over the first 5 bytes (0: none)."""
    query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 5, 0)
    kind, _whence, _start, _len, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return pid if kind != fcntl.F_UNLCK else 0


def _file(root: Path) -> int:
    (root / "f").write_bytes(b"0123456789")
    return os.open(root / "f", os.O_RDWR)


def _answer(call: Callable[[], T]) -> T:
    """What ``call`` gives in another process."""
    with Child(call) as child:
        return child.result(ANSWER)  # type: ignore[no-any-return]


def _waits_for(release: Callable[[], None], waiter: Callable[[], T]) -> tuple[bool, T]:
    """Whether ``waiter``, in another process, was still waiting after WAIT seconds; then
    ``release()`` and what the waiter gives."""
    with Child(waiter) as child:
        waited = not child.ready(WAIT)
        release()
        return waited, child.result(ANSWER)


@rule("POSIX-LOCK-001", "A write lock held by one process makes another's conflicting F_SETLK "
      "fail with EAGAIN and F_GETLK report the holder", source="POSIX.1-2017 fcntl(): F_SETLK",
      area=AREA)
def test_posix_locks(twin: Twin) -> None:
    def run(root: Path) -> tuple[str, bool]:
        fd = _file(root)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)

            def other() -> tuple[str, bool]:
                child = os.open(root / "f", os.O_RDWR)
                try:
                    fcntl.lockf(child, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)
                    code = "locked"
                except OSError as exc:
                    code = "EAGAIN" if exc.errno in (11, 13) else f"errno {exc.errno}"
                return code, _holder(child) == os.getppid()

            return _answer(other)
        finally:
            os.close(fd)

    assert twin.same(run, "lock conflict").value == ("EAGAIN", True)


@rule("POSIX-LOCK-002", "F_SETLKW waits while another process holds a conflicting lock, and takes "
      "it when the holder unlocks", source="POSIX.1-2017 fcntl(): F_SETLKW", area=AREA)
def test_setlkw_waits(twin: Twin) -> None:
    def run(root: Path) -> tuple[bool, str]:
        fd = _file(root)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)

            def waiter() -> str:
                fcntl.lockf(os.open(root / "f", os.O_RDWR), fcntl.LOCK_EX)
                return "acquired"

            return _waits_for(lambda: fcntl.lockf(fd, fcntl.LOCK_UN), waiter)
        finally:
            os.close(fd)

    assert twin.same(run, "F_SETLKW against a held lock").value == (True, "acquired")


@rule("POSIX-LOCK-003", "A signal interrupts a waiting F_SETLKW with EINTR; the lock stays with its "
      "holder", source="POSIX.1-2017 fcntl(): [EINTR]; kernel fuse_setlk (FUSE_INTERRUPT)", area=AREA)
def test_setlkw_interrupted(twin: Twin) -> None:
    def run(root: Path) -> tuple[str, bool]:
        fd = _file(root)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)

            def waiter() -> tuple[str, bool]:
                child = os.open(root / "f", os.O_RDWR)
                signal.signal(signal.SIGALRM, _alarm)
                signal.setitimer(signal.ITIMER_REAL, WAIT)
                try:
                    fcntl.lockf(child, fcntl.LOCK_EX)
                    outcome = "acquired"
                except _Alarm:
                    outcome = "interrupted"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                return outcome, _holder(child) == os.getppid()

            return _answer(waiter)
        finally:
            os.close(fd)

    assert twin.same(run, "F_SETLKW interrupted by a signal").value == ("interrupted", True)


@rule("POSIX-LOCK-004", "flock: LOCK_EX|LOCK_NB on a file another open file holds fails with "
      "EWOULDBLOCK, and a blocking LOCK_EX waits for LOCK_UN", source="flock(2)", area=AREA)
def test_flock(twin: Twin) -> None:
    def run(root: Path) -> tuple[bool, tuple[str, str]]:
        fd = _file(root)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)

            def waiter() -> tuple[str, str]:
                other = os.open(root / "f", os.O_RDWR)
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    first = "locked"
                except BlockingIOError:
                    first = "EWOULDBLOCK"
                fcntl.flock(other, fcntl.LOCK_EX)
                return first, "acquired"

            return _waits_for(lambda: fcntl.flock(fd, fcntl.LOCK_UN), waiter)
        finally:
            os.close(fd)

    assert twin.same(run, "flock").value == (True, ("EWOULDBLOCK", "acquired"))


@rule("POSIX-LOCK-005", "Closing any descriptor of a file releases the process's record locks on "
      "it", source="POSIX.1-2017 fcntl(): locks are removed on close()", area=AREA)
def test_close_releases(twin: Twin) -> None:
    def run(root: Path) -> tuple[int, int]:
        fd = _file(root)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 5, 0)

            def probe() -> int:
                return _holder(os.open(root / "f", os.O_RDONLY)) == os.getppid()

            before = _answer(probe)
            os.close(os.open(root / "f", os.O_RDONLY))  # another descriptor, closed
            return before, _answer(probe)
        finally:
            os.close(fd)

    assert twin.same(run, "close of another descriptor").value == (True, False)
