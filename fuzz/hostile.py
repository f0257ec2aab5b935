"""Near-valid and malformed messages, derived from the layers' field lists.

- ``boundary(layers)``: one field of a request's body set to a boundary of its type
  (an integer field: 0, 1, max, max - 1, the sign bit, -1; a name: empty, ``.``, ``..``,
  embedded ``/`` or NUL, 255, 256 and 4096 bytes). Which fields a body has comes from
  its scapy ``fields_desc``, so every layer gets its boundaries without a list per message.
- ``malformed()``: a way to break an encoded request's framing (``Framing``): a length
  field that lies, a body cut short, trailing garbage, a name without its NUL, an opcode
  nobody defined, unique 0. ``frame(data, framing)`` applies it.

Each returns a ``Twist``: the field class (``fuzz.stats.FIELD_CLASSES``) and what was
changed, in the kernel's names, for the finding's explanation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from scapy.fields import MayEnd, PadField, StrField
from scapy.packet import Packet, Raw

from protocol import constants as c

IN_HEADER = 40  # sizeof(struct fuse_in_header)
NAME_MAX = 255
#: Names at and past the edges the kernel keeps to (NAME_MAX, no '/', no NUL).
BOUNDARY_NAMES = (b"", b".", b"..", b"a/b", b"/", b"a\0b", b"x" * NAME_MAX, b"x" * (NAME_MAX + 1),
                  b"x" * 4096)
#: Opcodes no kernel defines (0, a gap past the last, the top of the range).
UNKNOWN_OPCODES = (0, max(c.OPCODE_NAMES) + 1, 4095, 0x7FFFFFFF, 0xFFFFFFFF)


@dataclass(frozen=True)
class Twist:
    field_class: str  # "valid", "boundary" or "malformed"
    what: str  # what was changed, e.g. "fuse_read_in.offset = 0xffffffffffffffff"


VALID = Twist("valid", "as the kernel sends it")


def int_bounds(fmt: str) -> tuple[int, ...]:
    """The boundary values of a struct format's integer: 0, 1, max, max - 1, and the sign bit
    and all-ones (as the field stores them: signed fields get min and -1)."""
    char = fmt[-1]
    bits = 8 * struct.calcsize("<" + char)
    if char.islower():
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return (0, 1, high, high - 1, low, -1)
    top = (1 << bits) - 1
    return (0, 1, top, top - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1)


def _unwrap(f: Any) -> Any:
    while isinstance(f, (PadField, MayEnd)):
        f = f.fld
    return f


def _struct_name(layer: Packet) -> str:
    return getattr(layer, "c_name", None) or type(layer).__name__


Choice = tuple[int, str, tuple[Any, ...], str]


def _choices(layers: tuple[Packet, ...], keep: tuple[str, ...] = ()) -> list[Choice]:
    """(layer index, field name, boundary values, struct name) for every field that has them,
    but those named in ``keep``."""
    found: list[Choice] = []
    for index, layer in enumerate(layers):
        if isinstance(layer, Raw):
            continue
        for f in layer.fields_desc:
            inner = _unwrap(f)
            if inner.name in keep:
                continue
            fmt = getattr(inner, "fmt", "")
            if isinstance(inner, StrField):
                found.append((index, inner.name, BOUNDARY_NAMES, _struct_name(layer)))
            elif fmt and fmt[-1] in "bBhHiIqQ" and not inner.name.startswith(("padding", "unused")):
                found.append((index, inner.name, int_bounds(fmt), _struct_name(layer)))
    return found


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 8 else f"{len(value)} bytes of {value[:1]!r}"
    return hex(value) if value > 9 else str(value)


def _with(layers: tuple[Packet, ...], index: int, name: str, value: Any) -> tuple[Packet, ...]:
    changed = list(layers)
    layer = changed[index].copy()
    layer.remove_payload()
    layer.setfieldval(name, value)
    changed[index] = layer
    return tuple(changed)


def boundary(layers: tuple[Packet, ...], keep: tuple[str, ...] = ()
             ) -> SearchStrategy[tuple[tuple[Packet, ...], Twist]]:
    """``layers`` with one field at a boundary (never one named in ``keep``); nothing when no
    layer has a field for it."""
    choices = _choices(layers, keep)
    if not choices:
        return st.nothing()

    def twisted(choice: Choice) -> SearchStrategy[Any]:
        index, name, values, struct_name = choice
        return st.sampled_from(values).map(lambda v: (
            _with(layers, index, name, v), Twist("boundary", f"{struct_name}.{name} = {_shown(v)}")))

    return st.sampled_from(choices).flatmap(twisted)


@dataclass(frozen=True)
class Framing:
    how: str  # one of FRAMINGS
    garbage: bytes = b""
    value: int = 0  # the opcode for "opcode", the cut for "truncated"


FRAMINGS = ("len+1", "len-1", "len=0", "len=header", "len=max", "len-short-of-body", "truncated",
            "cut-header", "garbage", "garbage-unsized", "no-nul", "opcode", "unique=0")


@cache
def malformed() -> SearchStrategy[Framing]:
    garbage = st.binary(min_size=1, max_size=64)
    return st.one_of(
        st.sampled_from([h for h in FRAMINGS if h not in ("garbage", "garbage-unsized", "opcode",
                                                          "truncated")]).map(Framing),
        st.builds(Framing, st.sampled_from(["garbage", "garbage-unsized"]), garbage),
        st.builds(Framing, st.just("opcode"), st.just(b""), st.sampled_from(UNKNOWN_OPCODES)),
        st.builds(Framing, st.just("truncated"), st.just(b""), st.integers(1, 64)),
    )


def _with_len(data: bytes, length: int) -> bytes:
    return struct.pack("<I", length & 0xFFFFFFFF) + data[4:]


def frame(data: bytes, framing: Framing) -> tuple[bytes, Twist]:
    """The encoded request ``data`` broken as ``framing`` says."""
    how, size = framing.how, len(data)
    body = size - IN_HEADER
    if how == "len+1":
        out, what = _with_len(data, size + 1), f"fuse_in_header.len = {size + 1} (message {size})"
    elif how == "len-1":
        out, what = _with_len(data, size - 1), f"fuse_in_header.len = {size - 1} (message {size})"
    elif how == "len=0":
        out, what = _with_len(data, 0), "fuse_in_header.len = 0"
    elif how == "len=header":
        out, what = _with_len(data, IN_HEADER), f"fuse_in_header.len = 40 with a {body}-byte body"
    elif how == "len=max":
        out, what = _with_len(data, 0xFFFFFFFF), "fuse_in_header.len = 0xffffffff"
    elif how == "len-short-of-body":
        out, what = data[: IN_HEADER + body // 2], f"len says {size}, {IN_HEADER + body // 2} bytes sent"
    elif how == "truncated":
        keep = IN_HEADER + max(0, body - framing.value)
        out = _with_len(data[:keep], keep)
        what = f"body cut to {keep - IN_HEADER} of {body} bytes (len agrees)"
    elif how == "cut-header":
        out, what = data[:20], "20 bytes of fuse_in_header only"
    elif how == "garbage":
        out = _with_len(data + framing.garbage, size + len(framing.garbage))
        what = f"{len(framing.garbage)} bytes of trailing garbage (len counts them)"
    elif how == "garbage-unsized":
        out, what = data + framing.garbage, f"{len(framing.garbage)} bytes past len"
    elif how == "no-nul":
        cut = data[:-1] if data.endswith(b"\0") and body > 0 else data
        out, what = _with_len(cut, len(cut)), "the body's last NUL dropped (len agrees)"
    elif how == "opcode":
        out = data[:4] + struct.pack("<I", framing.value) + data[8:]
        what = f"fuse_in_header.opcode = {framing.value:#x} (no such opcode)"
    elif how == "unique=0":
        out, what = data[:8] + bytes(8) + data[16:], "fuse_in_header.unique = 0"
    else:
        raise ValueError(f"unknown framing {how!r}")
    return out, Twist("malformed", what)
