"""The FUSE session in the kernel's role: sans-IO, bytes in and out.

``KernelSession`` numbers requests, encodes them at the negotiated minor,
pairs each reply with its request by ``unique``, decodes the reply by the
request's opcode and attaches the findings of the validators.  It never
raises on a bad reply: a bad reply is a finding.  Unlike a real kernel it
lets a test send what the state table (``protocol.state``) calls illegal, a
request before INIT or a second INIT, on purpose: the state then stays as it
was, and the daemon's answer is what the test judges.

Fast path (``fast=True``, the default): requests are packed with
``protocol.codec`` (a body struct given as a flat packet, a ``FuseName``),
pending requests are kept as bytes, and replies to the hot opcodes
(``protocol.server.HOT``) are judged from the bytes and codec records; the
reply's scapy ``packet`` (and its ``request``) is dissected only when touched.
The findings are those of the scapy path, which ``fast=False`` takes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from types import SimpleNamespace
from typing import Any

from scapy.packet import NoPayload, Packet, Raw

from protocol import constants as c
from protocol import cuse, validate
from protocol import state as st
from protocol.codec import codec
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.events import Notify, Reply
from protocol.findings import Finding
from protocol.layers.base import fixed_size
from protocol.layers.header import (
    FUSE_IN_HEADER_SIZE,
    FUSE_OUT_HEADER_SIZE,
    FuseInHeader,
    FuseOutHeader,
    FuseSecctxHeader,
)
from protocol.layers.messages import NO_REPLY, NOTIFY_LAYERS, REQUEST_LAYERS, Layers
from protocol.layers.structs import (
    CuseInitIn,
    CuseInitOut,
    FuseAttrOut,
    FuseEntryOut,
    FuseGetxattrIn,
    FuseGetxattrOut,
    FuseInitIn,
    FuseIoctlIovec,
    FuseIoctlOut,
    FuseReadIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.layers.variable import FuseName
from protocol.sizes import reply_layers_at, request_layers_at

# What Linux 6.18 offers in FUSE_INIT (fs/fuse/inode.c fuse_send_init), as read off
# this kernel's own INIT: flags 0x73fffffb, flags2 0x5fd.  Not offered: FILE_OPS,
# bit 31, MAP_ALIGNMENT/SUBMOUNTS/HAS_INODE_DAX (DAX and auto_submounts only) and
# OVER_IO_URING (only with io_uring enabled).
KERNEL_INIT_FLAGS = (
    c.FUSE_ASYNC_READ | c.FUSE_POSIX_LOCKS | c.FUSE_ATOMIC_O_TRUNC | c.FUSE_EXPORT_SUPPORT
    | c.FUSE_BIG_WRITES | c.FUSE_DONT_MASK | c.FUSE_SPLICE_WRITE | c.FUSE_SPLICE_MOVE
    | c.FUSE_SPLICE_READ | c.FUSE_FLOCK_LOCKS | c.FUSE_HAS_IOCTL_DIR | c.FUSE_AUTO_INVAL_DATA
    | c.FUSE_DO_READDIRPLUS | c.FUSE_READDIRPLUS_AUTO | c.FUSE_ASYNC_DIO
    | c.FUSE_WRITEBACK_CACHE | c.FUSE_NO_OPEN_SUPPORT | c.FUSE_PARALLEL_DIROPS
    | c.FUSE_HANDLE_KILLPRIV | c.FUSE_POSIX_ACL | c.FUSE_ABORT_ERROR | c.FUSE_MAX_PAGES
    | c.FUSE_CACHE_SYMLINKS | c.FUSE_NO_OPENDIR_SUPPORT | c.FUSE_EXPLICIT_INVAL_DATA
    | c.FUSE_HANDLE_KILLPRIV_V2 | c.FUSE_SETXATTR_EXT | c.FUSE_INIT_EXT
    | c.FUSE_SECURITY_CTX | c.FUSE_CREATE_SUPP_GROUP | c.FUSE_HAS_EXPIRE_ONLY
    | c.FUSE_DIRECT_IO_ALLOW_MMAP | c.FUSE_PASSTHROUGH | c.FUSE_NO_EXPORT_SUPPORT
    | c.FUSE_HAS_RESEND | c.FUSE_ALLOW_IDMAP | c.FUSE_REQUEST_TIMEOUT
)
assert KERNEL_INIT_FLAGS == 0x73FFFFFB | 0x5FD << 32
# Requests that carry the security-context extension once FUSE_SECURITY_CTX is agreed
SECCTX_OPCODES = frozenset({c.FUSE_CREATE, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_SYMLINK,
                            c.FUSE_TMPFILE})
INIT_SOURCE = "linux fs/fuse/inode.c process_init_reply; libfuse lib/fuse_lowlevel.c do_init"


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What INIT settled: the minor both sides use and the server's answer."""

    major: int
    minor: int
    server_minor: int
    flags: int  # 64 bits: flags | flags2 << 32, masked by what was offered
    reply: Packet

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


