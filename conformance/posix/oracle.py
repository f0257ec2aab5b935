"""The differential oracle: the same operation on the target mount and on tmpfs.

An ``Outcome`` is what a syscall gave: a value, or an errno name.  ``Twin``
runs one callable against two directory roots (the target's and a fresh tmpfs
directory of the same kernel) and returns both outcomes; rules assert they
agree, and that tmpfs itself gives what POSIX says (so a broken oracle shows).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """``value`` when the call succeeded, else ``error`` (an errno name such as ENOENT)."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        return self.error if self.error else f"ok {self.value!r}"


def attempt(call: Callable[[], Any]) -> Outcome:
    """Run ``call``; an OSError becomes its errno name."""
    try:
        return Outcome(value=call())
    except OSError as exc:
        return Outcome(error=errno.errorcode.get(exc.errno or 0, str(exc.errno)))


def stat_view(st: os.stat_result) -> dict[str, int]:
    """The stat fields POSIX defines and a FUSE filesystem must get right (no times, no ino)."""
    return {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "nlink": st.st_nlink,
            "uid": st.st_uid, "gid": st.st_gid,
            "size": st.st_size if not stat.S_ISDIR(st.st_mode) else -1}


@dataclass(frozen=True)
class Twin:
    """A directory in the target mount and its twin on tmpfs, both empty at the start."""

    target: Path
    reference: Path
    kick: Callable[[], None] = field(default=lambda: None, compare=False)
    """Tell the watchdog the test is still making progress (long sequences call it per step)."""

    def run(self, call: Callable[[Path], Any]) -> tuple[Outcome, Outcome]:
        """``call(root)`` on the target's root, then on the reference's."""
        return attempt(lambda: call(self.target)), attempt(lambda: call(self.reference))

    def same(self, call: Callable[[Path], Any], what: str) -> Outcome:
        """Run ``call`` on both; fail unless both outcomes agree. Returns the target's."""
        got, want = self.run(call)
        assert got == want, f"{what}: the target gave {got}, tmpfs gives {want}"
        return got

    def same_stat(self, relpath: str, what: str, *, follow: bool = True) -> dict[str, int]:
        def look(root: Path) -> dict[str, int]:
            return stat_view(os.stat(root / relpath, follow_symlinks=follow))

        return self.same(look, f"{what}: stat of {relpath}").value  # type: ignore[no-any-return]

    def same_listing(self, relpath: str = ".") -> list[str]:
        return self.same(lambda root: sorted(os.listdir(root / relpath)),
                         f"listing of {relpath}").value  # type: ignore[no-any-return]
