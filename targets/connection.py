"""The kernel role over a channel: a KernelSession (bytes) joined to a channel (IO)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from scapy.packet import Packet

from protocol import constants as c
from protocol.events import Notify, Reply
from protocol.session import KernelSession
from targets.channel import Transcript
from targets.errors import TargetDied, TargetError, TargetTimeout

DEFAULT_TIMEOUT = 5.0


class Channel(Protocol):
    name: str
    transcript: Transcript

    def send(self, data: bytes, *, timeout: float = ...) -> None: ...

    def recv(self, timeout: float) -> bytes: ...


class UnexpectedReply(AssertionError):
    """A reply arrived that no request is waiting for: the daemon broke the pairing."""


class NoReply(TargetTimeout, AssertionError):
    """The daemon did not answer a request within the deadline: a finding against it."""


class DaemonDied(TargetError, AssertionError):
    """The daemon died while a request was in flight: a finding against it."""


class KernelConnection:
    """Send requests as the kernel would and wait for their replies, with deadlines.

    Replies to other uniques that arrive meanwhile are kept for their caller;
    notifications are collected in ``notifications``.
    """

    def __init__(
        self,
        channel: Channel,
        session: KernelSession | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.channel = channel
        self.session = session or KernelSession()
        self.timeout = timeout
        self.notifications: list[Notify] = []
        self.replies: list[Reply] = []  # every reply received, in order
        self._early: dict[int, Reply] = {}

    @property
    def transcript(self) -> Transcript:
        return self.channel.transcript

    def init(self, **kwargs: int) -> Reply:
        """Send FUSE_INIT (session defaults unless given) and wait for the reply."""
        data = self.session.init(**kwargs)
        return self.wait(self.session._last_unique, data)

    def call(
        self, opcode: int, *layers: Packet, timeout: float | None = None, **header: Any
    ) -> Reply:
        """Send one request and return its reply."""
        data = self.session.request(opcode, *layers, **header)
        unique = int.from_bytes(data[8:16], "little")
        return self.wait(unique, data, timeout=timeout)

    def send(self, opcode: int, *layers: Packet, **header: Any) -> int:
        """Send a request without waiting; returns its unique."""
        data = self.session.request(opcode, *layers, **header)
        self.channel.send(data, timeout=self.timeout)
        return int.from_bytes(data[8:16], "little")

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (malformed on purpose); nothing is remembered."""
        self.channel.send(data, timeout=self.timeout)

    def wait(
        self, unique: int, data: bytes | None = None, *, timeout: float | None = None
    ) -> Reply:
        """Send ``data`` if given, then receive until the reply for ``unique`` comes."""
        if data is not None:
            self.channel.send(data, timeout=self.timeout)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while unique not in self._early:
            event = self.next_event(
                max(0.0, deadline - time.monotonic()), waiting_for=unique
            )
            if isinstance(event, Reply) and event.opcode == 0:  # answers no pending request
                self.session.forget_pending(unique)
                raise UnexpectedReply(
                    f"waiting for the reply to unique {unique}, got one to unique {event.unique}: "
                    + "; ".join(str(f) for f in event.findings))
            if isinstance(event, Reply) and event.unique != unique:
                self._early[event.unique] = event
            elif isinstance(event, Reply):
                return event
        return self._early.pop(unique)

    def next_event(
        self, timeout: float, *, waiting_for: int | None = None
    ) -> Reply | Notify:
        """Receive and decode the next message."""
        try:
            raw = self.channel.recv(timeout)
        except TargetDied as exc:
            raise DaemonDied(exc.message, hint=exc.hint) from exc
        except TargetTimeout as exc:
            if waiting_for is not None:
                pending = self.session.pending.get(waiting_for)
                what = c.OPCODE_NAMES.get(pending.opcode, "?") if pending else "request"
                self.session.forget_pending(waiting_for)
                raise NoReply(
                    f"{self.channel.name} did not answer {what} "
                    f"(unique {waiting_for}) within {timeout:.3g} s",
                    hint=exc.hint,
                ) from None
            raise
        event = self.session.receive(raw)
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
