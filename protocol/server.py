"""The FUSE session in the daemon's role: sans-IO, bytes in and out.

``DaemonSession`` decodes the kernel's requests (judging them with named
findings), answers INIT as a server does (its own major and minor, the flags
both sides share, the reply size the kernel's minor expects) and encodes every
later reply at the negotiated minor, compat sizes included.  The reference
server is built on it; tests pair it with a ``KernelSession`` in memory.

The hot opcodes (``HOT``) take a fast path: the header and the first body
struct are read with ``protocol.codec`` and the scapy packet is dissected only
when something touches ``Request.packet`` (``decode_request``, the same path as
``fast=False``); the findings come from one check on the header's values and
the bytes, whichever path runs.  ``reply`` takes ``Encoded`` parts as well as
packets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, NamedTuple

from scapy.packet import Packet, Padding, Raw

from protocol import constants as c
from protocol import state as st
from protocol.codec import Encoded, codec
from protocol.events import Fast, Request
from protocol.findings import Finding
from protocol.layers.base import fixed_size
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE, FuseInHeader, FuseOutHeader
from protocol.layers.messages import NO_REPLY, REPLY_LAYERS, REQUEST_LAYERS, Layers
from protocol.layers.structs import (
    CuseInitIn,
    CuseInitOut,
    FuseGetxattrIn,
    FuseInitIn,
    FuseInitOut,
    FuseWriteIn,
)
from protocol.layers.variable import FuseName
from protocol.session import Negotiated, NegotiatedSizes
from protocol.sizes import init_out_class, reply_layers_at, request_layers_at

KERNEL = "linux fs/fuse/dev.c fuse_dev_do_read and the fuse_* request builders"
_NAMES = {c.FUSE_LOOKUP: 1, c.FUSE_UNLINK: 1, c.FUSE_RMDIR: 1, c.FUSE_REMOVEXATTR: 1,
          c.FUSE_SYMLINK: 2, c.FUSE_MKNOD: 1, c.FUSE_MKDIR: 1, c.FUSE_RENAME: 2,
          c.FUSE_RENAME2: 2, c.FUSE_LINK: 1, c.FUSE_CREATE: 1, c.FUSE_TMPFILE: 1,
          c.FUSE_SETXATTR: 1, c.FUSE_GETXATTR: 1}
#: Requests decoded with the codec first (``Request.packet`` is dissected on first use)
HOT = frozenset({
    c.FUSE_LOOKUP, c.FUSE_GETATTR, c.FUSE_SETATTR, c.FUSE_OPEN, c.FUSE_READ, c.FUSE_WRITE,
    c.FUSE_RELEASE, c.FUSE_FLUSH, c.FUSE_OPENDIR, c.FUSE_READDIR, c.FUSE_READDIRPLUS,
    c.FUSE_RELEASEDIR, c.FUSE_STATFS, c.FUSE_ACCESS, c.FUSE_CREATE, c.FUSE_GETXATTR,
    c.FUSE_LISTXATTR, c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT,
})
_HEADER = codec(FuseInHeader)
_new_tuple = tuple.__new__
_OUT_HEADER = codec(FuseOutHeader).builder("len", "error", "unique")
_WRITE_SIZE, _WRITE_SIZE_IN_BODY = codec(FuseWriteIn).field("size")
_WRITE_SIZE_AT = FUSE_IN_HEADER_SIZE + _WRITE_SIZE_IN_BODY
_XATTR = (c.FUSE_GETXATTR, c.FUSE_LISTXATTR)
_SIZE_PROBE = FuseInHeader() / FuseGetxattrIn(size=0)  # what reply_layers takes for a size-0 ask


@dataclass
class DaemonSession(NegotiatedSizes):
    """Plays the daemon: ``receive`` a request, ``reply`` to it."""

    minor: int = c.FUSE_KERNEL_MINOR_VERSION
    want: int = 0  # INIT flags this daemon would like; it gets those the kernel offers
    max_write: int = 128 * 1024
    max_readahead: int = 128 * 1024
    max_pages: int = 32
    time_gran: int = 1
    state: str = st.AWAIT_INIT
    kernel_minor: int = 0
    negotiated: Negotiated | None = None
    pending: dict[int, int] = field(default_factory=dict)  # unique -> opcode
    fast: bool = True  # the codec path for HOT opcodes; False dissects every request at once

    def receive(self, data: bytes) -> Request:
        """Decode one request and say what is wrong with it."""
        if self.fast:
            request = self._receive_clean(data)
            if request is not None:
                return request
        findings: list[Finding] = []
        if len(data) < FUSE_IN_HEADER_SIZE:
            header = FuseInHeader(data.ljust(FUSE_IN_HEADER_SIZE, b"\0"))
            findings.append(_finding("request.short", f"{len(data)} bytes, less than fuse_in_header"))
            return Request(unique=int(header.unique), opcode=int(header.opcode), nodeid=0,
                           packet=header, raw=data, findings=tuple(findings))
        head: Any = _HEADER.record(data)
        opcode, unique, minor, flags = head.opcode, head.unique, self.proto_minor, self.proto_flags
        findings += _check_request(head.len, opcode, head.total_extlen, data, minor, flags)
        if self.state == st.AWAIT_INIT and opcode not in (c.FUSE_INIT, c.CUSE_INIT):
            findings.append(_finding("request.before-init",
                                     f"{c.OPCODE_NAMES.get(opcode, opcode)} before INIT"))
        if unique in self.pending:
            findings.append(_finding("request.unique-reused",
                                     f"unique {unique} is still waiting for its reply"))
        if opcode not in NO_REPLY:
            self.pending[unique] = opcode
        if self.fast and opcode in HOT:
            return Request(unique=unique, opcode=opcode, nodeid=head.nodeid, raw=data,
                           findings=tuple(findings), decode=partial(decode_request, minor=minor, flags=flags),
                           fast=_fast(head, data, minor, flags))
        return Request(unique=unique, opcode=opcode, nodeid=head.nodeid,
                       packet=decode_request(data, minor, flags), raw=data, findings=tuple(findings))

    def admit(self, data: bytes, *, express: bool = False) -> tuple[Any, ...] | None:
        """fuse_in_header's values of a hot request the checks would find nothing wrong with,
        now waiting for its reply; None for anything else (``receive`` reads that the long way
        and names its faults).  ``express``: only when the reply at the negotiated minor has
        no compat sizes (an ``answer`` body is then encoded at the full ones)."""
        admitted = self._admit(data, express)
        return None if admitted is None else admitted[1]

    def answer(self, unique: int, body: bytes = b"", *, error: int = 0) -> bytes:
        """The reply to request ``unique``: ``body`` as encoded, or an ``error`` (an errno)."""
        return self._encode(unique, -abs(error), b"" if error else body)

    def _admit(self, data: bytes, express: bool) -> tuple[Lane, tuple[Any, ...]] | None:
        negotiated = self.negotiated
        size = len(data)
        if not self.fast or negotiated is None or self.state == st.AWAIT_INIT or size < FUSE_IN_HEADER_SIZE:
            return None
        head = _HEADER.unpack(data)
        length, opcode, unique, *_rest, extlen, _padding = head
        lane = _lane(opcode, negotiated.minor, negotiated.flags)
        body = size - FUSE_IN_HEADER_SIZE
        if lane is None or length != size or extlen or unique in self.pending \
                or (express and not lane.reply_full) or (body if lane.bare else body < lane.need):
            return None
        if lane.names and data.count(b"\0", FUSE_IN_HEADER_SIZE + lane.need) < lane.names:
            return None
        if lane.write and _WRITE_SIZE.unpack_from(data, _WRITE_SIZE_AT)[0] != body - lane.need:
            return None
        if lane.replied:
            self.pending[unique] = opcode
        return lane, head

    def _receive_clean(self, data: bytes) -> Request | None:
        """An admitted request, read through its ``Lane``; None for anything else."""
        admitted = self._admit(data, False)
        if admitted is None:
            return None
        lane, values = admitted
        head = _HEADER.record_of(values)
        fast = _new_tuple(Fast, (  # Fast(...) without its keyword-parsing __new__; the body's
            head, lane.first, None, lane.tail, len(data), lane.names, lane.then, lane.named))  # on use
        return Request.clean(head.unique, head.opcode, head.nodeid, data, lane.decode, fast)

    def accept_init(self, request: Request, **fields: int) -> bytes:
        """Answer INIT as a server: our version, shared flags, the size the kernel expects."""
        offer = request.packet[FuseInitIn] if FuseInitIn in request.packet else None
        if offer is None or int(offer.major) < c.FUSE_KERNEL_VERSION:
            return self.error(request, 71)  # EPROTO
        if int(offer.major) > c.FUSE_KERNEL_VERSION:  # the kernel retries with major 7
            return self.reply(request, FuseInitOut(major=c.FUSE_KERNEL_VERSION, minor=self.minor))
        self.kernel_minor = int(offer.minor)
        offered = int(offer.flags) | (int(offer.flags2 or 0) << 32 if offer.flags & c.FUSE_INIT_EXT else 0)
        agreed = self.want & offered
        if agreed >> 32:
            agreed |= c.FUSE_INIT_EXT
        body = FuseInitOut(
            major=c.FUSE_KERNEL_VERSION, minor=self.minor,
            max_readahead=min(self.max_readahead, int(offer.max_readahead)),
            flags=agreed & 0xFFFFFFFF, flags2=agreed >> 32, max_write=self.max_write,
            time_gran=self.time_gran,
            max_pages=self.max_pages if agreed & c.FUSE_MAX_PAGES else 0)
        for name, value in fields.items():
            body.setfieldval(name, value)
        size = fixed_size(init_out_class(self.kernel_minor))
        self.negotiated = Negotiated(major=c.FUSE_KERNEL_VERSION, minor=min(self.minor, self.kernel_minor),
                                     server_minor=self.minor, flags=agreed, reply=body)
        self._advance(st.SEND_INIT)
        self._advance(st.INIT_ACCEPTED)
        return self._encode(request.unique, 0, bytes(body)[:size])

    def accept_cuse_init(self, request: Request, devinfo: bytes, *, flags: int = 0, max_read: int = 0,
                         max_write: int = 0, dev_major: int = 0, dev_minor: int = 0) -> bytes:
        """Answer CUSE_INIT as a CUSE server: our version, the CUSE flags both want, the device
        info block (``DEVNAME=...`` strings, each NUL-ended) after cuse_init_out."""
        offer = request.packet[CuseInitIn] if CuseInitIn in request.packet else None
        if offer is None or int(offer.major) != c.FUSE_KERNEL_VERSION:
            return self.error(request, 71)  # EPROTO
        self.kernel_minor = int(offer.minor)
        agreed = flags & int(offer.flags)
        body = CuseInitOut(major=c.FUSE_KERNEL_VERSION, minor=self.minor, flags=agreed, max_read=max_read,
                           max_write=max_write, dev_major=dev_major, dev_minor=dev_minor)
        self.negotiated = Negotiated(major=c.FUSE_KERNEL_VERSION, minor=min(self.minor, self.kernel_minor),
                                     server_minor=self.minor, flags=agreed, reply=body)
        self._advance(st.SEND_INIT)
        self._advance(st.INIT_ACCEPTED)
        return self._encode(request.unique, 0, bytes(body) + devinfo)

    def reply(self, request: Request, *layers: Packet | Encoded) -> bytes:
        """A successful reply; fixed structs are cut to the negotiated minor's sizes."""
        variants = self._variants(request)
        if len(layers) == 1 and type(layers[0]) is Encoded and variants and layers[0].cls is variants[0]:
            return self._encode(request.unique, 0, layers[0].data)  # one part at its size: as it is
        body = b""
        for i, part in enumerate(layers):
            cls, raw = (part.cls, part.data) if isinstance(part, Encoded) else (type(part), bytes(part))
            if i < len(variants) and cls is not variants[i]:
                try:
                    raw = raw[: fixed_size(variants[i])]
                except TypeError:
                    pass
            body += raw
        if request.opcode == c.FUSE_DESTROY:
            self._advance(st.SEND_DESTROY)
            self._advance(st.DESTROY_DONE)
        return self._encode(request.unique, 0, body)

    def _variants(self, request: Request) -> Layers:
        """The reply layers at the negotiated minor (``reply_layers_at``), without dissecting
        the request: only GETXATTR/LISTXATTR depend on it, through the size asked."""
        opcode, minor = request.opcode, self.proto_minor
        if opcode not in _XATTR:
            return _reply_layers(opcode, minor, False)
        try:
            probe = request.layer(FuseGetxattrIn).size == 0
        except IndexError:  # no fuse_getxattr_in: not a probe
            probe = False
        return _reply_layers(opcode, minor, probe)

    def error(self, request: Request, errno: int) -> bytes:
        """An error reply: the header alone, ``error = -errno``."""
        return self._encode(request.unique, -abs(errno), b"")

    def notify(self, code: int, *layers: Packet) -> bytes:
        """A notification (unique 0, error = code), its len the whole message's."""
        return self._encode(0, code, b"".join(bytes(p) for p in layers))

    def _encode(self, unique: int, error: int, body: bytes) -> bytes:
        self.pending.pop(unique, None)
        return _OUT_HEADER(FUSE_OUT_HEADER_SIZE + len(body), error, unique) + body

    def _advance(self, event: str) -> None:
        new = st.next_state(self.state, event)
        if new is not None:
            self.state = new


