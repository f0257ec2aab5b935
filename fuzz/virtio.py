"""The virtio campaign: a virtio-fs device behind a vhost-user socket (virtiofsd,
``ref:vhost-user``) driven as a hostile guest and a hostile front-end would drive it.

Valid FUSE work goes through well-formed chains of several layouts (split request, split
reply, indirect); hostile steps lay chains of broken shapes (``fuzz.virtio_chains``) or send
broken control messages (``fuzz.virtio_control``). After every step: the process lives;
nothing was written outside the device-writable buffers (guards); the control socket still
answers GET_FEATURES; a valid GETATTR of the root on a fresh well-formed chain is answered,
well formed, within the deadline.

What is a defect. virtio lets a device give up after a driver error (virtio 1.2, 2.1:
DEVICE_NEEDS_RESET), and the C virtiofsd does: libvhost-user's ``vu_panic`` marks the device
broken and virtiofsd's panic callback exits with status 1; the reference back-end stops the
queue. So a device that stops serving after a hostile step (it exits without a signal,
closes its socket, or leaves the queue unserved) *needs reset*: the machine records
``device-broken`` for that shape, ends the example and ``healthy`` tells the runner to open a
fresh device. A defect is what no driver error excuses: death by a signal (an ``assert``,
SIGSEGV, SIGFPE), a write outside the writable buffers, a reply that is not well formed, a
used length past the buffers, a control socket that hangs while the process lives, and any
failure after *valid* work (an exit then is one nobody asked for). virtiofsd's default
sandbox forks and its parent exits 1 when the child dies of a signal, so an exit also counts
as a crash when stderr shows an ``assert`` or glibc abort (a silent SIGSEGV of that child
looks like a panic exit: run it with ``sandbox=chroot`` to see signals).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule
from scapy.packet import Raw

from conformance.virtiofs.device import Device
from fuzz import virtio_control as ctl
from fuzz.reproducer import Exchange
from fuzz.stage import Campaign, Stage, register
from fuzz.stats import Tally
from fuzz.verdict import Defect
from fuzz.virtio_chains import INDIRECT_SHAPES, SHAPES, Hostile, lay, trespass
from fuzz.virtio_checks import VirtioChecks
from fuzz.virtio_driver import GRACE, HIPRIO, LAYOUTS, MIN_FREE, NAMES, REQUESTS, ROOT, note
from fuzz.watch import Watch
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseForgetIn, FuseGetattrIn, FuseOpenIn, FuseReadIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.errors import TargetError
from targets.spec import TargetSpec, is_vhost_user
from targets.vhost_user.target import VhostUserTarget

INDEX = st.integers(0, 255)
HOSTILE = st.sampled_from(sorted(SHAPES)).flatmap(
    lambda shape: st.sampled_from(SHAPES[shape][1]).map(lambda value: Hostile(shape, value)))


def live(step: Callable[..., None]) -> Callable[..., None]:
    """A step that sends nothing once the stage has ended (the device needs reset). A guard,
    not a precondition: which rules hypothesis may draw must not depend on what the target
    answered, or a target that answers one sequence two ways breaks the example's replay
    (FlakyStrategyDefinition) and hides what it did."""

    @functools.wraps(step)
    def guarded(self: VirtioFuzzMachine, *args: Any, **kwargs: Any) -> None:
        if not self.ended:
            step(self, *args, **kwargs)

    return guarded


class VirtioFuzzMachine(VirtioChecks):
    # -- valid work -----------------------------------------------------------------
    def pick(self, index: int) -> int:
        ids = sorted(self.nodes)
        return ids[index % len(ids)]

    @rule(name=st.sampled_from(NAMES), layout=st.sampled_from(LAYOUTS))
    @live
    def lookup(self, name: bytes, layout: str) -> None:
        reply = self.valid(c.FUSE_LOOKUP, FuseName(name=name), layout=layout)
        if reply is not None and reply.ok and reply.body is not None:
            nodeid = int(reply.body.nodeid)
            self.nodes[nodeid] = self.nodes.get(nodeid, 0) + 1

    @rule(which=INDEX, layout=st.sampled_from(LAYOUTS))
    @live
    def getattr(self, which: int, layout: str) -> None:
        self.valid(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=self.pick(which), layout=layout)

    @rule(layout=st.sampled_from(LAYOUTS))
    @live
    def statfs(self, layout: str) -> None:
        self.valid(c.FUSE_STATFS, layout=layout)

    @rule(directory=st.booleans(), layout=st.sampled_from(LAYOUTS))
    @live
    def read(self, directory: bool, layout: str) -> None:
        """OPENDIR+READDIR+RELEASEDIR of the root, or OPEN+READ+RELEASE of hello.txt."""
        nodeid = ROOT
        if not directory:
            found = self.valid(c.FUSE_LOOKUP, FuseName(name=NAMES[0]))
            if found is None or not found.ok or found.body is None:
                return
            nodeid = int(found.body.nodeid)
            self.nodes[nodeid] = self.nodes.get(nodeid, 0) + 1
        ops = (c.FUSE_OPENDIR, c.FUSE_READDIR, c.FUSE_RELEASEDIR) if directory else (
            c.FUSE_OPEN, c.FUSE_READ, c.FUSE_RELEASE)
        opened = self.valid(ops[0], FuseOpenIn(flags=0), nodeid=nodeid)
        if opened is None or not opened.ok or opened.body is None:
            return
        fh = int(opened.body.fh)
        self.valid(ops[1], FuseReadIn(fh=fh, size=4096), nodeid=nodeid, layout=layout)
        self.valid(ops[2], FuseReleaseIn(fh=fh), nodeid=nodeid)

    @rule(which=INDEX)
    @live
    def forget(self, which: int) -> None:
        """FORGET on the hiprio queue, all lookups of one inode."""
        ids = [n for n, count in self.nodes.items() if n != ROOT and count]
        if ids:
            nodeid = ids[which % len(ids)]
            self.valid(c.FUSE_FORGET, FuseForgetIn(nlookup=self.nodes.pop(nodeid)), nodeid=nodeid,
                       queue=HIPRIO)

    # -- hostile steps ------------------------------------------------------------------
    @rule(hostile=HOSTILE, which=INDEX)
    @live
    def hostile_chain(self, hostile: Hostile, which: int) -> None:
        """GETATTR in a chain of a broken shape, then the probe on a good one."""
        if hostile.shape in INDIRECT_SHAPES and not self.indirect:
            return
        session, name, fc = self.device.session, f"virtq:{hostile.shape}", hostile.field_class
        nodeid = self.pick(which)
        data = session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
        session.forget_pending(session.last_unique)
        room = session.reply_room(data) or 0
        at = len(self.stage.trail)
        try:
            laid = lay(self.device, data, hostile, room)
            if laid.offer is not None:
                self.track(laid.offer)
            self.stage.trail.append(Exchange(data))
            self.device.frontend.kick(REQUESTS)
            probe, probe_data = self.probe()
        except (MemoryError, BufferError) as exc:
            return self.retire(str(exc))
        sent = f"FUSE_GETATTR nodeid={nodeid} in a chain with {laid.what}"
        note(f"{name}: {sent}")
        self.tally.sent_one(name, fc)
        answered = self.collect(probe, self.deadline)
        if answered and laid.offer is not None and laid.offer.used is None:
            self.collect(laid.offer, GRACE)
        self.clean(name, fc, sent, trespass(self.device, laid))
        if self.device.stray and hostile.shape != "head-past-queue":
            raise Defect("malformed-reply", name, fc, f"after {sent}, the used ring returned ids that "
                         f"head no chain offered: {self.device.stray}")
        self.device.stray.clear()
        self.hostile_reply(name, fc, sent, laid, data, at)
        self.settle(name, fc, sent, answered, probe, probe_data)

    @rule(code=st.sampled_from(ctl.UNKNOWN_CODES + ctl.FOREIGN_CODES), flagged=st.booleans())
    @live
    def unknown_request(self, code: int, flagged: bool) -> None:
        data, what = ctl.build(ctl.Control("code", code), need_reply=flagged)
        self.control(data, ctl.name(code), what, reply=flagged and self.acks, excused=True)

    @rule(lie=st.sampled_from(ctl.SIZE_LIES), amount=st.sampled_from((1, 4, 8, 56)),
          huge=st.sampled_from((0x1000, 0x10000, 0xFFFFFFFF)))
    @live
    def lying_size(self, lie: str, amount: int, huge: int) -> None:
        """A header whose size lies: the stream is out of step after it, so the stage ends."""
        data, what = ctl.build(ctl.Control("size", huge if lie == "huge" else amount, lie), need_reply=False)
        self.control(data, "VHOST_USER_SET_VRING_ENABLE", what, reply=False, excused=True)
        self.ended = self.stage.extra["broken"] = True

    @rule(num=st.sampled_from(ctl.BAD_NUMS))
    @live
    def bad_vring_num(self, num: int) -> None:
        """SET_VRING_NUM of a size no split queue has, on the running request queue; the ring
        no longer matches the driver's, so only crashes are judged and the stage ends."""
        data, what = ctl.build(ctl.Control("vring-num", num), need_reply=self.acks)
        self.ended = self.stage.extra["broken"] = True
        frontend, name = self.device.frontend, "VHOST_USER_SET_VRING_NUM"
        self.tally.sent_one(name, "malformed")
        note(f"{name}: {what}")
        try:
            frontend.send(Raw(data))
            if self.acks and frontend.pending(self.deadline):
                self.tally.answer(name, "ok" if not any(bytes(frontend.receive().payload)[:8]) else "refused")
            probe, _data = self.probe()
            frontend.kick(REQUESTS)
            self.collect(probe, self.deadline)
        except (TargetError, OSError, MemoryError, BufferError):
            pass
        self.watch.death(0.2)
        if not self.died(name, "malformed", what):
            self.watch.check(name, "malformed", what)


