"""The codec fast path says what the scapy path says: same decoded fields, bytes and findings.

For the hot opcodes, random valid messages and broken ones (cut, extended, lying
lengths and extension counts, random bytes) go through both paths of each role:
``DaemonSession(fast=True)`` against ``fast=False`` for requests,
``KernelSession(fast=True)`` against ``fast=False`` for request bytes and replies,
and two reference servers on the same clock, one with the fast path and one
without, for whole request sequences.
"""

from __future__ import annotations

import itertools
import os
import stat
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.packet import NoPayload, Packet, Raw

from fuzz.strategies import replies, requests
from protocol import constants as c
from protocol.codec import Encoded, codec
from protocol.events import Reply, Request
from protocol.layers import (
    FuseAccessIn,
    FuseCreateIn,
    FuseDirent,
    FuseDirentplus,
    FuseEntryOut,
    FuseFlushIn,
    FuseForgetIn,
    FuseForgetOne,
    FuseGetattrIn,
    FuseGetxattrIn,
    FuseInHeader,
    FuseInterruptIn,
    FuseName,
    FuseOpenIn,
    FuseOutHeader,
    FuseReadIn,
    FuseReleaseIn,
    FuseSetattrIn,
    FuseSetxattrIn,
    FuseWriteIn,
)
from protocol.layers.base import fixed_size
from protocol.layers.messages import NO_REPLY, REQUEST_LAYERS
from protocol.server import HOT, DaemonSession
from protocol.session import KernelSession
from targets.reference.__main__ import seed
from targets.reference.fs import Filesystem
from targets.reference.mutants import Applied, Mutant
from targets.reference.server import Options, ReferenceServer

HOT_OPCODES = sorted(HOT)
ANSWERED = [op for op in HOT_OPCODES if op not in NO_REPLY]
#: minors on each side of the compat sizes (write_in 9, mknod/create_in 12, init_out 23)
MINORS = st.sampled_from([8, 11, 22, 31, 45])
FLAGS = st.sampled_from([0, c.FUSE_SETXATTR_EXT])
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- broken messages ----------------------------------------------------------------
@st.composite
def broken(draw: st.DrawFn, data: bytes, header: int) -> bytes:
    """``data`` as it is, or cut, extended, with a lying u32 at ``len`` or u16 at
    ``total_extlen`` (requests), or with a run of random bytes."""
    how = draw(st.sampled_from(["same", "cut", "extend", "len", "extlen", "bytes"]))
    if how == "cut":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "extend":
        return data + draw(st.binary(min_size=1, max_size=64))
    if how == "len":
        return draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little") + data[4:]
    if how == "extlen" and header == 40 and len(data) >= 40:
        offset = codec(FuseInHeader).field("total_extlen")[1]
        return data[:offset] + draw(st.integers(0, 2**16 - 1)).to_bytes(2, "little") + data[offset + 2:]
    if how == "bytes" and len(data) > header:
        at = draw(st.integers(header, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=len(data) - at))
        return data[:at] + junk + data[at + len(junk):]
    return data


def negotiated_daemon(fast: bool, minor: int, flags: int) -> DaemonSession:
    """A daemon session after INIT with a kernel speaking ``minor``, ``flags`` agreed."""
    kernel = KernelSession(minor=minor, flags=flags | c.FUSE_INIT_EXT if minor >= 36 else flags)
    daemon = DaemonSession(want=flags, fast=fast)
    daemon.accept_init(daemon.receive(kernel.init()))
    return daemon


def values(layer: Any, cls: type[Packet]) -> tuple[Any, ...]:
    return tuple(getattr(layer, name) for name in codec(cls).names)


def outcome(fn: Any) -> Any:
    """What ``fn()`` gives, or the type of what it raises."""
    try:
        return fn()
    except Exception as exc:  # the paths must fail alike
        return type(exc)