@cache
def _reply_layers(opcode: int, minor: int, probe: bool) -> Layers:
    return reply_layers_at(opcode, minor, _SIZE_PROBE if probe else None)


@cache
def _request_layers(opcode: int, minor: int, flags: int) -> Layers:
    return request_layers_at(opcode, minor, flags)


def _fast(head: Any, data: bytes, minor: int, flags: int) -> Fast | None:
    """The codec's reading of a hot request: None when the kernel's layout at ``minor`` is a
    compat one (then only the packet is read)."""
    plan = _plan(head.opcode, minor, flags)
    if plan is None:
        return None
    first, size, names, then, named = plan
    ext = head.total_extlen * 8  # split off as FuseInHeader.extract_padding does
    end = len(data) - ext if ext and ext <= len(data) - FUSE_IN_HEADER_SIZE else len(data)
    if first is None:
        return Fast(head, end=end, names=names, named=named)
    if end - FUSE_IN_HEADER_SIZE < size:
        return Fast(head, names=-1)  # only the packet knows what a short body holds
    return Fast(head, first, codec(first).record(data, FUSE_IN_HEADER_SIZE),
                FUSE_IN_HEADER_SIZE + size, end, names, then, named)


@cache
def _plan(opcode: int, minor: int, flags: int) -> tuple[Any, int, int, Any, bool] | None:
    """(first fixed struct or None, its size, names in the layers, the fixed class repeated
    after it, whether scapy reads a name after it) of a request at ``minor``; None for a
    compat layout."""
    layers = _request_layers(opcode, minor, flags)
    if layers != REQUEST_LAYERS[opcode]:
        return None
    names = _NAMES.get(opcode, 0)
    if not layers or layers[0] is FuseName:
        return None, 0, names, None, bool(names)
    then = layers[1] if len(layers) > 1 and layers[1] not in (FuseName, Raw) else None
    named = any(bound is FuseName for _, bound in layers[0].payload_guess)  # its bindings
    return layers[0], fixed_size(layers[0]), names, then, named


