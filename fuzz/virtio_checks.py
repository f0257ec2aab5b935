"""The checks after a hostile step of the virtio machine: is the process alive (and how it
ended), did the device write outside its buffers, does the control socket answer, is a
valid GETATTR on a fresh chain answered. ``fuzz.virtio`` says what counts as a defect."""

from __future__ import annotations

from scapy.packet import Raw

from conformance.checks import errno_name
from conformance.virtiofs.device import Offer
from fuzz.reproducer import Exchange
from fuzz.verdict import Defect
from fuzz.virtio_chains import Laid
from fuzz.virtio_driver import REQUESTS, ROOT, WIRE, VirtioDriver, _outcome, note
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn
from protocol.session import Pending
from protocol.vhost import constants as v
from targets.errors import TargetDied, TargetTimeout
from targets.vhost_user.frontend import VhostUserError


class VirtioChecks(VirtioDriver):
    # -- after a hostile step ---------------------------------------------------------
    def died(self, name: str, field_class: str, sent: str) -> bool:
        """Whether the process is gone: a Defect if by a signal, needs-reset otherwise."""
        if self.watch.alive():
            return False
        if self.watch.signalled():  # a signal, or the abort message of a forked child
            raise self.watch.crashed(name, field_class, sent)
        self.broken(name, f"it {self.watch.death()}; stderr ends {self.watch.stderr(200)!r}")
        return True

    def control_answers(self, name: str, field_class: str, sent: str, *, excused: bool) -> bool:
        """GET_FEATURES is answered, as at set-up; False (needs reset) when the socket closed,
        or, ``excused``, when a broken control message left it unanswered."""
        frontend = self.device.frontend
        try:
            features = frontend.get_u64(v.VHOST_USER_GET_FEATURES)
        except (TargetDied, VhostUserError, TargetTimeout) as exc:
            self.watch.death(1.0)  # it may be on its way out
            if self.died(name, field_class, sent):
                return False
            if isinstance(exc, TargetTimeout) and not excused:
                raise Defect("unresponsive", name, field_class, f"after {sent}, GET_FEATURES got no "
                             f"reply within {self.deadline:g} s; the process is alive") from None
            self.broken(name, f"the control socket: {exc}")
            return False
        self.tally.sent_one("VHOST_USER_GET_FEATURES", "valid")
        self.tally.answer("VHOST_USER_GET_FEATURES", "ok")
        if features != frontend.features:
            raise Defect("malformed-reply", name, field_class, f"after {sent}, GET_FEATURES answered "
                         f"{features:#x}; {frontend.features:#x} at set-up")
        return True

    def probe(self) -> tuple[Offer, bytes]:
        data = self.device.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=ROOT)
        self.stage.trail.append(Exchange(data))
        return self.offer(data, "plain"), data

    def judge_probe(self, name: str, field_class: str, sent: str, offer: Offer, data: bytes) -> None:
        self.tally.sent_one("FUSE_GETATTR", "valid")
        self.clean(name, field_class, sent, self.device.trespass(offer))
        if not offer.used:
            raise Defect("unresponsive", name, field_class, f"after {sent}, GETATTR of the root came "
                         "back used with length 0 (no reply)")
        reply = self.decode(name, field_class, f"GETATTR of the root after {sent}",
                            self.device.written(offer), offer)
        self.stage.trail[-1] = Exchange(data, reply.raw)
        self.tally.answer("FUSE_GETATTR", _outcome(reply))
        if reply.error or reply.findings:
            raise Defect("unresponsive", name, field_class, f"after {sent}, GETATTR of the root "
                         f"answered {errno_name(reply.error)} "
                         + "; ".join(str(f) for f in reply.findings))

    def settle(self, name: str, field_class: str, sent: str, answered: bool, probe: Offer,
               data: bytes, *, excused: bool = False) -> None:
        """The checks after a hostile step (the probe was offered after it)."""
        if self.died(name, field_class, sent):
            return
        self.watch.check(name, field_class, sent)
        if not self.control_answers(name, field_class, sent, excused=excused):
            return
        if not answered:
            self.device.session.forget_pending(int.from_bytes(data[8:16], "little"))
            self.broken(name, f"no used chain for GETATTR of the root within {self.deadline:g} s")
            return
        self.judge_probe(name, field_class, sent, probe, data)

    def hostile_reply(self, name: str, field_class: str, sent: str, laid: Laid, data: bytes,
                      at: int) -> None:
        """What came back in the hostile chain: nothing, or a reply that is well formed."""
        offer = laid.offer
        if offer is None or not offer.used:
            self.tally.answer(name, "silent")
            return
        if offer.used > offer.room:
            raise Defect("memory", name, field_class, f"used length {offer.used} after {sent}, whose "
                         f"writable buffers hold {offer.room}")
        if not laid.readable_reply or laid.what.startswith("two reply"):
            self.tally.answer(name, "answered")
            return
        written = self.device.written(offer)
        if laid.cut < 16 and written[8:16] == bytes(8):  # no unique to echo: an error to nobody
            self.tally.answer(name, "unique-0")
            if int.from_bytes(written[:4], "little") != offer.used:
                raise Defect("malformed-reply", name, field_class, f"to {sent}: a reply whose len "
                             f"says {int.from_bytes(written[:4], 'little')}, used length {offer.used}")
            return
        unique = int.from_bytes(data[8:16], "little")
        self.device.session.pending[unique] = Pending(c.FUSE_FLUSH, data)  # judge the framing only
        reply = self.decode(name, field_class, sent, written, offer)
        self.stage.trail[at] = Exchange(data, reply.raw)
        self.tally.answer(name, _outcome(reply))
        findings = [f for f in reply.findings if f.code in WIRE]
        if findings or len(reply.raw) != offer.used:
            raise Defect("malformed-reply", name, field_class, f"to {sent}: used length {offer.used}, "
                         + "; ".join(str(f) for f in findings))

    def control(self, data: bytes, name: str, what: str, *, reply: bool, excused: bool) -> None:
        """Send a broken control message (its reply read when one is due), then settle."""
        frontend = self.device.frontend
        note(f"{name}: {what}")
        self.tally.sent_one(name, "malformed")
        try:
            frontend.send(Raw(data))
            if reply and frontend.pending(self.deadline):
                answer = frontend.receive()
                flags = int(answer.flags)
                if int(answer.request) != int.from_bytes(data[:4], "little") or \
                        not flags & v.VHOST_USER_REPLY_MASK:
                    raise Defect("malformed-reply", name, "malformed", f"{what} was answered with "
                                 f"{answer.summary()}")
                status = bytes(answer.payload)[:8]
                self.tally.answer(name, "ok" if not any(status) else "refused")
            else:
                self.tally.answer(name, "silent")
        except (TargetDied, TargetTimeout, OSError):
            pass  # the checks below say what became of it
        try:
            probe, probe_data = self.probe()
            self.device.frontend.kick(REQUESTS)
        except (MemoryError, BufferError) as exc:
            return self.retire(str(exc))
        answered = self.collect(probe, self.deadline)
        self.settle(name, "malformed", what, answered, probe, probe_data, excused=excused)

    @property
    def acks(self) -> bool:
        return bool(self.device.frontend.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK))