# -- the daemon's role: requests ------------------------------------------------------
@EXAMPLES
@given(data=st.data(), minor=MINORS, flags=FLAGS, opcode=st.sampled_from(HOT_OPCODES))
def test_requests_decode_alike(data: st.DataObject, minor: int, flags: int, opcode: int) -> None:
    sent = bytes(data.draw(requests(opcode)))
    raw = data.draw(broken(sent, 40))
    fast = negotiated_daemon(True, minor, flags).receive(raw)
    slow = negotiated_daemon(False, minor, flags).receive(raw)
    assert (fast.unique, fast.opcode, fast.nodeid, fast.raw, fast.findings) == \
        (slow.unique, slow.opcode, slow.nodeid, slow.raw, slow.findings)
    if len(raw) >= 40:
        assert values(fast.header, FuseInHeader) == values(slow.header, FuseInHeader)
    compare_accessors(fast, slow)
    if raw == sent and not fast.findings and minor >= 12:  # as built, no compat layout: the
        assert not fast.dissected  # accessors read the codec's records
    assert bytes(fast.packet) == bytes(slow.packet) and repr(fast.packet) == repr(slow.packet)
    compare_accessors(fast, slow)  # now from the packet on both sides


def compare_accessors(fast: Request, slow: Request) -> None:
    layers = REQUEST_LAYERS.get(fast.opcode, ())
    first = layers[0] if layers and layers[0] is not FuseName else None
    if first is not None:
        assert outcome(lambda: values(fast.layer(first), first)) == \
            outcome(lambda: values(slow.layer(first), first))
        assert outcome(lambda: fast.data(first)) == outcome(lambda: slow.data(first))
    assert outcome(fast.names) == outcome(slow.names)
    one = [values(r, FuseForgetOne) for r in fast.records(FuseForgetOne)]
    assert one == [values(r, FuseForgetOne) for r in slow.records(FuseForgetOne)]


def test_a_well_formed_request_is_never_dissected() -> None:
    daemon = negotiated_daemon(True, 45, c.FUSE_SETXATTR_EXT)
    kernel = KernelSession()
    raw = kernel.request(c.FUSE_CREATE, FuseCreateIn(flags=2, mode=0o100644, umask=0o22),
                         FuseName(name=b"new"))
    request = daemon.receive(raw)
    assert request.layer(FuseCreateIn).mode == 0o100644 and request.names() == [b"new"]
    assert request.header.pid == kernel.pid and not request.dissected
    request.packet[FuseCreateIn].mode = 0o100600  # what a mutant's request hook does
    assert request.dissected and request.layer(FuseCreateIn).mode == 0o100600


# -- the kernel's role: request bytes and replies ------------------------------------
def negotiated_kernel(fast: bool, minor: int, flags: int) -> KernelSession:
    kernel = KernelSession(fast=fast)
    daemon = DaemonSession(minor=minor, want=flags | c.FUSE_INIT_EXT)
    kernel.receive(daemon.accept_init(daemon.receive(kernel.init())))
    return kernel


def body_of(message: Packet) -> list[Packet]:
    """The layers after the header of a drawn message, each standing alone."""
    parts, layer = [], message.payload
    while not isinstance(layer, NoPayload):
        part = layer.copy()
        part.remove_payload()
        parts.append(part)
        layer = layer.payload
    return parts


@EXAMPLES
@given(data=st.data(), minor=MINORS, flags=FLAGS, opcode=st.sampled_from(ANSWERED))
def test_replies_are_judged_alike(data: st.DataObject, minor: int, flags: int, opcode: int) -> None:
    fast, slow = negotiated_kernel(True, minor, flags), negotiated_kernel(False, minor, flags)
    parts = body_of(data.draw(requests(opcode)))
    sent = fast.request(opcode, *parts, nodeid=5)
    assert sent == slow.request(opcode, *parts, nodeid=5)
    kind = data.draw(st.sampled_from(["reply", "error", "other unique"]))
    unique = fast.last_unique if kind != "other unique" else data.draw(st.integers(1, 2**64 - 1))
    if kind == "error":
        reply: Packet = FuseOutHeader(unique=unique, error=data.draw(st.integers(-600, 600)))
    else:
        reply = data.draw(replies(opcode))
        reply.unique = unique
    raw = data.draw(broken(bytes(reply), 16))
    if len(raw) < 16:
        return  # RemoteProtocolError on both paths (tests/test_session.py)
    got, want = fast.receive(raw), slow.receive(raw)
    compare_replies(got, want)


