"""FUSE over virtio-fs queues: the kernel-role channel (``send`` a request, ``recv`` a
reply) on a started ``VhostUserFrontend``, so everything that speaks to a daemon over a
socket speaks to a virtio-fs device the same way.

Each request goes into a slot of guest memory (its bytes, device-readable) with a reply
buffer (device-writable) behind it, as one chain; the reply buffer is as long as the kernel
makes it (``room``, bound by the connection to its session's ``reply_room``: the out header
and the largest body the request allows), else the whole slot; FORGET, BATCH_FORGET and INTERRUPT go
to the hiprio queue (virtio 1.2, 5.11.6.1), FORGETs with no reply buffer, the rest to the
first request queue. A used chain with bytes in its reply buffer is a reply; one with none (a
FORGET's, an unanswered INTERRUPT's) only gives its slot back.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol import constants as c
from protocol.codec import codec
from protocol.layers.header import FuseInHeader
from protocol.vhost import constants as v
from targets.channel import DEFAULT_BUFSIZE, Liveness, Transcript
from targets.errors import TargetDied, TargetError, TargetTimeout
from targets.vhost_user.frontend import VhostUserFrontend

HIPRIO = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT})
NO_REPLY_BUFFER = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET})
REQUEST_QUEUE = 1  # the first request queue (no notification queue negotiated)
_OPCODE, _OPCODE_AT = codec(FuseInHeader).field("opcode")


@dataclass(slots=True)
class Slot:
    request: int  # guest address of the request buffer
    reply: int  # guest address of the reply buffer
    request_at: int  # their offsets in the guest memory's buffer
    reply_at: int
    room: int = 0  # bytes of the reply buffer offered to the device for the request in flight


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
        self.memory = frontend.memory
        self.buffer = frontend.memory.buffer
        self.rings = [q.ring for q in frontend.started]  # by queue index
        self.free = [self._slot(bufsize) for _ in range(slots)]
        self.busy: dict[tuple[int, int], Slot] = {}  # (queue, chain head) -> its slot
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
            raise TargetTimeout(f"{self.name} holds all {len(self.busy)} request slots",
                                hint="the device stopped using the buffers it was given")
        opcode = _OPCODE.unpack_from(data, _OPCODE_AT)[0] if len(data) >= _OPCODE_AT + 4 else 0
        index = v.VIRTIO_FS_HIPRIO_QUEUE if opcode in HIPRIO else REQUEST_QUEUE
        slot = self.free.pop()
        self.buffer[slot.request_at: slot.request_at + len(data)] = data
        room = self.room(data) if self.room is not None else None
        if room is None or room > self.bufsize:
            room = self.bufsize
        # FORGET gets no reply; an INTERRUPT may get one (EAGAIN), so it has room for it
        slot.room = 0 if opcode in NO_REPLY_BUFFER else room
        writable = [(slot.reply, slot.room)] if slot.room else []
        chain = self.rings[index].add([(slot.request, len(data))], writable, indirect=self.indirect)
        self.busy[(index, chain.head)] = slot
        self.transcript.append("to_target", data)
        self.frontend.kick(index)

    def recv(self, timeout: float) -> bytes:
        """The next reply the device wrote, waiting at most ``timeout`` s."""
        if self.closed:
            raise TargetError(f"the channel to {self.name} is closed")
        deadline = None
        while True:
            if self.busy:
                self._collect()
            if self.replies:
                data = self.replies.popleft()
                self.transcript.append("from_target", data)
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
        for index, ring in enumerate(self.rings):
            if not ring.chains or ring.used_idx == ring.last_used:
                continue
            for chain, ident, length in ring.take_used():
                slot = self.busy.pop((index, ident), None)
                if chain is None or slot is None:
                    raise TargetError(f"{self.name} used id {ident} on queue {index}, which heads no "
                                      "chain it was given")
                self.free.append(slot)
                if chain.writable and length:  # nothing written: no reply (an INTERRUPT's)
                    if length > slot.room:
                        raise TargetError(f"{self.name} says it wrote {length} bytes into a "
                                          f"{slot.room}-byte buffer")
                    self.replies.append(bytes(self.buffer[slot.reply_at: slot.reply_at + length]))

    def _slot(self, size: int) -> Slot:
        request, reply = self.memory.alloc(size, 64), self.memory.alloc(size, 64)
        return Slot(request, reply, self.memory.offset(request, size), self.memory.offset(reply, size))

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return self.frontend.started[REQUEST_QUEUE].call_fd
