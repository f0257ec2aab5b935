"""Errors raised while reaching a target; each carries a one-line ``hint``."""

from __future__ import annotations

import signal

#: How much of the stderr tail goes into a TargetDied message (all of it stays
#: in ``.stderr_tail``).
MESSAGE_TAIL_LINES = 5
MESSAGE_TAIL_CHARS = 500


def exit_phrase(returncode: int | None) -> str:
    """Describe a returncode: "exited with status 1", "was killed by SIGSEGV"."""
    if returncode is None:
        return "is still running"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


class TargetError(Exception):
    """Base class: the suite could not reach or keep a target."""

    default_hint = "check the --target spec and the daemon's output"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def describe(self) -> str:
        """The message and its hint, for a usage error."""
        return f"{self.message}\n  hint: {self.hint}"


class TargetSpecError(TargetError):
    """The ``--target`` spec string is malformed or names no known target."""

    default_hint = "see the README, 'Running the rules against a daemon', for the spec forms"


class TargetNotInstalled(TargetError):
    """A program, library or build tool the target needs is missing."""

    default_hint = "install the missing package with apt-get install"


class TargetTimeout(TargetError):
    """The target sent nothing within the deadline."""

    default_hint = "the daemon may be stuck; read its stderr, or give it more time with --reply-timeout"


class TargetDied(TargetError):
    """The target process exited, or closed its end of the channel."""

    default_hint = "read the daemon's stderr tail; rerun it with -d for a debug log"

    def __init__(
        self,
        name: str,
        *,
        returncode: int | None,
        stderr_tail: str = "",
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.name = name
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        what = detail or (exit_phrase(returncode) if returncode is not None else "closed the channel")
        message = f"target died: {name} {what}"
        lines = [line for line in stderr_tail.strip().splitlines() if line]
        tail = " | ".join(lines[-MESSAGE_TAIL_LINES:])[-MESSAGE_TAIL_CHARS:]
        if tail:
            message += f" (stderr: {tail})"
        super().__init__(message, hint=hint)

    @property
    def exit_status(self) -> int | None:
        """The status it exited with, or None if killed by a signal or running."""
        return self.returncode if self.returncode is not None and self.returncode >= 0 else None

    @property
    def signal_name(self) -> str | None:
        """The name of the killing signal, or None if it exited or is running."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return None