def compare_replies(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.findings == want.findings
    assert (got.raw, getattr(got, "unique", 0), getattr(got, "opcode", 0)) == \
        (want.raw, getattr(want, "unique", 0), getattr(want, "opcode", 0))
    assert bytes(got.packet) == bytes(want.packet) and repr(got.packet) == repr(want.packet)
    if isinstance(got, Reply):
        assert repr(got.body) == repr(want.body) and got.error == want.error
        assert repr(got.request) == repr(want.request)


@EXAMPLES
@given(data=st.data(), opcode=st.sampled_from(ANSWERED))
def test_observed_requests_are_judged_alike(data: st.DataObject, opcode: int) -> None:
    """The audit's way: requests another kernel sent, then the daemon's reply."""
    sent = bytes(data.draw(requests(opcode)))
    fast, slow = KernelSession(fast=True), KernelSession(fast=False)
    for kernel in (fast, slow):
        kernel.observe(sent)
    unique = codec(FuseInHeader).record(sent).unique
    reply = data.draw(replies(opcode))
    reply.unique = unique
    raw = data.draw(broken(bytes(reply), 16))
    if len(raw) >= 16:
        compare_replies(fast.receive(raw), slow.receive(raw))


@EXAMPLES
@given(data=st.data(), opcode=st.sampled_from(HOT_OPCODES))
def test_request_bytes_alike(data: st.DataObject, opcode: int) -> None:
    """Header values and lies (length, total_extlen, extensions) encode the same way."""
    parts = body_of(data.draw(requests(opcode)))
    kw: dict[str, Any] = data.draw(st.fixed_dictionaries({}, optional={
        "length": st.integers(0, 2**32 - 1), "total_extlen": st.integers(0, 2**16 - 1),
        "extensions": st.binary(max_size=24), "uid": st.integers(0, 2**32 - 1),
        "nodeid": st.integers(0, 2**64 - 1)}))
    fast, slow = KernelSession(fast=True), KernelSession(fast=False)
    assert outcome(lambda: fast.request(opcode, *parts, **kw)) == \
        outcome(lambda: slow.request(opcode, *parts, **kw))


# -- the reference server: the same replies from the same model -----------------------
def server(fast: bool, **options: Any) -> ReferenceServer:
    clock = itertools.count(1_700_000_000_000_000_000, 1_000_003)
    fs = Filesystem(clock=lambda: next(clock), acl=options.get("acl", True))
    seed(fs)
    srv = ReferenceServer(fs, Options(**options), fast=fast)
    kernel = KernelSession()
    assert srv.handle(kernel.init()) is not None
    return srv


NAMES = st.sampled_from([b"hello.txt", b"dir", b"link", b"new", b"x" * 40, b"."])
XATTRS = st.sampled_from([b"user.a", b"user.b", b"system.posix_acl_access"])


def step(draw: st.DrawFn, nodes: list[int], fhs: list[int], dirs: list[int]
         ) -> tuple[int, list[Packet], int]:
    """(opcode, body layers, nodeid) of one hot request (or SETXATTR, to have xattrs), its
    nodeid and handle drawn from those the server gave out."""
    node, fh = draw(st.sampled_from(nodes)), draw(st.sampled_from(fhs))
    dfh = draw(st.sampled_from(dirs))
    size = draw(st.sampled_from([0, 3, 100, 4096, 9000]))
    offset = draw(st.one_of(st.integers(0, 24), st.integers(0, 5000)))  # within the seeded files, or past
    data = draw(st.binary(min_size=1, max_size=300))
    choices: dict[int, tuple[list[Packet], int]] = {
        c.FUSE_LOOKUP: ([FuseName(name=draw(NAMES))], draw(st.sampled_from([1, *nodes]))),
        c.FUSE_GETATTR: ([FuseGetattrIn()], node),
        c.FUSE_SETATTR: ([FuseSetattrIn(valid=draw(st.sampled_from(
            [c.FATTR_MODE, c.FATTR_SIZE, c.FATTR_MTIME | c.FATTR_ATIME, c.FATTR_UID])),
            mode=draw(st.sampled_from([0o100644, 0o100755, 0o104755])), size=offset)], node),
        c.FUSE_OPEN: ([FuseOpenIn(flags=draw(st.sampled_from([0, 1, 2])))], node),
        c.FUSE_OPENDIR: ([FuseOpenIn()], node),
        c.FUSE_READ: ([FuseReadIn(fh=fh, offset=offset, size=size)], node),
        c.FUSE_READDIR: ([FuseReadIn(fh=dfh, offset=draw(st.integers(0, 6)), size=size)], node),
        c.FUSE_READDIRPLUS: ([FuseReadIn(fh=dfh, offset=draw(st.integers(0, 6)), size=size)], node),
        c.FUSE_WRITE: ([FuseWriteIn(fh=fh, offset=offset, size=len(data)), Raw(data)], node),
        c.FUSE_RELEASE: ([FuseReleaseIn(fh=fh)], node),
        c.FUSE_RELEASEDIR: ([FuseReleaseIn(fh=dfh)], node),
        c.FUSE_FLUSH: ([FuseFlushIn(fh=fh)], node),
        c.FUSE_STATFS: ([], node),
        c.FUSE_ACCESS: ([FuseAccessIn(mask=draw(st.integers(0, 7)))], node),
        c.FUSE_CREATE: ([FuseCreateIn(flags=os.O_RDWR, mode=stat.S_IFREG | 0o644, umask=0o22),
                         FuseName(name=draw(NAMES))], draw(st.sampled_from([1, *nodes]))),
        c.FUSE_GETXATTR: ([FuseGetxattrIn(size=size), FuseName(name=draw(XATTRS))], node),
        c.FUSE_LISTXATTR: ([FuseGetxattrIn(size=size)], node),
        c.FUSE_SETXATTR: ([FuseSetxattrIn(size=len(data)), FuseName(name=draw(XATTRS)), Raw(data)],
                          node),
        c.FUSE_FORGET: ([FuseForgetIn(nlookup=1)], node),
        c.FUSE_INTERRUPT: ([FuseInterruptIn(unique=draw(st.integers(1, 50)))], 0),
    }
    opcode = draw(st.sampled_from(sorted(choices)))
    return opcode, *choices[opcode]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), uid=st.sampled_from([0, 0, 1000]),
       cache=st.sampled_from(["none", "auto", "always"]), acl=st.booleans())
