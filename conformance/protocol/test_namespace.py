"""Namespace rules: root attributes, names looked up and listed, reading a file."""

from __future__ import annotations

import os
import stat

import pytest
from scapy.packet import Packet

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from conformance.walk import (
    DT_DIR,
    DT_UNKNOWN,
    dirent_type,
    find_entry,
    list_directory,
    look_up,
    named_entries,
)
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn, FuseOpenIn, FuseReadIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

MAX_CHECKED = 32  # entries of a big root a rule looks at
SMALL_FILE = 64 * 1024


@rule("FUSE-LOOKUP-001",
      "LOOKUP of an absent name answers ENOENT (or a negative entry: nodeid 0)",
      source="linux fs/fuse/dir.c fuse_lookup_name: ENOENT or nodeid 0 make a negative dentry")
def test_lookup_absent(ready: KernelConnection) -> None:
    reply = ready.call(c.FUSE_LOOKUP, FuseName(name=b"fusecheck-no-such-name"))
    assert_well_formed(reply)
    if reply.ok:
        assert reply.body is not None and reply.body.nodeid == 0, (
            f"an absent name was found as nodeid {reply.body.nodeid if reply.body else '?'}")
    else:
        assert reply.error == -2, f"answered {errno_name(reply.error)}, expected ENOENT"


@rule("FUSE-GETATTR-001", "GETATTR of the root (nodeid 1) answers a directory",
      source="linux fs/fuse/inode.c fuse_fill_super: the root inode must be a directory")
def test_getattr_root(ready: KernelConnection) -> None:
    reply = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID)
    assert reply.ok, f"answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    assert reply.body is not None
    mode = reply.body.attr.mode
    assert stat.S_ISDIR(mode), f"root mode {mode:#o} is not a directory"


@rule("FUSE-READDIR-001",
      "READDIR of the root answers well-formed 8-aligned dirents, each name once, and lists "
      "'.' and '..' as directories, both or neither",
      source="POSIX readdir(3): if '.' or '..' exist, one entry each is returned; "
             "linux fs/fuse/readdir.c parse_dirfile")
def test_readdir_root(ready: KernelConnection) -> None:
    entries = list_directory(ready)
    names = [entry.name for entry in entries]
    types = {entry.name: entry.type for entry in entries}
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"names listed more than once: {repeated[:10]}"
    assert (b"." in types) == (b".." in types), (
        f"the listing has {'.' if b'.' in types else '..'} without its sibling: {sorted(types)[:10]}")
    for dot in (b".", b".."):
        if dot in types:
            assert types[dot] in (DT_DIR, DT_UNKNOWN), f"{dot!r} has type {types[dot]}"


@rule("FUSE-LOOKUP-002",
      "Every name READDIR lists in the root can be looked up, as a live nodeid of the type "
      "the dirent gave",
      source="POSIX readdir(3)/stat(2): a listed name exists; linux fs/fuse/readdir.c fills "
             "d_type from the dirent")
def test_listed_names_resolve(ready: KernelConnection) -> None:
    for entry in named_entries(ready, limit=MAX_CHECKED):
        reply = look_up(ready, entry)
        assert reply.ok, f"LOOKUP of listed name {entry.name!r} answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        assert reply.body is not None and reply.body.nodeid, f"{entry.name!r} looked up as nodeid 0"
        kind = dirent_type(int(reply.body.attr.mode))
        if entry.type != DT_UNKNOWN:
            assert kind == entry.type, (
                f"{entry.name!r}: READDIR says type {entry.type}, LOOKUP mode {reply.body.attr.mode:#o}")


@rule("FUSE-READDIR-002",
      "READDIR resumed at a dirent's off returns the entries that followed it",
      source="linux fs/fuse/readdir.c: the next READDIR starts at the last dirent's off "
             "(also telldir/seekdir)")
def test_readdir_resumes_at_any_offset(ready: KernelConnection) -> None:
    entries = list_directory(ready)
    if len(entries) < 2:
        pytest.skip("not applicable: the root lists fewer than two entries")
    names = [e.name for e in entries]
    for index, entry in enumerate(entries[:MAX_CHECKED]):
        rest = [e.name for e in list_directory(ready, offset=entry.off)]
        assert rest == names[index + 1:], (
            f"resumed at off {entry.off} (after {entry.name!r}): got {rest[:6]}, "
            f"expected {names[index + 1:][:6]}")


def _small_regular_file(attr: Packet) -> bool:
    return stat.S_ISREG(int(attr.mode)) and 0 < int(attr.size) <= SMALL_FILE


@rule("FUSE-READ-001",
      "READ of a small regular file returns exactly its size from offset 0, and nothing "
      "from its end",
      source="POSIX read(2): a regular file reads to its size; linux fs/fuse/file.c "
             "fuse_short_read takes fewer bytes as end of file and shrinks the cached size")
def test_read_whole_file(ready: KernelConnection) -> None:
    found = find_entry(ready, _small_regular_file)
    if found is None:
        pytest.skip(f"not applicable: no regular file of 1..{SMALL_FILE} bytes in the root")
    entry, nodeid, size = found.entry, found.nodeid, int(found.attr.size)
    opened = ready.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=nodeid)
    assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
    if int(opened.body.open_flags) & c.FOPEN_DIRECT_IO:
        pytest.skip("not applicable: FOPEN_DIRECT_IO (the size need not bound a read)")
    fh = int(opened.body.fh)
    whole = ready.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=SMALL_FILE * 2), nodeid=nodeid)
    assert whole.ok, f"READ answered {errno_name(whole.error)}"
    assert_well_formed(whole)
    got = len(whole.raw) - 16
    assert got == size, f"READ of {entry.name!r} gave {got} bytes, its size is {size}"
    tail = ready.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=size, size=4096), nodeid=nodeid)
    assert tail.ok and len(tail.raw) == 16, (
        f"READ at the end of {entry.name!r} gave {errno_name(tail.error)}, {len(tail.raw) - 16} bytes")
    ready.call(c.FUSE_RELEASE, FuseReleaseIn(fh=fh), nodeid=nodeid)