class Pending:
    """A request waiting for its reply: its opcode and bytes, dissected when first asked."""

    __slots__ = ("_packet", "opcode", "raw")

    def __init__(self, opcode: int, raw: bytes, packet: Packet | None = None) -> None:
        self.opcode, self.raw, self._packet = opcode, raw, packet

    @property
    def packet(self) -> Packet:
        if self._packet is None:
            self._packet = FuseInHeader(self.raw)
        return self._packet


class NegotiatedSizes:
    """What both roles read off INIT: the minor and flags that size every message now."""

    minor: int
    negotiated: Negotiated | None

    @property
    def proto_minor(self) -> int:
        """The negotiated minor, or this side's own before INIT."""
        return self.negotiated.minor if self.negotiated else self.minor

    @property
    def proto_flags(self) -> int:
        """The negotiated flags (64 bits), or none before INIT."""
        return self.negotiated.flags if self.negotiated else 0


@dataclass
class KernelSession(NegotiatedSizes):
    """Plays the kernel: builds requests and judges the daemon's replies."""

    minor: int = c.FUSE_KERNEL_MINOR_VERSION
    flags: int = KERNEL_INIT_FLAGS
    max_readahead: int = 128 * 1024
    uid: int = 0
    gid: int = 0
    pid: int = 0
    state: str = st.AWAIT_INIT
    negotiated: Negotiated | None = None
    pending: dict[int, Pending] = field(default_factory=dict)
    _last_unique: int = 0
    _init_unique: int | None = None
    _offered_major: int = c.FUSE_KERNEL_VERSION
    _last_built: int = 0
    fast: bool = True  # the codec path; False builds and dissects every message with scapy
    cuse_flags: int = 0  # what CUSE_INIT offered (cuse_init), when this is a CUSE session

    # -- requests ---------------------------------------------------------
    @property
    def last_unique(self) -> int:
        """The unique of the request built last."""
        return self._last_built

    def next_unique(self) -> int:
        self._last_unique += c.FUSE_REQ_ID_STEP
        return self._last_unique

    def init(self, *, major: int = c.FUSE_KERNEL_VERSION, minor: int | None = None,
             flags: int | None = None, max_readahead: int | None = None) -> bytes:
        """The FUSE_INIT request; ``minor`` and ``flags`` default to the session's offer."""
        if minor is not None:
            self.minor = minor
        if flags is not None:
            self.flags = flags
        offer = self.flags
        if self.minor < 36:
            offer &= 0xFFFFFFFF & ~c.FUSE_INIT_EXT
        body: Packet = FuseInitIn(major=major, minor=self.minor,
                          max_readahead=self.max_readahead if max_readahead is None else max_readahead,
                          flags=offer & 0xFFFFFFFF, flags2=offer >> 32)
        if self.minor < 36:  # flags2 and unused[] came with 7.36
            body = Raw(bytes(body)[:16])
        data = self.request(c.FUSE_INIT, body, nodeid=0)
        self._init_unique = self._last_unique
        self._offered_major = major
        self._advance(st.SEND_INIT)
        return data

    def request(self, opcode: int, *layers: Packet, nodeid: int = c.FUSE_ROOT_ID,
                unique: int | None = None, uid: int | None = None, gid: int | None = None,
                pid: int | None = None, total_extlen: int = 0, length: int | None = None,
                extensions: bytes = b"") -> bytes:
        """Encode a request; remember it unless its opcode gets no reply.

        ``length`` overrides the header's len (to lie on purpose); body structs
        are cut to the size the kernel uses at the negotiated minor.
        """
        if unique is None:
            unique = self.next_unique()
        elif unique in self.pending:
            raise LocalProtocolError(f"unique {unique} is already pending")
        self._last_built = unique
        ids = (self.uid if uid is None else uid, self.gid if gid is None else gid,
               self.pid if pid is None else pid)
        body = b"".join(self._encode_part(opcode, i, part) for i, part in enumerate(layers))
        if not extensions and opcode in SECCTX_OPCODES and self.proto_flags & c.FUSE_SECURITY_CTX:
            extensions = _NO_SECCTX  # as the kernel: no context
        if extensions and not total_extlen:
            total_extlen = len(extensions) // 8
        values = (opcode, unique, nodeid, *ids, total_extlen)
        if self.fast and all(type(v) is int for v in values) and (length is None or type(length) is int):
            size = FUSE_IN_HEADER_SIZE + len(body) + len(extensions)
            data = _IN_HEADER(size if length is None else length, *values) + body + extensions
        else:
            header = FuseInHeader(len=length, opcode=opcode, unique=unique, nodeid=nodeid, uid=ids[0],
                                  gid=ids[1], pid=ids[2], total_extlen=total_extlen)
            data = bytes(header) + body + extensions
            if length is None:
                data = struct.pack("<I", len(data)) + data[4:]
        if opcode == c.FUSE_DESTROY:
            self._advance(st.SEND_DESTROY)
        if opcode not in NO_REPLY:
            self.pending[unique] = Pending(opcode, data, None if self.fast else FuseInHeader(data))
        return data

    def _encode_part(self, opcode: int, index: int, part: Packet) -> bytes:
        raw = _fast_bytes(part) if self.fast else None
        if raw is None:
            raw = bytes(part)
        variants = _request_layers(opcode, self.proto_minor, self.proto_flags)
        if index == 0 and variants and type(part) is not variants[0]:
            try:
                size = fixed_size(variants[0])
                if size < fixed_size(type(part)) and len(raw) >= fixed_size(type(part)):
                    return raw[:size] + raw[fixed_size(type(part)):]
            except TypeError:
                pass
        return raw

    def interrupt(self, target_unique: int) -> bytes:
        """FUSE_INTERRUPT of a pending request: its unique is the target's with bit 0 set.

        The daemon answers it only with a bare EAGAIN (try again later) or ENOSYS.
        """
        from protocol.layers.structs import FuseInterruptIn

        return self.request(c.FUSE_INTERRUPT, FuseInterruptIn(unique=target_unique), nodeid=0,
                            unique=target_unique | c.FUSE_INT_REQ_BIT)

    def observe(self, data: bytes) -> None:
        """Take a request another kernel sent (the real one, through /dev/fuse) as if this
        session had built it, so that ``receive`` judges the daemon's reply to it."""
        head = _IN.record(data) if self.fast and len(data) >= FUSE_IN_HEADER_SIZE else None
        if head is not None and head.opcode not in (c.FUSE_INIT, c.FUSE_DESTROY):
            if head.opcode not in NO_REPLY and not head.unique & c.FUSE_INT_REQ_BIT:
                self.pending[head.unique] = Pending(head.opcode, data)
            return
        header = FuseInHeader(data)
        opcode, unique = int(header.opcode), int(header.unique)
        if opcode == c.FUSE_INIT and isinstance(header.payload, FuseInitIn):
            init = header.payload
            self.minor = int(init.minor)
            self.flags = int(init.flags or 0) | int(init.flags2 or 0) << 32
            self._offered_major = int(init.major)
            self._init_unique = unique
            self._advance(st.SEND_INIT)
        elif opcode == c.FUSE_DESTROY:
            self._advance(st.SEND_DESTROY)
        if opcode not in NO_REPLY and not unique & c.FUSE_INT_REQ_BIT:
            self.pending[unique] = Pending(opcode, data, header)

    def forget_pending(self, unique: int) -> None:
        """Stop waiting for a reply (e.g. after a timeout)."""
        self.pending.pop(unique, None)

    def reply_room(self, data: bytes) -> int | None:
        """Bytes the kernel sets aside for the reply to request ``data``: fuse_out_header and
        the largest body the request allows (linux fs/fuse/virtio_fs.c makes the device-writable
        buffers exactly the out args' sizes); 0 for no reply, None when not bounded."""
        if len(data) < FUSE_IN_HEADER_SIZE:
            return None
        opcode = _IN_OPCODE.unpack_from(data, _IN_OPCODE_AT)[0]
        if opcode in NO_REPLY:
            return 0
        minor = self.minor if opcode == c.FUSE_INIT else self.proto_minor
        sized = _SIZED_BY_REQUEST.get(opcode)
        if sized is not None:  # the kernel's buffer is the size the request names
            body_size, size_field, size_at, extra = sized
            if len(data) < FUSE_IN_HEADER_SIZE + body_size:
                return None
            size = size_field.unpack_from(data, FUSE_IN_HEADER_SIZE + size_at)[0]
            return FUSE_OUT_HEADER_SIZE + (size or extra)
        known = _ROOM.get((opcode, minor))
        if known is not None:
            return known
        try:
            request = FuseInHeader(data)
            layers = reply_layers_at(opcode, self.minor if opcode == c.FUSE_INIT else self.proto_minor,
                                     request)
            most = validate.reply_size_bounds(opcode, layers, request)[1]
        except (KeyError, TypeError, ValueError, struct.error):
            return None
        if most is None:
            return None
        if opcode != c.FUSE_IOCTL:  # the rest do not depend on the request: remember them
            _ROOM[(opcode, minor)] = FUSE_OUT_HEADER_SIZE + most
        return FUSE_OUT_HEADER_SIZE + most

    def cuse_init(self, *, major: int = c.FUSE_KERNEL_VERSION, minor: int | None = None,
                  flags: int = c.CUSE_UNRESTRICTED_IOCTL) -> bytes:
        """The CUSE_INIT request as the kernel's cuse_send_init makes it: its version and the
        CUSE flags it offers (``cuse_flags`` keeps the offer; the reply is judged by it)."""
        if minor is not None:
            self.minor = minor
        self.cuse_flags = flags
        data = self.request(c.CUSE_INIT, CuseInitIn(major=major, minor=self.minor, flags=flags), nodeid=0)
        self._init_unique = self._last_unique
        self._offered_major = major
        self._advance(st.SEND_INIT)
        return data

    # -- replies ----------------------------------------------------------
    def receive(self, data: bytes) -> Reply | Notify:
        """Decode one message from the daemon: a reply or a notification."""
        if len(data) < FUSE_OUT_HEADER_SIZE:
            raise RemoteProtocolError(Finding(
                code="reply.short", source=validate.DEV,
                message=f"message of {len(data)} bytes is shorter than fuse_out_header (16)"))
        if self.fast:
            length, error, unique = _OUT.unpack(data)
            pending = self.pending.get(unique) if unique else None
            if pending is not None and pending.opcode in _HOT:
                del self.pending[unique]
                return self._receive_fast(data, length, error, unique, pending)
        header = FuseOutHeader(data[:FUSE_OUT_HEADER_SIZE])
        findings = list(validate.check_frame(data, int(header.len)))
        body = data[FUSE_OUT_HEADER_SIZE:]
        if header.unique == 0:
            return self._notify(header, body, data, findings)
        pending = self.pending.pop(int(header.unique), None)
        if pending is None:
            findings.append(Finding(
                code="reply.unknown-unique", source=validate.DEV, unique=int(header.unique),
                message=f"reply to unique {header.unique}, which no pending request has "
                        f"(pending: {sorted(self.pending)[:8]}); the kernel answers ENOENT"))
            return Reply(unique=int(header.unique), opcode=0, error=int(header.error),
                         packet=header / Raw(body) if body else header, raw=data,
                         findings=tuple(findings))
        error = int(header.error)
        findings += validate.check_error(error, len(body))
        opcode = pending.opcode
        if opcode == c.FUSE_INTERRUPT:
            findings += validate.check_interrupt_reply(error, len(body))
        packet: Packet = header
        if not error:
            minor = self.minor if opcode in (c.FUSE_INIT, c.CUSE_INIT) else self.proto_minor
            layers = reply_layers_at(opcode, minor, pending.packet)
            size_findings = list(
                validate.check_body_size(opcode, layers, len(body), pending.packet, minor))
            findings += size_findings
            # the kernel zero-fills a short INIT reply; other short structs stay raw bytes
            decoded = decode_body(layers, body, zero_fill=opcode == c.FUSE_INIT)
            if opcode == c.FUSE_IOCTL and decoded is not None and len(body) > 16 \
                    and int(getattr(decoded, "flags", 0) or 0) & c.FUSE_IOCTL_RETRY:
                decoded = FuseIoctlOut(body[:16]) / FuseIoctlIovec(body[16:])  # iovecs follow
            if decoded is not None:
                packet = header / decoded
                if not size_findings:  # a body of the wrong size is not read further
                    findings += validate.check_semantics(opcode, decoded, body, pending.packet)
        elif body:
            packet = header / Raw(body)
        reply = Reply(unique=int(header.unique), opcode=opcode, error=error, packet=packet,
                      raw=data, request=pending.packet,
                      findings=tuple(f if f.unique else _with_unique(f, header.unique) for f in findings))
        if opcode == c.FUSE_INIT:
            reply = self._negotiate(reply)
        elif opcode == c.CUSE_INIT:
            reply = self._negotiate_cuse(reply)
        elif opcode == c.FUSE_DESTROY:
            self._advance(st.DESTROY_DONE)
        return reply

    def _receive_fast(self, data: bytes, length: int, error: int, unique: int,
                      pending: Pending) -> Reply:
        """``receive`` for a hot opcode: the same findings, judged from bytes and records."""
        body = data[FUSE_OUT_HEADER_SIZE:]
        opcode = pending.opcode
        findings = list(validate.check_frame(data, length))
        findings += validate.check_error(error, len(body))
        if opcode == c.FUSE_INTERRUPT:
            findings += validate.check_interrupt_reply(error, len(body))
        layers: Layers = ()
        if not error:
            view = request_view(pending)
            request: Any = pending.packet if view is None else view  # read as a packet is
            minor = self.proto_minor
            layers = reply_layers_at(opcode, minor, request)
            size_findings = list(validate.check_body_size(opcode, layers, len(body), request, minor))
            findings += size_findings
            if body and not size_findings:
                findings += reply_semantics(opcode, layers, body, request, pending)
        return Reply(unique=unique, opcode=opcode, error=error, raw=data,
                     decode=partial(_reply_packet, layers, error), request=pending._packet,
                     request_raw=pending.raw,
                     findings=tuple(f if f.unique else _with_unique(f, unique) for f in findings))

    def _notify(self, header: Packet, body: bytes, data: bytes, findings: list[Finding]) -> Notify:
        code = int(header.error)
        findings += validate.check_notify(code, body)
        layers = NOTIFY_LAYERS.get(code, (Raw,))
        decoded = decode_body(layers, body) if body else None
        packet = header / decoded if decoded is not None else header
        return Notify(code=code, packet=packet, raw=data, findings=tuple(findings))

    def _negotiate(self, reply: Reply) -> Reply:
        """Apply an INIT reply: accepted when it is a success with major 7."""
        findings = list(reply.findings)
        body = reply.body
        if reply.error or body is None or not hasattr(body, "major"):
            self._advance(st.INIT_REFUSED)
            return reply
        major, server_minor = int(body.major), int(body.minor)
        if self._offered_major != c.FUSE_KERNEL_VERSION:
            # we offered another major: the server's version is the answer, and a
            # kernel then sends a new INIT with that major (libfuse do_init)
            self._advance(st.INIT_REFUSED)
            return reply
        if major != c.FUSE_KERNEL_VERSION:
            findings.append(Finding(
                code="init.major", source=INIT_SOURCE, unique=reply.unique,
                message=f"INIT reply major is {major}; a kernel speaking major 7 fails the "
                        "connection (only a kernel offering a newer major expects this answer)"))
            self._advance(st.INIT_REFUSED)
            return _replace_findings(reply, findings)
        raw_flags = int(getattr(body, "flags", 0) or 0) if server_minor >= 6 else 0  # kernel: 7.6+
        if raw_flags & c.FUSE_INIT_EXT:
            raw_flags |= int(getattr(body, "flags2", 0) or 0) << 32
        extra = raw_flags & ~self._offered_flags()
        if extra:
            names = ", ".join(n for bit, n in sorted(c.INIT_FLAG_NAMES.items()) if extra & bit)
            findings.append(Finding(
                code="init.flags-not-offered", unique=reply.unique,
                source="libfuse do_init (a want outside what the kernel offers is refused); "
                       "the kernel itself acts on the bits it knows without checking",
                message=f"INIT reply sets flags the kernel did not offer: {names or hex(extra)}"))
        self.negotiated = Negotiated(major=major, minor=min(self.minor, server_minor),
                                     server_minor=server_minor,
                                     flags=raw_flags & self._offered_flags(), reply=body)
        self._advance(st.INIT_ACCEPTED)
        return _replace_findings(reply, findings)

    def _negotiate_cuse(self, reply: Reply) -> Reply:
        """Apply a CUSE_INIT reply as cuse_process_init_reply does: accepted when it is a
        success the kernel would make a device of; each reason it would not is a finding."""
        body = reply.body
        if reply.error or body is None or not hasattr(body, "dev_major"):
            self._advance(st.INIT_REFUSED)
            return reply
        info = reply.raw[FUSE_OUT_HEADER_SIZE + fixed_size(CuseInitOut):]
        problems = cuse.init_reply_problems(self.cuse_flags, body, info)
        findings = [*reply.findings, *(Finding(code="cuse.init", source=cuse.KERNEL, unique=reply.unique,
                                               message=p) for p in problems)]
        refused = int(body.major) != c.FUSE_KERNEL_VERSION or int(body.minor) < cuse.MIN_MINOR or \
            not cuse.parse_devinfo(info).devname
        if refused:
            self._advance(st.INIT_REFUSED)
            return _replace_findings(reply, findings)
        server_minor = int(body.minor)
        self.negotiated = Negotiated(major=int(body.major), minor=min(self.minor, server_minor),
                                     server_minor=server_minor, flags=int(body.flags) & self.cuse_flags,
                                     reply=body)
        self._advance(st.INIT_ACCEPTED)
        return _replace_findings(reply, findings)

    def _offered_flags(self) -> int:
        return self.flags if self.minor >= 36 else self.flags & 0xFFFFFFFF & ~c.FUSE_INIT_EXT

    def _advance(self, event: str) -> None:
        new = st.next_state(self.state, event)
        if new is not None:
            self.state = new


