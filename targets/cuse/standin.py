"""The stand-in for the kernel's /dev/cuse (this kernel has no CUSE): a one-file FUSE
filesystem the suite mounts on /dev/fuse and serves itself. A CUSE server that opens the
file (bind-mounted over /dev/cuse in its own mount namespace, ``targets.cuse.launch``)
reads the suite's requests from it, one per read, and writes its replies to it, one per
write: the kernel's side of CUSE, played through a file.

The file is opened with FOPEN_DIRECT_IO, so each read(2) of the server is one FUSE READ,
answered when the suite has a request for it (the read blocks until then; a short reply ends
it), and each write(2) one FUSE WRITE. ``StandIn.channel`` is the suite's end: ``send`` a
request, ``recv`` a reply, as over a socket. The FUSE messages here are built and read by
``protocol.server.DaemonSession``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from protocol import constants as c
from protocol.layers.structs import (
    FuseAttr,
    FuseAttrOut,
    FuseEntryOut,
    FuseOpenOut,
    FuseReadIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.server import DaemonSession
from targets import fusedev
from targets.channel import Liveness, Transcript
from targets.errors import TargetDied, TargetError, TargetTimeout

FILE = b"cuse"
FILE_NODEID = 2
BUFFER = (1 << 20) + 4096
MAX_READ = 1 << 20  # a CUSE server reads at most one message (max_write and its headers)


class StandInChannel:
    """The suite's end of the stand-in: requests go to the server's next read, replies come
    from its writes."""

    transport = "cuse"

    def __init__(self, name: str, transcript: Transcript | None = None) -> None:
        self.name = name
        self.transcript = transcript if transcript is not None else Transcript()
        self.requests: queue.Queue[bytes] = queue.Queue()
        self.replies: queue.Queue[bytes] = queue.Queue()
        self.closed = threading.Event()
        self.liveness: Liveness | None = None  # the server's process, once started

    def send(self, data: bytes, *, timeout: float = 10.0) -> None:
        if self.closed.is_set():
            raise TargetDied(self.name, returncode=None, detail="closed /dev/cuse")
        self.transcript.append("to_target", data)
        self.requests.put(bytes(data))

    def recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.replies.get(timeout=min(0.1, max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                returncode = self.liveness.wait_exit(0) if self.liveness is not None else None
                if returncode is not None or self.closed.is_set():
                    tail = self.liveness.stderr_tail() if self.liveness is not None else ""
                    raise TargetDied(self.name, returncode=returncode, stderr_tail=tail,
                                     detail=None if returncode is not None else "closed /dev/cuse") from None
                if time.monotonic() >= deadline:
                    raise TargetTimeout(
                        f"{self.name} wrote nothing to /dev/cuse within {timeout:g} s") from None
                continue
            self.transcript.append("from_target", data)
            return data


class StandIn:
    """Mount the stand-in at ``mountpoint`` and serve it on a thread; ``path`` is the file."""

    def __init__(self, mountpoint: Path, *, name: str = "cuse server") -> None:
        self.mountpoint = mountpoint
        self.path = mountpoint / FILE.decode()
        self.channel = StandInChannel(name)
        self.session = DaemonSession()
        self._mount: contextlib.AbstractContextManager[tuple[int, int]] | None = None
        self._fd = self._conn = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._waiting: dict[int, threading.Event] = {}  # READs blocked for a request, by unique
        self._lock = threading.Lock()
        self.opens = 0

    def start(self) -> Self:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._mount = fusedev.fuse_mount(self.mountpoint, options=["allow_other", f"max_read={MAX_READ}"],
                                         fsname="fusecheck-cuse", subtype="fusecheck-cuse")
        self._fd, self._conn = self._mount.__enter__()
        self._thread = threading.Thread(target=self._serve, name="cuse stand-in", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Abort the connection, let the serving thread end, then close the fd (in that order:
        a thread must not read or write an fd number the process may already reuse)."""
        with self._lock:  # no reply is written after this
            self._stop.set()
        self.channel.closed.set()
        for event in list(self._waiting.values()):
            event.set()
        if self._mount is not None:
            # abort, not a plain unmount: the server's namespace holds the file bound over its
            # /dev/cuse, which keeps the connection (and a blocked read of ours) alive
            with contextlib.suppress(OSError, TargetError):
                fusedev.force_unmount(self.mountpoint, self._conn)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._mount is not None:
            with contextlib.suppress(OSError):
                self._mount.__exit__(None, None, None)
            self._mount = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the FUSE side -----------------------------------------------------------
    def _write(self, data: bytes) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self._stop.is_set():
                os.write(self._fd, data)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = os.read(self._fd, BUFFER)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue
                break  # ENODEV: unmounted
            if not data:
                break
            self._handle(data)
        self.channel.closed.set()

    def _attr(self, nodeid: int) -> FuseAttr:
        if nodeid == FILE_NODEID:
            return FuseAttr(ino=FILE_NODEID, mode=stat.S_IFREG | 0o666, nlink=1)
        return FuseAttr(ino=c.FUSE_ROOT_ID, mode=stat.S_IFDIR | 0o755, nlink=2)

    def _handle(self, data: bytes) -> None:
        session = self.session
        request = session.receive(data)
        opcode = request.opcode
        if opcode == c.FUSE_INIT:
            self._write(session.accept_init(request, max_write=BUFFER - 4096))
        elif opcode == c.FUSE_LOOKUP:
            if request.names()[0] == FILE:
                entry = FuseEntryOut(nodeid=FILE_NODEID, attr=self._attr(FILE_NODEID))
                self._write(session.reply(request, entry))
            else:
                self._write(session.error(request, errno.ENOENT))
        elif opcode == c.FUSE_GETATTR:
            self._write(session.reply(request, FuseAttrOut(attr=self._attr(request.nodeid))))
        elif opcode == c.FUSE_OPEN:
            self.opens += 1
            self._write(session.reply(request, FuseOpenOut(
                fh=self.opens, open_flags=c.FOPEN_DIRECT_IO | c.FOPEN_NONSEEKABLE)))
        elif opcode == c.FUSE_READ:
            threading.Thread(target=self._read, args=(request,), daemon=True).start()
        elif opcode == c.FUSE_WRITE:
            payload = request.data(FuseWriteIn)
            self.channel.replies.put(bytes(payload))
            self._write(session.reply(request, FuseWriteOut(size=len(payload))))
        elif opcode == c.FUSE_INTERRUPT:
            target = int.from_bytes(data[40:48], "little")
            event = self._waiting.get(target)
            if event is not None:
                event.set()
        elif opcode in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET):
            pass
        elif opcode in (c.FUSE_FLUSH, c.FUSE_RELEASE, c.FUSE_RELEASEDIR, c.FUSE_OPENDIR):
            if opcode == c.FUSE_RELEASE:
                self.channel.closed.set()  # the server closed /dev/cuse: it is done
            self._write(session.reply(request, FuseOpenOut(fh=0)) if opcode == c.FUSE_OPENDIR
                        else session.error(request, 0))
        else:
            self._write(session.error(request, errno.ENOSYS))

    def _read(self, request: object) -> None:
        """Answer the server's read with the suite's next request (waiting for one)."""
        from protocol.events import Request

        assert isinstance(request, Request)
        size = int(request.layer(FuseReadIn).size)
        interrupted = self._waiting[request.unique] = threading.Event()
        try:
            while not interrupted.is_set() and not self._stop.is_set():
                try:
                    message = self.channel.requests.get(timeout=0.1)
                except queue.Empty:
                    continue
                if len(message) > size:
                    self.channel.requests.queue.appendleft(message)  # a read too small: refuse it
                    self._write(self.session.error(request, errno.EINVAL))
                    return
                self._write(self.session.answer(request.unique, message))
                return
            self._write(self.session.error(request, errno.EINTR))
        finally:
            self._waiting.pop(request.unique, None)
