"""Small request sequences rules share: listing a directory, finding an entry."""

from __future__ import annotations

from dataclasses import dataclass

from conformance.checks import assert_well_formed, errno_name
from protocol import constants as c
from protocol.layers.structs import FuseOpenIn, FuseReadIn, FuseReleaseIn
from targets.connection import KernelConnection

O_DIRECTORY = 0o200000
MAX_READS = 256  # READDIR calls before a listing is declared endless


@dataclass(frozen=True)
class Entry:
    name: bytes
    ino: int
    type: int
    off: int


def list_directory(conn: KernelConnection, nodeid: int = c.FUSE_ROOT_ID,
                   size: int = 4096, offset: int = 0) -> list[Entry]:
    """OPENDIR, READDIR from ``offset`` until an empty reply (each well-formed), RELEASEDIR."""
    opened = conn.call(c.FUSE_OPENDIR, FuseOpenIn(flags=O_DIRECTORY), nodeid=nodeid)
    assert opened.ok and opened.body is not None, f"OPENDIR answered {errno_name(opened.error)}"
    fh = int(opened.body.fh)
    entries: list[Entry] = []
    try:
        for _ in range(MAX_READS):
            reply = conn.call(c.FUSE_READDIR, FuseReadIn(fh=fh, offset=offset, size=size),
                              nodeid=nodeid)
            assert reply.ok, f"READDIR answered {errno_name(reply.error)}"
            assert_well_formed(reply)
            dirents = reply.body.dirents if reply.body is not None else []
            if not dirents:
                return entries
            entries += [Entry(d.getfieldval("name"), int(d.ino), int(d.type), int(d.off))
                        for d in dirents]
            offset = entries[-1].off
        raise AssertionError(f"READDIR did not end after {MAX_READS} calls (offsets loop?)")
    finally:
        conn.call(c.FUSE_RELEASEDIR, FuseReleaseIn(fh=fh), nodeid=nodeid)


def some_entry(conn: KernelConnection) -> Entry | None:
    """An entry of the root other than '.' and '..', if there is one."""
    return next((e for e in list_directory(conn) if e.name not in (b".", b"..")), None)
