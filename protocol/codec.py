"""The fast path: a precompiled ``struct.Struct`` for each fixed-size layer class.

The format and the field names come from the scapy class (``struct_format``,
``flat_names``), so the class stays the one definition.  Fields are named flat:
``attr.ino`` for a nested member, ``unused[3]`` for an array element, e.g.
``codec(FuseInHeader).pack(len=40, opcode=FUSE_GETATTR, unique=2, nodeid=1)``.
In a hot loop use the precompiled ``codec(cls).struct`` with positional values,
or pack a template once and patch the fields that change with ``field(name)``.
``build`` packs with the class's own defaults (``bytes(cls(**fields))``;
``builder(*names)`` makes a positional packer of it for hot loops),
``record`` reads a flat struct as a named tuple (``.fh``, ``.offset``), and
``head_codec`` covers the fixed fields that open a variable part (a dirent's
``ino``, ``off``, ``namelen``, ``type``).  ``Encoded`` is a body part already
in wire bytes, for ``DaemonSession.reply``.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any

from scapy.packet import Packet

from protocol.layers.base import field_size, flat_names, struct_format, unwrap

Readable = bytes | bytearray | memoryview
Writable = bytearray | memoryview


class Codec:
    """Packs and unpacks one fixed-size class; ``size`` is its ``sizeof``."""

    __slots__ = ("_built", "_defaults", "_formats", "_index", "_record", "cls", "names", "size",
                 "struct")

    def __init__(self, cls: type[Packet], layout: Any = None) -> None:
        self.cls = cls
        layout = cls if layout is None else layout  # what has the fields_desc: the class, or its head
        self.struct = struct.Struct(struct_format(layout))
        self.size = self.struct.size
        self.names: tuple[str, ...] = tuple(flat_names(layout))
        self._built: tuple[Any, ...] | None = None
        self._record: Any = None
        self._index = {name: i for i, name in enumerate(self.names)}
        formats = _format_chars(self.struct.format)
        self._formats = formats
        self._defaults: tuple[Any, ...] = tuple(b"" if f.endswith("s") else 0 for f in formats)
        if len(self._defaults) != len(self.names):
            raise TypeError(f"{cls.__name__}: {len(formats)} formats for {len(self.names)} names")

    def values(self, **fields: Any) -> list[Any]:
        """Values in wire order; missing fields are 0 (or empty bytes)."""
        values = list(self._defaults)
        index = self._index
        for name, value in fields.items():
            try:
                values[index[name]] = value
            except KeyError:
                raise TypeError(f"{self.cls.__name__} has no field {name!r}") from None
        return values

    def pack(self, **fields: Any) -> bytes:
        """The struct's bytes; missing fields are 0."""
        return self.struct.pack(*self.values(**fields))

    def build(self, **fields: Any) -> bytes:
        """``bytes(cls(**fields))`` with flat names: missing fields take the class's defaults."""
        if self._built is None:
            self._built = self.struct.unpack_from(bytes(self.cls()))
        values = list(self._built)
        index = self._index
        for name, value in fields.items():
            try:
                values[index[name]] = value
            except KeyError:
                raise TypeError(f"{self.cls.__name__} has no field {name!r}") from None
        return self.struct.pack(*values)

    def builder(self, *names: str) -> Callable[..., bytes]:
        """``build`` for a hot loop: a packer taking the values of ``names`` positionally."""
        if self._built is None:
            self._built = self.struct.unpack_from(bytes(self.cls()))
        base = self._built
        pick = list(range(len(base)))
        for j, name in enumerate(names):
            try:
                pick[self._index[name]] = len(base) + j
            except KeyError:
                raise TypeError(f"{self.cls.__name__} has no field {name!r}") from None
        given = [self._index[name] for name in names]
        if given == sorted(set(given)) and all(not base[i] for i in range(len(base)) if i not in given):
            # in wire order, the rest zero: a struct with pad bytes where the rest lie packs the
            # values as they come
            return struct.Struct("<" + "".join(
                f if i in given else f"{struct.calcsize('<' + f)}x"
                for i, f in enumerate(self._formats))).pack
        pack = self.struct.pack
        if len(pick) == 1:  # itemgetter of one index gives the value, not a tuple
            return lambda *values: pack((base + values)[pick[0]])
        getter = itemgetter(*pick)

        def build(*values: Any) -> bytes:
            return pack(*getter(base + values))

        return build

    def record(self, data: Readable, offset: int = 0) -> Any:
        """The struct read from ``data`` at ``offset`` as a named tuple (flat classes only)."""
        return self.record_of(self.struct.unpack_from(data, offset))

    def record_of(self, values: tuple[Any, ...]) -> Any:
        """Values in ``names`` order (``unpack``'s) as the named tuple ``record`` gives."""
        if self._record is None:
            if not all(name.isidentifier() and name[0] != "_" for name in self.names):
                raise TypeError(f"{self.cls.__name__} has nested or array fields: no record")
            self._record = namedtuple(self.cls.__name__, self.names)  # type: ignore[misc]
        return self._record._make(values)

    def pack_into(self, buffer: Writable, offset: int = 0, /, **fields: Any) -> None:
        """Write the struct into ``buffer`` at ``offset``; missing fields are 0."""
        self.struct.pack_into(buffer, offset, *self.values(**fields))

    def field(self, name: str) -> tuple[struct.Struct, int]:
        """A precompiled struct for one field and its offset: ``s.pack_into(buf, off, v)``."""
        try:
            index = self._index[name]
        except KeyError:
            raise TypeError(f"{self.cls.__name__} has no field {name!r}") from None
        offset = struct.calcsize("<" + "".join(self._formats[:index]))
        return struct.Struct("<" + self._formats[index]), offset

    def unpack(self, data: Readable, offset: int = 0) -> tuple[Any, ...]:
        """Field values in ``names`` order, read from ``data`` at ``offset`` (may be longer)."""
        return self.struct.unpack_from(data, offset)

    def unpack_dict(self, data: Readable, offset: int = 0) -> dict[str, Any]:
        """``{flat name: value}`` read from ``data`` at ``offset``."""
        return dict(zip(self.names, self.struct.unpack_from(data, offset), strict=True))

    def __repr__(self) -> str:
        return f"<Codec {self.cls.__name__} {self.struct.format!r} size={self.size}>"


