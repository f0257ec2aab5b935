"""Notifications: the kernel honours what a server tells it (the reference server as the sender).

Each rule mounts the reference server serving a scratch directory under cache=always (a day of
entry and attribute timeouts, FOPEN_KEEP_CACHE: without a notification nothing changes), with
``notify`` and a recording; it changes the host side and asserts that the mount shows the change
within a second, that the server sent the notification named, that the kernel took it, and that
the kernel then asked again (or, after STORE, did not need to). Only the reference server is
such a sender: for any other target these rules are not applicable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.coherency.conftest import rule_directory
from conformance.coherency.modes import NOTIFIED_WITHIN
from conformance.coherency.recording import NOTIFY_NAMES, Notification, Request, read
from conformance.kernel.probe import Probe, reference_target
from conformance.rules import rule
from protocol import constants as c
from targets.mounts import ReferenceMount

AREA = "coherency"
SOURCE = ("linux fs/fuse/dev.c fuse_notify_inval_inode, fuse_notify_inval_entry, fuse_notify_delete, "
          "fuse_notify_store, fuse_notify_retrieve; fs/fuse/inode.c fuse_reverse_inval_inode; "
          "libfuse fuse_lowlevel.h fuse_lowlevel_notify_*")
#: how long a message the server read or wrote may take to show in its recording
RECORDED_WITHIN = 3.0


@dataclass
class Notifying:
    """The server mounted as a probe (conformance.kernel.probe): recorded, its nodeids known."""

    probe: Probe

    @property
    def mount(self) -> ReferenceMount:
        return self.probe.mount

    def log(self) -> tuple[list[Notification], list[Request]]:
        return read(self.probe.recording)


def _open(mode: str, tmp: Path, request: pytest.FixtureRequest) -> Iterator[Notifying]:
    reference_target(request.config, "the notification rules")
    options: dict[str, str | bool] = {"cache": "always", "source": True, "notify": mode}
    probe = Probe(options, tmp / f"notify-{mode}.pcap", request.config.getoption("--op-timeout"))
    probe.open()
    failed = True
    try:
        yield Notifying(probe)
        failed = False
    finally:
        probe.close(failed=failed)


@pytest.fixture(scope="session")
def notifying(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifying]:
    yield from _open("inval", tmp_path_factory.mktemp("notify"), request)


@pytest.fixture(scope="session")
def storing(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifying]:
    yield from _open("store", tmp_path_factory.mktemp("notify-store"), request)


@dataclass
class Case:
    server: Notifying
    mount: Path
    host: Path

    def nodeid(self, *names: str) -> int:
        """The nodeid the server gave for ``names`` below the rule's directory (``()``: itself)."""
        deadline = time.monotonic() + RECORDED_WITHIN
        while True:
            try:
                return self.server.probe.nodeid(self.mount.name, *names)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def host_change(self, change: Callable[[], None], shows: Callable[[], bool], what: str) -> float:
        """Make ``change`` on the host; the time it was made. Fails unless the mount ``shows``
        it within NOTIFIED_WITHIN seconds."""
        assert not shows(), f"{what}: the mount shows it before it was made"
        made = time.time()
        change()
        deadline = time.monotonic() + NOTIFIED_WITHIN
        while not shows():
            assert time.monotonic() < deadline, (f"{what}: under cache=always with notify, the mount "
                                                 f"still does not show it {NOTIFIED_WITHIN:g} s later")
            time.sleep(0.01)
        return made

    def sent(self, since: float, code: int, match: Callable[[Notification], bool], *,
             taken: bool = True) -> Notification:
        """The first notification ``code`` since ``since`` that ``match``es, which the kernel
        took (unless not ``taken``): the recording is looked at until it shows one, a few seconds."""
        deadline = time.monotonic() + RECORDED_WITHIN
        while True:
            notifications, _ = self.server.log()
            found = [n for n in notifications if n.time >= since and n.code == code and match(n)]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        names = sorted({n.name for n in notifications if n.time >= since})
        assert found, f"the server sent no matching {NOTIFY_NAMES.get(code, code)} (it sent {names})"
        if not taken:
            return found[0]
        took = [n for n in found if not n.refused]
        assert took, f"the kernel refused every {found[0].name}: errno {found[0].refused}"
        return took[0]

    def asked(self, since: float, nodeid: int, *opcodes: int) -> list[Request]:
        """The kernel's requests of ``opcodes`` about ``nodeid`` since ``since`` (waiting for
        the recording to show one, for a few seconds)."""
        deadline = time.monotonic() + RECORDED_WITHIN
        while True:
            _, requests = self.server.log()
            found = [r for r in requests if r.time >= since and r.nodeid == nodeid and r.opcode in opcodes]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _case(server: Notifying, request: pytest.FixtureRequest) -> Iterator[Case]:
    assert server.mount.backing is not None
    with rule_directory(server.mount, server.mount.backing,
                        request.config.getoption("--op-timeout")) as pair:
        yield Case(server, pair.mount, pair.host)