class Lane(NamedTuple):
    """A hot opcode at one minor and flag set: what a clean request's body holds (``bare``: no
    body at all; else at least ``need`` bytes, ``names`` NUL-terminated names after them, and
    for WRITE (``write``) as many data bytes as its size says), and how ``Fast`` reads it."""

    need: int
    bare: bool
    names: int
    write: bool
    replied: bool
    reply_full: bool
    first: Any
    tail: int
    then: Any
    named: bool
    decode: Callable[[bytes], Packet]


@cache
def _lane(opcode: int, minor: int, flags: int) -> Lane | None:
    """The ``Lane`` of a HOT opcode; None for the others and for compat layouts."""
    if opcode not in HOT:
        return None
    plan = _plan(opcode, minor, flags)
    if plan is None:
        return None
    first, size, names, then, named = plan
    need, has_layers = _body_need(opcode, minor, flags)
    return Lane(need=need, bare=not has_layers, names=names, write=opcode == c.FUSE_WRITE,
                replied=opcode not in NO_REPLY,
                reply_full=_reply_layers(opcode, minor, False) == REPLY_LAYERS.get(opcode),
                first=first, tail=FUSE_IN_HEADER_SIZE + size, then=then, named=named,
                decode=partial(decode_request, minor=minor, flags=flags))