def test_servers_answer_alike(data: st.DataObject, uid: int, cache: str, acl: bool) -> None:
    fast, slow = server(True, cache=cache, acl=acl), server(False, cache=cache, acl=acl)
    assert fast.encode_fast and not slow.encode_fast
    kernel = KernelSession(uid=uid, gid=uid, pid=os.getpid())
    nodes, fhs, dirs = [1], [0], [0]
    preamble: list[tuple[int, list[Packet], int]] = [
        (c.FUSE_LOOKUP, [FuseName(name=n)], 1) for n in (b"hello.txt", b"dir", b"link")]
    preamble += [(c.FUSE_OPEN, [FuseOpenIn(flags=os.O_RDWR)], 2), (c.FUSE_OPENDIR, [FuseOpenIn()], 1)]
    steps = data.draw(st.integers(1, 30))
    for i in range(len(preamble) + steps):
        if i < len(preamble):
            opcode, layers, nodeid = preamble[i]
        else:
            opcode, layers, nodeid = data.draw(st.composite(lambda d: step(d, nodes, fhs, dirs))())
        raw = kernel.request(opcode, *layers, nodeid=nodeid)
        answer = fast.handle(raw)
        assert answer == slow.handle(raw), c.OPCODE_NAMES[opcode]
        if answer is None:
            kernel.forget_pending(kernel.last_unique)
            continue
        reply = kernel.receive(answer)
        assert isinstance(reply, Reply) and not reply.findings, reply.findings
        if reply.ok and opcode in (c.FUSE_LOOKUP, c.FUSE_CREATE):
            nodes.append(int(reply.body.nodeid))  # type: ignore[union-attr]
        if reply.ok and opcode in (c.FUSE_OPEN, c.FUSE_CREATE, c.FUSE_OPENDIR):
            opened = reply.packet.lastlayer()
            (dirs if opcode == c.FUSE_OPENDIR else fhs).append(int(opened.fh))
    assert fast.fs.inodes.keys() == slow.fs.inodes.keys()  # type: ignore[union-attr]


