"""The reference server's express lane answers byte for byte as the general path does.

Three servers on the same clock and model take the same request sequences at
minors on each side of the compat sizes, as root and as a user: one with the
express lane, one with the codec path alone, one with scapy alone.  Their
replies must be equal; the lane must really be taken for clean hot requests
and must step aside for what it does not cover (a broken request, a compat
reply size, a mutant, an audit, a request whose unique is still waiting).
"""

from __future__ import annotations

import fcntl
import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.events import Reply
from protocol.layers import (
    FuseAccessIn,
    FuseFileLock,
    FuseFlushIn,
    FuseGetattrIn,
    FuseLkIn,
    FuseName,
    FuseOpenIn,
    FuseReadIn,
    FuseSetattrIn,
    FuseWriteIn,
)
from protocol.session import KernelSession
from targets.reference import express
from targets.reference.__main__ import seed
from targets.reference.fs import Filesystem
from targets.reference.server import Options, ReferenceServer
from tests.test_fast_path import step

#: 8: fuse_attr_out and fuse_entry_out have their compat sizes; 22: init_out's; 45: none
MINORS = [8, 22, 45]


def server(kernel: KernelSession, lane: str, **options: Any) -> ReferenceServer:
    """A seeded server after INIT with ``kernel``: lane "express", "codec" or "scapy"."""
    clock = itertools.count(1_700_000_000_000_000_000, 1_000_003)
    fs = Filesystem(clock=lambda: next(clock), acl=options.get("acl", True))
    seed(fs)
    srv = ReferenceServer(fs, Options(**options), fast=lane != "scapy")
    srv.express = lane == "express"
    assert srv.handle(KernelSession(minor=kernel.minor).init()) is not None
    return srv


class Counted:
    """Counts the requests the express lane answers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[int] = []
        answer = express.answer

        def counted(srv: ReferenceServer, data: bytes) -> bytes | None:
            reply = answer(srv, data)
            if reply is not None:
                self.taken.append(int.from_bytes(data[4:8], "little"))
            return reply

        monkeypatch.setattr(express, "answer", counted)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), minor=st.sampled_from(MINORS), uid=st.sampled_from([0, 1000]),
       cache=st.sampled_from(["none", "auto", "always"]), acl=st.booleans())
def test_lanes_answer_alike(monkeypatch: pytest.MonkeyPatch, data: st.DataObject, minor: int,
                            uid: int, cache: str, acl: bool) -> None:
    counted = Counted(monkeypatch)
    kernel = KernelSession(minor=minor, uid=uid, gid=uid, pid=os.getpid())
    kernel.init()
    servers = [server(kernel, lane, cache=cache, acl=acl) for lane in ("express", "codec", "scapy")]
    nodes, fhs, dirs = [1], [0], [0]
    preamble: list[tuple[int, list[Packet], int]] = [
        (c.FUSE_LOOKUP, [FuseName(name=n)], 1) for n in (b"hello.txt", b"dir", b"link")]
    preamble += [(c.FUSE_OPEN, [FuseOpenIn(flags=os.O_RDWR)], 2), (c.FUSE_OPENDIR, [FuseOpenIn()], 1)]
    for i in range(len(preamble) + data.draw(st.integers(1, 30))):
        if i < len(preamble):
            opcode, layers, nodeid = preamble[i]
        else:
            opcode, layers, nodeid = data.draw(st.composite(lambda d: step(d, nodes, fhs, dirs))())
        who = data.draw(st.sampled_from([uid, uid, 0, 1000]))  # now and then another caller
        raw = kernel.request(opcode, *layers, nodeid=nodeid, uid=who, gid=who)
        answers = [srv.handle(raw) for srv in servers]
        assert answers[0] == answers[1] == answers[2], c.OPCODE_NAMES[opcode]
        if answers[0] is None:
            kernel.forget_pending(kernel.last_unique)
            continue
        reply = kernel.receive(answers[0])
        assert isinstance(reply, Reply) and not reply.findings, reply.findings
        if reply.ok and opcode in (c.FUSE_LOOKUP, c.FUSE_CREATE):
            nodes.append(int(reply.body.nodeid))  # type: ignore[union-attr]
        if reply.ok and opcode in (c.FUSE_OPEN, c.FUSE_CREATE, c.FUSE_OPENDIR):
            (dirs if opcode == c.FUSE_OPENDIR else fhs).append(int(reply.packet.lastlayer().fh))
    if minor == 45:  # every request of the preamble is clean and hot
        assert counted.taken[:len(preamble)] == [opcode for opcode, _, _ in preamble]
    if minor == 8:  # entry and attr replies have compat sizes there: the general path's
        assert not {c.FUSE_LOOKUP, c.FUSE_GETATTR} & set(counted.taken)


def test_the_lane_takes_clean_hot_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(monkeypatch)
    kernel = KernelSession()
    kernel.init()
    srv = server(kernel, "express")
    for opcode, layers in ((c.FUSE_GETATTR, [FuseGetattrIn()]), (c.FUSE_STATFS, []),
                           (c.FUSE_LOOKUP, [FuseName(name=b"hello.txt")])):
        reply = kernel.receive(srv.handle(kernel.request(opcode, *layers)) or b"")
        assert isinstance(reply, Reply) and reply.ok and not reply.findings
    assert counted.taken == [c.FUSE_GETATTR, c.FUSE_STATFS, c.FUSE_LOOKUP]


def test_the_lane_steps_aside(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    counted = Counted(monkeypatch)
    kernel = KernelSession()
    kernel.init()
    srv = server(kernel, "express")
    short = kernel.request(c.FUSE_READ, FuseReadIn(fh=1))[:-8]  # a body cut short: EINVAL
    reply = kernel.receive(srv.handle(short) or b"")
    assert isinstance(reply, Reply) and reply.error == -22
    unique = kernel.last_unique
    kernel.forget_pending(unique)
    srv.session.pending[unique + 1] = c.FUSE_SETLKW  # as if that unique were still waiting
    again = kernel.request(c.FUSE_GETATTR, FuseGetattrIn(), unique=unique + 1)
    assert srv.handle(again) is not None
    assert counted.taken == []
    assert not ReferenceServer(options=Options(mutant="wrong-unique")).express
    audited = ReferenceServer(options=Options(audit=str(tmp_path / "audit")))
    audited.handle(kernel.init())
    audited.handle(kernel.request(c.FUSE_GETATTR, FuseGetattrIn()))
    assert counted.taken == []


def test_the_lane_checks_permissions_as_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user in a directory it may read but not search, and on a file it may not write."""
    counted = Counted(monkeypatch)
    kernel = KernelSession(pid=os.getpid())
    kernel.init()
    servers = [server(kernel, lane) for lane in ("express", "codec", "scapy")]

    def ask(opcode: int, *layers: Packet, nodeid: int = 1, uid: int = 0) -> Reply:
        raw = kernel.request(opcode, *layers, nodeid=nodeid, uid=uid, gid=uid)
        answers = [srv.handle(raw) for srv in servers]
        assert answers[0] == answers[1] == answers[2], c.OPCODE_NAMES[opcode]
        reply = kernel.receive(answers[0] or b"")
        assert isinstance(reply, Reply) and not reply.findings
        return reply

    directory = int(ask(c.FUSE_LOOKUP, FuseName(name=b"dir")).body.nodeid)  # type: ignore[union-attr]
    ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=0o40744), nodeid=directory)
    assert ask(c.FUSE_LOOKUP, FuseName(name=b"data.bin"), nodeid=directory, uid=1000).error == -13
    assert ask(c.FUSE_ACCESS, FuseAccessIn(mask=os.X_OK), nodeid=directory, uid=1000).error == -13
    assert ask(c.FUSE_ACCESS, FuseAccessIn(mask=os.R_OK), nodeid=directory, uid=1000).ok
    assert ask(c.FUSE_OPEN, FuseOpenIn(flags=os.O_WRONLY), nodeid=2, uid=1000).error == -13
    opened = ask(c.FUSE_OPENDIR, FuseOpenIn(), nodeid=directory, uid=1000)
    fh = int(opened.packet.lastlayer().fh)
    listing = ask(c.FUSE_READDIRPLUS, FuseReadIn(fh=fh, size=4096), nodeid=directory, uid=1000)
    assert listing.ok and b"data.bin" in listing.raw
    assert set(counted.taken) >= {c.FUSE_LOOKUP, c.FUSE_ACCESS, c.FUSE_OPEN, c.FUSE_OPENDIR,
                                  c.FUSE_READDIRPLUS}


