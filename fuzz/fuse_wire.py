"""What the FUSE campaign's machine does on the wire, and how it judges what comes back.

After every message: the process lives; a reply that is due comes within the deadline and
is well formed (``Reply.findings``; for a malformed request only its framing is judged);
after a near-valid or malformed one, GETATTR of the root is still answered. Silence is
right for FORGET and allowed for a malformed request; so is an orderly exit (libfuse ends
its loop on a short read), which ends the stage without a finding. A burst (``burst_out``)
is judged from the bytes of its replies (``fuzz.burst``).
"""

from __future__ import annotations

import os
import struct

from hypothesis.stateful import RuleBasedStateMachine
from scapy.packet import Packet

from fuzz import burst
from fuzz.hostile import IN_HEADER, VALID, Twist
from fuzz.reproducer import Exchange
from fuzz.stage import Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from fuzz.watch import Watch
from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Reply
from protocol.layers.messages import NO_REPLY
from protocol.layers.structs import FuseGetattrIn
from protocol.session import Pending
from targets.connection import DaemonDied, KernelConnection, MalformedReply, NoReply, UnexpectedReply
from targets.errors import TargetDied, TargetError

ROOT = c.FUSE_ROOT_ID
#: Requests that may rightly wait for ever: a conflicting lock held by another owner
MAY_WAIT = {c.FUSE_SETLKW}
MAX_UNANSWERED = 1024  # broken requests left unanswered that a stage keeps waiting for at most
WIRE_FINDINGS = ("reply.len-mismatch", "reply.error-range", "reply.body-after-error", "reply.short",
                 "reply.unknown-unique")


def opcode_name(opcode: int) -> str:
    return c.OPCODE_NAMES.get(opcode, f"opcode {opcode:#x}")


_ERRORS = {0: "ok"}  # fuse_out_header.error -> how the tally calls it, as met


def _error(reply: bytes) -> str:
    error = burst.OUT_HEADER.unpack_from(reply)[1]
    _ERRORS[error] = os.strerror(-error)
    return _ERRORS[error]


def outcome(reply: Reply) -> str:
    if not reply.error:
        return "ok"
    return os.strerror(-reply.error) if -reply.error < 4096 else str(reply.error)


