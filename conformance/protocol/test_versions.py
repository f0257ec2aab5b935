"""The version matrix: the suite plays kernels of several minors; at each, the server's
replies must have the sizes that minor expects and its requests (in that minor's layouts,
e.g. the 8-byte fuse_setxattr_in before FUSE_SETXATTR_EXT) must be understood."""

from __future__ import annotations

import errno

import pytest
from scapy.packet import Raw

from conformance.checks import assert_well_formed, errno_name
from conformance.protocol.scratch import READ_ONLY, Workdir
from conformance.rules import rule
from conformance.walk import list_directory, some_entry
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.base import fixed_size
from protocol.layers.structs import FuseGetattrIn, FuseGetxattrIn, FuseSetxattrIn
from protocol.layers.variable import FuseName
from protocol.session import KERNEL_INIT_FLAGS
from protocol.sizes import init_out_class
from targets.connection import KernelConnection
from targets.spec import TargetSpec
from targets.wire import wire_target

MINORS = (12, 23, 31, 36, 38, 45)
SOURCE = "linux fs/fuse/inode.c process_init_reply; libfuse lib/fuse_lowlevel.c do_init and the compat sizes"


def offer_of(minor: int) -> int:
    """The INIT flags a kernel of ``minor`` could offer: no flags2 before 7.36, no
    FUSE_SETXATTR_EXT before 7.33 (a flag a kernel did not know, it did not offer)."""
    flags = KERNEL_INIT_FLAGS if minor >= 36 else KERNEL_INIT_FLAGS & 0xFFFFFFFF
    return flags & ~c.FUSE_SETXATTR_EXT if minor < 33 else flags


def _init_at(conn: KernelConnection, minor: int) -> None:
    reply = conn.init(minor=minor, flags=offer_of(minor))
    if reply.error:
        pytest.skip(f"not applicable: the server refuses minor 7.{minor} "
                    f"({errno_name(reply.error)}), as it may")
    limit = fixed_size(init_out_class(minor))
    assert 8 <= len(reply.raw) - 16 <= limit, (
        f"a 7.{minor} INIT reply of {len(reply.raw) - 16} bytes (<= {limit})")
    assert_well_formed(reply)


@pytest.mark.parametrize("minor", MINORS)
@rule("FUSE-VERSION-001",
      "At each offered minor (7.12 to 7.45), INIT and the everyday replies (GETATTR, LOOKUP, OPENDIR, "
      "READDIR, STATFS) have the sizes that minor expects",
      source=SOURCE, opcodes=("FUSE_INIT", "FUSE_GETATTR", "FUSE_LOOKUP", "FUSE_OPENDIR", "FUSE_READDIR",
                              "FUSE_STATFS"))
def test_replies_at_minor(conn: KernelConnection, minor: int) -> None:
    _init_at(conn, minor)
    for reply in (conn.call(c.FUSE_GETATTR, FuseGetattrIn()), conn.call(c.FUSE_STATFS)):
        assert reply.ok, f"{reply.opcode_name} at 7.{minor} answered {errno_name(reply.error)}"
        assert_well_formed(reply)
    list_directory(conn)  # each READDIR judged inside
    entry = some_entry(conn)
    if entry is not None:
        looked = conn.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
        assert looked.ok, f"LOOKUP of {entry.name!r} at 7.{minor} answered {errno_name(looked.error)}"
        assert_well_formed(looked)


@pytest.mark.parametrize("minor", MINORS)
@rule("FUSE-VERSION-002",
      "At each offered minor, requests in that minor's layouts are understood: a file made, written and "
      "read back, an xattr set with that minor's fuse_setxattr_in read back",
      source=f"{SOURCE}; linux fs/fuse/xattr.c fuse_setxattr (FUSE_COMPAT_SETXATTR_IN_SIZE without "
             "FUSE_SETXATTR_EXT)", opcodes=("FUSE_CREATE", "FUSE_WRITE", "FUSE_READ", "FUSE_SETXATTR"))
def test_requests_at_minor(conn: KernelConnection, target_spec: TargetSpec, minor: int) -> None:
    _init_at(conn, minor)
    work = Workdir(conn)
    file = work.file(b"versioned", b"written at 7.%d" % minor)
    assert work.read(file, 0, 100) == b"written at 7.%d" % minor
    value = b"value at 7.%d" % minor
    set_ = _set_version_xattr(conn, file.nodeid, value)
    if -set_.error in READ_ONLY | {errno.ENOTSUP} and not _xattrs_at_newest(target_spec, conn.timeout):
        return  # no user xattrs at any minor: the data half is the rule
    assert set_.ok, f"SETXATTR at 7.{minor} answered {errno_name(set_.error)}"
    got = conn.call(c.FUSE_GETXATTR, FuseGetxattrIn(size=256), FuseName(name=b"user.version"),
                    nodeid=file.nodeid)
    assert got.ok and got.raw[16:] == value, (
        f"at 7.{minor} SETXATTR of {value!r} reads back as {got.raw[16:]!r} ({errno_name(got.error)})")


def _set_version_xattr(conn: KernelConnection, nodeid: int, value: bytes) -> Reply:
    return conn.call(c.FUSE_SETXATTR, FuseSetxattrIn(size=len(value)), FuseName(name=b"user.version"),
                     Raw(value), nodeid=nodeid)


def _xattrs_at_newest(spec: TargetSpec, timeout: float) -> bool:
    """Whether a fresh instance of the target, spoken to at 7.45, takes user xattrs."""
    with wire_target(spec) as other:
        conn = KernelConnection(other.channel, timeout=timeout)
        assert conn.init().ok, "a second instance of the target refused INIT 7.45"
        file = Workdir(conn).file(b"versioned", b"x")
        return _set_version_xattr(conn, file.nodeid, b"newest").ok
