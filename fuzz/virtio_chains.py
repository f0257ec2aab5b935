"""Descriptor chains of hostile shapes for the virtio campaign, laid into guest memory by
hand (``SplitQueue.add`` only makes well-formed ones): a header cut short, no readable or
no writable part, reply buffers too small, overlapping buffers, addresses outside the
memory table or running past its end, indirect tables of bad lengths, nested or chained,
loops through ``next``, a ``next`` or a head past the queue, readable after writable.

``lay(device, request, hostile)`` offers one (without the kick) and returns a ``Laid``: the
chain, the bytes that must stay as they were (readable buffers, the guards after every
buffer) and the zones the device may write (the device-writable buffers, overlaps included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conformance.virtiofs.device import CANARY, GUARD, Device, Offer
from protocol.layers.header import FUSE_OUT_HEADER_SIZE
from protocol.vhost import constants as v
from protocol.vhost.virtqueue import AVAIL_IDX, AVAIL_RING, DESC, U16, Chain, SplitQueue

NEXT, WRITE, INDIRECT = v.VRING_DESC_F_NEXT, v.VRING_DESC_F_WRITE, v.VRING_DESC_F_INDIRECT
IN_HEADER = 40  # sizeof(struct fuse_in_header)
END_SLACK = 64 << 10  # the top of guest memory is never allocated: past-the-end shapes put buffers there

#: shape -> (field class, the values drawn with it)
SHAPES: dict[str, tuple[str, tuple[int, ...]]] = {
    "header-cut": ("malformed", (0, 1, 8, 20, 39)),  # readable bytes kept
    "no-readable": ("malformed", (0,)),
    "no-writable": ("malformed", (0,)),  # the reply buffer offered device-readable
    "reply-too-small": ("boundary", (0, 1, 8, 15, 16, 24)),  # writable room
    "zero-length-desc": ("boundary", (0, 1)),  # 0: a zero-length readable, 1: writable
    "overlap-rw": ("malformed", (0,)),
    "overlap-ww": ("malformed", (0,)),
    "overlap-rr": ("malformed", (0,)),
    "outside-memory": ("malformed", (0, 1, 2, 3)),  # which address; odd: the writable buffer
    "past-region-end": ("malformed", (0, 1, 2)),  # 0: readable, 1: writable, 2: len 0xffffffff
    "indirect-bad-len": ("malformed", (0, 8, -8, 16, 0xFFFFFFF0)),  # table length (n*16 + value)
    "indirect-nested": ("malformed", (0,)),
    "indirect-next": ("malformed", (0,)),
    "loop": ("malformed", (0, 1, 2)),  # 0: back to the head, 1: onto itself, 2: in a table
    "next-past-queue": ("malformed", (0, 1)),
    "head-past-queue": ("malformed", (0, 1)),
    "readable-after-writable": ("malformed", (0,)),
}
INDIRECT_SHAPES = {"indirect-bad-len", "indirect-nested", "indirect-next"}


@dataclass(frozen=True)
class Hostile:
    shape: str
    value: int = 0

    @property
    def field_class(self) -> str:
        return SHAPES[self.shape][0]


@dataclass(frozen=True)
class Desc:
    addr: int
    length: int
    flags: int = 0
    next: int | None = None  # an index into the same list; None: the one after, when NEXT is set


@dataclass
class Laid:
    offer: Offer | None  # None: nothing the device can give back (a head past the queue)
    what: str
    expect: list[tuple[int, bytes]] = field(default_factory=list)  # (address, bytes that must stay)
    zones: list[tuple[int, int]] = field(default_factory=list)  # (address, length) the device may write
    readable_reply: bool = True  # every writable buffer is in our memory: what it holds can be read
    cut: int = 1 << 32  # readable bytes of the request the device can see, when cut short


def buffer(device: Device, data: bytes | int, laid: Laid) -> int:
    """A new buffer holding ``data`` (or that many canary bytes), its guard behind it."""
    memory = device.frontend.memory
    assert memory is not None
    size = data if isinstance(data, int) else len(data)
    content = bytes([CANARY]) * size if isinstance(data, int) else data
    addr = memory.alloc(size + GUARD, 16)
    memory.write(addr, content + bytes([CANARY]) * GUARD)
    laid.expect.append((addr, content + bytes([CANARY]) * GUARD))
    return addr


def _ids(ring: SplitQueue, count: int) -> list[int]:
    if count > len(ring.free):
        raise BufferError(f"{count} descriptors asked, {len(ring.free)} free")
    return [ring.free.pop() for _ in range(count)]


def _pack(descs: list[Desc], ids: list[int]) -> list[bytes]:
    out = []
    for i, d in enumerate(descs):
        follow = d.next if d.next is not None else i + 1
        nxt = ids[follow] if d.flags & NEXT and 0 <= follow < len(ids) else (follow if d.flags & NEXT else 0)
        out.append(DESC.pack(d.addr, d.length & 0xFFFFFFFF, d.flags, nxt & 0xFFFF))
    return out


def publish(ring: SplitQueue, head: int) -> None:
    """Put ``head`` in the available ring, then move its index (the order a driver keeps)."""
    memory = ring.memory
    memory.write(ring.avail_addr + AVAIL_RING + U16.size * (ring.avail_idx % ring.num), U16.pack(head))
    ring.avail_idx = (ring.avail_idx + 1) & 0xFFFF
    memory.write(ring.avail_addr + AVAIL_IDX, U16.pack(ring.avail_idx))


def post(ring: SplitQueue, descs: list[Desc], writable: list[tuple[int, int]]) -> Chain:
    """``descs`` in free slots of the descriptor table (``next`` as list indexes), offered."""
    ids = _ids(ring, len(descs))
    for i, packed in zip(ids, _pack(descs, ids), strict=True):
        ring.memory.write(ring.desc_addr + DESC.size * i, packed)
    chain = Chain(ids[0], ids, writable)
    ring.chains[chain.head] = chain
    publish(ring, chain.head)
    return chain


def table(device: Device, descs: list[Desc], laid: Laid, extra: int = 0) -> int:
    """An indirect table of ``descs`` (``next`` = table indexes), ``extra`` bytes of 0xff behind."""
    memory = device.frontend.memory
    assert memory is not None
    raw = b"".join(_pack(descs, list(range(len(descs))))) + b"\xff" * extra
    addr = memory.alloc(len(raw), v.VRING_DESC_ALIGN)
    memory.write(addr, raw)
    return addr


def lay(device: Device, request: bytes, hostile: Hostile, room: int, queue: int = 1) -> Laid:
    """Offer ``request`` in a chain of ``hostile``'s shape; ``room``: the reply room it wants."""
    frontend = device.frontend
    memory = frontend.memory
    assert memory is not None
    ring = frontend.queue(queue)
    shape, value = hostile.shape, hostile.value
    laid = Laid(None, shape)
    readable: list[tuple[int, bytes]] = []
    writable: list[tuple[int, int]] = []
    descs: list[Desc] = []

    def r(data: bytes, flags: int = NEXT) -> int:
        addr = buffer(device, data, laid)
        readable.append((addr, data))
        descs.append(Desc(addr, len(data), flags))
        return addr

    def w(length: int, addr: int | None = None) -> int:
        at = buffer(device, length, laid) if addr is None else addr
        writable.append((at, length))
        laid.zones.append((at, length))
        descs.append(Desc(at, length, WRITE | NEXT))
        return at

    end = frontend.memory_size + memory.base
    if shape == "header-cut":
        r(request[:value])
        w(room)
        laid.cut = value
        laid.what = f"the readable part cut to {value} of {len(request)} bytes"
    elif shape == "no-readable":
        w(room or FUSE_OUT_HEADER_SIZE)
        laid.cut = 0
        laid.what = "no device-readable descriptor, only the reply buffer"
    elif shape == "no-writable":
        r(request)
        r(bytes([CANARY]) * (room or FUSE_OUT_HEADER_SIZE), 0)
        laid.what = "the reply buffer offered device-readable: no writable descriptor"
    elif shape == "reply-too-small":
        r(request)
        if value:
            w(value)
        laid.what = f"a {value}-byte reply buffer for a reply of up to {room}"
    elif shape == "zero-length-desc":
        if value:
            r(request)
            w(0)
            w(room)
        else:
            r(request[:IN_HEADER])
            r(b"")
            r(request[IN_HEADER:])
            w(room)
        laid.what = f"a zero-length device-{'writable' if value else 'readable'} descriptor inside"
    elif shape == "overlap-rw":
        at = r(request)
        w(max(room, len(request)), addr=at)
        laid.what = "the reply buffer at the request's own address"
    elif shape == "overlap-ww":
        r(request)
        at = w(room)
        w(room, addr=at)
        laid.what = "two reply buffers at one address"
    elif shape == "overlap-rr":
        at = r(request)
        descs.append(Desc(at, len(request), NEXT))
        w(room)
        laid.what = "the request's buffer offered twice"
    elif shape == "outside-memory":
        where = (0, memory.base - 0x1000, end, 0xFFFF_FFFF_FFFF_F000)[value]
        if value % 2:
            r(request)
            descs.append(Desc(where, room or 256, WRITE))
            laid.readable_reply = False
        else:
            descs.append(Desc(where, len(request), NEXT))
            w(room)
        side = "writable" if value % 2 else "readable"
        laid.what = f"a device-{side} buffer at {where:#x}, outside the memory table"
    elif shape == "past-region-end":
        if value == 1:
            r(request)
            laid.zones.append((end - 16, 16))
            writable.append((end - 16, 16))
            memory.write(end - 16, bytes([CANARY]) * 16)
            descs.append(Desc(end - 16, room or 256, WRITE))
            laid.readable_reply = False
            laid.what = f"a {room or 256}-byte reply buffer 16 bytes before the region's end"
        else:
            at = end - len(request) if value == 0 else buffer(device, request, laid)
            if value == 0:
                memory.write(at, request)
                laid.expect.append((at, request))
            length = len(request) + 4096 if value == 0 else 0xFFFFFFFF
            descs.append(Desc(at, length, NEXT))
            w(room)
            laid.what = f"a readable buffer of {length:#x} bytes at {at:#x} (the region ends at {end:#x})"
    elif shape in INDIRECT_SHAPES:
        inner: list[Desc] = [Desc(buffer(device, request, laid), len(request), NEXT)]
        readable.append((inner[0].addr, request))
        at = buffer(device, room, laid)
        writable.append((at, room))
        laid.zones.append((at, room))
        inner.append(Desc(at, room, WRITE))
        head_flags, extra = INDIRECT, 0
        length = DESC.size * len(inner)
        if shape == "indirect-bad-len":
            length = value if value in (0, 8, 0xFFFFFFF0) else length + value
            extra = 16 if value == 16 else 0
            laid.what = f"an indirect table of {len(inner) * DESC.size} bytes offered as {length:#x}"
        elif shape == "indirect-nested":
            nested = table(device, inner, laid)
            inner = [Desc(nested, length, INDIRECT)]
            length = DESC.size
            laid.what = "an indirect descriptor inside an indirect table"
        else:
            head_flags |= NEXT
            laid.what = "an indirect descriptor with NEXT set, chained to a reply buffer"
        descs.append(Desc(table(device, inner, laid, extra), length, head_flags))
        if shape == "indirect-next":
            w(room)
    elif shape == "loop":
        if value == 2:
            inner = [Desc(buffer(device, request, laid), len(request), NEXT),
                     Desc(buffer(device, room, laid), room, WRITE | NEXT, next=0)]
            laid.zones.append((inner[1].addr, room))
            descs.append(Desc(table(device, inner, laid), 2 * DESC.size, INDIRECT))
            laid.what = "an indirect table whose last descriptor points back to its first"
        elif value == 1:
            descs.append(Desc(buffer(device, request, laid), len(request), NEXT, next=0))
            laid.what = "a descriptor whose next is itself"
        else:
            r(request)
            w(room)
            descs[-1] = Desc(descs[-1].addr, room, WRITE | NEXT, next=0)
            laid.what = "a chain whose last descriptor points back to its head"
    elif shape == "next-past-queue":
        r(request)
        descs[-1] = Desc(descs[-1].addr, len(request), NEXT, next=0xFFFF if value else ring.num)
        laid.what = f"next = {descs[-1].next} in a {ring.num}-entry queue"
    elif shape == "head-past-queue":
        publish(ring, ring.num if not value else 0xFFFF)
        laid.what = f"available head {ring.num if not value else 0xFFFF} in a {ring.num}-entry queue"
        return laid
    elif shape == "readable-after-writable":
        r(request[:IN_HEADER])
        w(room)
        r(request[IN_HEADER:], 0)
        laid.what = "a device-readable buffer after the device-writable one"
    else:
        raise ValueError(f"unknown shape {shape!r}")
    descs[-1] = Desc(descs[-1].addr, descs[-1].length, descs[-1].flags & ~NEXT
                     if descs[-1].next is None else descs[-1].flags, descs[-1].next)
    chain = post(ring, descs, writable)
    laid.offer = Offer(queue, chain, readable, writable)
    return laid


def trespass(device: Device, laid: Laid) -> list[str]:
    """Bytes that changed outside the zones the device may write."""
    memory = device.frontend.memory
    assert memory is not None
    found = []
    for addr, expected in laid.expect:
        now = memory.read(addr, len(expected))
        if now == expected:
            continue
        changed = [addr + i for i, (a, b) in enumerate(zip(now, expected, strict=True)) if a != b]
        outside = [at for at in changed if not any(z <= at < z + n for z, n in laid.zones)]
        if outside:
            found.append(f"{len(outside)} bytes written from {outside[0]:#x} (outside every "
                         f"device-writable buffer)")
    return found
