"""FUSE over virtio-fs queues: the kernel-role channel (``send`` a request, ``recv`` a
reply) on a started ``VhostUserFrontend``, so everything that speaks to a daemon over a
socket speaks to a virtio-fs device the same way.

Each request goes into a slot of guest memory with a reply buffer behind it, as one chain
laid out as Linux's driver lays it (``layout``): device-readable, the in header and then its
arguments; device-writable, the out header and then room for the rest. The reply buffer is
as long as the kernel makes it (``room``, bound by the connection to its session's
``reply_room``: the out header and the largest body the request allows), else the whole
slot. FORGET, BATCH_FORGET and INTERRUPT go to the hiprio queue (virtio 1.2, 5.11.6.1),
FORGETs with no reply buffer; the rest to the first request queue. A used chain with bytes
in its reply buffer is a reply; one with none (a FORGET's, an unanswered INTERRUPT's) only
gives its slot back.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol import constants as c
from protocol.codec import codec
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE, FuseInHeader
from protocol.vhost import constants as v
from targets.channel import DEFAULT_BUFSIZE, Liveness, Transcript
from targets.errors import TargetDied, TargetError, TargetTimeout
from targets.vhost_user.frontend import VhostUserFrontend

HIPRIO = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT})
NO_REPLY_BUFFER = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET})
REQUEST_QUEUE = 1  # the first request queue (no notification queue negotiated)
_OPCODE, _OPCODE_AT = codec(FuseInHeader).field("opcode")


Layout = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # readable, writable buffers
MAX_LAYOUTS = 256  # layouts a slot remembers (requests of a few sizes repeat; a fuzzer's do not)


def layout(request: int, size: int, reply: int, room: int) -> Layout:
    """The chain's buffers as Linux's driver makes them (virtio_fs_enqueue_req): the in
    header, then its arguments, device-readable; the out header, then room for the out
    arguments, device-writable (a header alone when that is all there is)."""
    readable = [(request, FUSE_IN_HEADER_SIZE), (request + FUSE_IN_HEADER_SIZE, size - FUSE_IN_HEADER_SIZE)] \
        if size > FUSE_IN_HEADER_SIZE else [(request, size)]
    writable = [(reply, FUSE_OUT_HEADER_SIZE), (reply + FUSE_OUT_HEADER_SIZE, room - FUSE_OUT_HEADER_SIZE)] \
        if room > FUSE_OUT_HEADER_SIZE else [(reply, room)] if room else []
    return readable, writable


@dataclass(slots=True)
class Slot:
    request: int  # guest address of the request buffer
    reply: int  # guest address of the reply buffer
    request_at: int  # their offsets in the guest memory's buffer
    reply_at: int
    room: int = 0  # bytes of the reply buffer offered to the device for the request in flight
    layouts: dict[int, Layout] = field(default_factory=dict)  # size << 32 | room: its buffers


class VirtioFsChannel:
    """``send``/``recv`` over a virtio-fs device's queues; ``slots`` requests in flight."""

    transport = "virtio-fs"

    def __init__(self, frontend: VhostUserFrontend, *, liveness: Liveness | None = None,
                 bufsize: int = DEFAULT_BUFSIZE, slots: int = 16, indirect: bool = False,
                 transcript: Transcript | None = None) -> None:
        assert frontend.memory is not None, "set the frontend up first"
        self.frontend = frontend
        self.liveness = liveness
        self.name = liveness.name if liveness is not None else frontend.name
        self.bufsize = bufsize
        self.indirect = indirect and bool(frontend.acked & (1 << v.VIRTIO_RING_F_INDIRECT_DESC))
        self.transcript = transcript if transcript is not None else Transcript()
        self._record, self._kick = self.transcript.append, frontend.kick  # on every message's path
        self.memory = frontend.memory
        self.buffer = frontend.memory.buffer
        self.rings = [q.ring for q in frontend.started]  # by queue index
        self.free = [self._slot(bufsize) for _ in range(slots)]
        self.busy: list[dict[int, Slot]] = [{} for _ in self.rings]  # by queue: chain head -> slot
        self.replies: collections.deque[bytes] = collections.deque()
        self.room: Callable[[bytes], int | None] | None = None  # request -> its reply's room
        self.closed = False

    def send(self, data: bytes, *, timeout: float = 10.0) -> None:
        """Lay the request into a slot, offer it on its queue and kick the device."""
        if self.closed:
            raise TargetError(f"the channel to {self.name} is closed")
        if len(data) > self.bufsize:
            raise TargetError(f"a {len(data)}-byte request exceeds the {self.bufsize}-byte slots")
        if not self.free:  # take back what the device used meanwhile
            self._collect()
        if not self.free:
            raise TargetTimeout(f"{self.name} holds all {sum(map(len, self.busy))} request slots",
                                hint="the device stopped using the buffers it was given")
        size = len(data)
        opcode = _OPCODE.unpack_from(data, _OPCODE_AT)[0] if size >= _OPCODE_AT + 4 else 0
        index = v.VIRTIO_FS_HIPRIO_QUEUE if opcode in HIPRIO else REQUEST_QUEUE
        slot = self.free.pop()
        self.buffer[slot.request_at: slot.request_at + size] = data
        room = 0  # FORGET gets no reply; an INTERRUPT may (EAGAIN), so it has room
        if opcode not in NO_REPLY_BUFFER:
            asked = self.room(data) if self.room is not None else None
            room = self.bufsize if asked is None or asked > self.bufsize else asked
        slot.room = room
        parts = slot.layouts.get(size << 32 | room)
        if parts is None:
            if len(slot.layouts) >= MAX_LAYOUTS:
                slot.layouts.clear()
            parts = slot.layouts[size << 32 | room] = layout(slot.request, size, slot.reply, room)
        chain = self.rings[index].add(*parts, indirect=self.indirect)
        self.busy[index][chain.head] = slot
        self._record("to_target", data)
        self._kick(index)

    def recv(self, timeout: float) -> bytes:
        """The next reply the device wrote, waiting at most ``timeout`` s."""
        if self.closed:
            raise TargetError(f"the channel to {self.name} is closed")
        deadline = None
        while True:
            self._collect()
            if self.replies:
                data = self.replies.popleft()
                self._record("from_target", data)
                return data
            now = time.monotonic()
            deadline = deadline or now + timeout
            if now >= deadline or not self.frontend.wait(deadline - now):
                returncode = self.liveness.wait_exit(0) if self.liveness else None
                if returncode is not None:
                    tail = self.liveness.stderr_tail() if self.liveness else ""
                    raise TargetDied(self.name, returncode=returncode, stderr_tail=tail)
                raise TargetTimeout(f"{self.name} sent nothing within {timeout:g} s")

    def _collect(self) -> None:
        busy, free, replies, buffer = self.busy, self.free, self.replies, self.buffer
        for index, ring in enumerate(self.rings):
            if not ring.chains:
                continue
            for chain, ident, length in ring.take_used():
                slot = busy[index].pop(ident, None)
                if chain is None or slot is None:
                    raise TargetError(f"{self.name} used id {ident} on queue {index}, which heads no "
                                      "chain it was given")
                free.append(slot)
                if chain.writable and length:  # nothing written: no reply (an INTERRUPT's)
                    if length > slot.room:
                        raise TargetError(f"{self.name} says it wrote {length} bytes into a "
                                          f"{slot.room}-byte buffer")
                    at = slot.reply_at
                    replies.append(buffer[at: at + length].tobytes())

    def _slot(self, size: int) -> Slot:
        request, reply = self.memory.alloc(size, 64), self.memory.alloc(size, 64)
        return Slot(request, reply, self.memory.offset(request, size), self.memory.offset(reply, size))

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return self.frontend.started[REQUEST_QUEUE].call_fd