def _format_chars(fmt: str) -> list[str]:
    """``"<IQ4s2H"`` -> ``["I", "Q", "4s", "H", "H"]``: one entry per value."""
    out: list[str] = []
    count = ""
    for ch in fmt.lstrip("<>!=@"):
        if ch.isdigit():
            count += ch
        elif ch == "s":
            out.append(f"{count or 1}s")
            count = ""
        else:
            out += [ch] * int(count or 1)
            count = ""
    return out


@cache
def codec(cls: type[Packet]) -> Codec:
    """The cached codec of a fixed-size class; ``TypeError`` for variable parts."""
    return Codec(cls)


class _Head:
    """The fixed-size fields that open a class, as ``struct_format`` and ``flat_names`` read them."""

    def __init__(self, cls: type[Packet]) -> None:
        self.fields_desc: list[Any] = []
        for f in cls.fields_desc:
            try:
                field_size(unwrap(f))
            except TypeError:
                break
            self.fields_desc.append(f)


@cache
def head_codec(cls: type[Packet]) -> Codec:
    """The codec of the fixed fields before ``cls``'s first variable one (all of a fixed class)."""
    return Codec(cls, _Head(cls))


@dataclass(frozen=True, slots=True)
class Encoded:
    """A body part already encoded: ``data`` is ``bytes(cls(...))`` (not a tuple: a handler's
    tuple of parts stays unambiguous)."""

    cls: type[Packet]
    data: bytes
