"""Split virtqueues (virtio 1.2, 2.7; linux/virtio_ring.h), sans-IO: the ring structs as
scapy layers, and ``SplitQueue``, the driver's side of one queue laid out in guest memory
the caller owns (``GuestMemory``: a writable buffer and the guest physical address it
starts at). The driver makes descriptor chains (device-readable parts, then
device-writable ones, directly or through an indirect table), offers their heads in the
available ring, and takes back what the device put in the used ring."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from protocol.codec import codec
from protocol.layers.base import fixed_size, u16, u32, u64
from protocol.vhost import constants as v
from protocol.vhost.messages import VhostStruct


class VringDesc(VhostStruct):
    c_name = "vring_desc"
    fields_desc = [u64("addr"), u32("len"), u16("flags"), u16("next")]


class VringAvail(VhostStruct):
    """The available ring's head; ``ring[num]`` (u16 heads) and ``used_event`` follow."""

    c_name = "vring_avail"
    fields_desc = [u16("flags"), u16("idx")]


class VringUsedElem(VhostStruct):
    c_name = "vring_used_elem"
    fields_desc = [u32("id"), u32("len")]


class VringUsed(VhostStruct):
    """The used ring's head; ``ring[num]`` (vring_used_elem) and ``avail_event`` follow."""

    c_name = "vring_used"
    fields_desc = [u16("flags"), u16("idx")]


# the ring layouts, for both sides (protocol.vhost.device reads them too)
DESC = codec(VringDesc).struct
USED_ELEM = codec(VringUsedElem).struct
U16 = struct.Struct("<H")  # an available ring entry, an index, an event word
AVAIL_IDX = codec(VringAvail).field("idx")[1]
USED_IDX = codec(VringUsed).field("idx")[1]
AVAIL_RING, USED_RING = fixed_size(VringAvail), fixed_size(VringUsed)


def ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, the available ring and the used ring for ``num``
    entries (event-index words included)."""
    avail = AVAIL_RING + U16.size * (num + 1)
    return DESC.size * num, avail, USED_RING + USED_ELEM.size * num + U16.size


def _align(value: int, to: int) -> int:
    return (value + to - 1) & ~(to - 1)


@dataclass
class GuestMemory:
    """The guest's RAM as this side sees it: ``buffer`` holds guest physical addresses
    ``base`` to ``base + len(buffer)``; ``alloc`` hands out aligned pieces of it."""

    buffer: memoryview
    base: int = 0
    _next: int = 0

    def alloc(self, size: int, align: int = 16) -> int:
        """A guest physical address with ``size`` bytes free behind it (never given back)."""
        start = _align(self._next, align)
        if start + size > len(self.buffer):
            raise MemoryError(f"guest memory of {len(self.buffer)} bytes is full")
        self._next = start + size
        return self.base + start

    def offset(self, gpa: int, size: int = 0) -> int:
        """The buffer offset of ``gpa``; ValueError outside the memory."""
        at = gpa - self.base
        if at < 0 or at + size > len(self.buffer):
            raise ValueError(f"guest address {gpa:#x} (+{size}) is outside the guest memory")
        return at

    def write(self, gpa: int, data: bytes) -> None:
        at = self.offset(gpa, len(data))
        self.buffer[at: at + len(data)] = data

    def read(self, gpa: int, size: int) -> bytes:
        at = self.offset(gpa, size)
        return bytes(self.buffer[at: at + size])


def _parts(readable: list[tuple[int, int]],
           writable: list[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """(address, length, flags) of a chain's buffers, device-readable first."""
    for addr, length in readable:
        yield addr, length, 0
    for addr, length in writable:
        yield addr, length, v.VRING_DESC_F_WRITE


@dataclass(slots=True)
class Chain:
    """A chain offered to the device: its head, every descriptor it took, and the
    device-writable buffers (address, length) its reply goes into."""

    head: int
    descriptors: list[int]
    writable: list[tuple[int, int]]