@pytest.fixture
def case(notifying: Notifying, request: pytest.FixtureRequest) -> Iterator[Case]:
    yield from _case(notifying, request)


@pytest.fixture
def store_case(storing: Notifying, request: pytest.FixtureRequest) -> Iterator[Case]:
    yield from _case(storing, request)


def _name(notification: Notification) -> bytes:
    return bytes(notification.body.payload)[: int(notification.body.namelen)]


def _field(notification: Notification, name: str) -> int:
    """A field of the notification's struct (``parent`` is also scapy's link to an underlayer)."""
    return int(notification.body.getfieldval(name))


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


@rule("COHERENCY-NOTIFY-001", "After FUSE_NOTIFY_INVAL_INODE with a negative offset the kernel "
      "drops a file's cached attributes: a chmod on the host shows under cache=always, the kernel "
      "asking for the attributes again", source=SOURCE, area=AREA, feature="INVAL_INODE")
def test_inval_inode_attributes(case: Case) -> None:
    (case.mount / "f").write_bytes(b"x")
    os.chmod(case.mount / "f", 0o644)
    nodeid = case.nodeid("f")
    since = case.host_change(lambda: os.chmod(case.host / "f", 0o600),
                             lambda: os.stat(case.mount / "f").st_mode & 0o777 == 0o600, "a host chmod")
    sent = case.sent(since, c.FUSE_NOTIFY_INVAL_INODE, lambda n: n.body.ino == nodeid and n.body.off < 0)
    assert case.asked(sent.time, nodeid, c.FUSE_GETATTR, c.FUSE_STATX), (
        "the mount shows the new mode but the kernel sent no GETATTR after the INVAL_INODE")


@rule("COHERENCY-NOTIFY-002", "After FUSE_NOTIFY_INVAL_INODE from offset 0 the kernel drops a "
      "file's pages: new content written on the host is read (READ reaches the server) although "
      "FOPEN_KEEP_CACHE kept the old pages across opens", source=SOURCE, area=AREA,
      feature="INVAL_INODE")
def test_inval_inode_data(case: Case) -> None:
    (case.mount / "f").write_bytes(b"o" * 4096)
    assert (case.mount / "f").read_bytes() == b"o" * 4096
    nodeid = case.nodeid("f")

    def host_write() -> None:
        with open(case.host / "f", "r+b") as f:
            f.write(b"n" * 4096)

    since = case.host_change(host_write, lambda: (case.mount / "f").read_bytes() == b"n" * 4096,
                             "new content on the host")
    sent = case.sent(since, c.FUSE_NOTIFY_INVAL_INODE, lambda n: n.body.ino == nodeid and n.body.off == 0)
    assert case.asked(sent.time, nodeid, c.FUSE_READ), "the new content came without a READ"


