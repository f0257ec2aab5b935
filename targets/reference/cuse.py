"""The reference CUSE device (``ref:cuse``, ``python -m targets.reference --cuse NAME``): a
FIFO of bytes behind /dev/cuse. Writes append (at most ``CAPACITY`` bytes held; a write
takes what fits), reads take from the front and block while it is empty (INTERRUPT ends a
blocked read with EINTR; O_NONBLOCK gives EAGAIN), FIOC_GET_SIZE (libfuse's example's
``_IOR('E', 0, size_t)``) says how many bytes it holds, restricted or through the
unrestricted retry, and POLL answers POLLIN/POLLOUT, sending NOTIFY_POLL when a write makes
a waiting poll ready. Messages are read and made by ``protocol.server.DaemonSession``."""

from __future__ import annotations

import errno
import os
import select
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.packet import Raw

from protocol import constants as c
from protocol.events import Request
from protocol.layers.messages import NO_REPLY
from protocol.layers.notify import FuseNotifyPollWakeupOut
from protocol.layers.structs import (
    FuseIoctlIn,
    FuseIoctlIovec,
    FuseIoctlOut,
    FuseOpenIn,
    FuseOpenOut,
    FusePollIn,
    FusePollOut,
    FuseReadIn,
    FuseReleaseIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.server import DaemonSession
from targets.reference.server import MALFORMED

CAPACITY = 64 * 1024
MAX_MESSAGE = (1 << 20) + 4096
SIZE_T = struct.Struct("<Q")
FIOC_GET_SIZE = 2 << 30 | SIZE_T.size << 16 | ord("E") << 8  # _IOR('E', 0, size_t)


@dataclass(frozen=True)
class CuseMutant:
    name: str
    description: str
    caught_by: tuple[str, ...]
    area: str = "cuse"


#: faults of the reference CUSE device (``ref:cuse,mutant=NAME``) and the rules that catch them
CUSE_MUTANTS = {m.name: m for m in (
    CuseMutant("no-devname", "the CUSE_INIT reply's device info has no DEVNAME", ("CUSE-INIT-003",)),
    CuseMutant("read-keeps-data", "a read returns the front of the FIFO without taking it",
               ("CUSE-MACHINE-001",)),
    CuseMutant("size-off-by-one", "FIOC_GET_SIZE says one byte more than the FIFO holds",
               ("CUSE-IOCTL-001", "CUSE-MACHINE-001")),
    CuseMutant("retry-no-iovec", "the unrestricted FIOC_GET_SIZE asks to retry but names no memory",
               ("CUSE-IOCTL-002",)),
    CuseMutant("interrupt-ignored", "INTERRUPT of a blocked read is ignored: it stays blocked",
               ("CUSE-INTR-001",)),
    CuseMutant("poll-no-wakeup", "a write never sends NOTIFY_POLL to the polls waiting for data",
               ("CUSE-POLL-001",)),
)}


@dataclass
class FifoDevice:
    """The device's state and its answers; ``write_out`` sends a message to the kernel;
    ``mutant``: one of ``CUSE_MUTANTS`` switched on."""

    devname: str
    write_out: Callable[[bytes], None]
    mutant: str | None = None
    session: DaemonSession = field(default_factory=DaemonSession)
    data: bytearray = field(default_factory=bytearray)
    readers: deque[tuple[Request, int]] = field(default_factory=deque)  # blocked READs, their size
    polls: set[int] = field(default_factory=set)  # kh of polls waiting for POLLIN
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonblocking: dict[int, bool] = field(default_factory=dict)  # fh -> opened O_NONBLOCK
    handles: int = 0

    def send(self, message: bytes) -> None:
        self.write_out(message)

    def handle(self, raw: bytes) -> None:
        request = self.session.receive(raw)
        opcode, session = request.opcode, self.session
        with self.lock:
            if any(f.code in MALFORMED for f in request.findings):  # what no kernel sends
                if opcode not in NO_REPLY:
                    self.send(session.error(request, errno.EINVAL))
            elif opcode == c.CUSE_INIT:
                info = b"NAME=x\0" if self.mutant == "no-devname" else f"DEVNAME={self.devname}\0".encode()
                self.send(session.accept_cuse_init(
                    request, info, flags=c.CUSE_UNRESTRICTED_IOCTL,
                    max_read=MAX_MESSAGE - 4096, max_write=MAX_MESSAGE - 4096))
            elif opcode == c.FUSE_OPEN:
                self.handles += 1
                flags = int(request.layer(FuseOpenIn).flags)
                self.nonblocking[self.handles] = bool(flags & os.O_NONBLOCK)
                self.send(session.reply(request, FuseOpenOut(fh=self.handles, open_flags=c.FOPEN_DIRECT_IO)))
            elif opcode == c.FUSE_WRITE:
                payload = request.data(FuseWriteIn)
                taken = payload[: CAPACITY - len(self.data)]
                if payload and not taken:
                    self.send(session.error(request, errno.EAGAIN))
                    return
                self.data += taken
                self.send(session.reply(request, FuseWriteOut(size=len(taken))))
                self._wake()
            elif opcode == c.FUSE_READ:
                arg = request.layer(FuseReadIn)
                size = int(arg.size)
                if self.data or not size:
                    self.send(self._take(request, size))
                elif self.nonblocking.get(int(arg.fh)) or int(arg.flags) & os.O_NONBLOCK:
                    self.send(session.error(request, errno.EAGAIN))
                else:
                    self.readers.append((request, size))
            elif opcode == c.FUSE_INTERRUPT and self.mutant != "interrupt-ignored":
                target = int.from_bytes(raw[40:48], "little")
                for blocked in list(self.readers):
                    if blocked[0].unique == target:
                        self.readers.remove(blocked)
                        self.send(session.error(blocked[0], errno.EINTR))
            elif opcode == c.FUSE_IOCTL:
                self.send(self._ioctl(request))
            elif opcode == c.FUSE_POLL:
                arg = request.layer(FusePollIn)
                ready = (select.POLLIN if self.data else 0) | \
                    (select.POLLOUT if len(self.data) < CAPACITY else 0)
                if not ready & select.POLLIN and int(arg.flags) & c.FUSE_POLL_SCHEDULE_NOTIFY:
                    self.polls.add(int(arg.kh))
                self.send(session.reply(request, FusePollOut(revents=ready & int(arg.events))))
            elif opcode in (c.FUSE_FLUSH, c.FUSE_RELEASE, c.FUSE_FSYNC):
                if opcode == c.FUSE_RELEASE:
                    self.nonblocking.pop(int(request.layer(FuseReleaseIn).fh), None)
                self.send(session.error(request, 0))
            elif opcode in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_DESTROY):
                if opcode == c.FUSE_DESTROY:
                    self.send(session.error(request, 0))
            else:
                self.send(session.error(request, errno.ENOSYS))

    def _take(self, request: Request, size: int) -> bytes:
        taken = bytes(self.data[:size])
        if self.mutant != "read-keeps-data":
            del self.data[:size]
        return self.session.answer(request.unique, taken)

    def _wake(self) -> None:
        """After a write: blocked reads first, then polls waiting for data."""
        while self.readers and self.data:
            request, size = self.readers.popleft()
            self.send(self._take(request, size))
        if self.data and self.mutant != "poll-no-wakeup":
            for kh in sorted(self.polls):
                self.send(self.session.notify(c.FUSE_NOTIFY_POLL, FuseNotifyPollWakeupOut(kh=kh)))
            self.polls.clear()

    def _ioctl(self, request: Request) -> bytes:
        arg = request.layer(FuseIoctlIn)
        if int(arg.cmd) & 0xFFFFFFFF != FIOC_GET_SIZE:
            return self.session.error(request, errno.ENOTTY)
        if int(arg.out_size) < SIZE_T.size:  # unrestricted and not given the memory yet: ask
            if not int(arg.flags) & c.FUSE_IOCTL_UNRESTRICTED:
                return self.session.error(request, errno.EINVAL)
            if self.mutant == "retry-no-iovec":
                return self.session.reply(request, FuseIoctlOut(flags=c.FUSE_IOCTL_RETRY))
            return self.session.reply(request, FuseIoctlOut(flags=c.FUSE_IOCTL_RETRY, out_iovs=1),
                                      FuseIoctlIovec(base=int(arg.arg), len=SIZE_T.size))
        held = len(self.data) + (1 if self.mutant == "size-off-by-one" else 0)
        return self.session.reply(request, FuseIoctlOut(result=0), Raw(SIZE_T.pack(held)))


def serve_cuse(devname: str, device_path: str = "/dev/cuse", mutant: str | None = None,
               fd: int | None = None) -> int:
    """Serve the FIFO on /dev/cuse (opened here) or on the inherited SEQPACKET socket ``fd``
    (one message a datagram, as the suite's kernel-role transport), until the kernel side
    goes away."""
    if mutant is not None and mutant not in CUSE_MUTANTS:
        raise SystemExit(f"unknown CUSE mutant {mutant!r}; known: {', '.join(CUSE_MUTANTS)}")
    if fd is None:
        fd = os.open(device_path, os.O_RDWR)

    def write(message: bytes) -> None:
        os.write(fd, message)  # a write on a SEQPACKET socket is one datagram

    device = FifoDevice(devname, write, mutant)
    try:
        while True:
            try:
                raw = os.read(fd, MAX_MESSAGE)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN):
                    continue
                if exc.errno in (errno.ENODEV, errno.ECONNABORTED, errno.ENOTCONN, errno.ECONNRESET):
                    return 0
                raise
            if not raw:
                return 0  # the suite closed its end of the socket
            device.handle(raw)
    finally:
        os.close(fd)
