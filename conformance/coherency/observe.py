"""Looking for a change until it shows: how long it took, or how long it stayed stale."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import allure

from conformance.coherency.modes import DEADLINE, Expect, Mode
from conformance.rules import rule

INTERVAL = 0.02


@dataclass(frozen=True)
class Observation:
    """The first look came ``first_ms`` after the change; ``seen_ms`` is when it showed (None:
    stale until the deadline, ``looked_ms`` after the change)."""

    first: bool
    seen_ms: float | None
    looked_ms: float
    looks: int

    def __str__(self) -> str:
        if self.first:
            return "at once"
        if self.seen_ms is None:
            return f"stale for > {self.looked_ms:.0f} ms"
        return f"after {self.seen_ms:.0f} ms"

    def keeps(self, expect: Expect) -> bool:
        limit = expect.limit()
        if limit is None:
            return True
        if limit == 0:
            return self.first
        return self.seen_ms is not None and self.seen_ms <= limit * 1000


def look(shows: Callable[[], bool], since: float, deadline: float = DEADLINE) -> Observation:
    """Call ``shows`` until it is true or ``deadline`` s after ``since`` (a monotonic time)."""
    looks = 0
    while True:
        looks += 1
        if shows():
            elapsed = (time.monotonic() - since) * 1000
            return Observation(looks == 1, 0.0 if looks == 1 else elapsed, elapsed, looks)
        elapsed = time.monotonic() - since
        if elapsed >= deadline:
            return Observation(False, None, elapsed * 1000, looks)
        time.sleep(INTERVAL)


def coherency_rule(rule_id: str, statement: str, *, source: str,
                   level: str | None = None) -> Callable[[Any], Any]:
    """A coherency rule: area coherency, its allure feature the mode it runs in."""
    return rule(rule_id, statement, source=source, area="coherency", feature="cache mode", level=level,
                feature_at_run=True)


def labelled(mode: Mode) -> None:
    """Label the running test with its mode (the matrix's column, also for n/a)."""
    allure.dynamic.feature(str(mode))
    allure.dynamic.parameter("mode", str(mode), excluded=True)


def judge(rule_id: str, scenario: str, mode: Mode, expect: Expect, seen: Observation,
          why: str = "") -> None:
    """Report the observation to allure (the coherency matrix reads it) and assert the expectation."""
    for name, value in (("scenario", scenario), ("expected", expect.value), ("observed", str(seen)),
                        ("stale_ms", "" if seen.first else f"{seen.seen_ms or seen.looked_ms:.0f}")):
        allure.dynamic.parameter(name, value, excluded=True)
    reason = f" ({why})" if why else ""
    assert seen.keeps(expect), (f"{rule_id} {scenario} under {mode}: expected {expect.value}{reason}, "
                                f"observed {seen} ({seen.looks} looks)")
