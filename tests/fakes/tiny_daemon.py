"""A tiny FUSE daemon (a root directory with one file) that can break one rule on purpose.

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
from protocol.layers.base import fixed_size
from protocol.sizes import reply_layers_at

FILE_NODEID = 2
FILE_NAME = b"hello"
FILE_DATA = b"tiny daemon\n"

#: bug name -> the rule that must catch it
BUGS = {
    "minor-zero": "FUSE-INIT-001",  # INIT reply minor 0
    "init-full-size": "FUSE-INIT-002",  # 64-byte INIT reply to a kernel older than 7.23
    "no-compat": "FUSE-INIT-003",  # full-size attr_out and entry_out below 7.9
    "newer-major-error": "FUSE-INIT-004",  # INIT major 8 answered EPROTO
    "accept-old-major": "FUSE-INIT-005",  # INIT major 6 accepted
    "extra-flags": "FUSE-INIT-006",  # INIT reply adds FUSE_POSIX_ACL, offered or not
    "small-max-write": "FUSE-INIT-007",  # max_write 1024
    "zero-max-pages": "FUSE-INIT-008",  # FUSE_MAX_PAGES with max_pages 0
    "second-init-ok": "FUSE-INIT-009",  # a second INIT accepted
    "wrong-unique": "FUSE-PROTO-001",  # GETATTR replies carry unique + 2
    "len-lie": "FUSE-PROTO-002",  # STATFS reply's len field is 4 bytes short
    "error-with-body": "FUSE-PROTO-003",  # LOOKUP's ENOENT carries a body
    "statfs-short": "FUSE-PROTO-004",  # STATFS answers the 48-byte pre-7.4 layout
    "no-enosys": "FUSE-PROTO-005",  # unknown opcodes get EINVAL
    "serve-before-init": "FUSE-PROTO-006",  # requests before INIT are served
    "reply-forget": "FUSE-PROTO-007",  # FORGET is answered
    "lose-pipelined": "FUSE-PROTO-008",  # the 4th GETATTR in a row is never answered
    "absent-eio": "FUSE-LOOKUP-001",  # LOOKUP of an absent name answers EIO
    "root-is-file": "FUSE-GETATTR-001",  # the root's mode is a regular file
    "no-dotdot": "FUSE-READDIR-001",  # READDIR lists '.' only
    "lookup-wrong-type": "FUSE-LOOKUP-002",  # the listed regular file looks up as a directory
    "off-skips": "FUSE-READDIR-002",  # dirent offsets point one entry too far
    "read-short": "FUSE-READ-001",  # READ returns one byte less than the file holds
    "destroy-body": "FUSE-DESTROY-001",  # DESTROY's reply carries 8 bytes
    "statx-short": "FUSE-OPCODE-001",  # STATX answers success with a 16-byte body
    "enosys-flips": "FUSE-ENOSYS-001",  # the second STATX answers EIO instead of ENOSYS
    "odd-errno": "FUSE-ERRNO-001",  # UNLINK of an absent name answers errno 200
    "interrupt-body": "FUSE-INTERRUPT-001",  # INTERRUPT is answered with 8 bytes of body
    "statfs-bfree": "FUSE-STATFS-001",  # STATFS says more blocks are free than there are
    "compat-below-23": "FUSE-VERSION-001",  # the 7.8 compat attr_out up to 7.22, not only below 7.9
}


#: harness-level misbehaviour (not rule bugs): what the suite itself must survive
MISBEHAVIOURS = ("init-garbage", "flood", "die")


class TinyDaemon:
    def __init__(self, bug: str | None, misbehave: str | None = None) -> None:
        self.bug = bug
        self.misbehave = misbehave
        self.minor = 0  # negotiated; 0 before INIT
        self.getattrs = 0  # GETATTRs in a row
        self.statx = 0  # STATX requests seen

    def handle(self, request: Packet) -> bytes | None:
        op, unique = int(request.opcode), int(request.unique)
        if self.misbehave == "init-garbage" and op == c.FUSE_INIT:
            return b"\x03\x00\x00"
        if self.minor and op == c.FUSE_GETATTR and self.misbehave == "die":
            sys.stderr.write("tiny_daemon: dying on purpose\n")
            raise SystemExit(3)
        if op == c.FUSE_FORGET:
            return self.ok(unique) if self.bug == "reply-forget" else None
        if op in (c.FUSE_BATCH_FORGET, c.FUSE_NOTIFY_REPLY):
            return None
        if op == c.FUSE_INIT:
            return self.init(request, unique)
        if not self.minor and self.bug != "serve-before-init":
            return self.error(unique, errno.EIO)
        self.getattrs = self.getattrs + 1 if op == c.FUSE_GETATTR else 0
        if op == c.FUSE_STATX:
            self.statx += 1
            if self.bug == "statx-short":
                return self.ok(unique, Raw(b"\0" * 16))
            if self.bug == "enosys-flips" and self.statx > 1:
                return self.error(unique, errno.EIO)
        if op == c.FUSE_UNLINK and self.bug == "odd-errno":
            return self.error(unique, 200)
        if op == c.FUSE_INTERRUPT and self.bug == "interrupt-body":
            return self.ok(unique, Raw(b"\0" * 8))
        if op == c.FUSE_GETATTR:
            if self.bug == "lose-pipelined" and self.getattrs == 4:
                return None
            attr = FuseAttrOut(attr_valid=1, attr=self.attr(int(request.nodeid)))
            return self.sized(unique + (2 if self.bug == "wrong-unique" else 0), op, attr)
        if op == c.FUSE_LOOKUP:
            name = bytes(request.payload)[:-1]
            if name == FILE_NAME:
                file_attr = self.attr(FILE_NODEID)
                if self.bug == "lookup-wrong-type":
                    file_attr.mode = 0o40755
                return self.sized(unique, op, FuseEntryOut(nodeid=FILE_NODEID, attr=file_attr))
            if self.bug == "absent-eio":
                return self.error(unique, errno.EIO)
            body = b"\0" * 8 if self.bug == "error-with-body" else b""
            return bytes(FuseOutHeader(unique=unique, error=-errno.ENOENT) / Raw(body))
        if op == c.FUSE_STATFS:
            free = 20 if self.bug == "statfs-bfree" else 5
            data = self.ok(unique, FuseStatfsOut(st=FuseKstatfs(blocks=10, bfree=free, bavail=5, bsize=4096,
                                                                namelen=255)))
            if self.bug == "statfs-short":
                data = struct.pack("<I", 16 + 48) + data[4:16 + 48]
            if self.bug == "len-lie":
                data = struct.pack("<I", len(data) - 4) + data[4:]
            return data
        if op in (c.FUSE_OPENDIR, c.FUSE_OPEN):
            return self.ok(unique, FuseOpenOut(fh=7))
        if op == c.FUSE_READDIR:
            offset = int(request[FuseReadIn].offset)
            names = [(b".", 1, 4), (b"..", 1, 4), (FILE_NAME, FILE_NODEID, 8)]
            if self.bug == "no-dotdot":
                del names[1]
            step = 2 if self.bug == "off-skips" else 1
            dirents = [FuseDirent(ino=ino, off=i + step, type=kind, name=name)
                       for i, (name, ino, kind) in enumerate(names) if i >= offset]
            return self.ok(unique, FuseDirentList(dirents=dirents)) if dirents else self.ok(unique)
        if op == c.FUSE_READ and int(request.nodeid) == FILE_NODEID:
            read = request[FuseReadIn]
            data = FILE_DATA[int(read.offset): int(read.offset) + int(read.size)]
            return self.ok(unique, Raw(data[:-1] if self.bug == "read-short" else data))
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
        if major < 7 and self.bug != "accept-old-major":
            return self.error(unique, errno.EPROTO)
        if major > 7:
            if self.bug == "newer-major-error":
                return self.error(unique, errno.EPROTO)
            return self.ok(unique, FuseInitOut(major=7, minor=45))
        if self.minor and self.bug != "second-init-ok":
            return self.error(unique, errno.EIO)
        kernel_minor = int(offer.minor)
        self.minor = min(kernel_minor, 45)
        flags = int(offer.flags) & (c.FUSE_ASYNC_READ | c.FUSE_MAX_PAGES)
        if self.bug == "extra-flags":
            flags |= c.FUSE_POSIX_ACL
        reply = FuseInitOut(major=7, minor=0 if self.bug == "minor-zero" else 45,
                            max_readahead=min(int(offer.max_readahead), 65536), flags=flags,
                            max_write=1024 if self.bug == "small-max-write" else 65536,
                            max_pages=0 if self.bug == "zero-max-pages" else 16)
        size = 8 if kernel_minor < 5 else 24 if kernel_minor < 23 else 64
        if self.bug == "init-full-size":
            size = 64
        return self.ok(unique, Raw(bytes(reply)[:size]))

    def attr(self, nodeid: int) -> FuseAttr:
        if nodeid == FILE_NODEID:
            return FuseAttr(ino=FILE_NODEID, mode=0o100644, nlink=1, size=len(FILE_DATA), blksize=4096)
        mode = 0o100644 if self.bug == "root-is-file" else 0o40755
        return FuseAttr(ino=1, mode=mode, nlink=2, blksize=4096)

    def sized(self, unique: int, opcode: int, body: Packet) -> bytes:
        """A reply cut to the layout of the negotiated minor (compat sizes)."""
        minor = 8 if self.bug == "compat-below-23" and self.minor < 23 else self.minor
        size = fixed_size(reply_layers_at(opcode, minor)[0])
        if self.bug == "no-compat":
            size = len(bytes(body))
        return self.ok(unique, Raw(bytes(body)[:size]))

    @staticmethod
    def ok(unique: int, body: Packet | None = None) -> bytes:
        header = FuseOutHeader(unique=unique)
        return bytes(header / body if body is not None else header)

    @staticmethod
    def error(unique: int, code: int) -> bytes:
        return bytes(FuseOutHeader(unique=unique, error=-code))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=sorted(BUGS))
    parser.add_argument("--misbehave", choices=MISBEHAVIOURS)
    parser.add_argument("fd", type=int)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    daemon = TinyDaemon(args.bug, args.misbehave)
    epoch = bytes(FuseOutHeader(unique=0, error=c.FUSE_NOTIFY_INC_EPOCH))
    while True:
        data = sock.recv(1 << 21)
        if not data:
            return 0
        request = FuseInHeader(data)
        if args.misbehave == "flood" and daemon.minor and request.opcode == c.FUSE_GETATTR:
            while True:  # notifications, and never the reply
                sock.send(epoch)
        reply = daemon.handle(request)
        if reply is not None:
            sock.send(reply)


if __name__ == "__main__":
    sys.exit(main())
