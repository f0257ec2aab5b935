"""The kernel-role transport: one FUSE message per SOCK_SEQPACKET datagram.

Bytes only; what the bytes mean is ``protocol/``'s business.
"""

from __future__ import annotations

import collections
import select
import socket
import time
from collections.abc import Iterator
from typing import Literal, NamedTuple, Protocol, Self

from targets.errors import TargetDied, TargetError, TargetTimeout, exit_phrase

Direction = Literal["to_target", "from_target"]

#: Largest FUSE message: a 1 MiB WRITE (max_pages 256) plus headers, with slack.
DEFAULT_BUFSIZE = (1 << 20) + 4096
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
#: How long to wait, after EOF, for the process to exit so its status is known.
EOF_EXIT_GRACE = 0.5
_now = time.monotonic


class Record(NamedTuple):
    """One message on the wire, as sent or received: its first ``snaplen`` bytes (all of it,
    mostly) and its whole ``length`` (a tuple: one is made for every message)."""

    time: float
    direction: Direction
    data: bytes
    length: int

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.length


_Fields = tuple[float, Direction, bytes, int]  # a Record's, as kept

_SEND_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
_DONTWAIT = int(socket.MSG_DONTWAIT)
_TRUNC = int(socket.MSG_TRUNC)

#: Records a transcript keeps by default: a failing rule's last exchanges, not a soak's all
TRANSCRIPT_KEEP = 4096
#: Bytes kept of each message (as tcpdump's snaplen): headers and metadata whole, not the
#: body of a 1 MiB WRITE or READ; 4096 records stay within 32 MiB
SNAPLEN = 8192


class Transcript:
    """The messages in order, stamped with ``time.monotonic()``: the newest ``maxlen`` of
    them (``TRANSCRIPT_KEEP`` by default; None keeps every one), each cut to ``snaplen``
    bytes (None: whole)."""

    def __init__(self, maxlen: int | None = TRANSCRIPT_KEEP, snaplen: int | None = SNAPLEN) -> None:
        # plain tuples, made Records when read: appending is on every message's path
        self._records: collections.deque[_Fields] = collections.deque(maxlen=maxlen)
        self.snaplen = snaplen
        self.total = 0

    def append(self, direction: Direction, data: bytes) -> None:
        length, snaplen = len(data), self.snaplen
        if snaplen is not None and length > snaplen:
            data = bytes(data[:snaplen])
        elif type(data) is not bytes:
            data = bytes(data)
        self._records.append((_now(), direction, data, length))
        self.total += 1

    @property
    def dropped(self) -> int:
        """How many old records the bound has discarded."""
        return self.total - len(self._records)

    def records(self) -> list[Record]:
        return [Record(*fields) for fields in self._records]

    def clear(self) -> None:
        self._records.clear()
        self.total = 0

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def __len__(self) -> int:
        return len(self._records)


class Liveness(Protocol):
    """What a channel asks about the process behind it (``targets.process.Daemon``)."""

    name: str

    def wait_exit(self, timeout: float) -> int | None:
        """Return the returncode once exited within ``timeout``, else None."""
        ...

    def stderr_tail(self, n: int = 2000) -> str: ...


