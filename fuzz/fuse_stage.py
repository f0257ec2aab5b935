"""A stage for the FUSE campaign: a fresh target instance after its INIT, and when it is
no longer fit for the next example."""

from __future__ import annotations

from fuzz.fuse_wire import ROOT, outcome
from fuzz.reproducer import Exchange
from fuzz.stage import Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from fuzz.watch import Watch
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn
from targets.connection import DaemonDied, KernelConnection, NoReply
from targets.errors import TargetDied, TargetError
from targets.spec import TargetSpec, is_vhost_user
from targets.wire import wire_target

BEFORE_INIT_WAIT = 0.5  # seconds a request before INIT may go unanswered
STARTUP = 10.0  # seconds a fresh instance may take to answer its INIT (a Python one imports first)
BURST = 16384  # copies of a request in flight together at most (``burst``), over a socket
QUEUED_BURST = 24  # over a virtqueue (two descriptors each, in a queue of 64 or 128)
REF_BURST = 256  # to the reference server: Python answers in 100 us, not 10 (a step stays short)


def _wild(spec: TargetSpec) -> bool:
    return is_vhost_user(spec) or (spec.kind == "daemon" and spec.name == "ref")


def open_stage(spec: TargetSpec, deadline: float, tally: Tally) -> Stage:
    """A fresh instance of ``spec`` after INIT; before the INIT, a GETATTR (out of order: the
    target may answer an error or nothing, and must then still take the INIT)."""
    target = wire_target(spec).open()
    watch = Watch(target.daemon)
    try:
        conn = KernelConnection(target.channel, timeout=deadline)
        _before_init(conn, tally, deadline)
        data = conn.session.init()
        reply = conn.wait(conn.session.last_unique, data, timeout=max(deadline, STARTUP))
        if not reply.ok or conn.session.negotiated is None:
            raise TargetError(f"{spec.text} refused FUSE_INIT: error {reply.error}")
    except (DaemonDied, TargetDied, NoReply) as exc:
        target.close()
        if watch.signalled() or isinstance(exc, NoReply):
            kind = "crash" if watch.signalled() else "hang"
            raise Defect(kind, "FUSE_GETATTR", "malformed",
                         f"a GETATTR before INIT, then INIT: {exc}") from None
        raise
    except BaseException:
        target.close()
        raise
    cap = _burst_cap(spec)
    return Stage(target, tally, deadline, conn, Exchange(data, reply.raw),
                 extra={"watch": watch, "wild": _wild(spec), "burst": cap, "volume": cap == BURST})


def _burst_cap(spec: TargetSpec) -> int:
    """How many copies a burst may hold; a target whose cap is ``BURST`` (a C daemon over a
    socket) also gets the stage's ``volume`` flag: half its bursts are that large."""
    if is_vhost_user(spec):
        return QUEUED_BURST
    return REF_BURST if spec.name == "ref" else BURST


def _before_init(conn: KernelConnection, tally: Tally, deadline: float) -> None:
    """The wait starts before the target has started: an answer that comes later still
    answers a request the target was sent (kept pending), not a unique it made up."""
    data = conn.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=ROOT)
    unique = conn.session.last_unique
    held = conn.session.pending[unique]
    tally.sent_one("FUSE_GETATTR", "malformed")
    try:
        reply = conn.wait(unique, data, timeout=min(deadline, BEFORE_INIT_WAIT))
    except NoReply:
        conn.session.pending[unique] = held
        tally.answer("FUSE_GETATTR", "silent")
        return
    tally.answer("FUSE_GETATTR", outcome(reply))


def healthy(stage: Stage) -> bool:
    return not stage.extra.get("broken") and stage.extra["watch"].alive()
