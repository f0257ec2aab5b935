"""Extended attributes over the wire: size probing with size 0, ERANGE, list and remove."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from scapy.packet import Raw

from conformance.checks import assert_error, assert_well_formed, errno_name
from conformance.protocol.scratch import File, Workdir
from conformance.rules import rule
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseGetxattrIn, FuseSetxattrIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

XATTR_C = "linux fs/fuse/xattr.c"
NAME, VALUE = b"user.fusecheck", b"a value of twenty-six bytes"


@pytest.fixture
def tagged(ready: KernelConnection) -> Iterator[tuple[Workdir, File]]:
    """A file with ``NAME`` set to ``VALUE`` (not applicable where user xattrs are not offered)."""
    work = Workdir(ready)
    file = work.file(b"tagged", b"x")
    reply = ready.call(c.FUSE_SETXATTR, FuseSetxattrIn(size=len(VALUE)), FuseName(name=NAME), Raw(VALUE),
                       nodeid=file.nodeid)
    if -reply.error in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        pytest.skip(f"not applicable: the server offers no user xattrs (SETXATTR: {errno_name(reply.error)})")
    assert reply.ok, f"SETXATTR answered {errno_name(reply.error)}"
    yield work, file


def _get(conn: KernelConnection, opcode: int, nodeid: int, size: int) -> Reply:
    parts = (FuseGetxattrIn(size=size), FuseName(name=NAME)) if opcode == c.FUSE_GETXATTR else \
        (FuseGetxattrIn(size=size),)
    reply = conn.call(opcode, *parts, nodeid=nodeid)
    assert_well_formed(reply)
    return reply


@pytest.mark.parametrize("opcode", [pytest.param(c.FUSE_GETXATTR, id="GETXATTR"),
                                    pytest.param(c.FUSE_LISTXATTR, id="LISTXATTR")])
@rule("FUSE-XATTR-001",
      "GETXATTR and LISTXATTR with size 0 answer the size needed (fuse_getxattr_out); with that size, the "
      "value or list; with less, ERANGE",
      source=f"{XATTR_C} fuse_getxattr/fuse_listxattr (size 0 probes; ERANGE when the buffer is too small)",
      opcodes=("FUSE_GETXATTR", "FUSE_LISTXATTR", "FUSE_SETXATTR"))
def test_size_probe(tagged: tuple[Workdir, File], opcode: int) -> None:
    work, file = tagged
    probe = _get(work.conn, opcode, file.nodeid, 0)
    assert probe.ok and probe.body is not None, (
        f"{probe.opcode_name} size 0 answered {errno_name(probe.error)}")
    need = int(probe.body.size)
    full = _get(work.conn, opcode, file.nodeid, need)
    assert full.ok, (
        f"{full.opcode_name} with the size it asked for ({need}) answered {errno_name(full.error)}")
    got = full.raw[16:]
    assert len(got) == need, f"{full.opcode_name} probed {need} bytes and then answered {len(got)}"
    if opcode == c.FUSE_GETXATTR:
        assert got == VALUE, f"GETXATTR answered {got!r}, SETXATTR set {VALUE!r}"
    else:
        assert NAME in got.split(b"\0"), f"LISTXATTR {got!r} lacks {NAME!r}"
    assert_error(_get(work.conn, opcode, file.nodeid, need - 1), errno.ERANGE,
                 f"the buffer is one byte smaller than the {need} needed")


@rule("FUSE-XATTR-002",
      "REMOVEXATTR removes the name (GETXATTR then answers ENODATA, LISTXATTR omits it); a second "
      "REMOVEXATTR answers ENODATA",
      source=f"{XATTR_C} fuse_removexattr; removexattr(2) ENODATA", opcodes=("FUSE_REMOVEXATTR",))
def test_remove(tagged: tuple[Workdir, File]) -> None:
    work, file = tagged
    removed = work.conn.call(c.FUSE_REMOVEXATTR, FuseName(name=NAME), nodeid=file.nodeid)
    assert removed.ok, f"REMOVEXATTR answered {errno_name(removed.error)}"
    assert_error(_get(work.conn, c.FUSE_GETXATTR, file.nodeid, 4096), errno.ENODATA, "the name was removed")
    listed = _get(work.conn, c.FUSE_LISTXATTR, file.nodeid, 4096)
    assert listed.ok and NAME not in listed.raw[16:].split(b"\0"), f"LISTXATTR still names {NAME!r}"
    again = work.conn.call(c.FUSE_REMOVEXATTR, FuseName(name=NAME), nodeid=file.nodeid)
    assert_error(again, errno.ENODATA, "the name was already removed")
