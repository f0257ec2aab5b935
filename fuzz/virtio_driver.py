"""The driver half of the virtio machines: FUSE requests laid in chains, the used ring
read back, and the verdicts on valid work (``fuzz.virtio`` has the rules)."""

from __future__ import annotations

import time
from typing import NoReturn

from hypothesis import note as hypothesis_note
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine
from scapy.packet import Packet

from conformance.checks import errno_name
from conformance.virtiofs.device import Device, Offer
from fuzz.reproducer import Exchange
from fuzz.stage import Stage
from fuzz.verdict import Defect
from fuzz.watch import Watch
from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Reply
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE
from protocol.vhost import constants as v

ROOT = c.FUSE_ROOT_ID
REQUESTS, HIPRIO = 1, v.VIRTIO_FS_HIPRIO_QUEUE
NAMES = (b"hello.txt", b"dir", b"link", b"absent")  # in both back-ends' trees (targets.daemons.populate)
LAYOUTS = ("plain", "split-header", "split-reply", "indirect", "indirect-split")
#: What glibc and an ``assert`` print as a process aborts (virtiofsd's sandbox parent then exits 1)
GRACE = 0.3  # seconds a hostile chain may lag behind the probe offered after it
MIN_FREE = 16  # descriptors a healthy stage keeps free (unused hostile chains hold theirs)
WIRE = ("reply.len-mismatch", "reply.error-range", "reply.body-after-error", "reply.short",
        "reply.unknown-unique")

def _name(opcode: int) -> str:
    return c.OPCODE_NAMES.get(opcode, f"opcode {opcode:#x}")


def note(text: str) -> None:
    """``hypothesis.note`` inside a test; nothing outside one (a rule called directly)."""
    if currently_in_test_context():
        hypothesis_note(text)


def _outcome(reply: Reply) -> str:
    return "ok" if not reply.error else errno_name(reply.error)


class VirtioDriver(RuleBasedStateMachine):
    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage, self.tally, self.deadline = stage, stage.tally, stage.deadline
        self.device: Device = stage.extra["device"]
        self.watch: Watch = stage.extra["watch"]
        self.outstanding: dict[tuple[int, int], Offer] = stage.extra["outstanding"]
        self.nodes: dict[int, int] = {ROOT: 0}  # nodeid -> lookups this example holds
        self.ended = False

    # -- chains -----------------------------------------------------------------
    def collect(self, until: Offer | None, timeout: float) -> bool:
        """Take what the device used until ``until`` is; False when time ran out or it died."""
        end = time.monotonic() + timeout
        frontend = self.device.frontend
        while True:
            for q in frontend.started:
                for _chain, ident, length in q.ring.take_used():
                    offer = self.outstanding.pop((q.index, ident), None)
                    if offer is None:
                        self.device.stray.append((q.index, ident))
                    else:
                        offer.used = length
            if until is not None and until.used is not None:
                return True
            left = end - time.monotonic()
            if left <= 0 or not self.watch.alive():
                return False
            frontend.wait(min(left, 0.1))

    def track(self, offer: Offer) -> Offer:
        self.outstanding[offer.queue, offer.chain.head] = offer
        return offer

    def offer(self, data: bytes, layout: str, queue: int = REQUESTS) -> Offer:
        room = self.device.session.reply_room(data)
        room = FUSE_OUT_HEADER_SIZE + 4096 if room is None else room
        writable = [room] if room else []
        if layout.endswith("split-reply") or (layout == "indirect-split" and room > FUSE_OUT_HEADER_SIZE):
            writable = [FUSE_OUT_HEADER_SIZE, room - FUSE_OUT_HEADER_SIZE] if room > FUSE_OUT_HEADER_SIZE \
                else writable
        split = (FUSE_IN_HEADER_SIZE,) if "split" in layout and len(data) > FUSE_IN_HEADER_SIZE else ()
        indirect = layout.startswith("indirect") and self.indirect
        return self.track(self.device.offer(data, writable, queue=queue, split=split, indirect=indirect))

    @property
    def indirect(self) -> bool:
        return bool(self.device.frontend.acked & (1 << v.VIRTIO_RING_F_INDIRECT_DESC))

    def valid(self, opcode: int, *layers: Packet, nodeid: int = ROOT, layout: str = "plain",
              queue: int = REQUESTS) -> Reply | None:
        """A request as Linux lays it out; its reply, judged (None: FORGET)."""
        session, name = self.device.session, _name(opcode)
        data = session.request(opcode, *layers, nodeid=nodeid)
        unique = session.last_unique
        sent = f"{name} nodeid={nodeid} in a {layout} chain"
        self.tally.sent_one(name, "valid")
        self.stage.trail.append(Exchange(data))
        try:
            offer = self.offer(data, layout, queue)
        except (MemoryError, BufferError) as exc:
            self.retire(str(exc))
            return None
        if not self.collect(offer, self.deadline):
            session.forget_pending(unique)
            self.fail_silent(name, "valid", sent)
        if not self.watch.alive():
            raise self.watch.crashed(name, "valid", sent)
        self.clean(name, "valid", sent, self.device.trespass(offer))
        if offer.room == 0:
            if offer.used:
                raise Defect("malformed-reply", name, "valid", f"used length {offer.used} for {sent} "
                             "with no writable buffer")
            self.tally.answer(name, "silent")
            return None
        reply = self.decode(name, "valid", sent, self.device.written(offer), offer)
        self.stage.trail[-1] = Exchange(data, reply.raw)
        self.tally.answer(name, _outcome(reply))
        if reply.findings:
            raise Defect("malformed-reply", name, "valid", f"to {sent}: "
                         + "; ".join(str(f) for f in reply.findings))
        return reply

    def decode(self, name: str, field_class: str, sent: str, written: bytes, offer: Offer) -> Reply:
        if offer.used is not None and offer.used > offer.room:
            raise Defect("memory", name, field_class, f"used length {offer.used} for {sent}, whose "
                         f"writable buffers hold {offer.room}")
        if not written:
            raise Defect("malformed-reply", name, field_class, f"{sent} came back used with length 0: "
                         "no reply to a request that needs one")
        try:
            reply = self.device.session.receive(written)
        except RemoteProtocolError as exc:
            raise Defect("malformed-reply", name, field_class, f"to {sent}: {exc.finding}") from None
        if not isinstance(reply, Reply):
            raise Defect("malformed-reply", name, field_class, f"a notification in the chain of {sent}")
        return reply

    def clean(self, name: str, field_class: str, sent: str, problems: list[str]) -> None:
        if problems:
            raise Defect("memory", name, field_class, f"after {sent}: " + "; ".join(problems))

    def fail_silent(self, name: str, field_class: str, sent: str) -> NoReturn:
        """No answer to valid work: a crash, or a hang."""
        self.stage.extra["broken"] = True
        if not self.watch.alive():
            raise self.watch.crashed(name, field_class, sent)
        raise Defect("hang", name, field_class, f"no used chain for {sent} within {self.deadline:g} s; "
                     "the process is alive")

    def retire(self, why: str) -> None:
        """The stage ran out of guest memory or descriptors: a fresh one for the next example."""
        note(f"stage retired: {why}")
        self.stage.extra["broken"] = True
        self.ended = True

    def broken(self, name: str, why: str) -> None:
        """The device needs reset: recorded, not a defect (see the module docstring)."""
        note(f"{name}: device broken: {why}")
        self.tally.answer(name, "device-broken")
        self.stage.extra["broken"] = True
        self.ended = True