def decode_request(data: bytes, minor: int, flags: int) -> Packet:
    """Dissect a request as the kernel lays it out at ``minor`` (compat structs included)."""
    packet = FuseInHeader(data)
    opcode = int(packet.opcode)
    layers = request_layers_at(opcode, minor, flags)
    full = REQUEST_LAYERS.get(opcode, ())
    if layers == full or not layers:
        return packet
    ext = int(packet.total_extlen) * 8
    body = data[FUSE_IN_HEADER_SIZE: len(data) - ext] if ext else data[FUSE_IN_HEADER_SIZE:]
    size = fixed_size(layers[0])
    first = layers[0](body[:size]) if len(body) >= size else Raw(body)  # as scapy reads a short part
    head: Packet = FuseInHeader(data[:FUSE_IN_HEADER_SIZE]) / first
    rest = body[size:]
    if rest:
        head = head / (full[1](rest) if len(full) > 1 else Raw(rest))
    if ext:
        head = head / Padding(data[len(data) - ext:])
    return head


def _finding(code: str, message: str) -> Finding:
    return Finding(code=code, message=message, source=KERNEL)


@cache
def _body_need(opcode: int, minor: int, flags: int) -> tuple[int, bool]:
    """The fixed bytes a request's body needs at ``minor`` (its leading fixed-size layers), and
    whether it has any layers at all."""
    layers = _request_layers(opcode, c.FUSE_KERNEL_MINOR_VERSION if opcode == c.FUSE_INIT else minor,
                             flags)
    need = 0
    for cls in layers:
        try:
            need += fixed_size(cls)
        except TypeError:
            break
    return need, bool(layers)


