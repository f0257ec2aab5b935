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
    def dropped() -> T:
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        return call()

    with Child(dropped) as child:
        return child.result(CHILD_TIMEOUT)  # type: ignore[no-any-return]


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
