"""A scratch directory on the server, made by MKDIR, and the small request sequences the
per-opcode rules share (a file made and opened, data written, an attribute read back).

Every helper asserts on what it needs to succeed and explains the failure; a server
whose tree is read-only makes the rules that need a scratch directory "not applicable".
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from dataclasses import dataclass

import pytest
from scapy.packet import Packet, Raw

from conformance.checks import assert_well_formed, errno_name
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import (
    FuseCreateIn,
    FuseForgetIn,
    FuseGetattrIn,
    FuseMkdirIn,
    FuseMknodIn,
    FuseOpenIn,
    FuseOpenOut,
    FuseReadIn,
    FuseReleaseIn,
    FuseWriteIn,
)
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

#: errors that say "this tree is not writable", not "this server is wrong"
READ_ONLY = {errno.EROFS, errno.ENOSYS, errno.EACCES, errno.EPERM, errno.EOPNOTSUPP}
#: errors a server may give for an operation it does not offer (kernel: ENOSYS is remembered)
UNSUPPORTED = {errno.ENOSYS, errno.EOPNOTSUPP}
_serial = itertools.count()
MADE: list[Workdir] = []  # scratch directories made by the running test, removed after it


def not_offered(reply: Reply, what: str) -> None:
    """Skip as not applicable when ``reply`` says the server does not offer ``what``."""
    if -reply.error in UNSUPPORTED:
        pytest.skip(f"not applicable: the server does not offer {what} ({errno_name(reply.error)})")


@dataclass
class File:
    """A regular file made in the scratch directory, open read-write as ``fh``."""

    name: bytes
    nodeid: int
    fh: int
    entry: Packet  # the fuse_entry_out that made it


def unique_name(prefix: str) -> bytes:
    """A name no other test, worker or run uses at the same time."""
    return f"{prefix}-{os.getpid()}-{next(_serial)}".encode()


class Workdir:
    """A fresh directory under the root (``nodeid``), for one rule's requests."""

    def __init__(self, conn: KernelConnection) -> None:
        self.conn = conn
        name = unique_name("fusecheck")
        reply = conn.call(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=name),
                          nodeid=c.FUSE_ROOT_ID)
        if -reply.error in READ_ONLY:
            pytest.skip("not applicable: the server's tree is not writable (MKDIR of a scratch "
                        f"directory answered {errno_name(reply.error)})")
        assert reply.ok and reply.body is not None, f"MKDIR answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        self.name = name
        self.nodeid = int(reply.body.nodeid)
        MADE.append(self)

    def remove(self) -> None:
        """Remove the directory and all it holds (best effort: the tree may be what broke)."""
        _empty(self.conn, self.nodeid)
        self.conn.call(c.FUSE_RMDIR, FuseName(name=self.name), nodeid=c.FUSE_ROOT_ID)

    def call(self, opcode: int, *layers: Packet, nodeid: int | None = None) -> Reply:
        return self.conn.call(opcode, *layers, nodeid=self.nodeid if nodeid is None else nodeid)

    def lookup(self, name: bytes, parent: int | None = None) -> Reply:
        return self.call(c.FUSE_LOOKUP, FuseName(name=name), nodeid=parent)

    def mkdir(self, name: bytes, mode: int = 0o755, parent: int | None = None) -> Reply:
        return self.call(c.FUSE_MKDIR, FuseMkdirIn(mode=mode), FuseName(name=name), nodeid=parent)

    def create(self, name: bytes, mode: int = 0o644, flags: int = os.O_RDWR) -> Reply:
        return self.call(c.FUSE_CREATE, FuseCreateIn(flags=flags | os.O_CREAT, mode=mode),
                         FuseName(name=name))

    def file(self, name: bytes, data: bytes = b"", mode: int = 0o644) -> File:
        """A regular file holding ``data``, open read-write: CREATE, or MKNOD and OPEN where
        the server does not offer CREATE (the kernel falls back the same way)."""
        made = self.create(name, mode)
        if -made.error == errno.ENOSYS:
            made = self.call(c.FUSE_MKNOD, FuseMknodIn(mode=0o100000 | mode), FuseName(name=name))
            assert made.ok and made.body is not None, f"MKNOD answered {errno_name(made.error)}"
            nodeid = int(made.body.nodeid)
            opened = self.conn.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDWR), nodeid=nodeid)
            assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
            entry, fh = made.body, int(opened.body.fh)
        else:
            assert made.ok and made.body is not None, f"CREATE answered {errno_name(made.error)}"
            assert_well_formed(made)
            entry = made.body
            fh = int(open_out(made).fh)
            nodeid = int(entry.nodeid)
        created = File(name, nodeid, fh, entry)
        if data:
            wrote = self.write(created, 0, data)
            assert wrote.ok and wrote.body is not None and int(wrote.body.size) == len(data), (
                f"WRITE of {len(data)} bytes answered {errno_name(wrote.error)}")
        return created

    def write(self, file: File, offset: int, data: bytes) -> Reply:
        return self.conn.call(c.FUSE_WRITE, FuseWriteIn(fh=file.fh, offset=offset, size=len(data)),
                              Raw(data), nodeid=file.nodeid)

    def read(self, file: File, offset: int, size: int) -> bytes:
        reply = self.conn.call(c.FUSE_READ, FuseReadIn(fh=file.fh, offset=offset, size=size),
                               nodeid=file.nodeid)
        assert reply.ok, f"READ at {offset} answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        return reply.raw[16:]

    def release(self, file: File) -> Reply:
        return self.conn.call(c.FUSE_RELEASE, FuseReleaseIn(fh=file.fh, flags=os.O_RDWR),
                              nodeid=file.nodeid)

    def getattr(self, nodeid: int) -> Packet:
        """The fuse_attr GETATTR answers for ``nodeid`` (it must succeed)."""
        reply = self.conn.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
        assert reply.ok and reply.body is not None, f"GETATTR answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        return reply.body.attr