def seqpacket_pair(
    bufsize: int = DEFAULT_BUFSIZE,
) -> tuple[socket.socket, socket.socket]:
    """A socketpair whose two ends can each send one message of ``bufsize`` bytes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        _raise_sndbuf(end, 2 * bufsize)
    return ours, theirs


def _raise_sndbuf(sock: socket.socket, size: int) -> None:
    # The largest datagram an AF_UNIX socket sends is bounded by its SO_SNDBUF;
    # as root, FORCE passes net.core.wmem_max.
    for option in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            continue
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= size:
            return


class SeqpacketChannel:
    """Our end of the socketpair: ``send`` a request, ``recv`` one reply datagram."""

    transport = "seqpacket"

    def __init__(
        self,
        sock: socket.socket,
        *,
        liveness: Liveness | None = None,
        name: str = "target",
        bufsize: int = DEFAULT_BUFSIZE,
        transcript: Transcript | None = None,
    ) -> None:
        self.sock = sock
        self.liveness = liveness
        self.name = liveness.name if liveness is not None else name
        self.bufsize = bufsize
        self.transcript = transcript if transcript is not None else Transcript()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes, *, timeout: float = 10.0) -> None:
        """Send ``data`` as one datagram; TargetTimeout if the target stops reading."""
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            if not self._wait(select.POLLOUT, deadline):
                raise TargetTimeout(
                    f"{self.name} did not take a {len(data)}-byte message within {timeout:g} s",
                    hint="the daemon stopped reading its channel; is it stuck?",
                )
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self._died() from None
            except OSError as exc:
                raise TargetError(
                    f"cannot send a {len(data)}-byte message to {self.name}: {exc.strerror}",
                    hint="the message may exceed the socket buffer; lower its size",
                ) from exc
            if sent != len(data):  # SEQPACKET sends whole datagrams or fails
                raise TargetError(f"short send to {self.name}: {sent} of {len(data)} bytes")
            self.transcript.append("to_target", data)
            return

    def recv(self, timeout: float) -> bytes:
        """Return the next datagram from the target, waiting at most ``timeout`` s."""
        self._check_open()
        deadline = time.monotonic() + timeout
        if not self._wait(select.POLLIN, deadline):
            returncode = self.liveness.wait_exit(0) if self.liveness else None
            if returncode is not None:  # exited, yet someone still holds its end
                raise self._died(
                    returncode,
                    detail_suffix=" (another process still holds the channel)",
                )
            raise TargetTimeout(f"{self.name} sent nothing within {timeout:g} s")
        try:
            data, _, flags, _ = self.sock.recvmsg(self.bufsize, 0, socket.MSG_DONTWAIT)
        except ConnectionResetError:
            raise self._died() from None
        if flags & socket.MSG_TRUNC:
            raise TargetError(
                f"{self.name} sent a datagram larger than the {self.bufsize}-byte buffer",
                hint="open the channel with a larger bufsize",
            )
        if not data and self._hung_up():
            raise self._died()
        self.transcript.append("from_target", data)
        return data

    def pipeline(self, messages: list[bytes], expect: int, timeout: float, *, window: int | None = None,
                 send_for: float | None = None) -> tuple[int, list[bytes]]:
        """Send the messages and read up to ``expect`` datagrams back, reading while the socket
        is full (as a busy kernel's queue does), with at most ``window`` sent and not answered;
        after ``send_for`` s it sends no more and waits one datagram fewer for each left unsent.
        How many went out, and the replies in order, until ``timeout`` s pass with nothing sent
        or read. No poll while a send or a read goes through at once."""
        self._check_open()
        sock, bufsize, log = self.sock, self.bufsize, self.transcript.append
        flags, dontwait, trunc = _SEND_FLAGS, _DONTWAIT, _TRUNC  # ints: IntFlag arithmetic costs per message
        now = time.monotonic()
        deadline, stop = now + timeout, now + send_for if send_for is not None else float("inf")
        in_flight = window if window is not None else len(messages)
        replies: list[bytes] = []
        sent, last = 0, len(messages)
        while sent < last or len(replies) < expect:
            moved = False
            while sent < last and sent - len(replies) < in_flight:
                try:
                    sock.send(messages[sent], flags)
                except BlockingIOError:
                    break
                except (BrokenPipeError, ConnectionResetError):
                    raise self._died() from None
                log("to_target", messages[sent])
                sent += 1
                moved = True
            while len(replies) < expect:
                try:
                    data, _, got, _ = sock.recvmsg(bufsize, 0, dontwait)
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    raise self._died() from None
                if not data and self._hung_up():
                    raise self._died()
                if got & trunc:
                    raise TargetError(f"{self.name} sent a datagram larger than the {bufsize}-byte buffer")
                log("from_target", data)
                replies.append(data)
                moved = True
            now = time.monotonic()
            if sent < last and now >= stop:  # out of time to send: judge what went out
                expect, last = expect - (last - sent), sent
            if moved:  # the deadline is for the next sign of life, not for the whole pipeline
                deadline = now + timeout
                continue
            if now >= deadline:
                break
            sending = sent < last and sent - len(replies) < in_flight
            self._wait(select.POLLIN | (select.POLLOUT if sending else 0),
                       min(deadline, stop) if sent < last else deadline)
        return sent, replies

    def close(self) -> None:
        """Close our end; a libfuse daemon reads EOF and exits."""
        if not self.closed:
            self.closed = True
            self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise TargetError(f"the channel to {self.name} is closed", hint="open the target again")

    def _wait(self, events: int, deadline: float) -> bool:
        poller = select.poll()
        poller.register(self.sock, events)
        remaining = max(0.0, deadline - time.monotonic())
        # HUP/ERR are reported too, so a dead peer wakes us at once.
        return bool(poller.poll(remaining * 1000.0))

    def _hung_up(self) -> bool:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLRDHUP)
        return any(ev & (select.POLLHUP | select.POLLRDHUP) for _, ev in poller.poll(0))

    def _died(self, returncode: int | None = None, *, detail_suffix: str = "") -> TargetDied:
        tail = ""
        if self.liveness is not None:
            if returncode is None:
                returncode = self.liveness.wait_exit(EOF_EXIT_GRACE)
            tail = self.liveness.stderr_tail()
        detail = None
        if detail_suffix:
            detail = exit_phrase(returncode) + detail_suffix
        return TargetDied(self.name, returncode=returncode, stderr_tail=tail, detail=detail)
