"""Reproducer files: a failing sequence as a pcap (``protocol.pcap``), and its readable form.

A reproducer holds notes first (what failed, against which target), then each
request (direction 0) followed by its reply (direction 1), starting with INIT. A
request without a reply is a FORGET, or one the daemon never answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conformance.checks import errno_name
from conformance.protocol.model import parse_request
from protocol import pcap
from protocol.errors import RemoteProtocolError
from protocol.events import Notify
from protocol.session import KernelSession

MAX_DATA = 48  # bytes of write data or read data shown per message


@dataclass(frozen=True)
class Exchange:
    request: bytes
    reply: bytes | None = None


def encode(exchanges: Iterable[Exchange], notes: Iterable[str] = ()) -> bytes:
    packets = [pcap.note(text) for text in notes]
    for exchange in exchanges:
        packets.append(pcap.Packet(pcap.TO_TARGET, exchange.request))
        if exchange.reply is not None:
            packets.append(pcap.Packet(pcap.FROM_TARGET, exchange.reply))
    return pcap.encode(packets)


def save(path: Path, exchanges: Iterable[Exchange], notes: Iterable[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(exchanges, notes))
    return path


def decode(data: bytes) -> tuple[list[Exchange], list[str]]:
    """The exchanges (requests in order, each with its reply by unique) and the notes."""
    notes: list[str] = []
    order: list[int] = []
    requests: dict[int, bytes] = {}
    replies: dict[int, bytes] = {}
    for packet in pcap.decode(data):
        if packet.direction == pcap.NOTE:
            notes.append(packet.data.decode(errors="replace"))
        elif len(packet.data) < 16:
            continue
        elif packet.direction == pcap.TO_TARGET:
            unique = int.from_bytes(packet.data[8:16], "little")
            order.append(unique)
            requests[unique] = packet.data
        elif packet.direction == pcap.FROM_TARGET:
            unique = int.from_bytes(packet.data[8:16], "little")
            if unique and unique in requests:
                replies.setdefault(unique, packet.data)
    return [Exchange(requests[u], replies.get(u)) for u in order], notes


def load(path: Path) -> tuple[list[Exchange], list[str]]:
    return decode(path.read_bytes())


def describe(exchanges: Iterable[Exchange]) -> str:
    """One line per message: requests with their layers, replies decoded by their request
    (the first exchange is INIT, which sets the minor the rest is read at)."""
    session = KernelSession()
    lines: list[str] = []
    for index, exchange in enumerate(exchanges, 1):
        session.observe(exchange.request)
        call = parse_request(exchange.request, session.proto_minor, session.proto_flags)
        parts = [f"#{index} -> {call.name} unique={call.unique} nodeid={call.nodeid}"]
        if call.arg is not None:
            parts.append(repr(call.arg))
        parts += [f"name={name!r}" for name in call.names]
        if call.data:
            parts.append(f"data={_cut(call.data)}")
        lines.append(" ".join(parts))
        if exchange.reply is None:
            lines.append("   <- (no reply)")
            continue
        try:
            event = session.receive(exchange.reply)
        except RemoteProtocolError as exc:
            lines.append(f"   <- undecodable: {exc.finding}")
            continue
        if isinstance(event, Notify):
            lines.append(f"   <- notification {event.code_name}")
            continue
        body = event.body
        shown = "" if body is None else (
            f"data={_cut(bytes(body))}" if body.__class__.__name__ == "Raw" else repr(body))
        lines.append(f"   <- {errno_name(event.error)} {shown}".rstrip())
    return "\n".join(lines)


def _cut(data: bytes) -> str:
    return repr(data) if len(data) <= MAX_DATA else f"{data[:MAX_DATA]!r}... ({len(data)} bytes)"
