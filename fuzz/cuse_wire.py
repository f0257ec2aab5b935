"""How the CUSE campaign's machine sends a message and judges what comes back.

A request whose reply is due must be answered within ``Stage.deadline`` (a READ that is
not is interrupted, as a signal would, and must then be answered), with a reply the kernel
would accept; a broken one may go unanswered, and what does come is judged by its framing.
After each the server must be alive and still answer OPEN and RELEASE (``probe``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from hypothesis.stateful import RuleBasedStateMachine
from scapy.packet import Packet, Raw

from conformance.checks import errno_name
from fuzz.hostile import VALID, Twist
from fuzz.reproducer import Exchange
from fuzz.stage import Stage
from fuzz.verdict import Defect
from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Notify, Reply
from protocol.layers.structs import FuseOpenIn, FuseReleaseIn
from targets.connection import KernelConnection
from targets.errors import TargetDied, TargetTimeout

PROBE_FLAGS = os.O_RDWR | os.O_NONBLOCK
#: Reply findings that concern the reply alone; the rest say what it owes its request, and a
#: near-valid request may ask what the kernel never would (an out_size below the ioctl's size)
FRAMING = {"reply.len-mismatch", "reply.error-range", "reply.body-after-error"}
REQUEST_SIZED = {c.FUSE_READ, c.FUSE_IOCTL}


@dataclass(frozen=True)
class Message:
    opcode: int
    data: bytes
    unique: int  # as the session built it (pending under it)
    twist: Twist
    shown: str  # the request in packet terms
    name: str  # for the tally and the defect: the opcode's, or UNKNOWN_OPCODE


def _show(layer: Packet) -> str:
    if isinstance(layer, Raw):
        return f"{len(layer.load)} bytes of data"
    fields = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and v > 9 else f"{k}={v!r}"
                       for k, v in layer.fields.items())
    return f"{type(layer).__name__}({fields})"


def _answer(reply: Reply | Notify | None) -> str:
    if reply is None:
        return "nothing"
    error = reply.code if isinstance(reply, Notify) else reply.error
    return f"{errno_name(error)} ({len(reply.raw)} bytes)"


class CuseWire(RuleBasedStateMachine):
    """The sending and judging half of ``fuzz.cuse.CuseFuzzMachine`` (which has the rules)."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage
        self.conn: KernelConnection = stage.conn
        self.early: dict[int, Reply | Notify] = stage.extra.setdefault("early", {})  # by unique
        self.answered = 0  # the unique of a request answered last, for "reused unique"

    def build(self, opcode: int, *layers: Packet, twist: Twist = VALID, unique: int | None = None) -> Message:
        data = self.conn.session.request(opcode, *layers, nodeid=0, unique=unique)
        unique = self.conn.session.last_unique
        shown = " / ".join(_show(layer) for layer in layers)
        name = c.OPCODE_NAMES.get(opcode, str(opcode))
        return Message(opcode, data, unique, twist, f"{name} unique={unique:#x} {shown}".rstrip(), name)

    def defect(self, kind: str, culprit: Message, explanation: str) -> Defect:
        found = Defect(kind, culprit.name, culprit.twist.field_class, explanation)
        self.stage.extra["broken"] = found  # the stage is no longer fit for an example
        return found

    def crash(self, culprit: Message) -> Defect:
        found = self.stage.extra["watch"].crashed(culprit.name, culprit.twist.field_class,
                                                  f"{culprit.shown} ({culprit.twist.what})")
        self.stage.extra["broken"] = found  # the stage is no longer fit for an example
        return found

    def send(self, message: Message, wire: bytes | None = None) -> None:
        self.stage.tally.sent_one(message.name, message.twist.field_class)
        try:
            self.conn.channel.send(message.data if wire is None else wire, timeout=self.stage.deadline)
        except TargetDied:
            raise self.crash(message) from None

    def receive(self, unique: int, culprit: Message) -> Reply | Notify | None:
        """The answer to ``unique``, or None when none came within the deadline."""
        deadline = time.monotonic() + self.stage.deadline
        while unique not in self.early:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    return None
                event = self.conn.session.receive(self.next_message(deadline))
            except TargetDied:
                raise self.crash(culprit) from None
            except RemoteProtocolError as exc:
                raise self.defect("malformed-reply", culprit, f"after {culprit.shown} "
                                  f"({culprit.twist.what}) the target wrote {exc.finding}") from None
            except TargetTimeout:
                return None
            self.take(event, culprit)
        return self.early.pop(unique)

    def next_message(self, deadline: float) -> bytes:
        """The next message; one the stand-in /dev/cuse split (a server's write larger than
        the stand-in's max_write arrives as several) is joined again, as /dev/cuse takes it."""
        channel = self.conn.channel
        raw = bytes(channel.recv(max(0.0, deadline - time.monotonic())))
        while channel.transport == "cuse" and len(raw) >= 4 and int.from_bytes(raw[:4], "little") > len(raw):
            try:
                raw += channel.recv(max(0.0, deadline - time.monotonic()))
            except TargetTimeout:
                break  # the len field lies: judged as it is
        return raw

    def take(self, event: Reply | Notify, culprit: Message) -> None:
        if isinstance(event, Notify) and event.code <= 0:
            self.early[0] = event  # a reply to a request with unique 0: it answers nothing
        elif isinstance(event, Notify):
            if event.findings:
                raise self.defect("malformed-reply", culprit, f"after {culprit.shown}, notification "
                                  f"{event.code_name}: " + "; ".join(map(str, event.findings)))
        elif event.opcode == 0:
            raise self.defect("malformed-reply", culprit, f"after {culprit.shown} the target "
                              f"answered unique {event.unique:#x}, which is not pending: "
                              + "; ".join(map(str, event.findings)))
        else:
            self.early[event.unique] = event

    def judge(self, message: Message, reply: Reply | Notify) -> None:
        kind = message.twist.field_class
        sized = kind == "boundary" and message.opcode not in REQUEST_SIZED
        problems = [str(f) for f in reply.findings if kind == "valid" or f.code in FRAMING
                    or (sized and f.code == "reply.body-size")]
        if problems:
            raise self.defect("malformed-reply", message, f"sent {message.shown} ({message.twist.what}); "
                              f"the reply {_answer(reply)} is one the kernel refuses: " + "; ".join(problems))

    def alive(self, culprit: Message) -> None:
        daemon = self.stage.target.daemon
        if daemon is not None and not daemon.alive():
            raise self.crash(culprit)
        self.stage.extra["watch"].check(culprit.name, culprit.twist.field_class, culprit.shown)

    def record(self, message: Message, reply: Reply | Notify | None, wire: bytes | None = None) -> None:
        self.stage.trail.append(Exchange(message.data if wire is None else wire,
                                         None if reply is None else reply.raw))
        outcome = "silent" if reply is None else errno_name(
            reply.code if isinstance(reply, Notify) else reply.error)
        self.stage.tally.answer(message.name, "ok" if outcome == "success" else outcome)

    def call(self, message: Message, *, may_block: bool = False, culprit: Message | None = None) -> Reply:
        """Send a request whose reply is due; a READ that gets none is interrupted, as a
        signal would, and must then be answered."""
        blame = culprit or message
        self.send(message)
        reply = self.receive(message.unique, blame)
        if reply is None and may_block:
            interrupt = self.conn.session.interrupt(message.unique)
            stop = Message(c.FUSE_INTERRUPT, interrupt, message.unique | c.FUSE_INT_REQ_BIT, VALID,
                           f"FUSE_INTERRUPT of unique {message.unique:#x}", "FUSE_INTERRUPT")
            self.send(stop)
            self.record(stop, None)
            reply = self.receive(message.unique, blame)
        self.record(message, reply)
        if reply is None:
            raise self.defect("hang", blame, f"no reply to {message.shown} within {self.stage.deadline:g} s"
                              + (f", after {blame.shown} ({blame.twist.what})" if culprit else "")
                              + (" (nor after FUSE_INTERRUPT)" if may_block else ""))
        assert isinstance(reply, Reply)
        self.judge(message, reply)
        self.alive(blame)
        self.answered = message.unique
        return reply

    def probe(self, culprit: Message) -> None:
        """OPEN and RELEASE must still be answered, and OPEN succeed as at the start."""
        opened = self.call(self.build(c.FUSE_OPEN, FuseOpenIn(flags=PROBE_FLAGS)), culprit=culprit)
        if self.stage.extra.get("probe_ok") and not opened.ok:
            raise self.defect("unresponsive", culprit, f"after {culprit.shown} ({culprit.twist.what}) "
                              f"OPEN answers {errno_name(opened.error)}")
        fh = int(getattr(opened.body, "fh", 0) or 0) if opened.ok else 0
        self.call(self.build(c.FUSE_RELEASE, FuseReleaseIn(fh=fh, flags=PROBE_FLAGS)), culprit=culprit)

    def hostile(self, message: Message, wire: bytes, *, wire_unique: int) -> None:
        """Send ``wire`` (``message`` broken); an answer is allowed, not due, and judged."""
        self.send(message, wire)
        index = len(self.stage.trail)
        self.stage.trail.append(Exchange(wire))
        self.alive(message)
        self.probe(message)
        reply = self.early.pop(wire_unique, None)
        if wire_unique != message.unique:
            self.early.pop(message.unique, None)
        self.stage.trail[index] = Exchange(wire, None if reply is None else reply.raw)
        self.stage.tally.answer(message.name, "silent" if reply is None else (
            "ok" if (reply.code if isinstance(reply, Notify) else reply.error) == 0
            else errno_name(reply.code if isinstance(reply, Notify) else reply.error)))
        if reply is not None:
            self.judge(message, reply)
