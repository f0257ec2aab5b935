"""First namespace rules: root attributes, absent names, the root directory listing."""

from __future__ import annotations

import stat

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from conformance.walk import list_directory
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

DT_DIR = 4
DT_UNKNOWN = 0


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
