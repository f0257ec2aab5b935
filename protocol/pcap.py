"""Pcap files of FUSE exchanges, as bytes: no files, no clock.

The layout is the suite's transcript pcap (``reports.transcript``, ``ref:record``):
link type USER0 (147), each record one FUSE message preceded by one direction
byte:

- 0 ``TO_TARGET``: a request, as the kernel sent it (``fuse_in_header`` and body);
- 1 ``FROM_TARGET``: a reply or notification, as the daemon sent it;
- 2 ``REFUSED``: a reply the kernel refused (``ref:record`` only);
- 3 ``NOTE``: UTF-8 text about the exchange (what failed, the target), not a message.

Timestamps are whatever the caller gives (nanoseconds; 0 when it gives none). Both
the microsecond (0xa1b2c3d4) and the nanosecond (0xa1b23c4d) magic are read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

LINKTYPE_USER0 = 147
TO_TARGET, FROM_TARGET, REFUSED, NOTE = 0, 1, 2, 3
MAGIC_US, MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
SNAPLEN = 262144
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, fraction, captured length, original length


class PcapError(ValueError):
    """Bytes that are not a pcap of this layout."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One record: its direction byte, the message (or note) bytes, its time in ns."""

    direction: int
    data: bytes
    time_ns: int = 0


def encode(packets: Iterable[Packet]) -> bytes:
    """A whole pcap file (nanosecond timestamps) holding ``packets`` in order."""
    out = [_FILE_HEADER.pack(MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0)]
    for packet in packets:
        record = bytes([packet.direction]) + packet.data
        seconds, fraction = divmod(packet.time_ns, 1_000_000_000)
        out.append(_RECORD_HEADER.pack(seconds, fraction, len(record), len(record)) + record)
    return b"".join(out)


def note(text: str) -> Packet:
    return Packet(NOTE, text.encode())


def decode(data: bytes) -> list[Packet]:
    """Every record of a pcap of this layout; PcapError when it is not one or is cut short."""
    if len(data) < _FILE_HEADER.size:
        raise PcapError(f"{len(data)} bytes: shorter than a pcap file header")
    magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = _FILE_HEADER.unpack_from(data)
    if magic not in (MAGIC_US, MAGIC_NS):
        raise PcapError(f"magic {magic:#x} is not a little-endian pcap's")
    if linktype != LINKTYPE_USER0:
        raise PcapError(f"link type {linktype}, not USER0 ({LINKTYPE_USER0}): not a FUSE exchange")
    scale = 1 if magic == MAGIC_NS else 1000
    packets: list[Packet] = []
    pos = _FILE_HEADER.size
    while pos < len(data):
        if pos + _RECORD_HEADER.size > len(data):
            raise PcapError(f"record header cut short at byte {pos}")
        seconds, fraction, caplen, _wirelen = _RECORD_HEADER.unpack_from(data, pos)
        start = pos + _RECORD_HEADER.size
        if caplen < 1 or start + caplen > len(data):
            raise PcapError(f"record at byte {pos} claims {caplen} bytes, {len(data) - start} remain")
        packets.append(Packet(data[start], data[start + 1:start + caplen],
                              seconds * 1_000_000_000 + fraction * scale))
        pos = start + caplen
    return packets
