"""Transcripts of an exchange: a readable dump (scapy ``show()``) and a pcap file.

The pcap uses link type USER0 (147); each record is one FUSE message preceded
by one byte of direction: 0 = to the target (a request), 1 = from the target.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from contextlib import redirect_stdout
from pathlib import Path

from scapy.packet import Packet
from scapy.utils import PcapWriter, RawPcapReader

from protocol import constants as c
from protocol.layers.header import FUSE_OUT_HEADER_SIZE, FuseInHeader, FuseOutHeader
from protocol.layers.messages import NOTIFY_LAYERS
from protocol.session import decode_body
from protocol.sizes import reply_layers_at
from targets.channel import Record

LINKTYPE_USER0 = 147
TO_TARGET, FROM_TARGET = 0, 1


def dissect(records: Iterable[Record], minor: int = c.FUSE_KERNEL_MINOR_VERSION) -> list[tuple[str, Packet]]:
    """Each record as ("->" or "<-", dissected packet); replies decoded by their request."""
    requests: dict[int, Packet] = {}
    out: list[tuple[str, Packet]] = []
    for record in records:
        if record.direction == "to_target":
            pkt: Packet = FuseInHeader(record.data)
            requests[int(pkt.unique)] = pkt
            out.append(("->", pkt))
            continue
        header = FuseOutHeader(record.data[:FUSE_OUT_HEADER_SIZE])
        body = record.data[FUSE_OUT_HEADER_SIZE:]
        if header.unique == 0:
            layers = NOTIFY_LAYERS.get(int(header.error), ())
        elif (request := requests.get(int(header.unique))) is not None and not header.error:
            layers = reply_layers_at(int(request.opcode), minor, request)
        else:
            layers = ()
        decoded = decode_body(layers, body)
        out.append(("<-", header / decoded if decoded is not None else header))
    return out


def dump(records: Iterable[Record], minor: int = c.FUSE_KERNEL_MINOR_VERSION) -> str:
    """A readable dump of every message, with scapy's ``show()``."""
    text = io.StringIO()
    kept = list(records)
    for index, (arrow, pkt) in enumerate(dissect(kept, minor)):
        record = kept[index]
        cut = f" (the first {len(record.data)} of {record.length} bytes kept)" if record.truncated else ""
        text.write(f"=== #{index} {arrow} {pkt.summary()}{cut}\n")
        with redirect_stdout(text):
            pkt.show()
    return text.getvalue()


def write_pcap(records: Iterable[Record], path: Path) -> Path:
    """Write the transcript as a pcap (USER0, one direction byte before each message)."""
    with PcapWriter(str(path), linktype=LINKTYPE_USER0, sync=True) as writer:
        writer.write_header(None)
        for record in records:
            direction = TO_TARGET if record.direction == "to_target" else FROM_TARGET
            writer.write_packet(bytes([direction]) + record.data, sec=int(record.time),
                                usec=int(record.time % 1 * 1_000_000), wirelen=record.length + 1)
    return path


def read_pcap(path: Path) -> list[tuple[str, bytes]]:
    """The (direction, message) pairs of a pcap written by ``write_pcap``."""
    with RawPcapReader(str(path)) as reader:
        return [("to_target" if data[0] == TO_TARGET else "from_target", bytes(data[1:]))
                for data, _meta in reader]
