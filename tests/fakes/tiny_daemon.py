"""A tiny FUSE daemon (one empty root directory) that can break one rule on purpose.

Run as ``python tiny_daemon.py [--bug NAME] FD``: it serves FUSE on fd FD (one
request per datagram), so the conformance suite can prove that each injected
bug makes its rule fail. Without ``--bug`` it passes every protocol rule.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.layers import (
    FuseAttr,
    FuseAttrOut,
    FuseDirent,
    FuseDirentList,
    FuseEntryOut,
    FuseInHeader,
    FuseInitIn,
    FuseInitOut,
    FuseKstatfs,
    FuseOpenOut,
    FuseOutHeader,
    FuseReadIn,
    FuseStatfsOut,
)
from protocol.layers.compat import FuseAttrOutCompat, FuseEntryOutCompat

BUGS = {
    "wrong-unique": "FUSE-PROTO-001",  # GETATTR replies carry unique + 2
    "len-lie": "FUSE-PROTO-002",  # STATFS reply's len field is 4 bytes short
    "error-with-body": "FUSE-PROTO-003",  # LOOKUP's ENOENT carries a body
    "no-enosys": "FUSE-PROTO-005",  # unknown opcodes get EINVAL
    "serve-before-init": "FUSE-PROTO-006",  # requests before INIT are served
    "extra-flags": "FUSE-INIT-006",  # INIT reply adds FUSE_POSIX_ACL, offered or not
    "no-compat": "FUSE-INIT-003",  # full-size attr_out at minor < 9
    "no-dotdot": "FUSE-READDIR-001",  # READDIR lists '.' only
    "root-is-file": "FUSE-GETATTR-001",  # the root's mode is a regular file
    "destroy-body": "FUSE-DESTROY-001",  # DESTROY's reply carries 8 bytes
    "lose-pipelined": "FUSE-PROTO-008",  # the 4th GETATTR in a row is never answered
}


class TinyDaemon:
    def __init__(self, bug: str | None) -> None:
        self.bug = bug
        self.minor = 0
        self.getattrs = 0  # GETATTRs in a row

    def handle(self, request: Packet) -> bytes | None:
        op, unique = int(request.opcode), int(request.unique)
        if op in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET):
            return None
        if op == c.FUSE_INIT:
            return self.init(request, unique)
        if not self.minor and self.bug != "serve-before-init":
            return self.error(unique, errno.EIO)
        self.getattrs = self.getattrs + 1 if op == c.FUSE_GETATTR else 0
        if op == c.FUSE_GETATTR and self.bug == "lose-pipelined" and self.getattrs == 4:
            return None
        if op == c.FUSE_GETATTR:
            cls = FuseAttrOutCompat if self.minor < 9 and self.bug != "no-compat" else FuseAttrOut
            attr = FuseAttrOut(attr_valid=1, attr=self.root_attr())
            body = bytes(attr)[: cls and _size(cls)]
            return self.ok(unique + (2 if self.bug == "wrong-unique" else 0), Raw(body))
        if op == c.FUSE_LOOKUP:
            name = bytes(request.payload)[:-1]
            if name in (b".", b".."):
                entry = FuseEntryOut(nodeid=1, attr=self.root_attr())
                size = _size(FuseEntryOutCompat) if self.minor < 9 else _size(FuseEntryOut)
                return self.ok(unique, Raw(bytes(entry)[:size]))
            body = b"\0" * 8 if self.bug == "error-with-body" else b""
            return bytes(FuseOutHeader(unique=unique, error=-errno.ENOENT) / Raw(body))
        if op == c.FUSE_STATFS:
            data = self.ok(unique, FuseStatfsOut(st=FuseKstatfs(bsize=4096, namelen=255)))
            if self.bug == "len-lie":
                data = struct.pack("<I", len(data) - 4) + data[4:]
            return data
        if op in (c.FUSE_OPENDIR, c.FUSE_OPEN):
            return self.ok(unique, FuseOpenOut(fh=7))
        if op == c.FUSE_READDIR:
            offset = int(request[FuseReadIn].offset)
            names = [b"."] if self.bug == "no-dotdot" else [b".", b".."]
            dirents = [FuseDirent(ino=1, off=i + 1, type=4, name=n)
                       for i, n in enumerate(names) if i >= offset]
            return self.ok(unique, FuseDirentList(dirents=dirents)) if dirents else self.ok(unique)
        if op == c.FUSE_DESTROY and self.bug == "destroy-body":
            return self.ok(unique, Raw(b"\0" * 8))
        if op in (c.FUSE_RELEASEDIR, c.FUSE_RELEASE, c.FUSE_ACCESS, c.FUSE_DESTROY):
            return self.ok(unique)
        return self.error(unique, errno.EINVAL if self.bug == "no-enosys" else errno.ENOSYS)

    def init(self, request: Packet, unique: int) -> bytes:
        if FuseInitIn not in request:
            return self.error(unique, errno.EPROTO)
        offer = request[FuseInitIn]
        major = int(offer.major)
        if major < 7:
            return self.error(unique, errno.EPROTO)
        if major > 7:
            return self.ok(unique, FuseInitOut(major=7, minor=45))
        if self.minor:
            return self.error(unique, errno.EIO)
        kernel_minor = int(offer.minor)
        self.minor = min(kernel_minor, 45)
        flags = int(offer.flags) & c.FUSE_ASYNC_READ
        if self.bug == "extra-flags":
            flags |= c.FUSE_POSIX_ACL
        reply = FuseInitOut(major=7, minor=45, max_readahead=min(int(offer.max_readahead), 65536),
                            flags=flags, max_write=65536)
        size = 8 if kernel_minor < 5 else 24 if kernel_minor < 23 else 64
        return self.ok(unique, Raw(bytes(reply)[:size]))

    def root_attr(self) -> FuseAttr:
        mode = 0o100644 if self.bug == "root-is-file" else 0o40755
        return FuseAttr(ino=1, mode=mode, nlink=2, blksize=4096)

    @staticmethod
    def ok(unique: int, body: Packet | None = None) -> bytes:
        header = FuseOutHeader(unique=unique)
        return bytes(header / body if body is not None else header)

    @staticmethod
    def error(unique: int, code: int) -> bytes:
        return bytes(FuseOutHeader(unique=unique, error=-code))


def _size(cls: type[Packet]) -> int:
    from protocol.layers.base import fixed_size

    return fixed_size(cls)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=sorted(BUGS))
    parser.add_argument("fd", type=int)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    daemon = TinyDaemon(args.bug)
    while True:
        data = sock.recv(1 << 21)
        if not data:
            return 0
        reply = daemon.handle(FuseInHeader(data))
        if reply is not None:
            sock.send(reply)


if __name__ == "__main__":
    sys.exit(main())
