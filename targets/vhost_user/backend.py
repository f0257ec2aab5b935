"""A vhost-user back-end for a virtio-fs device (the part virtiofsd plays), serving one
front-end on a listening socket: it answers the control messages, maps the memory it is
given, and runs each started queue on a thread that gives every chain to ``answer``.

``answer(request bytes, room, done)`` calls ``done(reply)`` once, on any thread, with the reply
to write into the chain's device-writable buffers (at most ``room`` bytes; None: nothing to
write, as for FORGET); the chain goes back used with the bytes written. This module knows
vhost-user and rings (from ``protocol.vhost``), never FUSE messages.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import os
import select
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from scapy.packet import Packet

from protocol.vhost import constants as v
from protocol.vhost.device import BadChain, DeviceMemory, DeviceQueue, Region
from protocol.vhost.messages import (
    ANSWERED,
    VhostUserConfig,
    VhostUserMemory,
    VhostUserMsg,
    VhostUserU64,
    VhostUserVringAddr,
    VhostUserVringState,
    VirtioFsConfig,
    message,
)

#: (request, room, done): ``done(reply)`` once, from any thread, with at most room bytes
Answer = Callable[[bytes, int, Callable[[bytes | None], None]], None]
#: What the back-end offers: virtio 1.x, indirect descriptors, protocol features
FEATURES = (1 << v.VIRTIO_F_VERSION_1) | (1 << v.VHOST_USER_F_PROTOCOL_FEATURES) \
    | (1 << v.VIRTIO_RING_F_INDIRECT_DESC)
PROTOCOL_FEATURES = (1 << v.VHOST_USER_PROTOCOL_F_MQ) | (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK) \
    | (1 << v.VHOST_USER_PROTOCOL_F_CONFIG)
MAX_FDS = 8


class ProtocolViolation(Exception):
    """The front-end sent what the back-end cannot act on; the connection ends."""


@dataclass
class QueueState:
    index: int
    num: int = 0
    base: int = 0
    addr: VhostUserVringAddr | None = None
    kick: int = -1
    call: int = -1
    enabled: bool = False
    ring: DeviceQueue | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class VhostUserBackend:
    """One front-end's device; ``serve(listener)`` accepts it and returns when it hangs up."""

    answer: Answer
    tag: bytes = b"fusecheck"
    request_queues: int = 1
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
    features: int = field(default=0, init=False)
    protocol_features: int = field(default=0, init=False)
    memory: DeviceMemory = field(default_factory=DeviceMemory, init=False)
    queues: dict[int, QueueState] = field(default_factory=dict, init=False)
    _maps: list[mmap.mmap] = field(default_factory=list, init=False)

    @property
    def queue_count(self) -> int:
        return 1 + self.request_queues  # hiprio, then the request queues

    def serve(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        try:
            while self._one(conn):
                pass
        finally:
            conn.close()
            self.reset()

    # -- the control channel -------------------------------------------------
    def _one(self, conn: socket.socket) -> bool:
        fds: list[int] = []
        try:
            header = self._recv(conn, v.VHOST_USER_HEADER_SIZE, fds)
            if not header:
                return False
            size = int.from_bytes(header[8:12], "little")
            payload = self._recv(conn, size, fds) if size else b""
            msg = VhostUserMsg(header + payload)
            reply = self.handle(msg, fds)
        except ProtocolViolation as exc:
            self.log(f"vhost-user back-end: {exc}; closing the connection")
            return False
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        request = int(msg.request)
        ack = int(msg.flags) & v.VHOST_USER_NEED_REPLY_MASK and self._acks() and request not in ANSWERED
        if reply is not None or ack:
            out = message(request, reply if reply is not None else VhostUserU64(u64=0), reply=True)
            conn.sendall(bytes(out))
        return True

    @staticmethod
    def _recv(conn: socket.socket, size: int, fds: list[int]) -> bytes:
        data = b""
        while len(data) < size:
            chunk, ancillary, _flags, _addr = conn.recvmsg(size - len(data), socket.CMSG_SPACE(4 * MAX_FDS))
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(raw[: len(raw) - len(raw) % 4])
                    fds.extend(got)
            if not chunk:
                if data:
                    raise ProtocolViolation(f"the connection ended inside a message ({len(data)}/{size})")
                return b""
            data += chunk
        return data

    def _acks(self) -> bool:
        return bool(self.protocol_features & (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK))

    def handle(self, msg: VhostUserMsg, fds: list[int]) -> Packet | None:
        """Act on one message; its reply payload when it has one."""
        request = int(msg.request)
        if request == v.VHOST_USER_GET_FEATURES:
            return VhostUserU64(u64=FEATURES)
        if request == v.VHOST_USER_GET_PROTOCOL_FEATURES:
            return VhostUserU64(u64=PROTOCOL_FEATURES)
        if request == v.VHOST_USER_GET_QUEUE_NUM:
            return VhostUserU64(u64=self.queue_count)
        if request == v.VHOST_USER_SET_FEATURES:
            self.features = self._u64(msg)
            if self.features & ~FEATURES:
                raise ProtocolViolation(f"SET_FEATURES {self.features:#x} sets bits never offered")
        elif request == v.VHOST_USER_SET_PROTOCOL_FEATURES:
            self.protocol_features = self._u64(msg)
            if self.protocol_features & ~PROTOCOL_FEATURES:
                raise ProtocolViolation(f"SET_PROTOCOL_FEATURES {self.protocol_features:#x} sets bits "
                                        "never offered")
        elif request in (v.VHOST_USER_SET_OWNER, v.VHOST_USER_RESET_OWNER, v.VHOST_USER_RESET_DEVICE):
            if request != v.VHOST_USER_SET_OWNER:
                self.reset()
        elif request == v.VHOST_USER_SET_MEM_TABLE:
            self._mem_table(msg, fds)
        elif request == v.VHOST_USER_GET_CONFIG:
            return self._config(msg)
        elif request in (v.VHOST_USER_SET_VRING_NUM, v.VHOST_USER_SET_VRING_BASE,
                         v.VHOST_USER_SET_VRING_ADDR, v.VHOST_USER_SET_VRING_KICK,
                         v.VHOST_USER_SET_VRING_CALL, v.VHOST_USER_SET_VRING_ERR,
                         v.VHOST_USER_SET_VRING_ENABLE, v.VHOST_USER_GET_VRING_BASE):
            return self._vring(request, msg, fds)
        else:
            raise ProtocolViolation(f"{v.REQUEST_NAMES.get(request, request)} is not supported")
        return None

    @staticmethod
    def _u64(msg: VhostUserMsg) -> int:
        if VhostUserU64 not in msg:
            raise ProtocolViolation(f"{msg.summary()} without its u64")
        return int(msg[VhostUserU64].u64)

    def _mem_table(self, msg: VhostUserMsg, fds: list[int]) -> None:
        if VhostUserMemory not in msg:
            raise ProtocolViolation("SET_MEM_TABLE without its table")
        regions = list(msg[VhostUserMemory].regions)
        if len(regions) != len(fds):
            raise ProtocolViolation(f"SET_MEM_TABLE with {len(regions)} regions and {len(fds)} fds")
        self._stop_queues()
        self._unmap()
        for region, fd in zip(regions, fds, strict=True):
            size, offset = int(region.memory_size), int(region.mmap_offset)
            mapped = mmap.mmap(fd, size + offset, mmap.MAP_SHARED)
            self._maps.append(mapped)
            self.memory.regions.append(Region(int(region.guest_phys_addr), int(region.userspace_addr),
                                              memoryview(mapped)[offset: offset + size]))

    def _config(self, msg: VhostUserMsg) -> Packet:
        asked = msg[VhostUserConfig] if VhostUserConfig in msg else VhostUserConfig()
        space = bytes(VirtioFsConfig(tag=self.tag, num_request_queues=self.request_queues))
        offset, size = int(asked.offset), int(asked.size or 0)
        return VhostUserConfig(offset=offset, flags=int(asked.flags),
                               region=space[offset: offset + size].ljust(size, b"\0"))

    def _vring(self, request: int, msg: VhostUserMsg, fds: list[int]) -> Packet | None:
        payload = msg.payload
        index = int(getattr(payload, "index", getattr(payload, "u64", 0))) & v.VHOST_USER_VRING_INDEX_MASK
        if index >= self.queue_count:
            raise ProtocolViolation(f"{v.REQUEST_NAMES[request]} for queue {index} of {self.queue_count}")
        q = self.queues.setdefault(index, QueueState(index))
        if request == v.VHOST_USER_SET_VRING_NUM:
            q.num = int(payload.num)
        elif request == v.VHOST_USER_SET_VRING_BASE:
            q.base = int(payload.num)
        elif request == v.VHOST_USER_SET_VRING_ADDR:
            if not isinstance(payload, VhostUserVringAddr):
                raise ProtocolViolation("SET_VRING_ADDR without its addresses")
            q.addr = payload
        elif request in (v.VHOST_USER_SET_VRING_KICK, v.VHOST_USER_SET_VRING_CALL,
                         v.VHOST_USER_SET_VRING_ERR):
            nofd = int(payload.u64) & v.VHOST_USER_VRING_NOFD_MASK
            fd = -1 if nofd or not fds else os.dup(fds[0])
            if request == v.VHOST_USER_SET_VRING_KICK:
                self._stop(q)
                q.kick = fd
            elif request == v.VHOST_USER_SET_VRING_CALL:
                if q.call >= 0:
                    os.close(q.call)
                q.call = fd
            elif fd >= 0:
                os.close(fd)  # errors are not reported
        elif request == v.VHOST_USER_SET_VRING_ENABLE:
            q.enabled = bool(payload.num)
        elif request == v.VHOST_USER_GET_VRING_BASE:
            self._stop(q)
            base = q.ring.last_avail if q.ring is not None else q.base
            q.ring = None
            return VhostUserVringState(index=index, num=base)
        self._maybe_start(q)
        return None

    # -- the queues ---------------------------------------------------------------
    def _maybe_start(self, q: QueueState) -> None:
        enabled = q.enabled or not self.features & (1 << v.VHOST_USER_F_PROTOCOL_FEATURES)
        if q.thread is not None or not enabled or q.kick < 0 or q.addr is None or not q.num:
            return
        try:
            q.ring = DeviceQueue(self.memory, q.num, self.memory.gpa_of(int(q.addr.desc_user_addr)),
                                 self.memory.gpa_of(int(q.addr.avail_user_addr)),
                                 self.memory.gpa_of(int(q.addr.used_user_addr)), last_avail=q.base,
                                 indirect=bool(self.features & (1 << v.VIRTIO_RING_F_INDIRECT_DESC)))
            q.ring.used_idx = q.ring.published_used()  # where the ring in memory stands
        except BadChain as exc:
            raise ProtocolViolation(f"queue {q.index}: {exc}") from None
        q.stop.clear()
        q.thread = threading.Thread(target=self._run, args=(q,), name=f"vq-{q.index}", daemon=True)
        q.thread.start()

    def _run(self, q: QueueState) -> None:
        assert q.ring is not None
        ring = q.ring
        while not q.stop.is_set():
            ready, _, _ = select.select([q.kick], [], [], 0.1)
            if ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.eventfd_read(q.kick)
            while not q.stop.is_set():
                try:
                    chain = ring.pop()
                except BadChain as exc:
                    self.log(f"vhost-user back-end: queue {q.index}: {exc}; the queue stops")
                    return
                if chain is None:
                    break
                done = partial(self.complete, q, chain.head, chain.writable)
                try:
                    request = ring.gather(chain)
                except BadChain as exc:
                    self.log(f"vhost-user back-end: queue {q.index}: {exc}")
                    done(None)
                    continue
                self.answer(request, chain.room, done)

    def complete(self, q: QueueState, head: int, writable: list[tuple[int, int]],
                 reply: bytes | None) -> None:
        """Write ``reply`` into the chain's buffers, return it used, and signal the driver;
        safe from any thread (an answer given later, e.g. to a blocking lock)."""
        ring = q.ring
        if ring is None:
            return  # the queue was stopped meanwhile
        with q.lock:
            written = self.write_reply(ring, writable, reply)
            ring.push(head, written)
            if q.call >= 0:
                with contextlib.suppress(OSError):
                    os.eventfd_write(q.call, 1)

    def write_reply(self, ring: DeviceQueue, writable: list[tuple[int, int]], reply: bytes | None) -> int:
        """Put ``reply`` into a chain's writable buffers; the used length to report."""
        return ring.scatter(writable, reply) if reply else 0

    def _stop(self, q: QueueState) -> None:
        if q.thread is not None:
            q.stop.set()
            q.thread.join()
            q.thread = None
        if q.kick >= 0:
            os.close(q.kick)
            q.kick = -1

    def _stop_queues(self) -> None:
        for q in self.queues.values():
            self._stop(q)
            q.ring = None

    def _unmap(self) -> None:
        for region in self.memory.regions:
            region.buffer.release()
        self.memory.regions.clear()
        for mapped in self._maps:
            mapped.close()
        self._maps.clear()

    def reset(self) -> None:
        """Back to the state before SET_OWNER: queues stopped, memory unmapped, fds closed."""
        self._stop_queues()
        for q in self.queues.values():
            if q.call >= 0:
                os.close(q.call)
        self.queues.clear()
        self._unmap()
        self.features = self.protocol_features = 0