class FuseWire(RuleBasedStateMachine):
    """The sending and judging half of ``fuzz.fuse.FuseFuzzMachine`` (which has the rules)."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage
        self.conn: KernelConnection = stage.conn
        self.tally: Tally = stage.tally
        self.watch: Watch = stage.extra["watch"]
        self.broke_framing: tuple[str, str] | None = None  # the last malformed message sent
        self.tainted = False  # a hostile request succeeded: what it changed is not tracked

    def exchange(self, opcode: int, data: bytes, twist: Twist) -> Reply | None:
        """Send ``data``; its reply when one is due, judged; None for silence."""
        name = opcode_name(opcode)
        self.tally.sent_one(name, twist.field_class)
        if twist.field_class == "malformed":
            self.broke_framing = (name, f"{name} ({twist.what})")
        sent = f"{name} ({twist.what})"
        unique = struct.unpack_from("<Q", data, 8)[0] if len(data) >= 16 else 0
        session = self.conn.session
        due = opcode not in NO_REPLY and unique != 0
        if due and twist.field_class == "malformed":  # its reply is read as a bare one (only its
            # framing is judged), and may never come: its header is all it keeps
            session.pending[unique] = Pending(c.FUSE_FLUSH, data[:IN_HEADER])
            if len(session.pending) > MAX_UNANSWERED:  # a fresh session before they add up
                self.stage.extra["broken"] = True
        elif due:
            session.pending[unique] = Pending(opcode, data)
        must_answer = due and twist.field_class != "malformed"
        entry = Exchange(data)
        self.stage.trail.append(entry)
        try:
            self.conn.send_raw(data)
            reply = self.conn.wait(unique, timeout=self.stage.deadline) if must_answer else None
        except (DaemonDied, TargetDied):
            self._ended(name, twist, sent)
            return None
        except NoReply:
            if opcode in MAY_WAIT:  # it waits for a lock; the stage is done, not the target
                self.stage.extra["broken"] = True
                self.tally.answer(name, "silent")
                return None
            self._silent(name, twist, sent)
            return None
        except (MalformedReply, UnexpectedReply) as exc:
            raise Defect("malformed-reply", name, twist.field_class, f"to {sent}: {exc}") from None
        except TargetError:
            if self.watch.alive():
                raise
            self._ended(name, twist, sent)
            return None
        if reply is not None:
            self.stage.trail[-1] = Exchange(entry.request, reply.raw)
            self.tally.answer(name, outcome(reply))
            self._judge(name, twist, sent, reply)
            # a near-valid change that went through (a name cut at its NUL, a mode no VFS
            # passes) leaves state the kernel would not know: later replies are judged by form
            self.tainted |= reply.ok and twist.field_class != "valid"
        else:
            self.tally.answer(name, "silent")
        self.watch.check(name, twist.field_class, sent)
        if twist.field_class != "valid" or opcode in NO_REPLY:
            self.probe(name, twist, sent)
        return reply

    def _judge(self, name: str, twist: Twist, sent: str, reply: Reply) -> None:
        """All findings for a valid request; for a near-valid one only the reply's framing and
        body size (what it means may follow from what was asked); for a broken one the framing."""
        judged = "boundary" if twist.field_class == "valid" and self.tainted else twist.field_class
        wanted = {"valid": None, "boundary": (*WIRE_FINDINGS, "reply.body-size"),
                  "malformed": WIRE_FINDINGS}[judged]
        findings = [f for f in reply.findings if wanted is None or f.code in wanted]
        if findings:
            raise Defect("malformed-reply", name, twist.field_class,
                         f"to {sent}: " + "; ".join(str(f) for f in findings))

    def _ended(self, name: str, twist: Twist, sent: str) -> None:
        """The channel closed: a crash, unless the process exited by itself after this example
        broke the framing (libfuse ends its loop on a short read, a thread later)."""
        self.stage.extra["broken"] = True
        if self.broke_framing is None:
            raise self.watch.crashed(name, twist.field_class, sent)
        if not self.watch.signalled():
            self.tally.answer(name, "exited")  # an orderly end of a broken channel
            return
        culprit, what = self.broke_framing  # a daemon may die of it a request or two later
        raise self.watch.crashed(culprit, "malformed", what if what == sent else f"{what}, then {sent}")

    def _silent(self, name: str, twist: Twist, sent: str) -> None:
        self.stage.extra["broken"] = True
        if not self.watch.alive():
            raise self.watch.crashed(name, twist.field_class, sent)
        raise Defect("hang", name, twist.field_class,
                     f"no reply to {sent} within {self.stage.deadline:g} s; the process is alive")

    def probe(self, name: str, twist: Twist, sent: str) -> None:
        """GETATTR of the root must still be answered, well formed."""
        if self.stage.extra.get("broken"):
            return
        data = self.conn.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=ROOT)
        self.stage.trail.append(Exchange(data))
        try:
            reply = self.conn.wait(self.conn.session.last_unique, data, timeout=self.stage.deadline)
        except (DaemonDied, TargetDied):
            self._ended(name, twist, sent)
            return
        except NoReply:
            self.stage.extra["broken"] = True
            if not self.watch.alive():
                raise self.watch.crashed(name, twist.field_class, sent) from None
            raise Defect("unresponsive", name, twist.field_class,
                         f"after {sent}, GETATTR of the root got no reply within "
                         f"{self.stage.deadline:g} s; the process is alive") from None
        except (TargetError, RemoteProtocolError) as exc:
            raise Defect("unresponsive", name, twist.field_class,
                         f"after {sent}, GETATTR of the root failed: {exc}") from None
        self.stage.trail[-1] = Exchange(data, reply.raw)
        self.tally.sent_one("FUSE_GETATTR", "valid")
        self.tally.answer("FUSE_GETATTR", outcome(reply))
        if reply.error or reply.findings:
            raise Defect("unresponsive", name, twist.field_class,
                         f"after {sent}, GETATTR of the root answered error {reply.error} "
                         + "; ".join(str(f) for f in reply.findings))

    def encode(self, opcode: int, *layers: Packet, nodeid: int) -> bytes:
        """The request's bytes with a unique of its own, not yet pending: ``exchange()`` owns
        that (it knows whether a reply is due and how to read it)."""
        data = self.conn.session.request(opcode, *layers, nodeid=nodeid)
        self.conn.session.forget_pending(self.conn.session.last_unique)
        return data

    def send(self, opcode: int, layers: tuple[Packet, ...], *, nodeid: int,
             twist: Twist = VALID) -> Reply | None:
        return self.exchange(opcode, self.encode(opcode, *layers, nodeid=nodeid), twist)

    def burst_out(self, name: str, messages: list[tuple[bytes, tuple[str, int]]]) -> None:
        channel, trail, first = self.conn.channel, self.stage.trail, len(self.stage.trail)
        sent = {burst.UNIQUE.unpack_from(data, burst.UNIQUE_AT)[0]: first + i
                for i, (data, _) in enumerate(messages)}
        trail.extend(Exchange(data) for data, _ in messages)
        self.tally.sent[name, "boundary"] += len(messages)
        self.tally.requests += len(messages)
        waiting = set(sent)
        try:
            if hasattr(channel, "pipeline"):  # a socket: many in flight, read as they come
                datas = [data for data, _ in messages]
                went, replies = channel.pipeline(datas, len(datas), self.stage.deadline,
                                                 window=burst.WINDOW, send_for=burst.SECONDS)
                if went < len(messages):  # a slow target: the burst is what went out in its time
                    self.tally.sent[name, "boundary"] -= len(messages) - went
                    self.tally.requests -= len(messages) - went
                    del messages[went:], trail[first + went:]
                    sent = {unique: i for unique, i in sent.items() if i < first + went}
                    waiting = set(sent)
                waited = len(replies) < went  # it gave up: a deadline without a sign of life
            else:  # a virtqueue: one at a time (its free descriptors are the harness's to count)
                replies, waited = [], False
                for data, _ in messages:
                    channel.send(data, timeout=self.stage.deadline)
                    for reply in (channel.recv(self.stage.deadline),):
                        self._burst_reply(name, messages, sent, waiting, reply, first)
            while True:
                for reply in replies:
                    self._burst_reply(name, messages, sent, waiting, reply, first)
                if not waiting:
                    break
                if waited:
                    raise TargetError("no reply within the deadline")
                replies = [channel.recv(self.stage.deadline)]  # the next reply's deadline (the
                # pipeline's count took notifications and late answers to earlier requests)
        except (TargetDied, DaemonDied):
            self._ended(name, Twist("boundary", "a burst"), f"a burst of {len(messages)} {name}")
            return
        except TargetError:
            if not self.watch.alive():
                self._ended(name, Twist("boundary", "a burst"), f"a burst of {len(messages)} {name}")
                return
            self.stage.extra["broken"] = True
            lost = [burst.what(messages[i - first][1]) for u, i in sent.items() if u in waiting]
            raise Defect("hang", name, "boundary", f"{len(waiting)} of {len(messages)} {name} in a burst "
                         f"got no reply within {self.stage.deadline:g} s, e.g. ({lost[0]})") from None
        sent_what = f"a burst of {len(messages)} {name}"
        self.watch.check(name, "boundary", sent_what)
        self.probe(name, Twist("boundary", sent_what), sent_what)

    def _burst_reply(self, name: str, messages: list[tuple[bytes, tuple[str, int]]], sent: dict[int, int],
                     waiting: set[int], reply: bytes, first: int) -> None:
        unique = burst.UNIQUE.unpack_from(reply, burst.UNIQUE_AT)[0] if len(reply) >= 16 else -1
        if unique == 0 or (unique not in waiting and self.conn.session.pending.pop(unique, None)):
            return  # a notification, or the late answer to an earlier broken request
        problem = burst.wire_problem(reply, waiting)
        index = sent.get(unique)
        if index is not None:
            self.stage.trail[index] = Exchange(self.stage.trail[index].request, reply)
        if problem:
            what = burst.what(messages[index - first][1]) if index is not None else "a burst"
            raise Defect("malformed-reply", name, "boundary", f"to {name} ({what}): {problem}")
        waiting.discard(unique)
        self.tally.replies += 1
        self.tally.answered[name, _ERRORS.get(burst.OUT_HEADER.unpack_from(reply)[1]) or _error(reply)] += 1
