"""Bursts: many near-valid copies of one request, in flight together, judged from bytes.

The copies are a window of one fixed sequence: element ``i`` (any integer) says, through a
hash of ``i``, which integer of the first body struct goes to which boundary of its type
(``fuzz.hostile.int_bounds``). Hypothesis draws the request, how far before element 0 the
window begins (``back``) and its size (a power of two), so an example replays exactly and
a failing burst shrinks to its failing copy: a smaller size keeps the window's first copies
(a crash or a hang comes at the first copy that causes it; those after it only go
unanswered), a smaller ``back`` moves the window on while it still fails (until its first
copy is the one that fails), and the size goes to one. Each copy is patched into the
encoded request at the field's offset (``protocol.codec``) with a unique of its own. They
go out back to back, as a busy kernel sends them; each reply must come within the deadline,
echo a unique that was sent, say its own length, and carry an error in range with no body
after it. This is where a campaign's volume comes from: no scapy object is built per message.
A burst is bounded in time, not only in copies: over a socket at most ``WINDOW`` copies are
unanswered at once, and none goes out after ``SECONDS``, so a target that takes milliseconds
for a request (real I/O, a sanitizer build) is judged on the copies it was sent.
"""

from __future__ import annotations

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
MASK = 2**64 - 1
WINDOW = 512  # copies sent and not yet answered, at most: what a slow target has queued
SECONDS = 1.0  # a burst sends for this long at most: a target slow at the request gets fewer copies


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


def element(index: int) -> int:
    """Element ``index`` of the sequence: 64 well-mixed bits (splitmix64's finaliser)."""
    z = (index * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def copies(template: bytes, where: tuple[Point, ...], back: int, count: int,
           first_unique: int) -> Iterator[tuple[bytes, tuple[str, int]]]:
    """The ``count`` copies of ``template`` from element ``-back`` on, each with one field at
    a boundary and its own unique, with which field and value (``what`` says it in words)."""
    for i, index in enumerate(range(-back, count - back)):
        bits = element(index)
        point = where[bits % len(where)]
        value = point.values[(bits >> 32) % len(point.values)]
        copy = bytearray(template)
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
