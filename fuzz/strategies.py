"""Hypothesis strategies for valid FUSE messages, derived from the layer classes.

``fields_for(cls)`` draws a value for every field of a layer class from the
field's type (integer ranges from its struct format, names without NUL or
``/``, fixed-length arrays, dirent lists...); computed fields (``len``,
``namelen``, counts) are left ``None`` so the layer fills them in.
``requests``/``replies``/``notifications`` stack whole messages by opcode or
notify code, with the counts inside a body (``fuse_write_in.size`` ...) kept
consistent with what follows it.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from scapy.fields import (
    FieldListField,
    MayEnd,
    PacketField,
    PacketListField,
    PadField,
    StrField,
    StrFixedLenField,
)
from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.layers import header, notify, structs
from protocol.layers.base import ArrayField, NestedField
from protocol.layers.messages import NOTIFY_LAYERS, REPLY_LAYERS, REQUEST_LAYERS

MAX_NAME = 255  # NAME_MAX
MAX_LIST = 4  # elements of a drawn list (dirents, groups, forget_one...)
MAX_DATA = 64  # bytes of a Raw payload

_RESERVED_OPCODES = {c.CUSE_INIT_BSWAP_RESERVED, c.FUSE_INIT_BSWAP_RESERVED}

#: Field values narrower than their type allows, so a drawn message is valid.
_VALID: dict[tuple[type[Packet], str], SearchStrategy[Any]] = {
    (header.FuseInHeader, "opcode"): st.sampled_from(
        sorted(set(c.OPCODE_NAMES) - _RESERVED_OPCODES)
    ),
    (header.FuseInHeader, "unique"): st.integers(1, 2**64 - 1),
    (header.FuseInHeader, "total_extlen"): st.just(0),  # no extensions drawn
    (header.FuseOutHeader, "error"): st.integers(-4095, 0),
    (structs.FuseInitIn, "major"): st.just(c.FUSE_KERNEL_VERSION),
    (structs.FuseInitOut, "major"): st.just(c.FUSE_KERNEL_VERSION),
}


def names() -> SearchStrategy[bytes]:
    """A path component: 1..255 bytes, no NUL and no ``/``."""
    return st.binary(min_size=1, max_size=MAX_NAME).map(
        lambda b: b.replace(b"\0", b"_").replace(b"/", b"_")
    )


def _int_range(fmt: str) -> tuple[int, int]:
    char = fmt[-1]
    bits = 8 * struct.calcsize("<" + char)
    if char.islower():  # b h i q: signed
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _ints(f: Any) -> SearchStrategy[int]:
    low, high = _int_range(f.fmt)
    return st.integers(low, high)


def _field_values(cls: type[Packet], f: Any) -> SearchStrategy[Any]:
    """Values of one field of ``cls`` (a scapy Field, or a PadField/MayEnd around one)."""
    inner: Any = f
    while isinstance(inner, (PadField, MayEnd)):
        inner = inner.fld
    if (cls, inner.name) in _VALID:
        return _VALID[cls, inner.name]
    if isinstance(inner, NestedField):
        return packets(inner.cls)
    if isinstance(inner, ArrayField):
        return st.lists(_ints(inner.field), min_size=inner.count, max_size=inner.count)
    if isinstance(inner, FieldListField):  # a flexible array (groups[], nodeids)
        return st.lists(_ints(inner.field), max_size=MAX_LIST)
    if isinstance(inner, PacketListField):
        return st.lists(packets(inner.cls), max_size=MAX_LIST)
    if isinstance(inner, PacketField):
        return packets(inner.cls)
    if inner.default is None:  # computed in post_build (len, namelen, counts)
        return st.none()
    if isinstance(inner, StrFixedLenField):
        size = inner.length_from(None)  # type: ignore[arg-type]
        return st.binary(min_size=size, max_size=size)
    if isinstance(inner, StrField):
        return names()
    if hasattr(inner, "i2s") and inner.i2s:
        return st.sampled_from(sorted(inner.i2s))
    return _ints(inner)


@cache
def fields_for(cls: type[Packet]) -> SearchStrategy[dict[str, Any]]:
    """``{field name: value}`` for every field of ``cls``, valid on the wire."""
    return st.fixed_dictionaries({f.name: _field_values(cls, f) for f in cls.fields_desc})


@cache
def packets(cls: type[Packet]) -> SearchStrategy[Packet]:
    """Instances of ``cls`` with every field drawn by ``fields_for``."""
    return fields_for(cls).map(lambda fields: cls(**fields))


def _raw() -> SearchStrategy[Packet]:
    return st.binary(min_size=1, max_size=MAX_DATA).map(lambda data: Raw(load=data))


def _repeated(cls: type[Packet]) -> SearchStrategy[list[Packet]]:
    return st.lists(packets(cls), min_size=1, max_size=MAX_LIST)


def _parts(layers: tuple[type[Packet], ...]) -> SearchStrategy[list[Packet]]:
    """One drawn packet per layer; a counted element layer becomes 1..n packets."""
    drawn: list[SearchStrategy[list[Packet]]] = []
    for i, cls in enumerate(layers):
        if cls is Raw:
            drawn.append(_raw().map(lambda p: [p]))
        elif i and cls in _COUNTED.values():  # count x fuse_forget_one / removemapping_one
            drawn.append(_repeated(cls))
        else:
            drawn.append(packets(cls).map(lambda p: [p]))
    return st.tuples(*drawn).map(lambda lists: [p for part in lists for p in part])


# A body struct, the field that counts what follows, and what it counts
_COUNTED: dict[type[Packet], type[Packet]] = {
    structs.FuseBatchForgetIn: structs.FuseForgetOne,
    structs.FuseRemovemappingIn: structs.FuseRemovemappingOne,
}
_SIZED: dict[type[Packet], str] = {
    structs.FuseWriteIn: "size",
    structs.FuseSetxattrIn: "size",
    structs.FuseIoctlIn: "in_size",
    notify.FuseNotifyRetrieveIn: "size",
    notify.FuseNotifyStoreOut: "size",
}


def _consistent(parts: list[Packet]) -> list[Packet]:
    """Set the counts and sizes in a body to match the parts that follow them."""
    first = parts[0] if parts else None
    if first is None:
        return parts
    rest = parts[1:]
    if type(first) in _COUNTED:
        first.count = len(rest)
    elif isinstance(first, notify.FuseNotifyPruneOut):
        first.count = len(rest[0].nodeids) if rest else 0
    elif type(first) in _SIZED:
        first.setfieldval(_SIZED[type(first)], len(rest[-1].load) if isinstance(rest[-1], Raw) else 0)
    return parts


def _stack(head: Packet, parts: list[Packet]) -> Packet:
    for part in parts:
        head = head / part
    return head


def _message(
    head: SearchStrategy[Packet], layers: tuple[type[Packet], ...]
) -> SearchStrategy[Packet]:
    return st.tuples(head, _parts(layers).map(_consistent)).map(lambda hp: _stack(*hp))


def _header(cls: type[Packet], **fixed: Any) -> SearchStrategy[Packet]:
    return fields_for(cls).map(lambda fields: cls(**{**fields, **fixed}))


@cache
def bodies(opcode: int) -> SearchStrategy[list[Packet]]:
    """The body parts of a valid request with ``opcode``, counts and sizes consistent."""
    return _parts(REQUEST_LAYERS[opcode]).map(_consistent)


def plain_bodies(opcode: int) -> SearchStrategy[list[Packet]]:
    """``bodies(opcode)``, or first (where it shrinks to) the plain body: every field at its
    default, one zero byte of data. A failing example loses its body's draws in one step."""
    return st.one_of(st.builds(plain_body, st.just(opcode)), bodies(opcode))


