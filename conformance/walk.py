"""Small request sequences rules share: listing a directory, finding an entry, looking it up."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from scapy.packet import Packet

from conformance.checks import assert_well_formed, errno_name
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseOpenIn, FuseReadIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

O_DIRECTORY = 0o200000
MAX_READS = 256  # READDIR calls before a listing is declared endless
DOTS = (b".", b"..")
DT_UNKNOWN = 0  # a dirent's type when the server does not say
DT_DIR = 4


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


def dirent_type(mode: int) -> int:
    """The dirent type (DT_*) of a mode's file type, as the kernel's ``S_DT``."""
    return stat.S_IFMT(mode) >> 12


def named_entries(conn: KernelConnection, nodeid: int = c.FUSE_ROOT_ID,
                  limit: int | None = None) -> list[Entry]:
    """The entries of a directory other than '.' and '..', among the first ``limit`` it lists
    (all of them by default)."""
    return [e for e in list_directory(conn, nodeid)[:limit] if e.name not in DOTS]


def look_up(conn: KernelConnection, entry: Entry, parent: int = c.FUSE_ROOT_ID) -> Reply:
    """LOOKUP of a listed entry's name in the directory that listed it; the reply, unjudged."""
    return conn.call(c.FUSE_LOOKUP, FuseName(name=entry.name), nodeid=parent)


@dataclass(frozen=True)
class Found:
    """A listed entry and its successful LOOKUP reply."""

    entry: Entry
    lookup: Reply

    @property
    def nodeid(self) -> int:
        assert self.lookup.body is not None
        return int(self.lookup.body.nodeid)

    @property
    def attr(self) -> Packet:
        assert self.lookup.body is not None
        return self.lookup.body.attr


def find_entry(conn: KernelConnection, wanted: Callable[[Packet], bool],
               parent: int = c.FUSE_ROOT_ID) -> Found | None:
    """The first listed entry (not '.' or '..') whose LOOKUP succeeds with attributes
    (a ``FuseAttr``) that ``wanted`` accepts, looking the entries up in listing order.

    A LOOKUP that fails only passes the entry over: a rule about LOOKUP itself uses
    ``look_up`` and judges every reply.
    """
    for entry in named_entries(conn, parent):
        reply = look_up(conn, entry, parent)
        if reply.ok and reply.body is not None and wanted(reply.body.attr):
            return Found(entry, reply)
    return None


def some_entry(conn: KernelConnection) -> Entry | None:
    """An entry of the root other than '.' and '..', if there is one."""
    return next(iter(named_entries(conn)), None)
