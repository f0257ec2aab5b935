"""The kernel's side of a FUSE session, judged from a recording: sans-IO.

``KernelAudit`` takes, in the order they happened, the requests a server read
(``request``), the messages it wrote (``reply``) and the replies the kernel
refused (``refused``), and says with named findings where the kernel broke
what a server relies on:

- every request well formed and in range for the negotiated minor and flags
  (the message layer's request checks, plus the limits INIT settled);
- a unique never reused while its request is outstanding;
- FORGET and BATCH_FORGET only for a nodeid the server returned in an entry
  (LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK, TMPFILE, READDIRPLUS) and never
  more than it was given; other requests only for the root or such a nodeid;
- no request after DESTROY;
- once every name the kernel knew for a nodeid is gone and no handle to it is
  open, the kernel evicts the inode and forgets the nodeid in full (``balance``).

It keeps every request it read (``seen``) with its time, for counting.
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field

from scapy.packet import Packet

from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Reply, Request
from protocol.findings import Finding
from protocol.layers.header import FUSE_IN_HEADER_SIZE
from protocol.layers.structs import (
    FuseEntryOut,
    FuseForgetOne,
    FuseGetxattrIn,
    FuseInitIn,
    FuseInterruptIn,
    FuseLkIn,
    FuseOpenOut,
    FuseReadIn,
    FuseRename2In,
    FuseRenameIn,
    FuseWriteIn,
)
from protocol.layers.variable import FuseDirentplusList, FuseName
from protocol.server import DaemonSession
from protocol.session import KernelSession

FORGET = "linux fs/fuse/inode.c fuse_evict_inode, fs/fuse/dev.c fuse_read_forget"
LOOKUP_COUNT = "linux fs/fuse/inode.c fuse_iget (nlookup++), fs/fuse/readdir.c fuse_direntplus_link"
LIMITS = "linux fs/fuse/inode.c process_init_reply (max_write, max_pages), fs/fuse/file.c"
DESTROY = "linux fs/fuse/inode.c fuse_conn_destroy: DESTROY, then the connection is aborted"
UNIQUE = "linux fs/fuse/dev.c fuse_get_unique, fuse_dev_do_write (a reply finds its request by unique)"
#: The opcode came with this minor (include/uapi/linux/fuse.h changelog)
OPCODE_SINCE = {c.FUSE_IOCTL: 11, c.FUSE_POLL: 11, c.FUSE_NOTIFY_REPLY: 15, c.FUSE_BATCH_FORGET: 16,
                c.FUSE_FALLOCATE: 19, c.FUSE_READDIRPLUS: 21, c.FUSE_RENAME2: 23, c.FUSE_LSEEK: 24,
                c.FUSE_COPY_FILE_RANGE: 28, c.FUSE_SETUPMAPPING: 31, c.FUSE_REMOVEMAPPING: 31,
                c.FUSE_SYNCFS: 34, c.FUSE_TMPFILE: 37, c.FUSE_STATX: 39, c.FUSE_COPY_FILE_RANGE_64: 45}
ENTRY_OPCODES = frozenset({c.FUSE_LOOKUP, c.FUSE_CREATE, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_SYMLINK,
                           c.FUSE_LINK, c.FUSE_TMPFILE})
#: Requests without a nodeid (0), and those the kernel may send after it forgot the nodeid:
#: an async RELEASE is queued before the inode goes, and FORGETs are read first (dev.c)
_ANY_NODEID = frozenset({c.FUSE_INIT, c.FUSE_DESTROY, c.FUSE_INTERRUPT, c.FUSE_FORGET,
                         c.FUSE_BATCH_FORGET, c.FUSE_NOTIFY_REPLY, c.FUSE_RELEASE, c.FUSE_RELEASEDIR})
DEFAULT_MAX_PAGES = 32  # FUSE_DEFAULT_MAX_PAGES_PER_REQ, without FUSE_MAX_PAGES
XATTR_SIZE_MAX = 65536  # include/uapi/linux/limits.h; also XATTR_LIST_MAX
RENAME_EXCHANGE = 2
_DOTS = (b".", b"..")


@dataclass(frozen=True, slots=True)
class Seen:
    """A request the server read: when, what, for which nodeid (and name, for LOOKUP)."""

    time: float
    unique: int
    opcode: int
    nodeid: int
    name: bytes = b""

    @property
    def opcode_name(self) -> str:
        return c.OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")


def _finding(code: str, message: str, source: str, unique: int | None = None) -> Finding:
    return Finding(code=code, message=message, source=source, unique=unique)


@dataclass
class KernelAudit:
    """Reads a recorded session in order; ``findings`` grows as it goes (see the module doc)."""

    page_size: int = 4096
    kernel: KernelSession = field(default_factory=KernelSession)
    daemon: DaemonSession = field(default_factory=DaemonSession)
    findings: list[Finding] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lookups: Counter[int] = field(default_factory=Counter)  # nodeid -> lookups not yet forgotten
    names: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (parent, name) -> nodeid
    opened: Counter[int] = field(default_factory=Counter)  # nodeid -> handles open
    destroyed: bool = False
    _read: set[int] = field(default_factory=set)  # every unique read
    _given: dict[int, list[int]] = field(default_factory=dict)  # unique -> nodeids its reply gave
    _named: set[int] = field(default_factory=set)  # nodeids the server ever gave
    _init_raw: bytes = b""

    # -- the stream ---------------------------------------------------------
    def request(self, data: bytes, time: float = 0.0) -> list[Finding]:
        """A request the server read; the findings on it."""
        found: list[Finding] = []
        if self.destroyed:
            found.append(_finding("request.after-destroy", "a request after DESTROY: the kernel sends "
                                  "none once it has sent DESTROY", DESTROY))
        if len(data) >= FUSE_IN_HEADER_SIZE and int.from_bytes(data[4:8], "little") == c.FUSE_INTERRUPT:
            self.daemon.pending.pop(int.from_bytes(data[8:16], "little"), None)  # answered only by EAGAIN
        event = self.daemon.receive(data)
        if event.opcode == c.FUSE_INIT:
            self._init_raw = data
        found += [f if f.unique is not None else _with_unique(f, event.unique) for f in event.findings]
        if len(data) >= FUSE_IN_HEADER_SIZE:
            self.kernel.observe(data)
            found += self._judge(event)
            self._read.add(event.unique)
            self.seen.append(Seen(time, event.unique, event.opcode, event.nodeid, _name(event.packet)
                                  if event.opcode == c.FUSE_LOOKUP else b""))
        self.findings += found
        return found

    def reply(self, data: bytes, time: float = 0.0) -> list[Finding]:
        """A message the server wrote (a reply, or a notification with unique 0)."""
        del time
        try:
            answer = self.kernel.receive(data)
        except RemoteProtocolError:
            return []  # the server's fault, not the kernel's: not judged here
        if not isinstance(answer, Reply) or answer.request is None:
            return []
        self.daemon.pending.pop(answer.unique, None)
        if answer.opcode == c.FUSE_INIT:
            self._negotiated(answer)
        elif answer.ok:
            self._apply(answer)
        elif answer.opcode == c.FUSE_LOOKUP and answer.error == -errno.ENOENT:
            self._forget_name(int(answer.request.nodeid), _name(answer.request))
        return []

    def refused(self, unique: int) -> None:
        """The kernel refused the reply to ``unique`` (its write failed): what it gave is void."""
        for nodeid in self._given.pop(unique, []):
            self.lookups[nodeid] -= 1

    def balance(self) -> list[Finding]:
        """Nodeids the kernel must have dropped by now (``dropped``) whose lookups it has not all
        forgotten; call it once the kernel had time to act, before the unmount."""
        found = [_finding("forget.unbalanced",
                          f"nodeid {nodeid}: every name the kernel knew for it is gone and no handle "
                          f"is open, so the kernel evicts the inode and forgets its lookups; "
                          f"{count} lookup(s) were never forgotten", FORGET)
                 for nodeid, count in sorted(self.dropped().items())]
        self.findings += found
        return found

    # -- what it knows --------------------------------------------------------
    def outstanding(self) -> dict[int, int]:
        """nodeid -> lookups the kernel still holds (given and not forgotten)."""
        return {nodeid: n for nodeid, n in self.lookups.items() if n}

    def dropped(self) -> dict[int, int]:
        """nodeid -> lookups outstanding although the kernel has no name nor handle for it."""
        named = set(self.names.values())
        return {nodeid: n for nodeid, n in self.outstanding().items()
                if nodeid in self._named and nodeid not in named and not self.opened[nodeid]
                and nodeid != c.FUSE_ROOT_ID}

    def resolve(self, *path: str | bytes) -> int | None:
        """The nodeid the server gave for ``path`` (from the root), as far as the kernel knows."""
        nodeid: int | None = c.FUSE_ROOT_ID
        for part in path:
            name = part.encode() if isinstance(part, str) else part
            nodeid = self.names.get((nodeid, name)) if nodeid is not None else None
        return nodeid

    # -- requests -------------------------------------------------------------
    def _judge(self, event: Request) -> list[Finding]:
        packet, opcode, unique = event.packet, event.opcode, event.unique
        found: list[Finding] = []
        negotiated = self.kernel.negotiated
        name = c.OPCODE_NAMES.get(opcode, f"opcode {opcode}")
        if negotiated is not None:
            since = OPCODE_SINCE.get(opcode, 0)
            if since > negotiated.minor:
                found.append(_finding("request.opcode-minor", f"{name} came with 7.{since}; the "
                                      f"session speaks 7.{negotiated.minor}", LIMITS, unique))
            found += self._limits(event)
        if opcode == c.FUSE_FORGET and len(event.raw) >= FUSE_IN_HEADER_SIZE + 8:
            nlookup = int.from_bytes(event.raw[FUSE_IN_HEADER_SIZE:FUSE_IN_HEADER_SIZE + 8], "little")
            found += self._forget(event.nodeid, nlookup, unique)
        elif opcode == c.FUSE_BATCH_FORGET:
            found += self._batch_forget(event.raw[FUSE_IN_HEADER_SIZE:], unique)
        elif opcode == c.FUSE_DESTROY:
            self.destroyed = True
        elif opcode == c.FUSE_INTERRUPT and FuseInterruptIn in packet:
            target = int(packet[FuseInterruptIn].unique)
            if unique != target | c.FUSE_INT_REQ_BIT or target not in self._read:
                found.append(_finding("request.interrupt-unique",
                                      f"INTERRUPT (unique {unique}) names unique {target}: it must be a "
                                      "request already read, the header's unique that one's with bit 0 "
                                      "set", "linux fs/fuse/dev.c fuse_read_interrupt", unique))
        elif opcode in (c.FUSE_RELEASE, c.FUSE_RELEASEDIR):
            self.opened[event.nodeid] -= 1
        if opcode not in _ANY_NODEID and not self.lookups[event.nodeid] \
                and event.nodeid != c.FUSE_ROOT_ID and negotiated is not None:
            found.append(_finding("request.nodeid-unknown",
                                  f"{name} for nodeid {event.nodeid}, which the server never returned in "
                                  "an entry or the kernel has forgotten", LOOKUP_COUNT, unique))
        return found

    def _limits(self, event: Request) -> list[Finding]:
        """Sizes within what INIT settled, and only what INIT agreed to."""
        negotiated = self.kernel.negotiated
        assert negotiated is not None
        packet, opcode = event.packet, event.opcode
        init = negotiated.reply
        pages = DEFAULT_MAX_PAGES
        if negotiated.has(c.FUSE_MAX_PAGES):
            pages = min(256, max(int(getattr(init, "max_pages", 0) or 0), 1))
        max_write = max(4096, int(getattr(init, "max_write", 0) or 0))
        found: list[Finding] = []

        def over(what: str, size: int, limit: int, why: str) -> None:
            if size > limit:
                found.append(_finding("request.size-limit", f"{what} of {size} bytes, more than {limit} "
                                      f"({why})", LIMITS, event.unique))

        def unagreed(what: str, flag: str) -> None:
            found.append(_finding("request.not-negotiated", f"{what} although INIT did not agree on "
                                  f"{flag}", LIMITS, event.unique))

        if opcode in (c.FUSE_READ, c.FUSE_READDIR, c.FUSE_READDIRPLUS) and FuseReadIn in packet:
            over(c.OPCODE_NAMES[opcode], int(packet[FuseReadIn].size), pages * self.page_size,
                 f"max_pages {pages}")
        elif opcode == c.FUSE_WRITE and FuseWriteIn in packet:
            over("WRITE", int(packet[FuseWriteIn].size), max_write, "max_write")
        elif opcode in (c.FUSE_GETXATTR, c.FUSE_LISTXATTR) and FuseGetxattrIn in packet:
            over(c.OPCODE_NAMES[opcode], int(packet[FuseGetxattrIn].size), XATTR_SIZE_MAX, "the VFS caps "
                 "xattr buffers")
        if opcode == c.FUSE_READDIRPLUS and not negotiated.has(c.FUSE_DO_READDIRPLUS):
            unagreed("READDIRPLUS", "FUSE_DO_READDIRPLUS")
        if opcode in (c.FUSE_GETLK, c.FUSE_SETLK, c.FUSE_SETLKW) and FuseLkIn in packet:
            if int(packet[FuseLkIn].lk_flags) & c.FUSE_LK_FLOCK:
                if not negotiated.has(c.FUSE_FLOCK_LOCKS):
                    unagreed("a flock request", "FUSE_FLOCK_LOCKS")
            elif not negotiated.has(c.FUSE_POSIX_LOCKS):
                unagreed("a POSIX lock request", "FUSE_POSIX_LOCKS")
        if int(packet.total_extlen) and not negotiated.flags & (c.FUSE_SECURITY_CTX |
                                                                   c.FUSE_CREATE_SUPP_GROUP):
            unagreed("request extensions", "FUSE_SECURITY_CTX or FUSE_CREATE_SUPP_GROUP")
        return found

    def _forget(self, nodeid: int, nlookup: int, unique: int) -> list[Finding]:
        if nlookup == 0:
            return [_finding("forget.zero", f"FORGET of nodeid {nodeid} with nlookup 0", FORGET, unique)]
        held = self.lookups[nodeid]
        if held <= 0:
            return [_finding("forget.unknown-nodeid",
                             f"FORGET of nodeid {nodeid}, which the server never returned in an entry "
                             "(or whose lookups were all forgotten)", LOOKUP_COUNT, unique)]
        self.lookups[nodeid] = held - nlookup
        if nlookup > held:
            self.lookups[nodeid] = 0
            return [_finding("forget.exceeds-lookups",
                             f"FORGET of nodeid {nodeid} with nlookup {nlookup}; the server gave it "
                             f"{held} lookup(s) not yet forgotten", LOOKUP_COUNT, unique)]
        return []

    def _batch_forget(self, body: bytes, unique: int) -> list[Finding]:
        count = int.from_bytes(body[0:4], "little") if len(body) >= 8 else 0
        if len(body) < 8 or len(body) != 8 + 16 * count:
            return [_finding("request.batch-count", f"BATCH_FORGET says {count} entries and carries "
                             f"{max(len(body) - 8, 0)} bytes of them (16 each)",
                             "linux fs/fuse/dev.c fuse_read_batch_forget", unique)]
        found: list[Finding] = []
        for i in range(count):
            one = FuseForgetOne(body[8 + 16 * i: 24 + 16 * i])
            found += self._forget(int(one.nodeid), int(one.nlookup), unique)
        return found

    # -- replies --------------------------------------------------------------
    def _negotiated(self, answer: Reply) -> None:
        """The INIT reply settled the session: the daemon's view takes the same minor and flags."""
        negotiated = self.kernel.negotiated
        request = answer.request
        if negotiated is None or request is None or FuseInitIn not in request or not self._init_raw:
            return
        daemon = DaemonSession(minor=negotiated.server_minor, want=negotiated.flags)
        daemon.accept_init(daemon.receive(self._init_raw))
        daemon.pending.update(self.daemon.pending)
        daemon.pending.pop(answer.unique, None)
        self.daemon = daemon

    def _apply(self, answer: Reply) -> None:
        request = answer.request
        assert request is not None
        opcode, parent = answer.opcode, int(request.nodeid)
        if opcode in ENTRY_OPCODES and FuseEntryOut in answer.packet:
            nodeid = int(answer.packet[FuseEntryOut].nodeid)
            if nodeid:
                self._give(answer.unique, nodeid, parent, _name(request) if opcode != c.FUSE_TMPFILE
                           else None)
            elif opcode == c.FUSE_LOOKUP:  # a negative entry: the name is gone
                self._forget_name(parent, _name(request))
            if opcode in (c.FUSE_CREATE, c.FUSE_TMPFILE) and nodeid:
                self.opened[nodeid] += 1
        elif opcode == c.FUSE_READDIRPLUS and FuseDirentplusList in answer.packet:
            for record in answer.packet[FuseDirentplusList].dirents:
                nodeid, name = int(record.entry_out.nodeid), _as_bytes(record.dirent.getfieldval("name"))
                if nodeid and name not in _DOTS:  # the kernel skips these two
                    self._give(answer.unique, nodeid, parent, name)
        elif opcode in (c.FUSE_OPEN, c.FUSE_OPENDIR) and FuseOpenOut in answer.packet:
            self.opened[parent] += 1
        elif opcode in (c.FUSE_UNLINK, c.FUSE_RMDIR):
            self._forget_name(parent, _name(request))
        elif opcode in (c.FUSE_RENAME, c.FUSE_RENAME2):
            self._rename(request)

    def _give(self, unique: int, nodeid: int, parent: int, name: bytes | None) -> None:
        self.lookups[nodeid] += 1
        self._given.setdefault(unique, []).append(nodeid)
        self._named.add(nodeid)
        if name is not None:  # TMPFILE gives none: only its open handle keeps the inode
            self.names[(parent, name)] = nodeid

    def _forget_name(self, parent: int, name: bytes) -> None:
        self.names.pop((parent, name), None)

    def _rename(self, request: Packet) -> None:
        olddir = int(request.nodeid)
        layer = request[FuseRename2In] if FuseRename2In in request else request[FuseRenameIn]
        newdir = int(layer.newdir)
        flags = int(getattr(layer, "flags", 0) or 0)
        oldname, newname = [*_names(request), b"", b""][:2]
        moved = self.names.pop((olddir, oldname), None)
        other = self.names.pop((newdir, newname), None)
        if moved is not None:
            self.names[(newdir, newname)] = moved
        if flags & RENAME_EXCHANGE and other is not None:
            self.names[(olddir, oldname)] = other


def _names(packet: Packet) -> list[bytes]:
    """The NUL-terminated names a request carries, in order."""
    out: list[bytes] = []
    layer = packet
    while layer is not None and layer.__class__.__name__ != "NoPayload":
        if isinstance(layer, FuseName):
            out.append(_as_bytes(layer.getfieldval("name")))
        layer = layer.payload
    return out


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value) if isinstance(value, bytes | bytearray) else b""


def _name(packet: Packet) -> bytes:
    names = _names(packet)
    return names[0] if names else b""


def _with_unique(finding: Finding, unique: int) -> Finding:
    return Finding(code=finding.code, message=finding.message, source=finding.source, unique=unique)


