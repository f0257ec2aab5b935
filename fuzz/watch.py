"""The liveness oracles every machine shares: is the process still there, did it report a
bug of its own on stderr, and how it ended.

``Watch`` keeps how many reports it has seen, so each one is a finding once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fuzz.sanitizer import report as sanitizer_report
from fuzz.verdict import Defect

TRACEBACK = "Traceback (most recent call last)"
TAIL = 64 * 1024
SIGNALLED = "killed by"  # in Daemon.exit_description, for a death by signal
#: What glibc and assert(3) print before abort(): a forking daemon's parent (virtiofsd's
#: sandbox) then exits with a status, not a signal
ABORTED = ("Assertion `", "double free", "free(): ", "malloc(): ", "corrupted ", "stack smashing",
           "terminate called", "Aborted")


@dataclass
class Watch:
    daemon: Any  # targets.process.Daemon, or None when the suite does not own the process
    tracebacks: int = 0
    sanitized: bool = False

    def stderr(self, n: int = 1500) -> str:
        return self.daemon.stderr_tail(n) if self.daemon is not None else ""

    def alive(self) -> bool:
        return self.daemon is None or self.daemon.alive()

    def death(self, grace: float = 1.0) -> str:
        """How it ended: "was killed by SIGSEGV", "exited with status 1"."""
        if self.daemon is None:
            return "closed the channel"
        self.daemon.wait_exit(grace)
        return str(self.daemon.exit_description())

    def signalled(self) -> bool:
        """Killed by a signal, or a forked child was (what it printed before it aborted)."""
        return SIGNALLED in self.death(0) or any(mark in self.stderr(4000) for mark in ABORTED)

    def check(self, opcode: str, field_class: str, sent: str) -> None:
        """A Defect for a new sanitizer report or Python traceback on the target's stderr."""
        text = self.stderr(TAIL)
        found = sanitizer_report(text)
        if found and not self.sanitized:
            self.sanitized = True
            raise Defect("sanitizer", opcode, field_class, f"after {sent}:\n{found}")
        count = text.count(TRACEBACK)
        if count > self.tracebacks:
            self.tracebacks = count
            last = text[text.rindex(TRACEBACK):][-1200:]
            raise Defect("internal-error", opcode, field_class, f"after {sent}, on stderr:\n{last}")

    def crashed(self, opcode: str, field_class: str, sent: str) -> Defect:
        how = self.death()
        return Defect("crash", opcode, field_class,
                      f"the target {how} after {sent}; stderr ends: {self.stderr(800)!r}")
