"""Device mutants: faults of the reference server's virtio-fs back-end
(``ref:vhost-user,mutant=NAME``), each a bug real back-ends have had in their rings or
control messages, and the virtio-fs rules that must catch it (tests/test_mutants.py).

A device mutant is a ``VhostUserBackend`` subclass; the FUSE server behind it is sound.
"""

from __future__ import annotations

from dataclasses import dataclass

from scapy.packet import Packet

from protocol.vhost import constants as v
from protocol.vhost.device import DeviceQueue
from protocol.vhost.messages import VhostUserMsg, VhostUserVringState
from protocol.vhost.virtqueue import USED_ELEM, USED_RING
from targets.vhost_user.backend import QueueState, VhostUserBackend


@dataclass(frozen=True)
class DeviceMutant:
    name: str
    description: str
    caught_by: tuple[str, ...]
    backend: type[VhostUserBackend]
    fits: bool = True  # False: a reply too big for the buffers is cut, not made an error reply
    area: str = "virtiofs"


DEVICE_MUTANTS: dict[str, DeviceMutant] = {}


def device_mutant(name: str, description: str, *caught_by: str, fits: bool = True):  # type: ignore[no-untyped-def]
    def register(cls: type[VhostUserBackend]) -> type[VhostUserBackend]:
        DEVICE_MUTANTS[name] = DeviceMutant(name, description, caught_by, cls, fits)
        return cls
    return register


@device_mutant("used-len-is-room", "the used ring gives the writable buffers' whole length, not the "
               "bytes written (a short READ looks as long as the buffer)", "VIRTIOFS-BUFFER-001")
class UsedLengthIsRoom(VhostUserBackend):
    def write_reply(self, ring: DeviceQueue, writable: list[tuple[int, int]], reply: bytes | None) -> int:
        written = super().write_reply(ring, writable, reply)
        return sum(length for _addr, length in writable) if written else 0


@device_mutant("writes-past-buffer", "after each reply, 4 bytes go just past the last writable buffer",
               "VIRTIOFS-BUFFER-001")
class WritesPastBuffer(VhostUserBackend):
    def write_reply(self, ring: DeviceQueue, writable: list[tuple[int, int]], reply: bytes | None) -> int:
        written = super().write_reply(ring, writable, reply)
        if writable and written:
            addr, length = writable[-1]
            ring.memory.write(addr + length, b"\0\0\0\0")
        return written


@device_mutant("short-buffer-cut", "a reply too big for the buffers is cut to fit and used as it is",
               "VIRTIOFS-BUFFER-002", fits=False)
class ShortBufferCut(VhostUserBackend):
    pass  # the FUSE side does it: serve_vhost_user skips the EOVERFLOW reply


@device_mutant("avail-event-written", "the used ring's avail_event word is set without EVENT_IDX",
               "VHOST-USER-004")
class AvailEventWritten(VhostUserBackend):
    def write_reply(self, ring: DeviceQueue, writable: list[tuple[int, int]], reply: bytes | None) -> int:
        at = ring.used_addr + USED_RING + USED_ELEM.size * ring.num
        ring.memory.write(at, (ring.last_avail & 0xFFFF).to_bytes(2, "little"))
        return super().write_reply(ring, writable, reply)


@device_mutant("vring-base-stale", "GET_VRING_BASE answers one index before the next it would take",
               "VHOST-USER-005")
class VringBaseStale(VhostUserBackend):
    def _vring(self, request: int, msg: VhostUserMsg, fds: list[int]) -> Packet | None:
        state = super()._vring(request, msg, fds)
        if request == v.VHOST_USER_GET_VRING_BASE and isinstance(state, VhostUserVringState):
            state.num = (int(state.num) - 1) & 0xFFFF
        return state


@device_mutant("forgets-kept", "FORGET chains on the hiprio queue are never given back used",
               "VIRTIOFS-HIPRIO-001")
class ForgetsKept(VhostUserBackend):
    def complete(self, q: QueueState, head: int, writable: list[tuple[int, int]],
                 reply: bytes | None) -> None:
        if q.index != v.VIRTIO_FS_HIPRIO_QUEUE or writable:
            super().complete(q, head, writable, reply)


@device_mutant("second-queue-idle", "only the first request queue is served; the others never start",
               "VIRTIOFS-QUEUE-001")
class SecondQueueIdle(VhostUserBackend):
    def _maybe_start(self, q: QueueState) -> None:
        if q.index <= 1:
            super()._maybe_start(q)
