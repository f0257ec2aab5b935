"""What a campaign did: messages sent per (opcode, field class), examples, findings.

Each worker keeps a ``Tally`` and writes it as JSON (``Tally.flush``, at most twice a
second unless forced) to a file of its own in the campaign's stats directory; the runner
reads them all (``gather``) for its progress line and its summary.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How a message was drawn: as the kernel would send it, with one field at a boundary of
#: its type, or broken in its framing or order.
FIELD_CLASSES = ("valid", "boundary", "malformed")
FLUSH_EVERY = 0.5  # seconds between writes of a worker's tally


@dataclass
class Tally:
    requests: int = 0  # messages sent
    replies: int = 0  # replies received
    examples: int = 0  # hypothesis examples run
    findings: int = 0  # distinct findings kept
    restarts: int = 0  # target instances started after the first
    flaky: int = 0  # batches hypothesis gave up on: the target answered a sequence two ways
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (opcode, class) -> count
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (opcode, ok|errno|silent)
    seconds: float = 0.0  # time the worker spent running
    cpu: float = 0.0  # CPU seconds meanwhile: the worker's process and the targets it reaped
    path: Path | None = None  # where ``flush`` writes
    _started: float = field(default_factory=time.monotonic)
    _cpu_at_start: float = field(default_factory=lambda: _cpu_used())
    _flushed: float = 0.0

    def sent_one(self, opcode: str, field_class: str) -> None:
        assert field_class in FIELD_CLASSES, field_class
        self.requests += 1
        self.sent[opcode, field_class] += 1

    def answer(self, opcode: str, outcome: str) -> None:
        """``outcome``: "ok", an errno name, or "silent"."""
        if outcome != "silent":
            self.replies += 1
        self.answered[opcode, outcome] += 1

    def opcodes(self) -> set[str]:
        return {opcode for opcode, _ in self.sent}

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "replies": self.replies, "examples": self.examples,
            "findings": self.findings, "restarts": self.restarts, "flaky": self.flaky,
            "seconds": time.monotonic() - self._started if self.path else self.seconds,
            "cpu": _cpu_used() - self._cpu_at_start if self.path else self.cpu,
            "sent": [[o, k, n] for (o, k), n in sorted(self.sent.items())],
            "answered": [[o, k, n] for (o, k), n in sorted(self.answered.items())],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        tally = cls(requests=data["requests"], replies=data["replies"], examples=data["examples"],
                    findings=data["findings"], restarts=data["restarts"], seconds=data["seconds"],
                    flaky=data.get("flaky", 0), cpu=data.get("cpu", 0.0))
        tally.sent.update({(o, k): n for o, k, n in data["sent"]})
        tally.answered.update({(o, k): n for o, k, n in data["answered"]})
        return tally

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._flushed < FLUSH_EVERY):
            return
        self._flushed = now
        partial = self.path.with_suffix(".part")
        partial.write_text(json.dumps(self.to_json()))
        os.replace(partial, self.path)

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.replies += other.replies
        self.examples += other.examples
        self.findings += other.findings
        self.restarts += other.restarts
        self.flaky += other.flaky
        self.seconds = max(self.seconds, other.seconds)
        self.cpu += other.cpu
        self.sent.update(other.sent)
        self.answered.update(other.answered)


def _cpu_used() -> float:
    usages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usages)


def gather(directory: Path) -> tuple[Tally, int]:
    """All workers' tallies summed, and how many workers wrote one."""
    total = Tally()
    workers = 0
    for path in sorted(directory.glob("*.json")):
        try:
            total.merge(Tally.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError):
            continue  # being replaced right now: the next read has it
        workers += 1
    return total, workers


def coverage_table(tally: Tally) -> list[str]:
    """Markdown rows: opcode, messages per field class, and how they were answered."""
    rows = ["| opcode | " + " | ".join(FIELD_CLASSES) + " | answers |",
            "| --- | " + " | ".join("---:" for _ in FIELD_CLASSES) + " | --- |"]
    for opcode in sorted(tally.opcodes()):
        counts = " | ".join(str(tally.sent.get((opcode, k), 0)) for k in FIELD_CLASSES)
        answers = Counter({k: n for (o, k), n in tally.answered.items() if o == opcode})
        shown = ", ".join(f"{k} {n}" for k, n in answers.most_common(4))
        rows.append(f"| {opcode} | {counts} | {shown} |")
    return rows