def decode_body(layers: Layers, body: bytes, *, zero_fill: bool = False) -> Packet | None:
    """Dissect a body as the given layers in order: fixed parts take their size.

    A fixed part cut short stays raw bytes (``Raw``), or with ``zero_fill`` is
    read as if zeros followed, as the kernel reads a short INIT reply.
    """
    if not body:
        return None
    if not layers:
        return Raw(body)
    parts: list[Packet] = []
    rest = body
    for i, cls in enumerate(layers):
        if not rest:
            break
        last = i == len(layers) - 1
        try:
            size: int | None = fixed_size(cls)
        except TypeError:
            size = None
        if size is not None and len(rest) < size:
            parts.append(cls(rest.ljust(size, b"\0")) if zero_fill else Raw(rest))
            rest = b""
            break
        take = len(rest) if last or size is None else size
        chunk, rest = rest[:take], rest[take:]
        parts.append(cls(chunk))
    if rest:
        parts.append(Raw(rest))
    packet = parts[0]
    for part in parts[1:]:
        packet = packet / part
    return packet


_IN, _OUT = codec(FuseInHeader), codec(FuseOutHeader)
#: Opcodes whose reply room is a size in their body (0: a probe, answered with ``extra`` bytes)
_IN_OPCODE, _IN_OPCODE_AT = _IN.field("opcode")


