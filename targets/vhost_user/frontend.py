"""The vhost-user front-end (the part QEMU plays for a vhost-user-fs device): the
control socket with its file descriptors, guest memory in a memfd, the virtqueues'
eventfds. Message layouts come from ``protocol.vhost``; this module does the IO.

``VhostUserFrontend(path).setup()`` negotiates features and protocol features (reading
the queue count under MQ and the virtio_fs_config under CONFIG), shares the guest memory
(SET_MEM_TABLE) and starts ``queues`` split queues (0 is virtio-fs's hiprio queue, 1 the
first request queue); ``kick(index)`` tells the back-end a queue has
new buffers and ``wait(timeout)`` waits until one of them has used some. ``close()`` stops
the rings (GET_VRING_BASE) and releases everything, however far ``setup`` got.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import mmap
import os
import select
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from scapy.packet import Packet

from protocol.vhost import constants as v
from protocol.vhost.messages import (
    ANSWERED,
    VhostUserConfig,
    VhostUserMemory,
    VhostUserMemoryRegion,
    VhostUserMsg,
    VhostUserU64,
    VhostUserVringAddr,
    VhostUserVringState,
    VirtioFsConfig,
    message,
)
from protocol.vhost.virtqueue import GuestMemory, SplitQueue
from targets.channel import Liveness
from targets.errors import TargetDied, TargetError, TargetTimeout

GUEST_BASE = 0x1_0000_0000  # guest physical address of the memory's first byte
#: device features the front-end can drive; the rest of what a back-end offers stays off
DRIVER_FEATURES = (1 << v.VIRTIO_F_VERSION_1) | (1 << v.VHOST_USER_F_PROTOCOL_FEATURES) \
    | (1 << v.VIRTIO_RING_F_INDIRECT_DESC)
#: protocol features it can drive (REPLY_ACK: each SET_* is confirmed; CONFIG: GET_CONFIG)
DRIVER_PROTOCOL_FEATURES = (1 << v.VHOST_USER_PROTOCOL_F_MQ) | (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK) \
    | (1 << v.VHOST_USER_PROTOCOL_F_CONFIG)


class VhostUserError(TargetError):
    """The back-end broke the vhost-user protocol (a bad reply, a refused request)."""


@dataclass
class Queue:
    """One started queue: its rings and its two eventfds."""

    index: int
    ring: SplitQueue
    kick_fd: int
    call_fd: int


@dataclass
class VhostUserFrontend:
    path: str
    memory_size: int = 64 << 20
    queue_size: int = 128
    queues: int = 2
    timeout: float = 5.0
    name: str = "vhost-user"
    features: int = field(default=0, init=False)  # what the back-end offered
    acked: int = field(default=0, init=False)  # what we set
    protocol_features: int = field(default=0, init=False)  # offered
    protocol_acked: int = field(default=0, init=False)
    queue_count: int | None = field(default=None, init=False)  # GET_QUEUE_NUM, under MQ
    config: VirtioFsConfig | None = field(default=None, init=False)  # GET_CONFIG, under CONFIG
    memory: GuestMemory | None = field(default=None, init=False)
    started: list[Queue] = field(default_factory=list, init=False)
    log: list[tuple[str, VhostUserMsg]] = field(default_factory=list, init=False)  # both ways
    _sock: socket.socket | None = field(default=None, init=False)
    _memfd: int = field(default=-1, init=False)
    _map: mmap.mmap | None = field(default=None, init=False)
    _anchor: Any = field(default=None, init=False)  # holds the mapping's address for ctypes

    # -- the control socket ---------------------------------------------------
    def connect(self, deadline: float | None = None, liveness: Liveness | None = None) -> Self:
        """Connect to the back-end's socket, retrying until ``deadline`` (it may be starting)
        unless ``liveness`` says the process that was to listen on it exited."""
        end = deadline if deadline is not None else time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                returncode = liveness.wait_exit(0) if liveness is not None else None
                if liveness is not None and returncode is not None:
                    raise TargetDied(self.name, returncode=returncode, stderr_tail=liveness.stderr_tail(),
                                     detail="before it listened on its vhost-user socket") from None
                if time.monotonic() >= end:
                    raise TargetTimeout(f"{self.name}: nothing listens on {self.path}: {exc.strerror}",
                                        hint="is the back-end started with this socket path?") from None
                time.sleep(0.05)
                continue
            self._sock = sock
            return self

    def send(self, msg: Packet, fds: tuple[int, ...] = ()) -> None:
        """One message, with ``fds`` beside it (SCM_RIGHTS)."""
        assert self._sock is not None, "not connected"
        data = bytes(msg)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self._sock.sendmsg([data], ancillary)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise TargetDied(self.name, returncode=None, detail="closed its vhost-user socket") from exc
        self.log.append(("to_backend", VhostUserMsg(data)))

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def pending(self, timeout: float) -> bool:
        """Whether the back-end sent something (unasked) within ``timeout``."""
        assert self._sock is not None, "not connected"
        return bool(select.select([self._sock], [], [], timeout)[0])

    def receive(self) -> VhostUserMsg:
        """One message from the back-end (a reply), within the timeout."""
        header = self._read(v.VHOST_USER_HEADER_SIZE)
        size = int.from_bytes(header[8:12], "little")
        msg = VhostUserMsg(header + self._read(size))
        self.log.append(("from_backend", msg))
        return msg

    def _read(self, size: int) -> bytes:
        assert self._sock is not None, "not connected"
        out = b""
        deadline = time.monotonic() + self.timeout
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                raise TargetTimeout(f"{self.name} sent no vhost-user reply within {self.timeout:g} s")
            try:
                chunk = self._sock.recv(size - len(out))
            except ConnectionResetError:  # it closed with our request unread: the same end as EOF
                chunk = b""
            if not chunk:
                raise TargetDied(self.name, returncode=None, detail="closed its vhost-user socket")
            out += chunk
        return out

    def call(self, request: int, payload: Packet | None = None,
             fds: tuple[int, ...] = ()) -> VhostUserMsg | None:
        """Send ``request``; its reply when one is due (a GET_*, or any request under REPLY_ACK,
        whose status must be 0)."""
        ack = bool(self.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK)) and request not in ANSWERED
        self.send(message(request, payload, need_reply=ack), fds)
        if request not in ANSWERED and not ack:
            return None
        reply = self.receive()
        name = v.REQUEST_NAMES.get(request, str(request))
        if int(reply.request) != request or not int(reply.flags) & v.VHOST_USER_REPLY_MASK:
            raise VhostUserError(f"{self.name} answered {name} with {reply.summary()}")
        if ack and int(reply[VhostUserU64].u64) != 0:
            raise VhostUserError(f"{self.name} refused {name} (status {reply[VhostUserU64].u64})")
        return reply

    def get_config(self) -> VirtioFsConfig:
        """GET_CONFIG: the device's virtio_fs_config (tag, num_request_queues)."""
        size = len(VirtioFsConfig())
        reply = self.call(v.VHOST_USER_GET_CONFIG, VhostUserConfig(offset=0, region=bytes(size)))
        assert reply is not None
        region = bytes(reply[VhostUserConfig].region) if VhostUserConfig in reply else b""
        if len(region) != size:
            raise VhostUserError(f"{self.name} answered GET_CONFIG with {len(region)} bytes of a "
                                 f"{size}-byte virtio_fs_config")
        return VirtioFsConfig(region)

    def get_u64(self, request: int) -> int:
        """A GET_* request whose reply is one u64 (features, protocol features, queue count)."""
        reply = self.call(request)
        assert reply is not None
        return int(reply[VhostUserU64].u64)

    # -- set-up -----------------------------------------------------------------
    def setup(self) -> Self:
        """Negotiate, share the memory, start the queues."""
        if self._sock is None:
            self.connect()
        self.features = self.get_u64(v.VHOST_USER_GET_FEATURES)
        if self.features & (1 << v.VHOST_USER_F_PROTOCOL_FEATURES):
            self.protocol_features = self.get_u64(v.VHOST_USER_GET_PROTOCOL_FEATURES)
            acked = self.protocol_features & DRIVER_PROTOCOL_FEATURES
            self.call(v.VHOST_USER_SET_PROTOCOL_FEATURES, VhostUserU64(u64=acked))
            self.protocol_acked = acked
        if self.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_MQ):
            self.queue_count = self.get_u64(v.VHOST_USER_GET_QUEUE_NUM)
            if self.queue_count < self.queues:
                raise VhostUserError(f"{self.name} has {self.queue_count} queues (GET_QUEUE_NUM); "
                                     f"the front-end was asked to start {self.queues}")
        if self.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_CONFIG):
            self.config = self.get_config()
        self.call(v.VHOST_USER_SET_OWNER)
        self.acked = self.features & DRIVER_FEATURES
        self.call(v.VHOST_USER_SET_FEATURES, VhostUserU64(u64=self.acked))
        self._share_memory()
        for index in range(self.queues):
            self._start_queue(index)
        return self

    def _share_memory(self) -> None:
        self._memfd = os.memfd_create("fusecheck-guest", os.MFD_CLOEXEC)
        os.ftruncate(self._memfd, self.memory_size)
        self._map = mmap.mmap(self._memfd, self.memory_size, mmap.MAP_SHARED)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self.memory = GuestMemory(memoryview(self._map), base=GUEST_BASE)
        region = VhostUserMemoryRegion(guest_phys_addr=GUEST_BASE, memory_size=self.memory_size,
                                       userspace_addr=self.user_addr(GUEST_BASE), mmap_offset=0)
        self.call(v.VHOST_USER_SET_MEM_TABLE, VhostUserMemory(regions=[region]), (self._memfd,))

    def user_addr(self, gpa: int) -> int:
        """Our virtual address of guest physical address ``gpa`` (what SET_VRING_ADDR takes)."""
        return ctypes.addressof(self._anchor) + (gpa - GUEST_BASE)

    def _start_queue(self, index: int) -> None:
        assert self.memory is not None
        ring = SplitQueue(self.memory, self.queue_size)
        kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.started.append(Queue(index, ring, kick, call))
        self._announce(self.started[-1], 0)

    def _announce(self, q: Queue, base: int) -> None:
        """Tell the back-end where queue ``q`` is and start it at available index ``base``."""
        index, ring, kick, call = q.index, q.ring, q.kick_fd, q.call_fd
        self.call(v.VHOST_USER_SET_VRING_NUM, VhostUserVringState(index=index, num=self.queue_size))
        self.call(v.VHOST_USER_SET_VRING_BASE, VhostUserVringState(index=index, num=base))
        self.call(v.VHOST_USER_SET_VRING_ADDR, VhostUserVringAddr(
            index=index, desc_user_addr=self.user_addr(ring.desc_addr),
            used_user_addr=self.user_addr(ring.used_addr), avail_user_addr=self.user_addr(ring.avail_addr)))
        self.call(v.VHOST_USER_SET_VRING_KICK, VhostUserU64(u64=index), (kick,))
        self.call(v.VHOST_USER_SET_VRING_CALL, VhostUserU64(u64=index), (call,))
        if self.acked & (1 << v.VHOST_USER_F_PROTOCOL_FEATURES):  # rings start disabled then
            self.call(v.VHOST_USER_SET_VRING_ENABLE, VhostUserVringState(index=index, num=1))

    def stop_queue(self, index: int) -> int:
        """GET_VRING_BASE: the back-end stops the queue and says the next available index it
        would have taken."""
        reply = self.call(v.VHOST_USER_GET_VRING_BASE, VhostUserVringState(index=index))
        assert reply is not None
        if VhostUserVringState not in reply:
            raise VhostUserError(f"{self.name} answered GET_VRING_BASE with {reply.summary()}")
        return int(reply[VhostUserVringState].num)

    def resume_queue(self, index: int, base: int) -> None:
        """Start a stopped queue again where it stood (its rings and eventfds as before)."""
        self._announce(self.started[index], base)

    # -- the queues -----------------------------------------------------------
    def queue(self, index: int) -> SplitQueue:
        return self.started[index].ring

    def kick(self, index: int) -> None:
        os.eventfd_write(self.started[index].kick_fd, 1)

    def wait(self, timeout: float) -> bool:
        """Wait until a queue's used ring moved (a call eventfd alone is not proof: it can
        fire before the used index changes); False at the timeout."""
        deadline = time.monotonic() + timeout
        calls = [q.call_fd for q in self.started]
        while True:
            if any(q.ring.used_idx != q.ring.last_used for q in self.started):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select(calls, [], [], min(left, 0.05))
            for fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(fd)

    # -- teardown ----------------------------------------------------------------
    def close(self) -> None:
        """Stop each ring (GET_VRING_BASE) while the back-end listens, then release it all."""
        try:
            if self._sock is not None:
                for q in self.started:
                    with contextlib.suppress(TargetError, OSError):
                        self.call(v.VHOST_USER_GET_VRING_BASE, VhostUserVringState(index=q.index))
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            for q in self.started:
                os.close(q.kick_fd)
                os.close(q.call_fd)
            self.started.clear()
            if self.memory is not None:
                self.memory.buffer.release()
                self.memory = None
            self._anchor = None
            if self._map is not None:
                self._map.close()
                self._map = None
            if self._memfd >= 0:
                os.close(self._memfd)
                self._memfd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