@rule("COHERENCY-NOTIFY-003", "After FUSE_NOTIFY_INVAL_ENTRY the kernel drops the name's dentry: a "
      "rename on the host shows under cache=always (the old name gone, the new one found)",
      source=SOURCE, area=AREA, feature="INVAL_ENTRY")
def test_inval_entry(case: Case) -> None:
    (case.mount / "a").write_bytes(b"r")
    parent = case.nodeid()
    since = case.host_change(lambda: os.rename(case.host / "a", case.host / "b"),
                             lambda: not _exists(case.mount / "a") and _exists(case.mount / "b"),
                             "a host rename")
    case.sent(since, c.FUSE_NOTIFY_INVAL_ENTRY, lambda n: _field(n, "parent") == parent and _name(n) == b"a")


@rule("COHERENCY-NOTIFY-004", "FUSE_NOTIFY_DELETE naming a looked-up name and its nodeid is taken and "
      "the name is gone under cache=always", source=SOURCE, area=AREA, feature="DELETE")
def test_delete(case: Case) -> None:
    parent = case.nodeid()
    made = time.time()
    (case.host / "gone").write_bytes(b"g")  # made on the host: the kernel will LOOKUP it
    # the INVAL_ENTRY for the new name first (else it could drop the dentry looked up below)
    case.sent(made, c.FUSE_NOTIFY_INVAL_ENTRY, lambda n: _name(n) == b"gone", taken=False)
    os.lstat(case.mount / "gone")
    nodeid = case.nodeid("gone")
    since = case.host_change(lambda: os.unlink(case.host / "gone"),
                             lambda: not _exists(case.mount / "gone"), "a host unlink")
    case.sent(since, c.FUSE_NOTIFY_DELETE, lambda n: _field(n, "parent") == parent
              and _field(n, "child") == nodeid and _name(n) == b"gone")


@rule("COHERENCY-NOTIFY-005", "FUSE_NOTIFY_STORE puts data in the kernel's page cache: new content "
      "written on the host is read through the mount with no READ reaching the server, and the "
      "kernel's FUSE_NOTIFY_REPLY to a FUSE_NOTIFY_RETRIEVE of it hands back the stored bytes",
      source=SOURCE, area=AREA, feature="STORE/RETRIEVE")
def test_store_retrieve(store_case: Case) -> None:
    case = store_case
    (case.mount / "f").write_bytes(b"o" * 4096)
    assert (case.mount / "f").read_bytes() == b"o" * 4096
    nodeid = case.nodeid("f")
    new = bytes(range(256)) * 20

    def host_write() -> None:
        with open(case.host / "f", "r+b") as f:
            f.write(new)

    since = case.host_change(host_write, lambda: (case.mount / "f").read_bytes() == new,
                             "new content on the host")
    stored = case.sent(since, c.FUSE_NOTIFY_STORE,
                       lambda n: n.body.nodeid == nodeid and bytes(n.body.payload) == new)
    reads = case.asked(stored.time, nodeid, c.FUSE_READ)
    assert not reads, f"{len(reads)} READs after the STORE: the kernel did not keep the stored pages"
    retrieve = case.sent(stored.time, c.FUSE_NOTIFY_RETRIEVE, lambda n: n.body.nodeid == nodeid)
    unique = int(retrieve.body.notify_unique)
    deadline = time.monotonic() + NOTIFIED_WITHIN
    while not (replies := [r for r in case.server.log()[1]
                           if r.opcode == c.FUSE_NOTIFY_REPLY and r.unique == unique]):
        assert time.monotonic() < deadline, f"no NOTIFY_REPLY to RETRIEVE {unique}"
        time.sleep(0.01)
    data = replies[0].body[40:]  # after fuse_notify_retrieve_in
    assert data == new[:len(data)] and data, (
        f"NOTIFY_REPLY hands back {len(data)} bytes that are not the {len(new)} stored")