def _sized(body: type[Packet], extra: int = 0) -> tuple[int, struct.Struct, int, int]:
    """A request body's size, its ``size`` field and offset, and the room when that is 0."""
    body_codec = codec(body)
    return (body_codec.struct.size, *body_codec.field("size"), extra)


#: requests whose reply room is the size they name: READ, READDIR(PLUS), GET/LISTXATTR
_SIZED_BY_REQUEST = {
    c.FUSE_READ: _sized(FuseReadIn), c.FUSE_READDIR: _sized(FuseReadIn),
    c.FUSE_READDIRPLUS: _sized(FuseReadIn),
    c.FUSE_GETXATTR: _sized(FuseGetxattrIn, fixed_size(FuseGetxattrOut)),
    c.FUSE_LISTXATTR: _sized(FuseGetxattrIn, fixed_size(FuseGetxattrOut)),
}
_ROOM: dict[tuple[int, int], int] = {}  # (opcode, minor) -> reply room, for the fixed ones
_IN_HEADER = _IN.builder("len", "opcode", "unique", "nodeid", "uid", "gid", "pid", "total_extlen")
_NO_SECCTX = bytes(FuseSecctxHeader(size=8, nr_secctx=0))
#: Opcodes whose replies the fast path judges (protocol.server.HOT, which imports this module)
_HOT = frozenset({
    c.FUSE_LOOKUP, c.FUSE_GETATTR, c.FUSE_SETATTR, c.FUSE_OPEN, c.FUSE_READ, c.FUSE_WRITE,
    c.FUSE_RELEASE, c.FUSE_FLUSH, c.FUSE_OPENDIR, c.FUSE_READDIR, c.FUSE_READDIRPLUS,
    c.FUSE_RELEASEDIR, c.FUSE_STATFS, c.FUSE_ACCESS, c.FUSE_CREATE, c.FUSE_GETXATTR,
    c.FUSE_LISTXATTR, c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT,
})
_SOME_BODY = Raw()  # a decoded body that is not FuseGetxattrOut
_ATTR_CHECKED = frozenset({c.FUSE_LOOKUP, c.FUSE_CREATE, c.FUSE_GETATTR, c.FUSE_SETATTR})


