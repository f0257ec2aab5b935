"""The driver's view for the virtio-fs rules: requests laid into guest memory as chains of
any shape (split, indirect, short reply buffers), every buffer followed by a guard, so a
rule sees what the device wrote, where, and what it says it wrote. FUSE bytes come from a
``KernelSession``; the device's answers are judged by it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from scapy.packet import Packet

from protocol.events import Notify, Reply
from protocol.session import KernelSession
from protocol.vhost.virtqueue import Chain
from targets.errors import TargetTimeout
from targets.vhost_user.frontend import VhostUserFrontend

CANARY = 0xA5  # what every buffer holds before the device writes
GUARD = 64  # bytes after each buffer that must stay canary
REQUEST_QUEUE = 1


@dataclass(eq=False)
class Offer:
    """One chain given to the device, and what came back."""

    queue: int
    chain: Chain
    readable: list[tuple[int, bytes]]  # (address, the bytes put there)
    writable: list[tuple[int, int]]  # (address, length)
    used: int | None = None  # the length the device said it wrote, once used

    @property
    def room(self) -> int:
        return sum(n for _, n in self.writable)


@dataclass
class Device:
    frontend: VhostUserFrontend
    timeout: float = 5.0
    session: KernelSession = field(default_factory=KernelSession)
    stray: list[tuple[int, int]] = field(default_factory=list)  # used ids that head no offer

    def _buffer(self, size: int) -> int:
        memory = self.frontend.memory
        assert memory is not None
        addr = memory.alloc(size + GUARD, 16)
        memory.write(addr, bytes([CANARY]) * (size + GUARD))
        return addr

    def offer(self, request: bytes, writable: list[int], *, queue: int = REQUEST_QUEUE,
              split: tuple[int, ...] = (), indirect: bool = False) -> Offer:
        """Lay ``request`` out (cut at the ``split`` offsets) with writable buffers of the
        given lengths, offer the chain on ``queue`` and kick it."""
        memory = self.frontend.memory
        assert memory is not None
        cuts = [0, *split, len(request)]
        readable = []
        for start, end in itertools.pairwise(cuts):
            addr = self._buffer(end - start)
            memory.write(addr, request[start:end])
            readable.append((addr, request[start:end]))
        out = [(self._buffer(n), n) for n in writable]
        chain = self.frontend.queue(queue).add([(a, len(d)) for a, d in readable], out, indirect=indirect)
        self.frontend.kick(queue)
        return Offer(queue, chain, readable, out)

    def wait(self, *offers: Offer, timeout: float | None = None) -> None:
        """Until every offer is used; TargetTimeout naming how many are not."""
        mine = {(o.queue, o.chain.head): o for o in offers if o.used is None}
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while any(o.used is None for o in offers):
            for q in self.frontend.started:
                for _chain, ident, length in q.ring.take_used():
                    offer = mine.pop((q.index, ident), None)
                    if offer is None:
                        self.stray.append((q.index, ident))
                    else:
                        offer.used = length
            left = deadline - time.monotonic()
            if any(o.used is None for o in offers) and (left <= 0 or not self.frontend.wait(left)):
                missing = sum(o.used is None for o in offers)
                raise TargetTimeout(f"{self.frontend.name} left {missing} of {len(offers)} chains unused "
                                    f"after {self.timeout:g} s")

    def written(self, offer: Offer) -> bytes:
        """The bytes in the writable buffers, as far as the used length says."""
        memory = self.frontend.memory
        assert memory is not None and offer.used is not None
        data = b"".join(memory.read(a, n) for a, n in offer.writable)
        return data[: offer.used]

    def trespass(self, offer: Offer) -> list[str]:
        """Where the device wrote what it must not have: readable buffers, guards, writable
        bytes past the length it reported."""
        memory = self.frontend.memory
        assert memory is not None and offer.used is not None
        found = []
        for addr, data in offer.readable:
            if memory.read(addr, len(data)) != data:
                found.append(f"the device-readable buffer at {addr:#x} was changed")
            if set(memory.read(addr + len(data), GUARD)) != {CANARY}:
                found.append(f"the {GUARD} bytes after the readable buffer at {addr:#x} were written")
        left = offer.used
        for addr, n in offer.writable:
            beyond = memory.read(addr + min(left, n), n - min(left, n)) if left < n else b""
            if beyond and set(beyond) != {CANARY}:
                found.append(f"bytes past the reported length {offer.used} were written in the "
                             f"{n}-byte buffer at {addr:#x}")
            if set(memory.read(addr + n, GUARD)) != {CANARY}:
                found.append(f"the {GUARD} bytes after the {n}-byte writable buffer at {addr:#x} "
                             "were written")
            left = max(0, left - n)
        return found

    # -- FUSE over it ------------------------------------------------------------
    def exchange(self, request: bytes, *, writable: list[int] | None = None, queue: int = REQUEST_QUEUE,
                 split: tuple[int, ...] = (), indirect: bool = False) -> tuple[Offer, Reply | Notify | None]:
        """Send one request (reply room as the kernel gives it, unless ``writable``) and judge
        the reply; None when nothing was written."""
        room = self.session.reply_room(request)
        lengths = writable if writable is not None else ([room] if room else [])
        offer = self.offer(request, lengths, queue=queue, split=split, indirect=indirect)
        self.wait(offer)
        data = self.written(offer)
        return offer, self.session.receive(data) if data else None

    def call(self, opcode: int, *layers: Packet, queue: int = REQUEST_QUEUE, **header: Any) -> Reply:
        _offer, reply = self.exchange(self.session.request(opcode, *layers, **header), queue=queue)
        assert isinstance(reply, Reply), f"{opcode}: no reply written"
        return reply

    def init(self) -> Reply:
        _offer, reply = self.exchange(self.session.init())
        assert isinstance(reply, Reply) and reply.ok, f"INIT over the request queue: {reply}"
        return reply
