"""A kernel session and a daemon session in memory: what one sends, the other takes
without findings, at every minor, compat sizes included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.packet import Raw

from protocol import constants as c
from protocol import state as st_
from protocol.events import Reply
from protocol.layers import (
    FuseAttr,
    FuseAttrOut,
    FuseCreateIn,
    FuseDirent,
    FuseDirentList,
    FuseEntryOut,
    FuseGetattrIn,
    FuseMknodIn,
    FuseName,
    FuseOpenOut,
    FuseReadIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.server import DaemonSession
from protocol.session import KernelSession

MINORS = [5, 8, 9, 11, 12, 22, 23, 31, 36, 38, 45]


def pair(minor: int, daemon_minor: int = 45) -> tuple[KernelSession, DaemonSession]:
    kernel = KernelSession()
    daemon = DaemonSession(minor=daemon_minor, want=c.FUSE_ASYNC_READ | c.FUSE_MAX_PAGES
                           | c.FUSE_SECURITY_CTX)
    request = daemon.receive(kernel.init(minor=minor))
    assert not request.findings, request.findings
    reply = kernel.receive(daemon.accept_init(request))
    assert not reply.findings, reply.findings
    assert kernel.state == daemon.state == st_.RUNNING
    return kernel, daemon


def exchange(kernel: KernelSession, daemon: DaemonSession, opcode: int, request_layers: tuple,
             reply_layers: tuple, **header: Any) -> Reply:
    request = daemon.receive(kernel.request(opcode, *request_layers, **header))
    assert not request.findings, request.findings
    reply = kernel.receive(daemon.reply(request, *reply_layers))
    assert isinstance(reply, Reply) and not reply.findings, reply.findings
    return reply


@pytest.mark.parametrize("minor", MINORS)
def test_everyday_exchanges_at_every_minor(minor: int) -> None:
    kernel, daemon = pair(minor)
    assert kernel.negotiated and kernel.negotiated.minor == daemon.proto_minor == min(minor, 45)
    attr = FuseAttr(ino=1, mode=0o40755, nlink=2)
    reply = exchange(kernel, daemon, c.FUSE_LOOKUP, (FuseName(name=b"a"),),
                     (FuseEntryOut(nodeid=2, attr=attr),))
    assert reply.body is not None and reply.body.nodeid == 2
    exchange(kernel, daemon, c.FUSE_GETATTR, (FuseGetattrIn(),), (FuseAttrOut(attr=attr),))
    exchange(kernel, daemon, c.FUSE_MKNOD, (FuseMknodIn(mode=0o100644), FuseName(name=b"f")),
             (FuseEntryOut(nodeid=3, attr=FuseAttr(mode=0o100644)),))
    exchange(kernel, daemon, c.FUSE_CREATE, (FuseCreateIn(mode=0o100644), FuseName(name=b"g")),
             (FuseEntryOut(nodeid=4, attr=FuseAttr(mode=0o100644)), FuseOpenOut(fh=9)))
    exchange(kernel, daemon, c.FUSE_WRITE, (FuseWriteIn(fh=9, size=3), Raw(b"abc")),
             (FuseWriteOut(size=3),), nodeid=4)
    listing = FuseDirentList(dirents=[FuseDirent(ino=1, off=1, type=4, name=b".")])
    exchange(kernel, daemon, c.FUSE_READDIR, (FuseReadIn(size=4096),), (listing,))


def test_daemon_speaking_an_older_minor() -> None:
    kernel, _daemon = pair(45, daemon_minor=31)
    assert kernel.negotiated and kernel.negotiated.minor == 31


@pytest.mark.parametrize("major", [6, 8])
def test_other_majors(major: int) -> None:
    kernel, daemon = KernelSession(), DaemonSession()
    request = daemon.receive(kernel.init(major=major))
    reply = kernel.receive(daemon.accept_init(request))
    assert isinstance(reply, Reply) and kernel.state == st_.AWAIT_INIT
    assert (reply.error == -71) if major < 7 else (reply.body is not None and reply.body.major == 7)


def test_daemon_findings_on_bad_requests() -> None:
    kernel, daemon = pair(45)
    assert "request.len-mismatch" in _codes(daemon.receive(
        kernel.request(c.FUSE_GETATTR, FuseGetattrIn(), length=12)))
    assert "request.unknown-opcode" in _codes(daemon.receive(kernel.request(7)))
    assert "request.name" in _codes(daemon.receive(
        kernel.request(c.FUSE_LOOKUP, Raw(b"no-nul"))))
    assert "request.write-size" in _codes(daemon.receive(
        kernel.request(c.FUSE_WRITE, FuseWriteIn(size=9), Raw(b"abc"))))
    assert "request.body-size" in _codes(daemon.receive(kernel.request(c.FUSE_READ, Raw(b"x"))))
    fresh = DaemonSession()
    assert "request.before-init" in _codes(fresh.receive(KernelSession().request(c.FUSE_STATFS)))


def _codes(request) -> set[str]:
    return {f.code for f in request.findings}


@given(minor=st.sampled_from(MINORS), name=st.binary(min_size=1, max_size=255).map(
    lambda b: b.replace(b"\0", b"x").replace(b"/", b"x")), data=st.binary(max_size=512))
def test_pairs_agree_on_random_names_and_data(minor: int, name: bytes, data: bytes) -> None:
    kernel, daemon = pair(minor)
    request = daemon.receive(kernel.request(c.FUSE_LOOKUP, FuseName(name=name)))
    assert not request.findings and bytes(request.packet.payload)[:-1] == name
    request = daemon.receive(kernel.request(c.FUSE_WRITE, FuseWriteIn(size=len(data)), Raw(data)))
    assert not request.findings
    write_in = request.packet[FuseWriteIn]
    assert write_in.size == len(data) and bytes(write_in.payload) == data


def test_daemon_notifications_carry_their_length() -> None:
    """A notification's fuse_out_header.len is the whole message (the kernel refuses any other:
    fuse_dev_do_write); found when the reference CUSE device sent NOTIFY_POLL."""
    from protocol.layers.notify import FuseNotifyPollWakeupOut
    from protocol.server import DaemonSession
    from protocol.session import KernelSession

    message = DaemonSession().notify(c.FUSE_NOTIFY_POLL, FuseNotifyPollWakeupOut(kh=7))
    event = KernelSession().receive(message)
    assert int.from_bytes(message[:4], "little") == len(message) == 24
    assert not event.findings, event.findings