@cache
def _request_layers(opcode: int, minor: int, flags: int) -> Layers:
    return request_layers_at(opcode, minor, flags)


def _fast_bytes(part: Packet) -> bytes | None:
    """``bytes(part)`` by the codec for a lone flat struct of ints or a ``FuseName``; None when
    only scapy can say (nested values, payloads, post_build, anything not an int)."""
    if not isinstance(part.payload, NoPayload):
        return None
    cls = type(part)
    if cls is FuseName:
        name = part.fields.get("name", b"")
        return name + b"\0" if type(name) is bytes else None
    if cls.post_build is not Packet.post_build or not all(type(v) is int for v in part.fields.values()):
        return None
    try:
        return codec(cls).build(**part.fields)
    except TypeError:  # not a fixed-size struct
        return None


class RequestView:
    """A pending hot request as the validators read it (``cls in view``, ``view[cls]``): its
    first body struct as a codec record (``cls`` None: the body opens with no struct)."""

    __slots__ = ("arg", "cls")

    def __init__(self, cls: type[Packet] | None, arg: Any) -> None:
        self.cls, self.arg = cls, arg

    def __contains__(self, cls: object) -> bool:
        return cls is self.cls is not None

    def __getitem__(self, cls: type[Packet]) -> Any:
        if cls is not self.cls or cls is None:
            raise IndexError(f"Layer [{cls.__name__}] not found")
        return self.arg


