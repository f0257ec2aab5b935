"""The differential machine: random sequences of syscalls on the target and on tmpfs.

Each step runs one operation in both trees and requires the same outcome (value
or errno), the same stat fields POSIX defines, the same listings and contents.
A disagreement fails with the steps so far as a short Python script that
reproduces it (run it against any two directories).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from conformance.posix.oracle import Outcome, Twin, attempt, stat_view
from conformance.profiles import stateful_settings
from conformance.rules import rule as conformance_rule

NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f", "d", "g"])
DATA = st.binary(max_size=300)
OFFSETS = st.integers(0, 5000)
MODES = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o4755, 0o1777])


class TwinMachine(RuleBasedStateMachine):
    """Both trees start empty; every rule is one syscall on both."""

    def __init__(self, twin: Twin, features: frozenset[str]) -> None:
        super().__init__()
        self.twin = twin
        self.features = features
        self.script: list[str] = []

    @initialize()
    def start(self) -> None:
        self.script = ["import os", "root = ...  # a directory", ""]

    def step(self, line: str, call: object) -> Outcome:
        """Run ``call(root)`` on both trees; compare; remember the line for the script."""
        self.script.append(line)
        self.twin.kick()
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
        got = attempt(lambda: snapshot(self.twin.target))
        want = attempt(lambda: snapshot(self.twin.reference))
        assert got == want, self.report(
            f"the trees differ:\n  target {got}\n  tmpfs  {want}")


def snapshot(root: Path) -> list[tuple[str, dict[str, int], bytes | str | None]]:
    """Every name under root with its stat view and its content (or link target)."""
    out: list[tuple[str, dict[str, int], bytes | str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st_ = os.lstat(path)
            content: bytes | str | None = None
            if stat.S_ISREG(st_.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                content = os.readlink(path)
            out.append((str(path.relative_to(root)), stat_view(st_), content))
    return out


@conformance_rule(
    "POSIX-MACHINE-001",
    "Random sequences of create/write/truncate/mkdir/rmdir/unlink/rename/link/symlink/chmod/read "
    "give the same results, errnos, stat fields, listings and contents as tmpfs",
    source="POSIX.1-2017; the oracle is tmpfs on the same kernel", area="posix")
def test_differential_machine(twin: Twin, features: frozenset[str]) -> None:
    if "readonly" in features:
        pytest.skip("not applicable: a read-only target cannot run write sequences")

    def fresh() -> TwinMachine:
        for tree in (twin.target, twin.reference):
            _empty(tree)
        return TwinMachine(twin, features)

    run_state_machine_as_test(fresh, settings=stateful_settings())  # type: ignore[arg-type]


def _empty(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(Path(dirpath) / name)
        for name in dirnames:
            path = Path(dirpath) / name
            (os.unlink if path.is_symlink() else os.rmdir)(path)
