"""A tiny FUSE server on a mounted /dev/fuse fd, answered from a thread.

A root directory holding one file, served with ``protocol.server.DaemonSession``.
Attributes are never cached (``attr_valid`` 0), so every stat reaches the thread:
once it stops answering, a stat on the mount hangs until the connection is aborted.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from typing import Any

from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.events import Request
from protocol.layers import (
    FuseAttr,
    FuseAttrOut,
    FuseDirent,
    FuseDirentList,
    FuseEntryOut,
    FuseKstatfs,
    FuseOpenOut,
    FuseReadIn,
    FuseStatfsOut,
)
from protocol.server import DaemonSession

FILE_NODEID = 2
FILE_NAME = "hello.txt"
FILE_DATA = b"served from a thread over /dev/fuse\n"
STATFS: dict[str, Any] = {"blocks": 1000, "bfree": 400, "bavail": 300, "files": 50, "ffree": 48,
          "bsize": 4096, "namelen": 255, "frsize": 4096}


class DevServer:
    """Serve ``fd`` from a thread until ``stop()`` or until the connection ends.

    The thread reads its own duplicate of ``fd`` and closes it when it ends, so
    the owner may close ``fd`` at any time without the thread reading a stale
    or reused descriptor.
    """

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)
        self.session = DaemonSession()
        self.seen: list[str] = []
        self.ended: str | None = None  # why the thread ended: "stopped", "ENODEV", ...
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dev-server", daemon=True)

    def start(self) -> DevServer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering: the thread reads nothing more, the kernel's requests wait."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "server thread did not stop"

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not select.select([self.fd], [], [], 0.05)[0]:
                    continue
                try:
                    data = os.read(self.fd, 1 << 21)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:  # the request was interrupted meanwhile
                        continue
                    self.ended = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    return
                request = self.session.receive(data)
                self.seen.append(request.opcode_name)
                reply = self.handle(request)
                if reply is not None:
                    try:
                        os.write(self.fd, reply)
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:
                            raise
            self.ended = "stopped"
        except BaseException as exc:
            self.failure = exc
            self.ended = "failed"
        finally:
            os.close(self.fd)

    def handle(self, request: Request) -> bytes | None:
        op, nodeid = request.opcode, request.nodeid
        if op in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT):
            return None
        if op == c.FUSE_INIT:
            return self.session.accept_init(request)
        if op == c.FUSE_GETATTR and nodeid in (c.FUSE_ROOT_ID, FILE_NODEID):
            return self._ok(request, FuseAttrOut(attr_valid=0, attr=attr(nodeid)))
        if op == c.FUSE_LOOKUP and nodeid == c.FUSE_ROOT_ID:
            name = bytes(request.packet.payload).rstrip(b"\0").decode()
            if name != FILE_NAME:
                return self.session.error(request, errno.ENOENT)
            return self._ok(request, FuseEntryOut(nodeid=FILE_NODEID, attr=attr(FILE_NODEID)))
        if op in (c.FUSE_OPENDIR, c.FUSE_OPEN):
            return self._ok(request, FuseOpenOut(fh=nodeid))
        if op == c.FUSE_READDIR:
            offset = int(request.packet[FuseReadIn].offset)
            names = [(".", c.FUSE_ROOT_ID, 4), ("..", c.FUSE_ROOT_ID, 4), (FILE_NAME, FILE_NODEID, 8)]
            dirents = [FuseDirent(ino=ino, off=i + 1, type=kind, name=name.encode())
                       for i, (name, ino, kind) in enumerate(names) if i >= offset]
            return self._ok(request, FuseDirentList(dirents=dirents)) if dirents else self._ok(request)
        if op == c.FUSE_READ and nodeid == FILE_NODEID:
            read = request.packet[FuseReadIn]
            start = int(read.offset)
            return self._ok(request, Raw(FILE_DATA[start: start + int(read.size)]))
        if op == c.FUSE_STATFS:
            return self._ok(request, FuseStatfsOut(st=FuseKstatfs(**STATFS)))
        if op in (c.FUSE_RELEASEDIR, c.FUSE_RELEASE, c.FUSE_FLUSH, c.FUSE_DESTROY):
            return self._ok(request)
        return self.session.error(request, errno.ENOSYS)

    def _ok(self, request: Request, *layers: Packet) -> bytes:
        return self.session.reply(request, *layers)


def attr(nodeid: int) -> FuseAttr:
    if nodeid == FILE_NODEID:
        return FuseAttr(ino=FILE_NODEID, mode=0o100644, nlink=1, size=len(FILE_DATA), blksize=4096)
    return FuseAttr(ino=c.FUSE_ROOT_ID, mode=0o40755, nlink=2, blksize=4096)