def open_stage(spec: TargetSpec, deadline: float, tally: Tally) -> Stage:
    """The back-end started, its queues set up, FUSE INIT done on the request queue."""
    target = VhostUserTarget(spec).open(set_up=False)
    try:
        frontend = target.frontend
        assert frontend is not None
        frontend.timeout = deadline
        frontend.setup()
        device = Device(frontend, timeout=deadline)
        data = device.session.init()
        _offer, reply = device.exchange(data)
        if not isinstance(reply, Reply) or not reply.ok:
            raise TargetError(f"{spec.text} refused FUSE_INIT on the request queue: {reply}")
    except BaseException:
        target.close()
        raise

    def hurry() -> None:  # a back-end stuck on a broken message answers nothing more
        frontend.timeout = min(deadline, 0.5)

    extra: dict[str, Any] = {"device": device, "watch": Watch(target.daemon), "outstanding": {},
                             "close": hurry}
    return Stage(target, tally, deadline, None, Exchange(data, reply.raw), extra=extra)


def healthy(stage: Stage) -> bool:
    frontend = stage.extra["device"].frontend
    return not stage.extra.get("broken") and stage.extra["watch"].alive() and frontend.connected \
        and all(len(q.ring.free) >= MIN_FREE for q in frontend.started)


CAMPAIGN = register(Campaign(
    "virtio", "virtio-fs chains and vhost-user messages, valid and hostile, on a vhost-user back-end",
    applies=is_vhost_user, open=open_stage, machine=VirtioFuzzMachine, healthy=healthy))
