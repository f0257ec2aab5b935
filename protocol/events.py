"""Events a session turns bytes into: immutable values carrying the dissected packet.

``Request`` and ``Reply`` dissect lazily: a session decodes the header and the
hot opcodes' first body struct with ``protocol.codec`` and hands the event a
``decode`` callable; the scapy ``packet`` is built from ``raw`` the first time
it is touched, always by the same scapy path.  Once it exists every accessor
(``header``, ``layer``, ``names``, ``data``) reads it, so a change made to the
packet (a mutant's) is what later readers see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, field
from functools import cache
from typing import Any, NamedTuple

from scapy.packet import Packet

from protocol.codec import codec
from protocol.constants import NOTIFY_CODE_NAMES, OPCODE_NAMES
from protocol.findings import Finding
from protocol.layers.header import FUSE_IN_HEADER_SIZE

Decode = Callable[[bytes], Packet]


@cache
def _record(cls: type[Packet]) -> Callable[[bytes, int], Any]:
    return codec(cls).record


class _Lazy:
    """Frozen, keyword-built, compared by value; ``_packet`` is filled on first use."""

    __slots__ = ("_decode", "_packet")
    _fields: tuple[str, ...] = ()
    _decode: Decode | None
    _packet: Packet | None
    raw: bytes
    #: The same class with plain attribute assignment, worn only while ``__init__`` fills the
    #: slots (five times cheaper than one ``object.__setattr__`` per field)
    _open: type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_open" not in cls.__dict__ and not cls.__name__.startswith("_Open"):
            cls._open = type(f"_Open{cls.__name__}", (cls,), {
                "__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__,
                "_open": None})

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def packet(self) -> Packet:
        """The dissected message (built from ``raw`` on first use)."""
        packet: Packet | None = self._packet
        if packet is None:
            assert self._decode is not None
            packet = self._decode(self.raw)
            object.__setattr__(self, "_packet", packet)
        return packet

    @property
    def dissected(self) -> bool:
        """Whether ``packet`` has been built (then every accessor reads it)."""
        return self._packet is not None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in self._fields if f != "packet"))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields if f != "packet")
        return f"{type(self).__name__}({shown})"


class Request(_Lazy):
    """A request as the daemon receives it.

    ``header`` is fuse_in_header (``.uid``, ``.pid``...), ``layer(cls)`` the body's
    first struct, ``names()`` its NUL-terminated names and ``data(cls)`` the bytes
    after the struct (WRITE's data): read with the codec while nothing dissected the
    packet (``Fast``), from the packet after.
    """

    __slots__ = ("_fast", "findings", "nodeid", "opcode", "raw", "unique")
    _fields = ("unique", "opcode", "nodeid", "packet", "raw", "findings")
    unique: int
    opcode: int
    nodeid: int
    findings: tuple[Finding, ...]
    _fast: Fast | None

    def __init__(self, *, unique: int, opcode: int, nodeid: int, raw: bytes,
                 packet: Packet | None = None, findings: tuple[Finding, ...] = (),
                 decode: Decode | None = None, fast: Fast | None = None) -> None:
        if packet is None and decode is None:
            raise TypeError("Request needs its packet or a decode callable")
        cls = type(self)
        object.__setattr__(self, "__class__", cls._open)  # frozen: filled as the open twin
        self.unique, self.opcode, self.nodeid, self.raw = unique, opcode, nodeid, raw
        self.findings, self._packet, self._decode, self._fast = findings, packet, decode, fast
        self.__class__ = cls

    @classmethod
    def clean(cls, unique: int, opcode: int, nodeid: int, raw: bytes, decode: Decode,
              fast: Fast | None) -> Request:
        """A request without findings, undissected: ``Request(...)`` for the hot path."""
        self: Request = object.__new__(cls._open)
        self.unique, self.opcode, self.nodeid, self.raw = unique, opcode, nodeid, raw
        self.findings, self._packet, self._decode, self._fast = (), None, decode, fast
        self.__class__ = cls
        return self

    @property
    def opcode_name(self) -> str:
        return OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")

    @property
    def header(self) -> Any:
        """fuse_in_header: a codec record, or the packet once dissected."""
        fast = self._fast
        return fast.header if fast is not None and self._packet is None else self.packet

    def layer(self, cls: type[Packet]) -> Any:
        """The body's ``cls`` layer, as ``packet[cls]`` (a codec record while undissected)."""
        fast = self._fast
        if fast is not None and fast.cls is cls and self._packet is None:
            if fast.arg is None:  # read when first asked for (``Request.clean``'s requests)
                return _record(cls)(self.raw, FUSE_IN_HEADER_SIZE)
            return fast.arg
        return self.packet[cls]

    def names(self) -> list[bytes]:
        """The names the request carries (LOOKUP's, CREATE's...), NUL-terminated on the wire."""
        fast = self._fast
        if fast is not None and self._packet is None and fast.names >= 0:
            if not fast.names and (fast.tail >= fast.end or not fast.named):
                return []
            parts = self.raw[fast.tail: fast.end].split(b"\0", fast.names)
            if fast.names and len(parts) > fast.names:  # each one terminated, as StrNullField wants
                return parts[: fast.names]
        from protocol.layers.variable import FuseName

        return [bytes(p.getfieldval("name")) for p in self.packet.iterpayloads()
                if isinstance(p, FuseName)]

    def records(self, cls: type[Packet]) -> list[Any]:
        """The fixed-size ``cls`` layers after the first struct (BATCH_FORGET's fuse_forget_one):
        every whole one, as scapy dissects them; codec records while undissected."""
        fast = self._fast
        if fast is not None and self._packet is None and fast.names >= 0 \
                and (fast.then is cls or fast.then is None):
            if fast.then is None:
                return []
            k = codec(cls)
            return [k.record(self.raw, at) for at in range(fast.tail, fast.end - k.size + 1, k.size)]
        return [p for p in self.packet.iterpayloads() if isinstance(p, cls)]

    def data(self, cls: type[Packet]) -> bytes:
        """The bytes after the ``cls`` layer, as ``bytes(packet[cls].payload)`` (WRITE's data)."""
        fast = self._fast
        if fast is not None and fast.cls is cls and self._packet is None:
            return self.raw[fast.tail:]
        return bytes(self.packet[cls].payload)


class Fast(NamedTuple):
    """What a session read with the codec: the header record, the first body struct
    (``cls``, its record ``arg``: None when the body has none, or when it is to be read on
    first use), where the struct ends
    (``tail``), where the extensions begin (``end``), how many names the layers hold (-1: a
    body too short for its struct, which only the packet reads) and the fixed-size class
    repeated after the struct (``then``: BATCH_FORGET's); ``named``: scapy dissects bytes
    after the struct as a name (it binds by class: LISTXATTR's struct is GETXATTR's)."""

    header: Any
    cls: type[Packet] | None = None
    arg: Any = None
    tail: int = 40
    end: int = 40
    names: int = 0
    then: type[Packet] | None = None
    named: bool = False


class Reply(_Lazy):
    """A reply, paired with its request: ``body`` is the first layer after the header."""

    __slots__ = ("_request", "_request_raw", "error", "findings", "opcode", "raw", "unique")
    _fields = ("unique", "opcode", "error", "packet", "raw", "request", "findings")
    unique: int
    opcode: int
    error: int
    findings: tuple[Finding, ...]
    _request: Packet | None
    _request_raw: bytes | None

    def __init__(self, *, unique: int, opcode: int, error: int, raw: bytes,
                 packet: Packet | None = None, request: Packet | None = None,
                 findings: tuple[Finding, ...] = (), decode: Decode | None = None,
                 request_raw: bytes | None = None) -> None:
        if packet is None and decode is None:
            raise TypeError("Reply needs its packet or a decode callable")
        cls = type(self)
        object.__setattr__(self, "__class__", cls._open)  # frozen: filled as the open twin
        self.unique, self.opcode, self.error, self.raw = unique, opcode, error, raw
        self.findings, self._packet, self._decode = findings, packet, decode
        self._request, self._request_raw = request, request_raw
        self.__class__ = cls

    @property
    def request(self) -> Packet | None:
        """The request this reply answers, dissected (None when it answers none)."""
        if self._request is None and self._request_raw is not None:
            from protocol.layers.header import FuseInHeader

            object.__setattr__(self, "_request", FuseInHeader(self._request_raw))
        return self._request

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

    def with_findings(self, findings: tuple[Finding, ...]) -> Reply:
        """The same reply judged differently (the packet, if built, is shared)."""
        return Reply(unique=self.unique, opcode=self.opcode, error=self.error, raw=self.raw,
                     packet=self._packet, request=self._request, findings=findings,
                     decode=self._decode, request_raw=self._request_raw)


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
