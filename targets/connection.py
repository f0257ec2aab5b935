"""The kernel role over a channel: a KernelSession (bytes) joined to a channel (IO).

What a daemon does wrong while a test waits for it is raised as an
``AssertionError`` subclass (a finding against the daemon, so the test fails
rather than errors): ``NoReply``, ``UnexpectedReply``, ``MalformedReply`` and
``DaemonDied``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from scapy.packet import Packet

from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Notify, Reply
from protocol.session import KernelSession
from targets.channel import Transcript
from targets.errors import TargetDied, TargetError, TargetTimeout

DEFAULT_TIMEOUT = 5.0
KEEP_EVENTS = 256  # newest replies and notifications kept for the test to inspect


class Channel(Protocol):
    name: str
    transcript: Transcript
    transport: str  # "seqpacket" (the /dev/fuse framing) or "virtio-fs" (queues)

    def send(self, data: bytes, *, timeout: float = ...) -> None: ...

    def recv(self, timeout: float) -> bytes: ...


class UnexpectedReply(TargetError, AssertionError):
    """A reply arrived that no request is waiting for: the daemon broke the pairing."""


class MalformedReply(TargetError, AssertionError):
    """A message too broken to decode (shorter than fuse_out_header)."""


class NoReply(TargetTimeout, AssertionError):
    """The daemon did not answer a request within the deadline."""


class DaemonDied(TargetError, AssertionError):
    """The daemon died while a request was in flight."""


class KernelConnection:
    """Send requests as the kernel would and wait for their replies, with deadlines.

    Replies to other uniques that arrive meanwhile are kept for their caller;
    notifications are collected in ``notifications``.
    """

    def __init__(self, channel: Channel, session: KernelSession | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self.session = session or KernelSession()
        self.timeout = timeout
        self.notifications: deque[Notify] = deque(maxlen=KEEP_EVENTS)
        self.replies: deque[Reply] = deque(maxlen=KEEP_EVENTS)  # every reply, in order
        self._early: dict[int, Reply] = {}
        if hasattr(channel, "room"):  # a transport that sizes reply buffers as the kernel does
            channel.room = self.session.reply_room

    @property
    def transcript(self) -> Transcript:
        return self.channel.transcript

    def init(self, **kwargs: int) -> Reply:
        """Send FUSE_INIT (session defaults unless given) and wait for the reply."""
        data = self.session.init(**kwargs)
        return self.wait(self.session.last_unique, data)

    def call(self, opcode: int, *layers: Packet, timeout: float | None = None,
             **header: Any) -> Reply:
        """Send one request and return its reply."""
        data = self.session.request(opcode, *layers, **header)
        return self.wait(self.session.last_unique, data, timeout=timeout)

    def send(self, opcode: int, *layers: Packet, **header: Any) -> int:
        """Send a request without waiting; returns its unique."""
        data = self.session.request(opcode, *layers, **header)
        self.channel.send(data, timeout=self.timeout)
        return self.session.last_unique

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (malformed on purpose); nothing is remembered."""
        self.channel.send(data, timeout=self.timeout)

    def wait(self, unique: int, data: bytes | None = None, *,
             timeout: float | None = None) -> Reply:
        """Send ``data`` if given, then receive until the reply for ``unique`` comes.

        The deadline holds whatever else arrives meanwhile (notifications,
        replies to other requests).
        """
        if data is not None:
            self.channel.send(data, timeout=self.timeout)
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while unique not in self._early:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TargetTimeout(f"{self.channel.name} sent other messages only")
                event = self.next_event(left)
            except TargetTimeout as exc:
                raise self._no_reply(unique, budget, exc) from None
            if isinstance(event, Reply) and event.opcode == 0:  # answers no pending request
                self.session.forget_pending(unique)
                raise UnexpectedReply(
                    f"waiting for the reply to unique {unique}, got one to unique {event.unique}: "
                    + "; ".join(str(f) for f in event.findings),
                    hint="the daemon must copy the request's unique into its reply")
            if isinstance(event, Reply) and event.unique != unique:
                self._early[event.unique] = event
            elif isinstance(event, Reply):
                return event
        return self._early.pop(unique)

    def _no_reply(self, unique: int, budget: float, exc: TargetTimeout) -> NoReply:
        pending = self.session.pending.get(unique)
        opcode = pending.opcode if pending else None
        what = c.OPCODE_NAMES.get(opcode, f"opcode {opcode}") if opcode is not None else "request"
        self.session.forget_pending(unique)
        return NoReply(f"{self.channel.name} did not answer {what} (unique {unique}) within "
                       f"{budget:.3g} s", hint="a slow daemon needs a larger --reply-timeout")

    def next_event(self, timeout: float) -> Reply | Notify:
        """Receive and decode the next message."""
        try:
            raw = self.channel.recv(timeout)
        except TargetDied as exc:
            raise DaemonDied(exc.message, hint=exc.hint) from exc
        try:
            event = self.session.receive(raw)
        except RemoteProtocolError as exc:
            raise MalformedReply(str(exc.finding), hint="every message starts with a "
                                 "16-byte fuse_out_header") from exc
        if isinstance(event, Notify):
            self.notifications.append(event)
        else:
            self.replies.append(event)
        return event

    def quiet(self, window: float) -> list[Reply | Notify]:
        """Everything the target sends within ``window`` s (for requests without replies)."""
        seen: list[Reply | Notify] = []
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.next_event(left))
            except TargetTimeout:
                break
        return seen
