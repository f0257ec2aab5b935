"""Run a callable as another user: a forked child with setgroups/setresgid/setresuid."""

from __future__ import annotations

import errno
import os
import pickle
import select
import signal
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
CHILD_TIMEOUT = 30.0


def as_user(uid: int, gid: int, groups: tuple[int, ...], call: Callable[[], T]) -> T:
    """``call()`` in a child running as uid/gid/groups; its result, or its OSError re-raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, call, report, exit without cleanup
        os.close(read_end)
        try:
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            result: Any = ("ok", call())
        except OSError as exc:
            result = ("err", exc.errno, exc.strerror)
        except BaseException as exc:
            result = ("bug", repr(exc))
        try:
            os.write(write_end, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], CHILD_TIMEOUT)
        if not ready:  # a hung filesystem: do not hang the test with it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"as_user({uid}): no answer within {CHILD_TIMEOUT:g} s")
        data = pipe.read()
    os.waitpid(pid, 0)
    outcome: tuple[Any, ...] = pickle.loads(data) if data else ("bug", "the child died")
    if outcome[0] == "ok":
        return outcome[1]  # type: ignore[no-any-return]
    if outcome[0] == "err":
        code = int(outcome[1] or errno.EIO)
        raise OSError(code, outcome[2] or os.strerror(code))
    raise RuntimeError(f"as_user({uid}): {outcome[1]}")


class Child:
    """A forked child running ``call()`` while the test goes on (a waiting lock, say): ``ready``
    says whether it has answered, ``result`` returns its answer (an OSError re-raised)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(read_end)
            try:
                result: Any = ("ok", call())
            except OSError as exc:
                result = ("err", exc.errno, exc.strerror)
            except BaseException as exc:
                result = ("bug", repr(exc))
            try:
                os.write(write_end, pickle.dumps(result))
            finally:
                os._exit(0)
        os.close(write_end)
        self.pipe = os.fdopen(read_end, "rb")

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the child has answered (or died) within ``timeout`` seconds."""
        return bool(select.select([self.pipe], [], [], timeout)[0])

    def result(self, timeout: float = CHILD_TIMEOUT) -> Any:
        if not self.ready(timeout):
            self.kill()
            raise TimeoutError(f"child {self.pid}: no answer within {timeout:g} s")
        data = self.pipe.read()
        self.reap()
        outcome: tuple[Any, ...] = pickle.loads(data) if data else ("bug", "the child died")
        if outcome[0] == "ok":
            return outcome[1]
        if outcome[0] == "err":
            code = int(outcome[1] or errno.EIO)
            raise OSError(code, outcome[2] or os.strerror(code))
        raise RuntimeError(f"child {self.pid}: {outcome[1]}")

    def kill(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            self.reap()

    def reap(self) -> None:
        if self.pid:
            os.waitpid(self.pid, 0)
            self.pid = 0
            self.pipe.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            self.kill()