@EXAMPLES
@given(inode_fields=st.fixed_dictionaries({
    "ino": st.integers(1, 2**64 - 1), "mode": st.integers(0, 2**32 - 1),
    "uid": st.integers(0, 2**32 - 1), "gid": st.integers(0, 2**32 - 1),
    "generation": st.integers(0, 2**64 - 1), "nlink": st.integers(0, 2**32 - 1),
    "rdev": st.integers(0, 2**32 - 1), "size": st.integers(0, 2**63 - 1),
    "atime": st.integers(0, 2**63 - 1), "mtime": st.integers(0, 2**63 - 1),
    "ctime": st.integers(0, 2**63 - 1)}), cache=st.sampled_from(["none", "auto", "always"]))
def test_reply_parts_encode_alike(inode_fields: dict[str, Any], cache: str) -> None:
    from targets.reference.fs_types import Inode
    from targets.reference.server import _dirent

    inode = Inode(**inode_fields)
    fast, slow = ReferenceServer(options=Options(cache=cache)), \
        ReferenceServer(options=Options(cache=cache), fast=False)
    for make in (lambda s: s.entry(inode), lambda s: s.attr_out(inode),
                 lambda s: s.open_out(inode.ino), lambda s: s.raw(b"abc")):
        part = make(fast)
        assert isinstance(part, Encoded) and part.data == bytes(make(slow)) and part.cls is type(make(slow))
    for plus in (False, True):
        entry_fast = fast.entry(inode) if plus else None
        entry_slow = slow.entry(inode) if plus else None
        for name in (b"a", b"abcdefgh", b"x" * 13):
            raw = _dirent(fast, inode.ino, 7, 4, name, plus, entry_fast)
            packet = _dirent(slow, inode.ino, 7, 4, name, plus, entry_slow)
            assert raw == bytes(packet)
            assert isinstance(packet, FuseDirentplus if plus else FuseDirent)
    assert _dirent(fast, 1, 2, 4, b"n", True, None)[: fixed_size(FuseEntryOut)] == bytes(FuseEntryOut())


# -- mutants ----------------------------------------------------------------------------
def test_a_result_hook_turns_the_encoding_to_packets() -> None:
    srv = ReferenceServer(options=Options(mutant="nlink-off-by-one"))
    assert not srv.encode_fast and srv.session.fast
    assert ReferenceServer(options=Options(mutant="wrong-unique")).encode_fast  # bytes only


def test_a_request_hook_is_seen_by_the_handler() -> None:
    """A hook editing the packet of a hot request: the handler reads the edited value."""
    def chmod_0600(srv: Any, req: Request) -> None:
        if req.opcode == c.FUSE_SETATTR:
            req.packet[FuseSetattrIn].mode = stat.S_IFREG | 0o600

    srv = server(True)
    srv.mutant = Applied(Mutant("test", "metadata", "chmod makes 0600", (), request=chmod_0600))
    kernel = KernelSession()
    nodeid = int.from_bytes(srv.handle(kernel.request(c.FUSE_LOOKUP, FuseName(name=b"hello.txt")))
                            [16:24], "little")  # type: ignore[index]
    reply = srv.handle(kernel.request(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=0o100755),
                                      nodeid=nodeid))
    assert reply is not None and srv.fs.getattr(nodeid).mode == stat.S_IFREG | 0o600


@pytest.mark.parametrize("opcode", HOT_OPCODES, ids=lambda op: c.OPCODE_NAMES[op])
def test_every_hot_opcode_has_a_plan(opcode: int) -> None:
    """Each hot request's first part is a flat struct the codec reads, or a name, or nothing."""
    layers = REQUEST_LAYERS[opcode]
    if layers and layers[0] is not FuseName:
        assert codec(layers[0]).record(bytes(fixed_size(layers[0]))) is not None