@dataclass
class SplitQueue:
    """The driver's half of one split queue of ``num`` entries, its rings in ``memory``."""

    memory: GuestMemory
    num: int
    desc_addr: int = field(init=False)
    avail_addr: int = field(init=False)
    used_addr: int = field(init=False)
    avail_idx: int = field(default=0, init=False)
    last_used: int = field(default=0, init=False)
    free: list[int] = field(init=False)
    chains: dict[int, Chain] = field(default_factory=dict, init=False)
    tables: dict[int, tuple[int, int]] = field(default_factory=dict, init=False)  # head: (addr, room)
    _used_idx_at: int = field(default=0, init=False)  # buffer offsets of the used index, ring
    _used_ring_at: int = field(default=0, init=False)
    _desc_at: int = field(default=0, init=False)
    _avail_idx_at: int = field(default=0, init=False)
    _avail_ring_at: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.num < 1 or self.num > 32768 or self.num & (self.num - 1):
            raise ValueError(f"a split queue has a power of 2 entries up to 32768, not {self.num}")
        desc, avail, used = ring_sizes(self.num)
        self.desc_addr = self.memory.alloc(desc, v.VRING_DESC_ALIGN)
        self.avail_addr = self.memory.alloc(avail, v.VRING_AVAIL_ALIGN)
        self.used_addr = self.memory.alloc(used, v.VRING_USED_ALIGN)
        for addr, size in ((self.desc_addr, desc), (self.avail_addr, avail), (self.used_addr, used)):
            self.memory.write(addr, bytes(size))
        self.free = list(range(self.num))
        self._used_idx_at = self.memory.offset(self.used_addr + USED_IDX, U16.size)  # polled often
        self._used_ring_at = self.memory.offset(self.used_addr + USED_RING, USED_ELEM.size * self.num)
        self._desc_at = self.memory.offset(self.desc_addr, desc)
        self._avail_idx_at = self.memory.offset(self.avail_addr + AVAIL_IDX, U16.size)
        self._avail_ring_at = self.memory.offset(self.avail_addr + AVAIL_RING, U16.size * self.num)

    # -- offering ---------------------------------------------------------
    def add(self, readable: list[tuple[int, int]], writable: list[tuple[int, int]], *,
            indirect: bool = False) -> Chain:
        """Chain (address, length) buffers, device-readable first, and offer the chain.
        ``indirect``: one descriptor pointing at a table of them (VIRTIO_RING_F_INDIRECT_DESC);
        each head keeps its table for the next chain it heads."""
        count = len(readable) + len(writable)
        if not count:
            raise ValueError("a chain has at least one buffer")
        needed = 1 if indirect else count
        free = self.free
        if needed > len(free):
            raise BufferError(f"{needed} descriptors asked, {len(free)} free")
        ids = [free.pop() for _ in range(needed)]
        buffer, pack = self.memory.buffer, DESC.pack_into
        if indirect:
            table = self._table(ids[0], count)
            at = self.memory.offset(table, DESC.size * count)
            for i, (addr, length, flags) in enumerate(_parts(readable, writable)):
                more = i + 1 < count
                pack(buffer, at + DESC.size * i, addr, length, flags | (v.VRING_DESC_F_NEXT if more else 0),
                     i + 1 if more else 0)
            pack(buffer, self._desc_at + DESC.size * ids[0], table, DESC.size * count,
                 v.VRING_DESC_F_INDIRECT, 0)
        else:
            for i, (addr, length, flags) in enumerate(_parts(readable, writable)):
                more = i + 1 < count
                pack(buffer, self._desc_at + DESC.size * ids[i], addr, length,
                     flags | (v.VRING_DESC_F_NEXT if more else 0), ids[i + 1] if more else 0)
        chain = Chain(ids[0], ids, writable)
        self.chains[chain.head] = chain
        U16.pack_into(buffer, self._avail_ring_at + U16.size * (self.avail_idx % self.num), chain.head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF  # the ring entry before the index
        U16.pack_into(buffer, self._avail_idx_at, self.avail_idx)
        return chain

    def _table(self, head: int, entries: int) -> int:
        """The indirect table of descriptor ``head``, with room for ``entries``."""
        addr, room = self.tables.get(head, (0, 0))
        if room < entries:
            room = max(entries, 2 * room, 4)
            addr = self.memory.alloc(DESC.size * room, v.VRING_DESC_ALIGN)
            self.tables[head] = addr, room
        return addr

    # -- taking back ------------------------------------------------------
    @property
    def used_idx(self) -> int:
        return int(U16.unpack_from(self.memory.buffer, self._used_idx_at)[0])

    def pending(self) -> int:
        """Chains offered and not yet used."""
        return len(self.chains)

    def take_used(self) -> list[tuple[Chain | None, int, int]]:
        """What the device used since the last call: (the chain, or None for an id that
        heads no offered chain, the id, the length it says it wrote); chains are freed."""
        out: list[tuple[Chain | None, int, int]] = []
        buffer = self.memory.buffer
        end = U16.unpack_from(buffer, self._used_idx_at)[0]
        while self.last_used != end:
            at = self._used_ring_at + USED_ELEM.size * (self.last_used % self.num)
            ident, length = USED_ELEM.unpack_from(buffer, at)
            chain = self.chains.pop(ident, None)
            if chain is not None:
                self.free.extend(chain.descriptors)
            out.append((chain, ident, length))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out