def plain_body(opcode: int) -> list[Packet]:
    """The body of a request with ``opcode`` with every field at its default, one zero byte of data."""
    layers = REQUEST_LAYERS[opcode]
    parts = [Raw(load=b"\0") if cls is Raw else cls() for cls in layers]
    return _consistent(parts)


def requests(opcode: int) -> SearchStrategy[Packet]:
    """``FuseInHeader/body...`` of a valid request with ``opcode`` (REQUEST_LAYERS)."""
    head = _header(header.FuseInHeader, opcode=opcode, len=None)
    return _message(head, REQUEST_LAYERS[opcode])


def replies(opcode: int) -> SearchStrategy[Packet]:
    """``FuseOutHeader/body...`` of a successful reply to ``opcode`` (REPLY_LAYERS)."""
    head = _header(header.FuseOutHeader, error=0, len=None).filter(lambda h: h.unique != 0)
    return _message(head, REPLY_LAYERS[opcode])


def error_replies() -> SearchStrategy[Packet]:
    """A header-only reply carrying ``-errno``."""
    errors = st.integers(-4095, -1)
    uniques = st.integers(1, 2**64 - 1)
    return st.builds(lambda e, u: header.FuseOutHeader(error=e, unique=u), errors, uniques)


def notifications(code: int) -> SearchStrategy[Packet]:
    """``FuseOutHeader(unique=0, error=code)/body...`` (NOTIFY_LAYERS)."""
    head = _header(header.FuseOutHeader, error=code, unique=0, len=None)
    return _message(head, NOTIFY_LAYERS[code])


__all__ = [
    "bodies", "error_replies", "fields_for", "names", "notifications", "packets", "plain_bodies",
    "plain_body", "replies", "requests",
]
