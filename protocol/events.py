"""Events a session turns bytes into: immutable values carrying the dissected packet."""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.packet import Packet

from protocol.constants import NOTIFY_CODE_NAMES, OPCODE_NAMES
from protocol.findings import Finding


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A request as the daemon receives it."""

    unique: int
    opcode: int
    nodeid: int
    packet: Packet
    raw: bytes
    findings: tuple[Finding, ...] = ()

    @property
    def opcode_name(self) -> str:
        return OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A reply, paired with its request: ``body`` is the first layer after the header."""

    unique: int
    opcode: int
    error: int
    packet: Packet
    raw: bytes
    request: Packet | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def body(self) -> Packet | None:
        payload = self.packet.payload
        return payload if payload and payload.__class__.__name__ != "NoPayload" else None

    @property
    def opcode_name(self) -> str:
        return OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")

    @property
    def ok(self) -> bool:
        return self.error == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """An unsolicited message from the daemon (``unique`` 0, ``error`` = code)."""

    code: int
    packet: Packet
    raw: bytes
    findings: tuple[Finding, ...] = field(default=())

    @property
    def code_name(self) -> str:
        return NOTIFY_CODE_NAMES.get(self.code, f"notify code {self.code}")
