"""Timestamps by order, not value: which of mtime and ctime went up across one call.

``moved`` looks at some names (or open files) on both sides, waits until the kernel's coarse
clock (the one tmpfs stamps with) has passed every time it saw, runs the call on both sides,
looks again and requires the same answer for each name: ``"mc"`` (mtime and ctime went up),
``"c"``, ``"m"`` or ``""``. A name that did not exist before is compared with that mark, so a new
file's times read ``"mc"`` when they are "now". atime is left out: relatime decides it.

Through a FUSE mount the kernel may answer stat from its attribute cache (cache=auto: 1 s), but
it invalidates what it knows a call changed: the inode a setattr, write, link, unlink or rename
touched, and the directories a name was added to or removed from. The rules ask only about those.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance.posix.oracle import Outcome, Twin

CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # Python 3.13 names it
Look = Callable[[Path], dict[str, os.stat_result]]
Moved = dict[str, str]


def coarse_now() -> int:
    """The clock tmpfs stamps times with (the kernel's coarse real time)."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def wait_past(mark: int) -> None:
    """Until the coarse clock is past ``mark``: any time set from now on is later than it."""
    while coarse_now() <= mark:
        time.sleep(0.0002)


def lstats(*names: str) -> Look:
    """lstat of each name that exists (``"."`` is the twin's directory itself)."""
    def look(root: Path) -> dict[str, os.stat_result]:
        found = {}
        for name in names:
            try:
                found[name] = os.lstat(root / name)
            except FileNotFoundError:
                pass
        return found

    return look


def _went_up(before: os.stat_result | None, after: os.stat_result, mark: int) -> str:
    old_m, old_c = (before.st_mtime_ns, before.st_ctime_ns) if before is not None else (mark, mark)
    return ("m" if after.st_mtime_ns > old_m else "") + ("c" if after.st_ctime_ns > old_c else "")


def moved(twin: Twin, call: Callable[[Path], Any], what: str, look: Look) -> tuple[Outcome, Moved]:
    """Run ``call`` on both sides (same outcome required); then which times went up, per name
    ``look`` finds after the call, the same on both sides (required). Returns the outcome and
    tmpfs's answer, for the rule to compare with what POSIX says."""
    before = look(twin.target), look(twin.reference)
    mark = max((max(st.st_mtime_ns, st.st_ctime_ns) for side in before for st in side.values()),
               default=0)
    mark = max(mark, coarse_now())
    wait_past(mark)  # whatever time the call sets is later than every time seen
    twin.kick()
    outcome = twin.same(call, what)
    after = look(twin.target), look(twin.reference)
    got, want = ({name: _went_up(side_before.get(name), st, mark) for name, st in sorted(side.items())}
                 for side_before, side in zip(before, after, strict=True))
    assert got == want, (f"{what}: times that went up (m: mtime, c: ctime) on the target {got}, "
                         f"on tmpfs {want}")
    return outcome, want
