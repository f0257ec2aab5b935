"""Blocking reads, INTERRUPT and POLL on a CUSE device whose reads wait for data (the
reference FIFO's model): as linux fs/fuse/dev.c (request_wait_answer, queue_interrupt) and
fs/fuse/file.c (fuse_file_poll, FUSE_NOTIFY_POLL) drive them."""

from __future__ import annotations

import errno
import os
import select
import time

import pytest
from scapy.packet import Raw

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from protocol import constants as c
from protocol.events import Notify, Reply
from protocol.layers.structs import FuseOpenIn, FusePollIn, FuseReadIn, FuseWriteIn
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget

KERNEL = "linux fs/fuse/dev.c request_wait_answer, queue_interrupt; fs/fuse/file.c fuse_file_poll"
QUIET = 0.3  # how long a blocked read must stay unanswered


def _fifo(target: CuseTarget) -> None:
    if target.model != "fifo":
        pytest.skip("not applicable: the device's reads do not wait for data (its model is "
                    f"{target.model or 'unknown'})")


def _open(device: KernelConnection) -> int:
    opened = device.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDWR), nodeid=0)
    assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
    return int(opened.body.fh)


def _write(device: KernelConnection, fh: int, data: bytes) -> None:
    wrote = device.call(c.FUSE_WRITE, FuseWriteIn(fh=fh, offset=0, size=len(data)), Raw(data), nodeid=0)
    assert wrote.ok and wrote.body is not None and int(wrote.body.size) == len(data), (
        f"WRITE answered {errno_name(wrote.error)}")


@rule("CUSE-INTR-001",
      "A READ waiting on an empty device stays unanswered; INTERRUPTed, it is answered (EINTR, or "
      "data), exactly once, and the device serves on",
      source=f"{KERNEL}; fuse.rst (interrupting requests)", area="cuse", feature="INTERRUPT",
      opcodes=("FUSE_READ", "FUSE_INTERRUPT"))
def test_interrupt_blocked_read(device: KernelConnection, cuse_target: CuseTarget) -> None:
    _fifo(cuse_target)
    fh = _open(device)
    unique = device.send(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=64), nodeid=0)
    early = device.quiet(QUIET)
    assert not [e for e in early if isinstance(e, Reply)], f"a READ of an empty device was answered: {early}"
    device.channel.send(device.session.interrupt(unique), timeout=device.timeout)
    reply = device.wait(unique)
    assert_well_formed(reply)
    assert reply.error in (-errno.EINTR, 0), f"the interrupted READ answered {errno_name(reply.error)}"
    assert not [e for e in device.quiet(QUIET) if isinstance(e, Reply)], "a second answer came"
    _write(device, fh, b"after")
    read = device.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=64), nodeid=0)
    assert read.ok and read.raw[16:] == b"after", f"after the interrupt READ gave {read.raw[16:]!r}"


@rule("CUSE-POLL-001",
      "POLL answers the events ready now (POLLOUT on an empty device, POLLIN once written); asked "
      "with FUSE_POLL_SCHEDULE_NOTIFY while nothing is readable, the device sends NOTIFY_POLL with "
      "the poll's kh when data arrives",
      source=f"{KERNEL}; uapi linux/fuse.h (fuse_poll_in, fuse_notify_poll_wakeup_out)", area="cuse",
      feature="POLL", opcodes=("FUSE_POLL",))
def test_poll_and_wakeup(device: KernelConnection, cuse_target: CuseTarget) -> None:
    _fifo(cuse_target)
    fh = _open(device)
    events = select.POLLIN | select.POLLOUT
    empty = device.call(c.FUSE_POLL, FusePollIn(fh=fh, kh=7, flags=c.FUSE_POLL_SCHEDULE_NOTIFY,
                                                events=events), nodeid=0)
    assert empty.ok and empty.body is not None, f"POLL answered {errno_name(empty.error)}"
    assert_well_formed(empty)
    revents = int(empty.body.revents)
    assert revents & events == select.POLLOUT, f"empty device: revents {revents:#x}"
    _write(device, fh, b"x")
    deadline = time.monotonic() + device.timeout
    while time.monotonic() < deadline and not any(
            n.code == c.FUSE_NOTIFY_POLL for n in device.notifications):
        device.quiet(0.05)
    wakeups = [n for n in device.notifications if isinstance(n, Notify) and n.code == c.FUSE_NOTIFY_POLL]
    assert wakeups, "no NOTIFY_POLL after the write that made the device readable"
    assert_well_formed(wakeups[0])
    assert int(wakeups[0].packet.kh) == 7, f"NOTIFY_POLL for kh {wakeups[0].packet.kh}, not 7"
    ready = device.call(c.FUSE_POLL, FusePollIn(fh=fh, kh=8, events=events), nodeid=0)
    assert ready.ok and ready.body is not None, f"POLL answered {errno_name(ready.error)}"
    assert int(ready.body.revents) & select.POLLIN, f"revents {int(ready.body.revents):#x} after a write"
