"""The differential machine: random sequences of syscalls on the target and on tmpfs.

Each step runs one operation in both trees and requires the same outcome (value
or errno), the same stat fields POSIX defines, the same listings and contents, and
the same timestamps moving: by order, not value (which of mtime and ctime of each
name went up, stayed or went back; each step starts after the coarse clock that
tmpfs stamps with has ticked, so a change always shows).
A disagreement fails with the steps so far as a short Python script that
reproduces it (run it against any two directories).
"""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conformance.posix.oracle import Outcome, Twin, attempt, stat_view
from conformance.posix.stamps import coarse_now, wait_past
from conformance.profiles import run_stateful
from conformance.rules import rule as conformance_rule

NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f", "d", "g"])
DATA = st.binary(max_size=300)
OFFSETS = st.integers(0, 5000)
MODES = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o4755, 0o1777])
#: The examples are drawn in this many slices, one test each, so that xdist workers share them
PARTS = 2


class TwinMachine(RuleBasedStateMachine):
    """Both trees start empty; every rule is one syscall on both."""

    def __init__(self, twin: Twin, features: frozenset[str]) -> None:
        super().__init__()
        self.twin = twin
        self.features = features
        self.script: list[str] = []
        self.times = (stamps(walk(twin.target)), stamps(walk(twin.reference)))
        self.mark = coarse_now()

    @initialize()
    def start(self) -> None:
        self.script = ["import os", "root = ...  # a directory", ""]

    def step(self, line: str, call: object) -> Outcome:
        """Run ``call(root)`` on both trees; compare; remember the line for the script."""
        self.script.append(line)
        self.twin.kick()
        wait_past(self.mark)  # any time this step sets is later than those seen
        got, want = self.twin.run(call)  # type: ignore[arg-type]
        assert got == want, self.report(f"{line}: the target gave {got}, tmpfs gives {want}")
        return got

    def report(self, problem: str) -> str:
        return problem + "\nreproduce with:\n" + "\n".join(self.script)

    @rule(name=NAMES, data=DATA, offset=OFFSETS)
    def write(self, name: str, data: bytes, offset: int) -> None:
        def call(root: Path) -> int:
            fd = os.open(root / name, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        self.step(f"fd = os.open(root + '/{name}', os.O_WRONLY | os.O_CREAT, 0o644); "
                  f"os.pwrite(fd, {data!r}, {offset}); os.close(fd)", call)

    @rule(name=NAMES, size=OFFSETS)
    def truncate(self, name: str, size: int) -> None:
        self.step(f"os.truncate(root + '/{name}', {size})", lambda r: os.truncate(r / name, size))

    @rule(name=NAMES)
    def mkdir(self, name: str) -> None:
        self.step(f"os.mkdir(root + '/{name}')", lambda r: os.mkdir(r / name))

    @rule(name=NAMES)
    def rmdir(self, name: str) -> None:
        self.step(f"os.rmdir(root + '/{name}')", lambda r: os.rmdir(r / name))

    @rule(name=NAMES)
    def unlink(self, name: str) -> None:
        self.step(f"os.unlink(root + '/{name}')", lambda r: os.unlink(r / name))

    @rule(old=NAMES, new=NAMES)
    def rename(self, old: str, new: str) -> None:
        self.step(f"os.rename(root + '/{old}', root + '/{new}')",
                  lambda r: os.rename(r / old, r / new))

    @rule(old=NAMES, new=NAMES)
    def link(self, old: str, new: str) -> None:
        if "hardlink" in self.features:
            self.step(f"os.link(root + '/{old}', root + '/{new}')",
                      lambda r: os.link(r / old, r / new))

    @rule(points_to=NAMES, new=NAMES)
    def symlink(self, points_to: str, new: str) -> None:
        if "symlink" in self.features:
            self.step(f"os.symlink('{points_to}', root + '/{new}')",
                      lambda r: os.symlink(points_to, r / new))

    @rule(name=NAMES, mode=MODES)
    def chmod(self, name: str, mode: int) -> None:
        self.step(f"os.chmod(root + '/{name}', {mode:#o})", lambda r: os.chmod(r / name, mode))

    @rule(name=NAMES)
    def read(self, name: str) -> None:
        def call(root: Path) -> bytes:
            with open(root / name, "rb") as f:
                return f.read()
        self.step(f"open(root + '/{name}', 'rb').read()", call)

    @invariant()
    def trees_agree(self) -> None:
        """Same names, stat fields and contents; the same timestamps moved since the last step."""
        walked = attempt(lambda: walk(self.twin.target)), attempt(lambda: walk(self.twin.reference))
        got, want = (_snapshot_of(w) for w in walked)
        assert got == want, self.report(
            f"the trees differ:\n  target {got}\n  tmpfs  {want}")
        now = (stamps(walked[0].value), stamps(walked[1].value))
        # past every stamp seen too (a multigrain time, Linux 6.13+, can be ahead of the coarse
        # clock), but no more than AHEAD: a target's stamp in the future must not stall the run
        clock = coarse_now()
        seen = max((t for tree in now for pair in tree.values() for t in pair), default=clock)
        self.mark = max(clock, min(seen, clock + AHEAD))
        moved = [moves(before, after) for before, after in zip(self.times, now, strict=True)]
        self.times = now
        assert moved[0] == moved[1], self.report(
            "timestamps moved differently (name: mtime, ctime; + later, = same, - earlier):\n"
            f"  target {moved[0]}\n  tmpfs  {moved[1]}")


Stamps = dict[str, tuple[int, int]]
AHEAD = 50_000_000  # ns a seen stamp may be ahead of the coarse clock and still be waited for


def _snapshot_of(walked: Outcome) -> Outcome:
    return attempt(lambda: snapshot(walked.value)) if walked.ok else walked


def stamps(walked: Walked) -> Stamps:
    """mtime and ctime of each walked name (atime follows relatime: left out)."""
    return {name: (st_.st_mtime_ns, st_.st_ctime_ns) for _path, name, st_ in walked}


def moves(before: Stamps, after: Stamps) -> dict[str, str]:
    """For each name in both: how its mtime and ctime moved, e.g. ``{'a': '+=' }``."""
    def sign(old: int, new: int) -> str:
        return "+" if new > old else "=" if new == old else "-"

    return {name: sign(before[name][0], times[0]) + sign(before[name][1], times[1])
            for name, times in sorted(after.items()) if name in before}


Walked = list[tuple[Path, str, os.stat_result]]


def walk(root: Path) -> Walked:
    """The root ('.') and every name under it, sorted, with its lstat."""
    out: Walked = [(root, ".", os.lstat(root))]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            out.append((path, str(path.relative_to(root)), os.lstat(path)))
    return out


def snapshot(walked: Walked) -> list[tuple[str, dict[str, int], bytes | str | None]]:
    """Every name under the root with its stat view and its content (or link target)."""
    out: list[tuple[str, dict[str, int], bytes | str | None]] = []
    for path, name, st_ in walked[1:]:
        content: bytes | str | None = None
        if stat.S_ISREG(st_.st_mode):
            content = path.read_bytes()
        elif stat.S_ISLNK(st_.st_mode):
            content = os.readlink(path)
        out.append((name, stat_view(st_), content))
    return out


@conformance_rule(
    "POSIX-MACHINE-001",
    "Random sequences of create/write/truncate/mkdir/rmdir/unlink/rename/link/symlink/chmod/read "
    "give the same results, errnos, stat fields, listings, contents and timestamp order as tmpfs",
    source="POSIX.1-2017; the oracle is tmpfs on the same kernel", area="posix")
@pytest.mark.spread
@pytest.mark.parametrize("part", range(PARTS), ids=[f"part {i + 1} of {PARTS}" for i in range(PARTS)])
def test_differential_machine(twin: Twin, features: frozenset[str], part: int) -> None:
    if "readonly" in features:
        pytest.skip("not applicable: a read-only target cannot run write sequences")

    examples = itertools.count()

    def fresh() -> TwinMachine:
        """Each example in new, empty directories: what a failed one left cannot leak into the
        next (a server that lies about types may leave names nobody can remove)."""
        name = f"x{next(examples)}"
        for tree in (twin.target, twin.reference):
            _empty(tree)
            (tree / name).mkdir()
        return TwinMachine(Twin(twin.target / name, twin.reference / name, twin.kick), features)

    run_stateful(fresh, part, PARTS)


def _empty(root: Path) -> None:
    """Remove what earlier examples left, as far as the target lets us."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            try:
                (os.rmdir if path.is_dir() and not path.is_symlink() else os.unlink)(path)
            except OSError:
                pass
