"""What a recording of the reference server's /dev/fuse shows: its notifications, whether the
kernel took each, and the kernel's requests, as packets and times."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scapy.packet import Packet

from protocol import constants as c
from protocol.layers.header import FuseInHeader, FuseOutHeader
from protocol.layers.messages import NOTIFY_LAYERS
from targets.reference.record import REFUSED, REPLY, REQUEST, read_recording

IN_HEADER, OUT_HEADER = 40, 16
NOTIFY_NAMES = {value: name for name, value in vars(c).items()
                if name.startswith("FUSE_NOTIFY_") and name != "FUSE_NOTIFY_REPLY" and isinstance(value, int)}


@dataclass(frozen=True)
class Notification:
    time: float
    code: int
    body: Packet  # the notify struct (its name or data as payload)
    refused: int = 0  # the errno the kernel's write(2) gave, 0 if it took it

    @property
    def name(self) -> str:
        return NOTIFY_NAMES.get(self.code, str(self.code))


@dataclass(frozen=True)
class Request:
    time: float
    opcode: int
    nodeid: int
    unique: int
    body: bytes


def read(path: Path) -> tuple[list[Notification], list[Request]]:
    notifications: list[Notification] = []
    requests: list[Request] = []
    for record in read_recording(path):
        if record.direction == REQUEST:
            head = FuseInHeader(record.data[:IN_HEADER])
            requests.append(Request(record.time, int(head.opcode), int(head.nodeid), int(head.unique),
                                    record.data[IN_HEADER:]))
        elif record.direction == REPLY:
            out = FuseOutHeader(record.data[:OUT_HEADER])
            if int(out.unique) == 0 and int(out.error) in NOTIFY_LAYERS:
                layers = NOTIFY_LAYERS[int(out.error)]
                body = layers[0](record.data[OUT_HEADER:]) if layers else Packet()
                notifications.append(Notification(record.time, int(out.error), body))
        elif record.direction == REFUSED and notifications:
            refused = FuseOutHeader(record.data[:OUT_HEADER])
            if int(refused.unique) == 0:
                last = notifications.pop()
                notifications.append(Notification(last.time, last.code, last.body, -int(refused.error)))
    return notifications, requests
