"""The probe: the reference server on /dev/fuse with ``record=FILE``, its recording audited.

``Probe`` mounts it, feeds the growing recording to a ``KernelAudit`` on demand
(``sync``) and counts the requests of a time window; every syscall through the
mount runs under a watchdog that aborts the connection when it hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allure
import pytest

from protocol import constants as c
from protocol.findings import Finding
from protocol.kernel_audit import KernelAudit, Seen
from targets import fusedev
from targets.fusedev import FUSE_DEVICE
from targets.mounts import ReferenceMount
from targets.reference.record import REFUSED, REPLY, REQUEST, Recorded, RecordingTail
from targets.skip import require
from targets.spec import TargetSpec, is_cuse, is_vhost_user, parse_spec

#: How long to wait for the kernel to act (FORGETs after an unlink); generous for a loaded machine
SETTLE_TIMEOUT = 20.0


def reference_target(config: pytest.Config, rules: str) -> TargetSpec:
    """The ``--target`` spec when it is the reference server, which ``rules`` mount on /dev/fuse
    as their probe; any other target makes them not applicable. Root and /dev/fuse are the
    machine's to have (a skip that CI turns into a failure)."""
    spec = parse_spec(config.getoption("--target"))
    if spec.kind != "daemon" or spec.name != "ref" or is_vhost_user(spec) or is_cuse(spec):
        pytest.skip(f"not applicable: {rules} use the reference server mounted on /dev/fuse as their "
                    f"probe; --target {spec.text or spec.name} is not that")
    require(os.geteuid() == 0, "machine lacks root: the probe is mounted with mount(2)")
    require(os.path.exists(FUSE_DEVICE), f"machine lacks {FUSE_DEVICE}")
    return spec


def feed(audit: KernelAudit, records: Iterable[Recorded]) -> None:
    """Hand recorded messages to the audit, in order."""
    for record in records:
        if record.direction == REQUEST:
            audit.request(record.data, record.time)
        elif record.direction == REPLY:
            audit.reply(record.data, record.time)
        elif record.direction == REFUSED:
            audit.refused(int.from_bytes(record.data[8:16], "little"))


@dataclass
class Window:
    """A span of time in which the test did one thing through the mount."""

    start: float
    end: float = 0.0


class Probe:
    """The reference server mounted with ``options`` (a ref spec's) and recording to ``recording``."""

    def __init__(self, options: dict[str, str | bool], recording: Path, op_timeout: float) -> None:
        self.recording = recording
        self.mount = ReferenceMount({**options, "record": str(recording)})
        self.op_timeout = op_timeout
        self.audit = KernelAudit()
        self.tail = RecordingTail(recording)

    @property
    def path(self) -> Path:
        return self.mount.path

    def open(self) -> Probe:
        self.mount.open()
        return self

    def close(self, *, failed: bool = False) -> None:
        self.mount.close(failed=failed)
        with contextlib.suppress(FileNotFoundError):
            self.sync()  # what was read up to the unmount

    def sync(self) -> KernelAudit:
        """The audit, fed with everything recorded so far."""
        feed(self.audit, self.tail.read())
        return self.audit

    def wait_for(self, done: Callable[[KernelAudit], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        """Poll the recording until ``done(audit)`` or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not done(self.sync()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @contextlib.contextmanager
    def step(self) -> Iterator[Window]:
        """Time one action through the mount; the connection is aborted if it hangs."""
        window = Window(time.time())
        with self.watchdog():
            yield window
        window.end = time.time()

    @contextlib.contextmanager
    def watchdog(self) -> Iterator[None]:
        timer = threading.Timer(self.op_timeout, self._abort)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _abort(self) -> None:
        if self.mount.conn_id is not None:
            with contextlib.suppress(Exception):
                fusedev.abort_connection(self.mount.conn_id)

    def nodeid(self, *path: str) -> int:
        """The nodeid the server gave for ``path`` (relative to the mount)."""
        found = self.sync().resolve(*path)
        assert found is not None, f"no entry for {'/'.join(path)} in the recording"
        return found


class Probes:
    """One mounted probe per cache mode, opened on first use, all closed by ``close``."""

    def __init__(self, options: dict[str, str | bool], scratch: Path, op_timeout: float) -> None:
        self.options, self.scratch, self.op_timeout = options, scratch, op_timeout
        self.opened: dict[str, Probe] = {}

    def get(self, cache: str) -> Probe:
        if cache not in self.opened:
            probe = Probe({**self.options, "cache": cache}, self.scratch / f"cache-{cache}.pcap",
                          self.op_timeout)
            self.opened[cache] = probe.open()
        return self.opened[cache]

    def close(self) -> None:
        errors: list[BaseException] = []
        for probe in self.opened.values():
            try:
                probe.close()
            except Exception as exc:  # close the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]


@dataclass
class Tally:
    """Requests of a window about one file: by nodeid, and LOOKUPs of its name in its parent."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, *opcodes: int) -> int:
        return sum(self.counts[c.OPCODE_NAMES[op]] for op in opcodes)


def tally(seen: Iterable[Seen], window: Window, *, nodeid: int, parent: int | None = None,
          name: bytes = b"", opcodes: Iterable[int] | None = None) -> Tally:
    """Count the requests in ``window`` naming ``nodeid`` (or LOOKUPs of ``name`` in ``parent``)."""
    wanted = frozenset(opcodes) if opcodes is not None else None
    out = Tally()
    for request in seen:
        if not window.start <= request.time <= window.end:
            continue
        ours = request.nodeid == nodeid and request.opcode != c.FUSE_LOOKUP
        ours |= request.opcode == c.FUSE_LOOKUP and request.nodeid == parent and request.name == name
        if ours and (wanted is None or request.opcode in wanted):
            out.counts[request.opcode_name] += 1
    return out


def report(rule: str, figures: dict[str, Any]) -> None:
    """Give a rule's measured figures to allure: one JSON attachment, and each top-level
    figure as a parameter kept out of the test's history id."""
    allure.attach(json.dumps({"rule": rule, **figures}, indent=2, sort_keys=True),
                  name=f"{rule} figures", attachment_type=allure.attachment_type.JSON)
    for key, value in figures.items():
        if isinstance(value, int | float | str | bool):
            allure.dynamic.parameter(key, value, excluded=True)


@dataclass
class Workload:
    """What the workload's mount recorded, audited, and what was measured around its unmount."""

    probe: Probe
    audit: KernelAudit
    settled: bool  # the FORGETs of every removed inode came (within the timeout)
    settle_seconds: float
    unbalanced: list[Finding]  # forget.unbalanced, judged just before the unmount
    outstanding_at_unmount: dict[int, int]
    unmount_started: float
    findings: list[Finding] = field(default_factory=list)

    def after_unmount(self) -> list[Seen]:
        """The requests read after umount(2) was called."""
        return [seen for seen in self.audit.seen if seen.time >= self.unmount_started]


def attach_recording(probe: Probe, name: str = "kernel recording") -> None:
    if probe.recording.exists():
        allure.attach(probe.recording.read_bytes(), name=f"{name}.pcap",
                      attachment_type=allure.attachment_type.PCAP)
