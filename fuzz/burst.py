"""Bursts: many near-valid copies of one request, in flight together, judged from bytes.

Hypothesis chooses the request and a seed; the copies come from ``random.Random(seed)``, so
an example replays exactly. Each copy has one integer of the first body struct at a
boundary of its type (``fuzz.hostile.int_bounds``), patched into the encoded request at the
field's offset (``protocol.codec``), and a unique of its own. The copies go out back to back,
as a busy kernel sends them; each reply must come within the deadline, echo a unique that
was sent, say its own length, and carry an error in range with no body after it. This is
where a campaign's volume comes from: no scapy object is built per message.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from scapy.packet import Packet

from fuzz.hostile import IN_HEADER, int_bounds
from protocol.codec import codec

OUT_HEADER = struct.Struct("<IiQ")
UNIQUE = struct.Struct("<Q")
UNIQUE_AT = 8


@dataclass(frozen=True)
class Point:
    """One integer field of the first body struct: where it is, its struct, its boundaries."""

    name: str
    offset: int  # in the whole request
    packer: struct.Struct
    values: tuple[int, ...]


@cache
def points(cls: type[Packet], size: int) -> tuple[Point, ...]:
    """The integer fields of ``cls`` that lie within its first ``size`` bytes (the compat size
    the session sent at the negotiated minor)."""
    try:
        fast = codec(cls)
    except TypeError:  # not a fixed-size struct
        return ()
    found = []
    for name in fast.names:
        if "[" in name or "." in name or name.startswith(("padding", "unused", "dummy")):
            continue
        packer, offset = fast.field(name)
        fmt = packer.format[-1]
        if fmt in "bBhHiIqQ" and offset + packer.size <= size:
            found.append(Point(name, IN_HEADER + offset, packer, int_bounds(packer.format)))
    return tuple(found)


def copies(template: bytes, where: tuple[Point, ...], seed: int, count: int,
           first_unique: int) -> Iterator[tuple[bytes, tuple[str, int]]]:
    """``count`` copies of ``template``, each with one field at a boundary and its own unique,
    with which field and value (``what`` says it in words)."""
    pick = random.Random(seed).random
    buffer = bytearray(template)
    for i in range(count):
        point = where[int(pick() * len(where))]
        value = point.values[int(pick() * len(point.values))]
        copy = bytearray(buffer)
        point.packer.pack_into(copy, point.offset, value)
        UNIQUE.pack_into(copy, UNIQUE_AT, first_unique + 2 * i)
        yield bytes(copy), (point.name, value)


def what(twist: tuple[str, int]) -> str:
    return f"{twist[0]} = {twist[1]:#x}"


def wire_problem(reply: bytes, sent: set[int]) -> str | None:
    """What the kernel would refuse in a reply's header, judged from its bytes."""
    if len(reply) < OUT_HEADER.size:
        return f"a {len(reply)}-byte reply, shorter than fuse_out_header"
    length, error, unique = OUT_HEADER.unpack_from(reply)
    if length != len(reply):
        return f"fuse_out_header.len = {length} for a {len(reply)}-byte reply"
    if unique not in sent:
        return f"a reply to unique {unique}, which is not waiting"
    if error > 0 or error < -4095:
        return f"fuse_out_header.error = {error}, not 0 or -errno"
    if error and len(reply) > OUT_HEADER.size:
        return f"error {error} with {len(reply) - OUT_HEADER.size} bytes of body after it"
    return None


def deadline_left(end: float) -> float:
    return max(0.0, end - time.monotonic())