def test_the_lane_passes_write_flags_and_lock_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    """WRITE's FUSE_WRITE_KILL_SUIDGID drops the setuid bit; FLUSH drops its owner's locks."""
    counted = Counted(monkeypatch)
    kernel = KernelSession(pid=os.getpid())
    kernel.init()
    servers = [server(kernel, lane) for lane in ("express", "codec", "scapy")]

    def ask(opcode: int, *layers: Packet, nodeid: int = 2) -> Reply:
        raw = kernel.request(opcode, *layers, nodeid=nodeid)
        answers = [srv.handle(raw) for srv in servers]
        assert answers[0] == answers[1] == answers[2], c.OPCODE_NAMES[opcode]
        reply = kernel.receive(answers[0] or b"")
        assert isinstance(reply, Reply) and reply.ok and not reply.findings, reply
        return reply

    ask(c.FUSE_LOOKUP, FuseName(name=b"hello.txt"), nodeid=1)
    ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=0o104755))
    fh = int(ask(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDWR)).packet.lastlayer().fh)
    ask(c.FUSE_WRITE, FuseWriteIn(fh=fh, size=2, write_flags=c.FUSE_WRITE_KILL_SUIDGID), Raw(b"hi"))
    assert int(ask(c.FUSE_GETATTR, FuseGetattrIn()).body.attr.mode) == 0o100755  # type: ignore[union-attr]
    lock = FuseFileLock(start=0, end=10, type=fcntl.F_WRLCK, pid=1)
    ask(c.FUSE_SETLK, FuseLkIn(fh=fh, owner=7, lk=lock))
    probe = FuseLkIn(fh=fh, owner=8, lk=lock)
    assert int(ask(c.FUSE_GETLK, probe).body.lk.type) == fcntl.F_WRLCK  # type: ignore[union-attr]
    ask(c.FUSE_FLUSH, FuseFlushIn(fh=fh, lock_owner=7))
    assert int(ask(c.FUSE_GETLK, probe).body.lk.type) == fcntl.F_UNLCK  # type: ignore[union-attr]
    assert {c.FUSE_WRITE, c.FUSE_FLUSH, c.FUSE_GETATTR} <= set(counted.taken)
