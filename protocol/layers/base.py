"""Building blocks shared by every FUSE layer: the base class, field helpers, sizes."""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from scapy.fields import (
    Field,
    FieldListField,
    LEIntField,
    LELongField,
    LEShortField,
    LESignedIntField,
    LESignedLongField,
    MayEnd,
    PacketField,
    PacketLenField,
    PacketListField,
    StrField,
    StrFixedLenField,
    _FieldContainer,
)
from scapy.packet import Packet

_VARIABLE = (FieldListField, PacketLenField, PacketField, PacketListField, StrField, _FieldContainer)


class FuseStruct(Packet):
    """A kernel struct on the wire.

    ``c_name`` is the struct's name in ``linux/fuse.h`` (``None`` for message
    parts the header has no struct for); ``since`` is the protocol minor that
    introduced it and ``fields_since`` the minor of fields added later.
    """

    c_name: ClassVar[str | None] = None
    since: ClassVar[int] = 0
    fields_since: ClassVar[dict[str, int]] = {}


class FlagsIntField(LEIntField):
    """A little-endian u32 of flag bits, shown by name."""

    __slots__ = ["bit_names"]

    def __init__(self, name: str, default: int, names: dict[int, str]) -> None:
        super().__init__(name, default)
        self.bit_names = names

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return flag_repr(x, self.bit_names)


def flag_repr(value: int | None, names: dict[int, str]) -> str:
    """``FOPEN_DIRECT_IO|FOPEN_KEEP_CACHE`` for 3; unknown bits in hex."""
    if value is None:
        return "None"
    parts = [names[bit] for bit in sorted(names) if bit and value & bit == bit]
    rest = value & ~sum(bit for bit in names if value & bit == bit)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


def u16(name: str, default: int = 0) -> Field[Any, Any]:
    return LEShortField(name, default)


def u32(name: str, default: int = 0) -> Field[Any, Any]:
    return LEIntField(name, default)


def i32(name: str, default: int = 0) -> Field[Any, Any]:
    return LESignedIntField(name, default)


def u64(name: str, default: int = 0) -> Field[Any, Any]:
    return LELongField(name, default)


def i64(name: str, default: int = 0) -> Field[Any, Any]:
    return LESignedLongField(name, default)


class ArrayField(FieldListField):
    """A C array with a fixed element count (``uint16_t unused[11]``)."""

    __slots__ = ["count"]

    def __init__(self, name: str, element: Field[Any, Any], count: int) -> None:
        super().__init__(name, [0] * count, element,  # type: ignore[list-item]
                         count_from=lambda _p: count)
        self.count = count


class NestedField(PacketLenField):
    """A struct member of struct type: exactly ``sizeof(cls)`` bytes."""

    __slots__ = ["size"]

    def __init__(self, name: str, cls: type[FuseStruct]) -> None:
        size = fixed_size(cls)
        super().__init__(name, cls(), cls, length_from=lambda _p: size)
        self.size = size


def array(name: str, element: Field[Any, Any], count: int) -> Field[Any, Any]:
    """A C array of ``count`` fixed-size elements."""
    return ArrayField(name, element, count)


def nested(name: str, cls: type[FuseStruct]) -> Field[Any, Any]:
    """A member of struct type."""
    return NestedField(name, cls)


def may_end(field: Field[Any, Any]) -> Field[Any, Any]:
    """Dissection may stop after ``field``: older minors send the struct only this far."""
    return MayEnd(field)  # type: ignore[return-value]


def unwrap(field: Any) -> Any:
    """The field inside a ``may_end`` marker."""
    return field.fld if isinstance(field, MayEnd) else field


def fixed_size(cls: type[Packet]) -> int:
    """``sizeof`` of a fixed-size struct class; ``TypeError`` for variable parts."""
    cached: int | None = cls.__dict__.get("_fixed_size")
    if cached is not None:
        return cached
    size = struct.calcsize(struct_format(cls))
    cls._fixed_size = size  # type: ignore[attr-defined]
    return size


def struct_format(cls: type[Packet]) -> str:
    """The ``struct`` format of a fixed-size class, nested structs inlined."""
    return "<" + "".join(_field_format(unwrap(f)) for f in cls.fields_desc)


def flat_names(cls: type[Packet], prefix: str = "") -> list[str]:
    """Field names in ``struct_format`` order (``attr.ino``, ``unused[3]``...)."""
    names: list[str] = []
    for f in map(unwrap, cls.fields_desc):
        if isinstance(f, NestedField):
            names += flat_names(f.cls, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif isinstance(f, ArrayField):
            names += [f"{prefix}{f.name}[{i}]" for i in range(f.count)]
        else:
            names.append(prefix + f.name)
    return names


def field_size(f: Any) -> int:
    """Bytes one fixed-size field takes on the wire."""
    return struct.calcsize("<" + _field_format(unwrap(f)))


def _field_format(f: Any) -> str:
    if isinstance(f, NestedField):
        return struct_format(f.cls)[1:]  # type: ignore[arg-type]
    if isinstance(f, ArrayField):
        return _field_format(f.field) * f.count
    if isinstance(f, StrFixedLenField):
        return f"{f.length_from(None)}s"  # type: ignore[arg-type]
    if isinstance(f, _VARIABLE):
        raise TypeError(f"field {f.name!r} has no fixed size")
    fmt = getattr(f, "fmt", None)
    if not fmt or not isinstance(fmt, str) or fmt[0] not in "<!>=":
        raise TypeError(f"field {f.name!r} has no fixed size")
    return fmt[1:]
