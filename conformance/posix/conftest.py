"""Fixtures of the POSIX rules: the target mounted once per worker, a tmpfs twin, a watchdog.

Each test gets an empty directory in the mount and one on tmpfs (``twin``);
a test that outlives ``--op-timeout`` has the target's connection aborted, so
a hung daemon fails the test instead of hanging the run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from targets import fusedev
from targets.capabilities import serves_mount
from targets.mounts import MountTarget, open_mount_target
from targets.skip import require
from targets.spec import parse_spec

_counter = itertools.count()


@pytest.fixture(scope="session")
def mounted(request: pytest.FixtureRequest) -> Iterator[MountTarget]:
    """The ``--target`` mounted (or the user's mount), for the whole session of this worker."""
    spec = parse_spec(request.config.getoption("--target"))
    if not serves_mount(spec):
        pytest.skip(f"not applicable: {spec.text} is spoken to over a socket, not mounted")
    backing = request.config.getoption("--backing")
    with open_mount_target(spec, Path(backing) if backing else None) as target:
        yield target


@pytest.fixture(scope="session")
def reference_root() -> Iterator[Path]:
    """A tmpfs of this kernel: the oracle's side of every twin."""
    require(os.geteuid() == 0, "machine lacks root: the tmpfs oracle is mounted with mount(2)")
    root = Path(tempfile.mkdtemp(prefix="fusecheck-tmpfs-"))
    fusedev.sys_mount("fusecheck-oracle", root, "tmpfs", 0, "mode=0755,size=256m")
    try:
        yield root
    finally:
        with contextlib.suppress(OSError):
            fusedev.unmount(root, lazy=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def features(mounted: MountTarget) -> frozenset[str]:
    return mounted.features


@pytest.fixture
def enforced_permissions(features: frozenset[str]) -> None:
    """Not applicable unless the target checks permissions for users other than root."""
    for needed in ("other_users", "permissions"):
        if needed not in features:
            pytest.skip(f"not applicable: the target does not enforce permissions for other "
                        f"users ({needed} missing)")


@pytest.fixture
def twin(request: pytest.FixtureRequest, mounted: MountTarget, reference_root: Path) -> Iterator[Twin]:
    """An empty directory in the target and its empty twin on tmpfs, owned by root, 0755."""
    if "readonly" in mounted.features:
        pytest.skip(f"not applicable: {mounted.name} is read-only")
    name = f"t{os.getpid()}-{next(_counter)}"
    watchdog = Watchdog(request.config.getoption("--op-timeout"), mounted)
    pair = Twin(mounted.path / name, reference_root / name, kick=watchdog.kick)
    for root in (pair.target, pair.reference):
        os.mkdir(root, 0o755)
        os.chmod(root, 0o755)
    watchdog.kick()
    try:
        yield pair
    finally:
        watchdog.stop()
        for root in (pair.target, pair.reference):
            _remove(root)


class Watchdog:
    """Aborts the target's connection when no progress was reported for ``timeout`` s."""

    def __init__(self, timeout: float, mounted: MountTarget) -> None:
        self.timeout = timeout
        self.mounted = mounted
        self.timer: threading.Timer | None = None

    def kick(self) -> None:
        self.stop()
        self.timer = threading.Timer(self.timeout, _abort, args=(self.mounted,))
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _abort(mounted: MountTarget) -> None:
    """The test took too long: the daemon hangs; abort its connection (calls then fail)."""
    if mounted.conn_id is not None:
        with contextlib.suppress(Exception):
            fusedev.abort_connection(mounted.conn_id)


def _remove(root: Path) -> None:
    """Remove a test's tree, whatever modes the test left on it."""
    for dirpath, dirnames, _files in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():  # Linux cannot chmod a link itself
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o755)
    shutil.rmtree(root, ignore_errors=True)
