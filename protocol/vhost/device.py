"""The device's side of split virtqueues, sans-IO: the guest memory a back-end was given
(regions by guest physical and front-end virtual address) and ``DeviceQueue``, which takes
the chains the driver made available and puts them in the used ring. Every address and
length the driver wrote is checked against the memory, a chain's shape against virtio 1.2
2.7.4-2.7.5 (device-readable parts first, an indirect table alone and not nested, no
longer than the queue); a chain that breaks a rule raises ``BadChain`` naming it."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.vhost import constants as v
from protocol.vhost.virtqueue import AVAIL_IDX, AVAIL_RING, DESC, U16, USED_ELEM, USED_IDX, USED_RING


class BadChain(ValueError):
    """The driver offered a chain the device must not follow."""


@dataclass
class Region:
    """One piece of guest memory, as SET_MEM_TABLE described it, mapped at ``buffer``."""

    guest_phys_addr: int
    userspace_addr: int
    buffer: memoryview

    @property
    def size(self) -> int:
        return len(self.buffer)


@dataclass
class DeviceMemory:
    """The guest memory regions a back-end maps (guest physical addresses in descriptors,
    the front-end's virtual addresses in SET_VRING_ADDR)."""

    regions: list[Region] = field(default_factory=list)

    def _find(self, gpa: int, size: int) -> tuple[Region, int]:
        for region in self.regions:
            at = gpa - region.guest_phys_addr
            if 0 <= at and at + size <= region.size:
                return region, at
        raise BadChain(f"guest address {gpa:#x} (+{size}) is in no memory region")

    def check(self, gpa: int, size: int) -> None:
        """BadChain unless ``size`` bytes at ``gpa`` lie inside one region."""
        self._find(gpa, size)

    def read(self, gpa: int, size: int) -> bytes:
        region, at = self._find(gpa, size)
        return bytes(region.buffer[at: at + size])

    def write(self, gpa: int, data: bytes) -> None:
        region, at = self._find(gpa, len(data))
        region.buffer[at: at + len(data)] = data

    def gpa_of(self, uva: int) -> int:
        """The guest physical address of front-end virtual address ``uva``."""
        for region in self.regions:
            if 0 <= uva - region.userspace_addr < region.size:
                return region.guest_phys_addr + uva - region.userspace_addr
        raise BadChain(f"front-end address {uva:#x} is in no memory region")


@dataclass
class DeviceChain:
    """A chain as the device sees it: its head, device-readable and device-writable buffers."""

    head: int
    readable: list[tuple[int, int]]
    writable: list[tuple[int, int]]

    @property
    def room(self) -> int:
        return sum(n for _, n in self.writable)


@dataclass
class DeviceQueue:
    """One queue's rings, found by guest physical address; ``last_avail`` starts at the
    SET_VRING_BASE value."""

    memory: DeviceMemory
    num: int
    desc_addr: int
    avail_addr: int
    used_addr: int
    last_avail: int = 0
    used_idx: int = 0
    indirect: bool = False  # VIRTIO_RING_F_INDIRECT_DESC negotiated

    def available(self) -> int:
        """Chains made available and not taken yet."""
        idx = int(U16.unpack(self.memory.read(self.avail_addr + AVAIL_IDX, U16.size))[0])
        return (idx - self.last_avail) & 0xFFFF

    def published_used(self) -> int:
        """The used index as the ring in memory holds it."""
        return int(U16.unpack(self.memory.read(self.used_addr + USED_IDX, U16.size))[0])

    def pop(self) -> DeviceChain | None:
        """The next available chain (None: none). BadChain if its head or descriptors are
        invalid; the chain is taken all the same (its head goes back with ``push``)."""
        if not self.available():
            return None
        slot = self.avail_addr + AVAIL_RING + U16.size * (self.last_avail % self.num)
        head = int(U16.unpack(self.memory.read(slot, U16.size))[0])
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if head >= self.num:
            raise BadChain(f"available head {head} is not a descriptor of a {self.num}-entry queue")
        return self._walk(head)

    def _walk(self, head: int) -> DeviceChain:
        chain = DeviceChain(head, [], [])
        table, size, index, seen, nested = self.desc_addr, self.num, head, 0, False
        while True:
            if index >= size:
                raise BadChain(f"chain {head}: descriptor {index} is past its table of {size}")
            seen += 1
            if seen > self.num + size:
                raise BadChain(f"chain {head}: longer than the queue (a loop?)")
            addr, length, flags, next_ = DESC.unpack(self.memory.read(table + DESC.size * index, DESC.size))
            if flags & v.VRING_DESC_F_INDIRECT:
                if not self.indirect:
                    raise BadChain(f"chain {head}: an indirect descriptor, INDIRECT_DESC not negotiated")
                if nested or flags & v.VRING_DESC_F_NEXT:
                    raise BadChain(f"chain {head}: an indirect table that is nested or not alone")
                if not length or length % DESC.size:
                    raise BadChain(f"chain {head}: an indirect table of {length} bytes")
                table, size, index, nested = addr, length // DESC.size, 0, True
                continue
            self.memory.check(addr, length)
            if flags & v.VRING_DESC_F_WRITE:
                chain.writable.append((addr, length))
            elif chain.writable:
                raise BadChain(f"chain {head}: a device-readable buffer after a device-writable one")
            else:
                chain.readable.append((addr, length))
            if not flags & v.VRING_DESC_F_NEXT:
                return chain
            index = next_

    def gather(self, chain: DeviceChain) -> bytes:
        """The chain's device-readable bytes, in order."""
        return b"".join(self.memory.read(a, n) for a, n in chain.readable)

    def scatter(self, writable: list[tuple[int, int]], data: bytes) -> int:
        """Write ``data`` into a chain's writable buffers (as far as they reach); bytes written."""
        written = 0
        for addr, length in writable:
            if written >= len(data):
                break
            piece = data[written: written + length]
            self.memory.write(addr, piece)
            written += len(piece)
        return written

    def push(self, head: int, written: int) -> None:
        """Put ``head`` in the used ring with the bytes written, then publish the index."""
        at = self.used_addr + USED_RING + USED_ELEM.size * (self.used_idx % self.num)
        self.memory.write(at, USED_ELEM.pack(head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.memory.write(self.used_addr + USED_IDX, U16.pack(self.used_idx))
