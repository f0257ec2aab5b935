"""Removing a scratch tree as the kernel would: every UNLINK and RMDIR comes after a LOOKUP
of the name in the same directory (found from CI: fuse-overlayfs 1.10 frees a node twice on
UNLINK of a name it was told to FORGET and never asked to look up again)."""

from __future__ import annotations

import stat

from conformance.protocol.scratch import remove_tree
from protocol import constants as c
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FuseInHeader
from protocol.layers.structs import FuseForgetIn, FuseMkdirIn, FuseMknodIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection
from targets.wire import wire_target


def test_remove_tree_looks_up_before_it_removes() -> None:
    with wire_target("ref") as target:
        conn = KernelConnection(target.channel, timeout=5.0)
        assert conn.init().ok
        made = []

        def make(opcode: int, body: object, name: bytes, parent: int) -> int:
            reply = conn.call(opcode, body, FuseName(name=name), nodeid=parent)  # type: ignore[arg-type]
            assert reply.ok and reply.body is not None, reply.error
            made.append(int(reply.body.nodeid))
            return int(reply.body.nodeid)

        top = make(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), b"scratch-tree", c.FUSE_ROOT_ID)
        make(c.FUSE_MKNOD, FuseMknodIn(mode=stat.S_IFREG | 0o644), b"a", top)
        sub = make(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), b"d", top)
        make(c.FUSE_MKNOD, FuseMknodIn(mode=stat.S_IFREG | 0o644), b"b", sub)
        for nodeid in reversed(made):  # the kernel forgot them all
            conn.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=nodeid)
        target.transcript.clear()
        assert remove_tree(conn, b"scratch-tree")
        looked: set[tuple[int, bytes]] = set()
        removed = []
        for record in target.transcript.records():
            if record.direction != "to_target":
                continue
            header = FuseInHeader(record.data[:FUSE_IN_HEADER_SIZE])
            opcode, parent = int(header.opcode), int(header.nodeid)
            name = record.data[FUSE_IN_HEADER_SIZE:].split(b"\0")[0]
            if opcode == c.FUSE_LOOKUP:
                looked.add((parent, name))
            elif opcode in (c.FUSE_UNLINK, c.FUSE_RMDIR):
                assert (parent, name) in looked, f"{c.OPCODE_NAMES[opcode]} of {name!r} with no LOOKUP first"
                removed.append(name)
        assert sorted(removed) == [b"a", b"b", b"d", b"scratch-tree"]
        assert conn.call(c.FUSE_LOOKUP, FuseName(name=b"scratch-tree")).error != 0
