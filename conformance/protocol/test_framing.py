"""Framing: uniques, lengths, errors, unknown opcodes, requests before INIT, FORGET."""

from __future__ import annotations

import os

import pytest

from conformance.checks import assert_error, assert_well_formed, errno_name
from conformance.rules import rule
from conformance.walk import some_entry
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseAccessIn, FuseForgetIn, FuseGetattrIn, FuseOpenIn, FuseReadIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

DEV = "linux fs/fuse/dev.c fuse_dev_do_write"
LIBFUSE = "libfuse lib/fuse_lowlevel.c fuse_session_process_buf_int"
UNUSED_OPCODES = (7, 19, 4095)  # never assigned by the kernel


def _everyday_requests(conn: KernelConnection) -> list:
    """A few requests every daemon answers, successes and errors."""
    replies = [conn.call(c.FUSE_GETATTR, FuseGetattrIn()),
               conn.call(c.FUSE_LOOKUP, FuseName(name=b"fusecheck-absent")),
               conn.call(c.FUSE_STATFS),
               conn.call(c.FUSE_ACCESS, FuseAccessIn(mask=os.R_OK), nodeid=c.FUSE_ROOT_ID)]
    opened = conn.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000))
    replies.append(opened)
    if opened.ok and opened.body is not None:
        replies.append(conn.call(c.FUSE_READDIR, FuseReadIn(fh=opened.body.fh, size=4096)))
    return replies


@rule("FUSE-PROTO-001", "Every reply carries the unique of the request it answers",
      source=f"{DEV}: a reply is matched to its request by unique; others get ENOENT")
def test_reply_echoes_unique(ready: KernelConnection) -> None:
    for unique in (2, 1 << 20, (1 << 62) + 4, 0xFFFFFFFFFFFFFFFE):
        reply = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), unique=unique)
        assert reply.unique == unique
        assert_well_formed(reply, "reply.unknown-unique")
    for reply in ready.replies:
        assert_well_formed(reply, "reply.unknown-unique")


@rule("FUSE-PROTO-002", "The len field of every reply equals the bytes of the reply",
      source=f"{DEV}: oh.len != nbytes makes the whole write fail with EINVAL")
def test_reply_length(ready: KernelConnection) -> None:
    for reply in _everyday_requests(ready):
        assert_well_formed(reply, "reply.len-mismatch", "reply.short")


@rule("FUSE-PROTO-003",
      "An error reply is a negative errno the kernel accepts (-511..-1) with no body",
      source=f"{DEV}: error <= -512 or > 0 is EINVAL; an error with a body is EINVAL")
def test_error_replies(ready: KernelConnection) -> None:
    unknown = ready.call(UNUSED_OPCODES[0])
    assert unknown.error < 0, f"opcode {UNUSED_OPCODES[0]} (undefined) was answered with success"
    for reply in [*_everyday_requests(ready), unknown]:
        if reply.error:
            assert_well_formed(reply, "reply.error-range", "reply.body-after-error")


@rule("FUSE-PROTO-004", "Every successful reply has the body size its opcode defines",
      source=f"{DEV} copy_out_args: a fixed-size reply of another size is EINVAL")
def test_reply_body_sizes(ready: KernelConnection) -> None:
    for reply in _everyday_requests(ready):
        assert_well_formed(reply, "reply.body-size")


@rule("FUSE-PROTO-005", "An unknown opcode is answered ENOSYS",
      source=f"{LIBFUSE}: no handler -> ENOSYS; the kernel reads ENOSYS as 'not implemented'")
def test_unknown_opcode(ready: KernelConnection) -> None:
    for opcode in UNUSED_OPCODES:
        reply = ready.call(opcode)
        assert_error(reply, 38, f"opcode {opcode} is not defined")
        assert_well_formed(reply)


@rule("FUSE-PROTO-006", "A request before INIT is refused with an error reply",
      source=f"{LIBFUSE}: before INIT only INIT is served, others get EIO")
def test_request_before_init(conn: KernelConnection) -> None:
    reply = conn.call(c.FUSE_GETATTR, FuseGetattrIn())
    assert reply.error < 0, "GETATTR before INIT was served"
    assert_well_formed(reply)
    init = conn.init()
    assert init.ok, f"INIT after the refused request answered {errno_name(init.error)}"


@rule("FUSE-PROTO-007", "FORGET gets no reply, and the server keeps serving",
      source="uapi linux/fuse.h: FORGET and BATCH_FORGET have no reply")
def test_forget_no_reply(ready: KernelConnection) -> None:
    entry = some_entry(ready)
    if entry is None:
        pytest.skip("not applicable: the root is empty, there is nothing to look up and forget")
    lookup = ready.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
    assert lookup.ok and lookup.body is not None and lookup.body.nodeid, (
        f"LOOKUP of listed name {entry.name!r} answered {errno_name(lookup.error)}")
    ready.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=int(lookup.body.nodeid))
    reply = ready.call(c.FUSE_GETATTR, FuseGetattrIn())  # a reply to FORGET would come first
    assert reply.ok, f"GETATTR after FORGET answered {errno_name(reply.error)}"
    late = [e for e in ready.quiet(0.2) if isinstance(e, Reply)]
    assert not late, f"FORGET was answered: {[str(f) for e in late for f in e.findings]}"


@rule("FUSE-PROTO-008",
      "Requests sent together, without waiting, each get their own reply, in any order",
      source=f"{DEV}: the kernel keeps many requests pending and pairs replies by unique")
def test_pipelined_requests(ready: KernelConnection) -> None:
    sent = [ready.send(c.FUSE_GETATTR, FuseGetattrIn()) for _ in range(8)]
    sent.append(ready.send(c.FUSE_LOOKUP, FuseName(name=b"fusecheck-absent")))
    replies = {unique: ready.wait(unique) for unique in sent}
    assert sorted(replies) == sorted(sent)
    for reply in replies.values():
        assert_well_formed(reply)


@rule("FUSE-DESTROY-001", "DESTROY is answered with success and no body",
      source="linux fs/fuse/inode.c fuse_send_destroy; libfuse do_destroy replies 0")
def test_destroy(ready: KernelConnection) -> None:
    reply = ready.call(c.FUSE_DESTROY, nodeid=0)
    assert reply.ok, f"DESTROY answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    assert reply.body is None, f"DESTROY reply carries {len(reply.raw) - 16} bytes"