def open_out(reply: Reply) -> Packet:
    """The fuse_open_out of a CREATE or TMPFILE reply (after its fuse_entry_out)."""
    assert FuseOpenOut in reply.packet, f"{reply.opcode_name} reply has no fuse_open_out"
    return reply.packet[FuseOpenOut]


def remove_tree(conn: KernelConnection, name: bytes, parent: int = c.FUSE_ROOT_ID) -> bool:
    """Remove directory ``name`` of ``parent`` and all it holds (best effort); False when the
    name is not there (any more)."""
    found = conn.call(c.FUSE_LOOKUP, FuseName(name=name), nodeid=parent)
    if not found.ok or found.body is None or not int(found.body.nodeid):
        return False
    _empty(conn, int(found.body.nodeid))
    conn.call(c.FUSE_RMDIR, FuseName(name=name), nodeid=parent)
    conn.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=int(found.body.nodeid))
    return True


def _empty(conn: KernelConnection, nodeid: int, depth: int = 0) -> None:
    """Remove every entry of directory ``nodeid`` as the kernel does (LOOKUP, then UNLINK, or
    for a directory empty it and RMDIR, then FORGET): a server need not know a name it
    was never asked to look up, or one it was told to forget."""
    from conformance.walk import list_directory

    for entry in list_directory(conn, nodeid):
        if entry.name in (b".", b".."):
            continue
        found = conn.call(c.FUSE_LOOKUP, FuseName(name=entry.name), nodeid=nodeid)
        if not found.ok or found.body is None or not int(found.body.nodeid):
            continue
        child = int(found.body.nodeid)
        if stat.S_ISDIR(int(found.body.attr.mode)):
            if depth < 8:
                _empty(conn, child, depth + 1)
            conn.call(c.FUSE_RMDIR, FuseName(name=entry.name), nodeid=nodeid)
        else:
            conn.call(c.FUSE_UNLINK, FuseName(name=entry.name), nodeid=nodeid)
        conn.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=child)
