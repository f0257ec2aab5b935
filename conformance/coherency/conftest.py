"""Fixtures of the coherency rules: the target mounted with a backing directory on the host, and
the cache mode it declares.

- ``ref`` (any options) is mounted serving a host directory (``source``: ``--backing`` or a
  scratch directory), in the target's cache mode (``cache=``, ``writeback``).
- ``passthrough_ll`` declares its mode with its own options (``cache=never|auto|always``,
  ``writeback``; auto by default).
- Any other mount (``mount:PATH``, bindfs, ...) needs ``--backing DIR`` and ``--cache-mode``;
  without them the rules are not applicable: the suite cannot know what to expect.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.coherency.modes import Mode
from conformance.coherency.observe import labelled
from conformance.posix.conftest import Watchdog
from targets.capabilities import serves_mount
from targets.fusedev import FUSE_DEVICE
from targets.mounts import MountTarget, ReferenceMount, open_mount_target
from targets.skip import require
from targets.spec import TargetSpec, parse_spec

_counter = itertools.count()
PASSTHROUGH_CACHE = {"never": "none", "auto": "auto", "always": "always"}


@dataclass
class Coherent:
    """A mount, the host directory it serves, the cache mode it declares, and the target's name."""

    mount: MountTarget
    backing: Path
    mode: Mode
    target: str

    @property
    def path(self) -> Path:
        return self.mount.path


@dataclass
class Sides:
    """One rule's directory, seen through the mount and on the host."""

    mount: Path
    host: Path


def declared_mode(spec: TargetSpec, given: str | None) -> Mode | None:
    """The mode the target runs in: ``--cache-mode``, else what its options say, if the suite knows."""
    if given:
        return Mode.parse(given)
    writeback = bool(spec.options.get("writeback"))
    if spec.kind == "daemon" and spec.name == "ref":
        notify = spec.options.get("notify")
        return Mode(str(spec.options.get("cache", "auto")), writeback,
                    None if not notify else "inval" if notify is True else str(notify))
    if spec.kind == "daemon" and spec.name in ("passthrough_ll", "passthrough_ll-asan"):
        return Mode(PASSTHROUGH_CACHE.get(str(spec.options.get("cache", "auto")), "auto"), writeback)
    return None


@pytest.fixture(scope="session")
def coherent(request: pytest.FixtureRequest) -> Iterator[Coherent]:
    spec = parse_spec(request.config.getoption("--target"))
    if not serves_mount(spec):
        pytest.skip(f"not applicable: {spec.text or spec.name} is spoken to over a socket, not mounted")
    mode = declared_mode(spec, request.config.getoption("--cache-mode"))
    if mode is None:
        pytest.skip(f"not applicable: the cache mode of {spec.text or spec.name} is not known "
                    "(give --cache-mode none|auto|always[,writeback])")
    if spec.kind == "daemon":
        require(os.geteuid() == 0, "machine lacks root: the target is mounted with mount(2)")
        require(os.path.exists(FUSE_DEVICE), f"machine lacks {FUSE_DEVICE}")
    backing = request.config.getoption("--backing")
    if spec.kind == "daemon" and spec.name == "ref":
        options = {k: v for k, v in spec.options.items() if k != "record"}
        options["source"] = str(Path(backing).resolve()) if backing else options.get("source", True)
        target: MountTarget = ReferenceMount(options)
    else:
        target = open_mount_target(spec, Path(backing) if backing else None)
    with target:
        if target.backing is None:
            pytest.skip(f"not applicable: {target.name} has no backing directory (give --backing)")
        yield Coherent(target, target.backing, mode, spec.text or spec.name)


@contextmanager
def rule_directory(mount: MountTarget, backing: Path, op_timeout: float) -> Iterator[Sides]:
    """A new directory made through ``mount``, and where it is in ``backing`` on the host; a
    watchdog aborts the target's connection when the rule outlives ``op_timeout``."""
    watchdog = Watchdog(op_timeout, mount)
    name = f"c{os.getpid()}-{next(_counter)}"
    watchdog.kick()
    try:
        os.mkdir(mount.path / name)
        host = backing / name
        assert host.is_dir(), f"a directory made through the mount is not on the host at {host}"
        yield Sides(mount.path / name, host)
    finally:
        watchdog.stop()
        shutil.rmtree(backing / name, ignore_errors=True)


@pytest.fixture
def sides(request: pytest.FixtureRequest, coherent: Coherent) -> Iterator[Sides]:
    """The rule's own directory, on both sides, labelled with the mode for allure."""
    labelled(coherent.mode)
    with rule_directory(coherent.mount, coherent.backing, request.config.getoption("--op-timeout")) as pair:
        yield pair
