"""Spawn a daemon, keep the tail of its output, stop it and always reap it."""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Self

from targets.channel import Liveness
from targets.errors import (
    TargetDied,
    TargetError,
    TargetNotInstalled,
    TargetTimeout,
    exit_phrase,
)

TAIL_BYTES = 64 * 1024


class _Tail:
    """A reader thread that keeps the last ``limit`` bytes of a pipe."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self._pipe = pipe
        self._limit = limit
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._pipe:
            while chunk := os.read(self._pipe.fileno(), 65536):
                with self._lock:
                    self._buf += chunk
                    del self._buf[: max(0, len(self._buf) - self._limit)]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self, n: int) -> str:
        with self._lock:
            data = bytes(self._buf[-n:]) if n > 0 else b""
        return data.decode(errors="replace")


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the suite dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Daemon:
    """A daemon process in its own process group, output captured in bounded tails."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        pass_fds: Sequence[int] = (),
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        if not argv:
            raise ValueError("empty argv")
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.pass_fds = tuple(pass_fds)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.tail_bytes = tail_bytes
        self.proc: subprocess.Popen[bytes] | None = None
        #: The last signal we sent, if we had to stop it ourselves.
        self.signalled: signal.Signals | None = None
        self._tails: list[_Tail] = []
        self._pidfd: int | None = None

    def start(self) -> Self:
        """Spawn the process; TargetNotInstalled when the program is missing."""
        program = self.argv[0]
        if shutil.which(program, path=self._path()) is None:
            raise TargetNotInstalled(
                f"{self.name}: program {program!r} not found or not executable",
                hint="install it, or give its full path in the spec",
            )
        try:
            self.proc = subprocess.Popen(
                self.argv,
                pass_fds=self.pass_fds,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise TargetNotInstalled(
                f"{self.name}: cannot run {program!r}: {exc.strerror}",
                hint="install it, or give its full path in the spec",
            ) from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stdout = _Tail(self.proc.stdout, self.tail_bytes)
        self._stderr = _Tail(self.proc.stderr, self.tail_bytes)
        self._tails = [self._stdout, self._stderr]
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except OSError:  # kernels before 5.3: fall back to reaping polls
            self._pidfd = None
        return self

    def _path(self) -> str | None:
        return (self.env or os.environ).get("PATH")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and not self._exited(0)

    def _exited(self, timeout: float) -> bool:
        """Whether it has exited, waiting up to ``timeout`` s, without reaping it.

        An unreaped process keeps its pid and process group, so the group can
        still be signalled safely.
        """
        assert self.proc is not None
        if self.proc.returncode is not None:
            return True
        if self._pidfd is None:  # reaps, so the group is no longer signalled
            try:
                self.proc.wait(max(0.0, timeout))
            except subprocess.TimeoutExpired:
                return False
            return True
        return bool(select.select([self._pidfd], [], [], max(0.0, timeout))[0])

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s; the returncode once it has exited and is reaped."""
        if self.proc is None or not self._exited(timeout):
            return None
        returncode = self.proc.wait()
        self._release()
        return returncode

    def exit_description(self) -> str:
        """ "is still running", "exited with status 1" or "was killed by SIGSEGV"."""
        if self.proc is None:
            return "was never started"
        return exit_phrase(self.wait_exit(0))

    def stderr_tail(self, n: int = 2000) -> str:
        return self._stderr.text(n) if self._tails else ""

    def stdout_tail(self, n: int = 2000) -> str:
        return self._stdout.text(n) if self._tails else ""

    def stop(self, timeout: float = 2.0) -> int | None:
        """Terminate, then kill, its process group; always reap. The returncode."""
        if self.proc is None:
            return None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._exited(0):
                break
            self._signal_group(sig)
            self.signalled = sig
            if self._exited(timeout):
                break
        self._signal_group(signal.SIGKILL)  # leftovers in its group; no-op once reaped
        try:
            returncode = self.proc.wait(max(timeout, 5.0))
        except subprocess.TimeoutExpired:
            raise TargetError(
                f"{self.name} (pid {self.proc.pid}) survived SIGKILL",
                hint="it is stuck in the kernel (D state); see /proc/PID/stack",
            ) from None
        self._release()
        return returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return  # reaped: its group id may belong to someone else now
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _release(self) -> None:
        for tail in self._tails:  # its pipes are at EOF unless a child kept them
            tail.join(0.5)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(
    proc: Liveness,
    check: Callable[[], bool],
    timeout: float = 30.0,
    *,
    interval: float = 0.1,
    what: str = "ready",
) -> None:
    """Poll ``check`` until true; TargetDied at once if ``proc`` exits.

    TargetTimeout at the deadline.

    The pause between checks is a wait on the process, so an exit ends it early.
    """
    deadline = time.monotonic() + timeout
    while not check():
        returncode = proc.wait_exit(0)
        if returncode is not None:
            raise TargetDied(
                proc.name,
                returncode=returncode,
                stderr_tail=proc.stderr_tail(),
                detail=f"{exit_phrase(returncode)} before it was {what}",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TargetTimeout(f"{proc.name} was not {what} within {timeout:g} s")
        proc.wait_exit(min(interval, remaining))


class DaemonOwner:
    """A target that starts a daemon and reports, once closed, how it ended."""

    daemon: Daemon | None
    grace: float
    exit_status: int | None
    alive_at_close: bool
    clean_statuses: frozenset[int] = frozenset({0})

    @property
    def exited_by_itself(self) -> bool:
        """Whether, once closed, it had exited without a signal from us."""
        if self.daemon is None or self.exit_status is None:
            return False
        return self.daemon.signalled is None

    @property
    def exited_cleanly(self) -> bool:
        """Alive until closed, then exited by itself with 0 or its known EOF status."""
        return self.alive_at_close and self.exited_by_itself and self.exit_status in self.clean_statuses

    def reap(self) -> None:
        """Give the daemon ``grace`` seconds to end by itself, then stop it; keep its status."""
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.wait_exit(self.grace)
            self.exit_status = self.daemon.stop(self.grace)