def request_view(pending: Pending) -> RequestView | None:
    """A ``RequestView`` of ``pending``, or None when only its packet can answer (a body cut
    short, extensions)."""
    data = pending.raw
    layers = REQUEST_LAYERS.get(pending.opcode, ())
    if len(data) < FUSE_IN_HEADER_SIZE or _IN.record(data).total_extlen:
        return None
    if not layers or layers[0] is FuseName:
        return RequestView(None, None)
    k = codec(layers[0])
    if len(data) - FUSE_IN_HEADER_SIZE < k.size:
        return None
    return RequestView(layers[0], k.record(data, FUSE_IN_HEADER_SIZE))


def reply_semantics(opcode: int, layers: Layers, body: bytes, request: Any,
                    pending: Pending) -> Iterator[Finding]:
    """``validate.check_semantics`` of a hot reply of the size its layers say, without
    dissecting it: the checks it makes for these opcodes, on codec fields."""
    if opcode in _ATTR_CHECKED:
        if layers[0] not in (FuseEntryOut, FuseAttrOut):  # a compat layout: the packet's way
            yield from validate.check_semantics(opcode, decode_body(layers, body), body, pending.packet)
            return
        k = codec(layers[0])
        attr: Any = SimpleNamespace(mode=_field(k, "attr.mode", body), size=_field(k, "attr.size", body))
        name = c.OPCODE_NAMES[opcode]
        if layers[0] is FuseEntryOut:
            entry = SimpleNamespace(nodeid=_field(k, "nodeid", body), attr=attr)
            if opcode == c.FUSE_LOOKUP and entry.nodeid == 0:
                return  # a negative entry: no attributes
            yield from validate.check_attr(attr, name)
            if opcode == c.FUSE_CREATE:
                yield from validate.check_new_entry(opcode, entry, request)  # type: ignore[arg-type]
            return
        yield from validate.check_attr(attr, name)
    elif opcode in (c.FUSE_READDIR, c.FUSE_READDIRPLUS):
        yield from validate.check_dirents(body, opcode == c.FUSE_READDIRPLUS)
    elif opcode == c.FUSE_WRITE and FuseWriteIn in request:
        asked, written = int(request[FuseWriteIn].size), _field(codec(FuseWriteOut), "size", body)
        if written > asked:
            yield Finding(code="reply.write-size", source="linux fs/fuse/file.c fuse_send_write",
                          message=f"WRITE reply says {written} bytes written of {asked} sent; "
                                  "the kernel answers EIO")
    elif opcode == c.FUSE_LISTXATTR and layers[0] is not FuseGetxattrOut:
        yield from validate.check_semantics(opcode, _SOME_BODY, body, None)  # the list: bytes only


def _field(k: Any, name: str, data: bytes) -> Any:
    one, offset = _field_struct(k, name)
    return one.unpack_from(data, offset)[0]


@cache
def _field_struct(k: Any, name: str) -> Any:
    return k.field(name)


def _reply_packet(layers: Layers, error: int, data: bytes) -> Packet:
    """A hot reply dissected as ``receive`` does on the scapy path."""
    header = FuseOutHeader(data[:FUSE_OUT_HEADER_SIZE])
    body = data[FUSE_OUT_HEADER_SIZE:]
    part = (Raw(body) if body else None) if error else decode_body(layers, body)
    if part is not None:
        header.add_payload(part)  # both fresh: no copy, unlike ``header / part``
    return header


def _with_unique(finding: Finding, unique: int) -> Finding:
    return Finding(code=finding.code, message=finding.message, source=finding.source, unique=unique)


def _replace_findings(reply: Reply, findings: list[Finding]) -> Reply:
    return Reply(unique=reply.unique, opcode=reply.opcode, error=reply.error, packet=reply.packet,
                 raw=reply.raw, request=reply.request, findings=tuple(findings))