def _check_request(length: int, opcode: int, total_extlen: int, data: bytes, minor: int,
                   flags: int) -> list[Finding]:
    """A request's length, opcode, fixed body size, names and extension length (from the
    header's ``len``, ``opcode`` and ``total_extlen`` and the bytes)."""
    found: list[Finding] = []
    if length != len(data):
        found.append(_finding("request.len-mismatch",
                              f"len field says {length}, the request has {len(data)} bytes"))
    if opcode not in REQUEST_LAYERS:
        found.append(_finding("request.unknown-opcode", f"opcode {opcode} is not defined"))
        return found
    ext = total_extlen * 8
    body = data[FUSE_IN_HEADER_SIZE: len(data) - ext if ext <= len(data) - FUSE_IN_HEADER_SIZE else None]
    if ext > len(data) - FUSE_IN_HEADER_SIZE:
        found.append(_finding("request.extlen", f"total_extlen {total_extlen} exceeds the body"))
    need, has_layers = _body_need(opcode, minor, flags)
    name = c.OPCODE_NAMES[opcode]
    if opcode == c.FUSE_INIT:
        need = 16 if len(body) < 64 else 64  # before 7.36 the kernel sent 16 bytes
    if len(body) < need:
        found.append(_finding("request.body-size",
                              f"{name} body is {len(body)} bytes; its struct needs {need} at minor {minor}"))
        return found
    names = _NAMES.get(opcode, 0)
    if names and body[need:].count(b"\0") < names:
        found.append(_finding("request.name", f"{name} needs {names} NUL-terminated name(s)"))
    if not has_layers and body and opcode not in (c.FUSE_INIT,):
        found.append(_finding("request.body-size", f"{name} carries no body, got {len(body)} bytes"))
    if opcode == c.FUSE_WRITE and len(body) >= need:
        size = _WRITE_SIZE.unpack_from(body, _WRITE_SIZE_IN_BODY)[0]
        if size != len(body) - need:
            found.append(_finding("request.write-size",
                                  f"WRITE says {size} bytes and carries {len(body) - need}"))
    return found
