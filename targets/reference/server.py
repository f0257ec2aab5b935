"""The reference server's protocol side: FUSE requests in, the model's answers out.

``ReferenceServer`` decodes each request with ``protocol.server.DaemonSession``,
calls the in-memory POSIX model (``targets.reference.fs``) and encodes the
reply at the negotiated minor.  It knows no transport: ``handle(bytes)`` returns
the reply bytes (or None); ``serve`` runs a reader and worker threads over any
read/write pair (a SEQPACKET socket, /dev/fuse).  Cache modes (the seed's
cache=none|auto|always, writeback) and ACLs are options; mutants are named
faults switched on by ``Options.mutant``.

Fast path: hot requests are read through ``Request.header``/``layer``/``names``/
``data`` (codec records until something dissects the packet) and the hot
replies are encoded with ``protocol.codec`` into ``Encoded`` parts.  A mutant
with a result hook changes scapy packets, so with one the results are packets
(``encode_fast`` off); ``fast=False`` turns both halves off.  Before all that, with no
mutant and no audit, the express lane (``targets.reference.express``) answers the clean
hot requests it covers without building events.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, TypeVar

from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.codec import Encoded, codec, head_codec
from protocol.events import Notify, Reply, Request
from protocol.layers import (
    FuseAccessIn,
    FuseAttr,
    FuseAttrOut,
    FuseCopyFileRangeIn,
    FuseCopyFileRangeOut,
    FuseCreateIn,
    FuseDirent,
    FuseDirentList,
    FuseDirentplus,
    FuseDirentplusList,
    FuseEntryOut,
    FuseFallocateIn,
    FuseFlushIn,
    FuseForgetIn,
    FuseForgetOne,
    FuseGetxattrIn,
    FuseGetxattrOut,
    FuseInHeader,
    FuseInterruptIn,
    FuseKstatfs,
    FuseLinkIn,
    FuseLkIn,
    FuseLkOut,
    FuseLseekIn,
    FuseLseekOut,
    FuseMkdirIn,
    FuseMknodIn,
    FuseName,
    FuseOpenIn,
    FuseOpenOut,
    FuseReadIn,
    FuseReleaseIn,
    FuseRename2In,
    FuseRenameIn,
    FuseSetattrIn,
    FuseSetxattrIn,
    FuseStatfsOut,
    FuseStatx,
    FuseStatxOut,
    FuseSxTime,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.layers.base import fixed_size
from protocol.layers.messages import NO_REPLY
from protocol.layers.notify import FuseNotifyRetrieveIn
from protocol.server import DaemonSession
from protocol.session import KernelSession
from targets.reference.fs import Cred, Filesystem, FsError, Inode, LockWouldBlock
from targets.reference.host import HostFilesystem
from targets.reference.mutants import Applied, applied

NS = 1_000_000_000
CACHE_TIMEOUTS = {"none": 0.0, "auto": 1.0, "always": 86400.0}
_VALID = {mode: (int(seconds), int(seconds % 1 * NS)) for mode, seconds in CACHE_TIMEOUTS.items()}
CACHE_OPEN_FLAGS = {"none": c.FOPEN_DIRECT_IO, "auto": 0, "always": c.FOPEN_KEEP_CACHE}
#: Request findings after which the request cannot be served: EINVAL
MALFORMED = frozenset({"request.body-size", "request.name", "request.write-size", "request.extlen",
                       "request.short", "request.len-mismatch"})
BASE_WANT = (c.FUSE_ASYNC_READ | c.FUSE_POSIX_LOCKS | c.FUSE_FLOCK_LOCKS | c.FUSE_ATOMIC_O_TRUNC
             | c.FUSE_BIG_WRITES | c.FUSE_DONT_MASK | c.FUSE_MAX_PAGES | c.FUSE_SETXATTR_EXT
             | c.FUSE_HANDLE_KILLPRIV_V2 | c.FUSE_INIT_EXT | c.FUSE_DO_READDIRPLUS
             | c.FUSE_READDIRPLUS_AUTO)
#: Requests that may wait for another request (a lock's release): served on their own thread
BLOCKING = frozenset({c.FUSE_SETLKW})
_SILENT = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT})  # answered by no reply
_HEADER = codec(FuseInHeader)
_OPCODE, _OPCODE_AT = _HEADER.field("opcode")
STATX_BASIC_STATS = 0x7FF
ATTR_NAMES = ("ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec", "mtimensec",
              "ctimensec", "mode", "nlink", "uid", "gid", "rdev", "blksize")  # what attr_values gives
_ENTRY = codec(FuseEntryOut).builder("nodeid", "generation", "entry_valid", "attr_valid",
                                     "entry_valid_nsec", "attr_valid_nsec",
                                     *(f"attr.{name}" for name in ATTR_NAMES))
_ATTR_OUT = codec(FuseAttrOut).builder("attr_valid", "attr_valid_nsec",
                                       *(f"attr.{name}" for name in ATTR_NAMES))
_DIRENT = head_codec(FuseDirent).builder("ino", "off", "namelen", "type")
_OPEN_OUT = codec(FuseOpenOut).builder("fh", "open_flags")
_NO_ENTRY = codec(FuseEntryOut).build()
_ENTRY_SIZE = fixed_size(FuseEntryOut)
DIRENT_ALIGN = 8  # the kernel's FUSE_DIRENT_ALIGN: a name padded to 8 bytes (FuseDirent's PadField)
Part = Packet | Encoded


@dataclass(frozen=True)
class Options:
    """``ref:cache=none,writeback,acl,mutant=NAME`` as data; ACLs are on unless ``acl=off``."""

    cache: str = "auto"
    writeback: bool = False
    acl: bool = True  # FUSE_POSIX_ACL: the kernel checks access with the ACLs GETXATTR returns
    mutant: str | None = None
    source: str | None = None  # a host directory to serve instead of memory
    audit: str | None = None  # a file for findings of the layer's validators on our own replies
    notify: str | None = None  # with source, mounted: tell the kernel of host changes (inval|store)

    @classmethod
    def parse(cls, options: dict[str, Any]) -> Options:
        cache = str(options.get("cache", "auto"))
        if cache not in CACHE_TIMEOUTS:
            raise ValueError(f"cache={cache}: one of {', '.join(CACHE_TIMEOUTS)}")
        mutant = options.get("mutant")
        return cls(cache=cache, writeback=bool(options.get("writeback", False)),
                   acl=cls.switch("acl", options.get("acl", True)), mutant=str(mutant) if mutant else None,
                   source=str(options["source"]) if options.get("source") else None,
                   audit=str(options["audit"]) if options.get("audit") else None,
                   notify=_notify_mode(options.get("notify")))

    @staticmethod
    def switch(key: str, value: Any) -> bool:
        """An on/off option: a bare flag (True), a bool, or on|yes|true|1 / off|no|false|0."""
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("on", "yes", "true", "1"):
            return True
        if word in ("off", "no", "false", "0"):
            return False
        raise ValueError(f"{key}={value}: one of on, off")

    @property
    def want(self) -> int:
        flags = BASE_WANT
        if self.writeback:
            flags |= c.FUSE_WRITEBACK_CACHE
        if self.acl:
            flags |= c.FUSE_POSIX_ACL
        if self.cache == "always":
            flags |= c.FUSE_CACHE_SYMLINKS
        return flags


def _notify_mode(value: Any) -> str | None:
    """``notify`` (bare: inval) or ``notify=inval|store``; None when absent."""
    if value is None or value is False:
        return None
    mode = "inval" if value is True else str(value)
    if mode not in ("inval", "store"):
        raise ValueError(f"notify={value}: one of inval, store")
    return mode


Handler = Callable[["ReferenceServer", Request, Cred], "Part | tuple[Part, ...] | None"]
Fn = TypeVar("Fn", bound=Callable[..., Any])
HANDLERS: dict[int, Handler] = {}


def registrar(table: dict[int, Fn]) -> Callable[..., Callable[[Fn], Fn]]:
    """A decorator factory: ``@it(OPCODE, ...)`` enters the function in ``table`` for each."""
    def opcodes(*numbers: int) -> Callable[[Fn], Fn]:
        def register(fn: Fn) -> Fn:
            for number in numbers:
                table[number] = fn
            return fn
        return register
    return opcodes


handles = registrar(HANDLERS)


@dataclass
class ReferenceServer:
    """Answers FUSE requests from the in-memory model; thread-safe."""

    fs: Filesystem | HostFilesystem = field(default_factory=Filesystem)
    options: Options = field(default_factory=Options)
    session: DaemonSession = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    #: Notified after every request: a blocked SETLKW retries, an INTERRUPT wakes it
    changed: threading.Condition = field(init=False)
    #: Uniques read and not yet answered; INTERRUPT names one of them
    pending: set[int] = field(default_factory=set, init=False)
    interrupted: set[int] = field(default_factory=set, init=False)
    #: Requests waiting on ``changed`` (a blocked SETLKW): only then is it notified
    waiting: int = field(default=0, init=False)
    destroyed: bool = field(default=False, init=False)
    mutant: Applied = field(init=False)
    #: The kernel's view of our replies (``Options.audit``): every one judged by the validators
    audit: KernelSession | None = field(default=None, init=False)
    #: The codec paths (requests read lazily, hot replies encoded with struct); False: scapy only
    fast: bool = True
    #: Results as ``Encoded`` bytes, not packets: off when a mutant's result hook edits packets
    encode_fast: bool = field(default=True, init=False)
    #: The express lane (targets.reference.express) for clean hot requests: off with a mutant
    express: bool = field(default=True, init=False)
    #: Called with (notify_unique, data) for the kernel's NOTIFY_REPLY to a RETRIEVE we sent
    on_notify_reply: Callable[[int, bytes], None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.session = DaemonSession(want=self.options.want, fast=self.fast)
        self.mutant = applied(self.options.mutant)
        hooks = self.mutant.mutant
        self.encode_fast = self.fast and (hooks is None or hooks.result is None)
        self.express = self.fast and hooks is None
        self.changed = threading.Condition(self.lock)
        if self.options.audit:
            self.audit = KernelSession()

    # -- dispatch ---------------------------------------------------------
    def handle(self, data: bytes) -> bytes | None:
        """One request's reply (None for FORGET and the like); audited when asked."""
        if self.audit is None:
            with self.lock:  # as _handle
                if self.express:
                    reply = express_lane.answer(self, data)
                    if reply is not None:
                        return reply
                return self._dispatch(data)
        with self.lock:
            self.audit.observe(data)
        reply = self._handle(data)
        if reply is not None:
            with self.lock:
                answer = self.audit.receive(reply)
            if answer.findings:
                self._report(answer)
        return reply

    def _report(self, answer: Reply | Notify) -> None:
        """Append the findings on one of our replies to the audit file."""
        assert self.options.audit is not None
        what = answer.opcode_name if isinstance(answer, Reply) else f"notify {answer.code}"
        with open(self.options.audit, "a", encoding="utf-8") as out:
            for finding in answer.findings:
                out.write(f"{what} unique={getattr(answer, 'unique', 0)}: {finding.code}: "
                          f"{finding.message}\n")

    def _handle(self, data: bytes) -> bytes | None:
        with self.lock:  # one section: a blocked SETLKW releases it while it waits on ``changed``
            return self._dispatch(data)

    def _dispatch(self, data: bytes) -> bytes | None:
        session = self.session
        request = session.receive(data)
        op = request.opcode
        if op == c.FUSE_INIT:
            if session.negotiated is not None:
                return session.error(request, errno.EIO)  # INIT comes once
            return session.accept_init(request)
        if session.negotiated is None:
            return session.error(request, errno.EIO)
        if op == c.FUSE_NOTIFY_REPLY and self.on_notify_reply is not None:
            self.on_notify_reply(request.unique, request.data(FuseNotifyRetrieveIn))
            return None
        handler = HANDLERS.get(op)
        if handler is None:
            if op in NO_REPLY:
                return None  # e.g. a NOTIFY_REPLY to a RETRIEVE never sent: nothing is due
            return self.mutant.reply(self, request, session.error(request, errno.ENOSYS))
        if request.findings and any(f.code in MALFORMED for f in request.findings):
            return session.error(request, errno.EINVAL)
        unique, mutant = request.unique, self.mutant if self.mutant.mutant is not None else None
        self.pending.add(unique)
        try:
            if mutant is None:
                result = handler(self, request, caller(request))
            else:
                mutant.request(self, request)
                result = mutant.result(self, request, handler(self, request, caller(request)))
        except FsError as exc:
            return self.mutant.reply(self, request, session.error(request, exc.errno or errno.EIO))
        except Exception:  # a bug of ours: answer EIO, never leave the kernel waiting
            traceback.print_exc(file=sys.stderr)
            return session.error(request, errno.EIO)
        finally:
            self.pending.discard(unique)
            self.interrupted.discard(unique)
            if self.waiting:
                self.changed.notify_all()
        if op in _SILENT:
            return None
        parts = result if isinstance(result, tuple) else ((result,) if result is not None else ())
        try:
            reply = session.reply(request, *parts)
        except Exception:  # a value that does not fit its field: EIO, never silence
            traceback.print_exc(file=sys.stderr)
            return session.error(request, errno.EIO)
        return reply if mutant is None else mutant.reply(self, request, reply)

    def serve(self, read: Callable[[], bytes], write: Callable[[bytes], None], *,
              workers: int = 4) -> None:
        """Read requests until ``read`` returns b"" (or raises), answer them on ``workers``
        threads; ``workers=0`` answers each on the reading thread (for a transport whose
        writes never block, as /dev/fuse's: no hand-over between threads)."""
        queue: SimpleQueue[bytes | None] = SimpleQueue()
        threads = [threading.Thread(target=self._work, args=(queue, write), name=f"ref-{i}", daemon=True)
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        try:
            while not self.destroyed:
                try:
                    data = read()
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.EAGAIN):
                        continue
                    break
                if not data:
                    break
                if self.takes_long(data):
                    threading.Thread(target=self._answer_blocking, args=(data, write), daemon=True).start()
                elif threads:
                    queue.put(data)
                else:
                    self._answer(data, write)
        finally:
            for _ in threads:
                queue.put(None)
            for thread in threads:
                thread.join()

    def takes_long(self, data: bytes) -> bool:
        """A request that may block (SETLKW), to answer on a thread of its own; its unique is
        registered now, so an INTERRUPT read after it finds it pending."""
        if len(data) < _HEADER.size or _OPCODE.unpack_from(data, _OPCODE_AT)[0] not in BLOCKING:
            return False
        with self.lock:
            self.pending.add(_HEADER.record(data).unique)
        return True

    def _work(self, queue: SimpleQueue[bytes | None], write: Callable[[bytes], None]) -> None:
        """A worker: answer what the reader queues until it queues None."""
        _main_thread_takes_signals()
        while (data := queue.get()) is not None:
            self._answer(data, write)

    def _answer_blocking(self, data: bytes, write: Callable[[bytes], None]) -> None:
        _main_thread_takes_signals()
        self._answer(data, write)

    def _answer(self, data: bytes, write: Callable[[bytes], None]) -> None:
        reply = self.handle(data)
        if reply is not None:
            try:
                write(reply)
            except OSError:
                pass  # the kernel gave up on it (interrupted, aborted)

    # -- encoding ---------------------------------------------------------
    def timeout(self) -> tuple[int, int]:
        """entry_valid and attr_valid (seconds, nanoseconds) for the cache mode."""
        return _VALID[self.options.cache]

    def attr_of(self, inode: Inode) -> FuseAttr:
        return fuse_attr(inode)

    def entry(self, inode: Inode) -> FuseEntryOut | Encoded:
        if self.encode_fast:
            return Encoded(FuseEntryOut, self.entry_data(inode))
        valid, nsec = self.timeout()
        return FuseEntryOut(nodeid=inode.ino, generation=inode.generation, entry_valid=valid,
                            attr_valid=valid, entry_valid_nsec=nsec, attr_valid_nsec=nsec,
                            attr=self.attr_of(inode))

    def attr_out(self, inode: Inode) -> FuseAttrOut | Encoded:
        if self.encode_fast:
            return Encoded(FuseAttrOut, self.attr_data(inode))
        valid, nsec = self.timeout()
        return FuseAttrOut(attr_valid=valid, attr_valid_nsec=nsec, attr=self.attr_of(inode))

    def entry_data(self, inode: Inode) -> bytes:
        """fuse_entry_out of ``inode``, encoded."""
        valid, nsec = self.timeout()
        return _ENTRY(inode.ino, inode.generation, valid, valid, nsec, nsec, *attr_values(inode))

    def attr_data(self, inode: Inode) -> bytes:
        """fuse_attr_out of ``inode``, encoded."""
        valid, nsec = self.timeout()
        return _ATTR_OUT(valid, nsec, *attr_values(inode))

    def part(self, cls: type[Packet], **fields: Any) -> Part:
        """A flat struct reply part: ``cls(**fields)``, or its bytes when encoding fast."""
        if self.encode_fast:
            return Encoded(cls, codec(cls).build(**fields))
        return cls(**fields)

    def raw(self, data: bytes) -> Part:
        """Bytes as a reply part (``Raw``)."""
        return Encoded(Raw, data) if self.encode_fast else Raw(data)

    def wait_for(self, request: Request, attempt: Callable[[], None]) -> None:
        """Retry ``attempt`` (which raises LockWouldBlock) after each request, until it succeeds
        or the kernel interrupts the request: EINTR, as a blocked fcntl(F_SETLKW) gets."""
        while True:
            try:
                return attempt()
            except LockWouldBlock:
                if request.unique in self.interrupted or self.destroyed:
                    raise FsError(errno.EINTR) from None
                self.waiting += 1
                try:
                    self.changed.wait(timeout=1.0)
                finally:
                    self.waiting -= 1

    def open_out(self, fh: int, *, directory: bool = False) -> Part:
        if self.encode_fast:
            return Encoded(FuseOpenOut, self.open_data(fh, directory=directory))
        return FuseOpenOut(fh=fh, open_flags=self.open_flags(directory))

    def open_flags(self, directory: bool) -> int:
        """FOPEN_* for an open file or directory under the cache mode."""
        return 0 if directory else CACHE_OPEN_FLAGS[self.options.cache]

    def open_data(self, fh: int, *, directory: bool = False) -> bytes:
        """fuse_open_out for ``fh``, encoded."""
        return _OPEN_OUT(fh, self.open_flags(directory))


def _main_thread_takes_signals() -> None:
    """Block SIGINT and SIGTERM in a worker thread: the kernel then delivers them to the main
    thread, whose blocking read they interrupt so that Python runs the handler (a signal taken
    by a worker would wait until the next request came)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def fuse_attr(inode: Inode) -> FuseAttr:
    """The model's inode as fuse_attr (times split into seconds and nanoseconds)."""
    fields: dict[str, Any] = dict(zip(ATTR_NAMES, attr_values(inode), strict=True))
    return FuseAttr(**fields)


U64 = (1 << 64) - 1


def attr_values(inode: Inode) -> tuple[int, ...]:
    """fuse_attr's fields for ``inode``, in ``ATTR_NAMES`` order."""
    atime, mtime, ctime = divmod(inode.atime, NS), divmod(inode.mtime, NS), divmod(inode.ctime, NS)
    seconds = (atime[0] & U64, mtime[0] & U64, ctime[0] & U64)  # before 1970: two's complement
    return (inode.ino, inode.size, inode.blocks, *seconds, atime[1], mtime[1],
            ctime[1], inode.mode, inode.nlink, inode.uid, inode.gid, inode.rdev, 4096)


def caller(request: Request) -> Cred:
    """The requesting process's credentials; supplementary groups from /proc/PID/status."""
    header = request.header
    return Caller(int(header.uid), int(header.gid), int(header.pid))


class Caller(Cred):
    """A requester's credentials whose supplementary groups are read from /proc/PID/status
    when first asked for: most requests need no group check."""

    def __init__(self, uid: int, gid: int, pid: int) -> None:  # Cred's fields, groups aside
        fields = self.__dict__
        fields["uid"], fields["gid"], fields["pid"], fields["_groups"] = uid, gid, pid, None

    @property  # type: ignore[override]
    def groups(self) -> tuple[int, ...]:
        groups: tuple[int, ...] | None = self.__dict__["_groups"]
        if groups is None:
            groups = process_groups(self.pid)
            object.__setattr__(self, "_groups", groups)
        return groups


def process_groups(pid: int) -> tuple[int, ...]:
    """Supplementary groups of ``pid`` (none when it is gone or unreadable)."""
    if pid <= 0:
        return ()
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return ()


def name_of(layer: Packet) -> bytes:
    """The name a FuseName layer carries."""
    return bytes(layer.getfieldval("name"))


def names(request: Request) -> list[bytes]:
    return request.names()


def payload_after(request: Request, cls: type[Packet]) -> bytes:
    """The bytes following the ``cls`` layer (WRITE data, xattr values)."""
    return request.data(cls)


# -- handlers ----------------------------------------------------------------
@handles(c.FUSE_LOOKUP)
def _lookup(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    return srv.entry(srv.fs.lookup(req.nodeid, names(req)[0], cred))


@handles(c.FUSE_FORGET)
def _forget(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.forget(req.nodeid, int(req.layer(FuseForgetIn).nlookup))


@handles(c.FUSE_BATCH_FORGET)
def _batch_forget(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    for one in req.records(FuseForgetOne):
        srv.fs.forget(int(one.nodeid), int(one.nlookup))


@handles(c.FUSE_GETATTR)
def _getattr(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    return srv.attr_out(srv.fs.getattr(req.nodeid))


def _stamp(seconds: int, nsec: int) -> int:
    """A time from the wire (seconds as the kernel's signed 64 bits) in ns; EINVAL for a
    nanosecond count past a second, as utimensat(2)."""
    if nsec >= NS:
        raise FsError(errno.EINVAL)
    return (seconds - (1 << 64) if seconds >= 1 << 63 else seconds) * NS + nsec


@handles(c.FUSE_SETATTR)
def _setattr(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    arg = req.layer(FuseSetattrIn)
    valid = int(arg.valid)
    changes: dict[str, Any] = {}
    if valid & c.FATTR_MODE:
        changes["mode"] = int(arg.mode)
    if valid & c.FATTR_UID:
        changes["uid"] = int(arg.uid)
    if valid & c.FATTR_GID:
        changes["gid"] = int(arg.gid)
    if valid & c.FATTR_SIZE:
        if int(arg.size) >= 1 << 63:  # a negative loff_t: truncate(2) says EINVAL
            raise FsError(errno.EINVAL)
        changes["size"] = int(arg.size)
    for bit, name in ((c.FATTR_ATIME, "atime"), (c.FATTR_MTIME, "mtime"), (c.FATTR_CTIME, "ctime")):
        if valid & bit:
            changes[name] = _stamp(int(getattr(arg, name)), int(getattr(arg, name + "nsec")))
    if valid & c.FATTR_FH:  # ftruncate: checked against the open file, not the mode bits
        changes["fh"] = int(arg.fh)
    return srv.attr_out(srv.fs.setattr(
        req.nodeid, cred, atime_now=bool(valid & c.FATTR_ATIME_NOW),
        mtime_now=bool(valid & c.FATTR_MTIME_NOW),
        kill_suidgid=bool(valid & c.FATTR_KILL_SUIDGID), **changes))


@handles(c.FUSE_READLINK)
def _readlink(srv: ReferenceServer, req: Request, cred: Cred) -> Packet:
    return Raw(srv.fs.readlink(req.nodeid))


@handles(c.FUSE_SYMLINK)
def _symlink(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    name, target = names(req)
    return srv.entry(srv.fs.symlink(req.nodeid, name, target, cred))


@handles(c.FUSE_MKNOD)
def _mknod(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    arg = req.packet[FuseMknodIn]
    return srv.entry(srv.fs.mknod(req.nodeid, names(req)[0], int(arg.mode), int(arg.rdev), cred,
                                  umask=int(arg.umask or 0)))


@handles(c.FUSE_MKDIR)
def _mkdir(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    arg = req.packet[FuseMkdirIn]
    return srv.entry(srv.fs.mkdir(req.nodeid, names(req)[0], int(arg.mode), cred,
                                  umask=int(arg.umask)))


@handles(c.FUSE_UNLINK)
def _unlink(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.unlink(req.nodeid, names(req)[0], cred)


@handles(c.FUSE_RMDIR)
def _rmdir(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.rmdir(req.nodeid, names(req)[0], cred)


@handles(c.FUSE_RENAME, c.FUSE_RENAME2)
def _rename(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    old, new = names(req)
    if req.opcode == c.FUSE_RENAME2:
        arg = req.packet[FuseRename2In]
        newdir, flags = int(arg.newdir), int(arg.flags)
    else:
        newdir, flags = int(req.packet[FuseRenameIn].newdir), 0
    srv.fs.rename(req.nodeid, old, newdir, new, cred, flags=flags)


@handles(c.FUSE_LINK)
def _link(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    old = int(req.packet[FuseLinkIn].oldnodeid)
    return srv.entry(srv.fs.link(old, req.nodeid, names(req)[0], cred))


@handles(c.FUSE_OPEN)
def _open(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    flags = int(req.layer(FuseOpenIn).flags)
    return srv.open_out(srv.fs.open(req.nodeid, flags, cred))


@handles(c.FUSE_READ)
def _read(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    arg = req.layer(FuseReadIn)
    return srv.raw(srv.fs.read(int(arg.fh), int(arg.offset), int(arg.size)))


@handles(c.FUSE_WRITE)
def _write(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    arg = req.layer(FuseWriteIn)
    data = payload_after(req, FuseWriteIn)[: int(arg.size)]
    written = srv.fs.write(int(arg.fh), int(arg.offset), data,
                           kill_suidgid=bool(int(arg.write_flags or 0) & c.FUSE_WRITE_KILL_SUIDGID))
    return srv.part(FuseWriteOut, size=written)


def write_data(written: int) -> bytes:
    """fuse_write_out, encoded."""
    return _WRITE_OUT(written)


_WRITE_OUT = codec(FuseWriteOut).builder("size")


@handles(c.FUSE_STATFS)
def _statfs(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    fields = srv.fs.statfs()
    if srv.encode_fast:
        return Encoded(FuseStatfsOut, statfs_data(fields))
    return FuseStatfsOut(st=FuseKstatfs(**fields))  # type: ignore[arg-type]


def statfs_data(fields: dict[str, int]) -> bytes:
    """fuse_statfs_out of the model's statfs, encoded."""
    return _STATFS_OUT(*(fields[name] for name in STATFS_NAMES))


STATFS_NAMES = ("blocks", "bfree", "bavail", "files", "ffree", "bsize", "namelen", "frsize")
_STATFS_OUT = codec(FuseStatfsOut).builder(*(f"st.{name}" for name in STATFS_NAMES))


@handles(c.FUSE_RELEASE)
def _release(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.release(int(req.layer(FuseReleaseIn).fh))


@handles(c.FUSE_RELEASEDIR)
def _releasedir(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.releasedir(int(req.layer(FuseReleaseIn).fh))


@handles(c.FUSE_FLUSH)
def _flush(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    arg = req.layer(FuseFlushIn)
    srv.fs.flush(int(arg.fh), int(arg.lock_owner))


@handles(c.FUSE_FSYNC, c.FUSE_FSYNCDIR)
def _fsync(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    """Everything lives in memory: nothing to flush."""


@handles(c.FUSE_SETXATTR)
def _setxattr(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    arg = req.packet[FuseSetxattrIn]
    name = names(req)[0]
    layer = next(p for p in req.packet.iterpayloads() if isinstance(p, FuseName))
    value = bytes(layer.payload)[: int(arg.size)]
    extended = srv.session.proto_flags & c.FUSE_SETXATTR_EXT  # else there are no setxattr_flags
    kill = bool(extended and int(arg.setxattr_flags or 0) & c.FUSE_SETXATTR_ACL_KILL_SGID)
    srv.fs.setxattr(req.nodeid, name, value, int(arg.flags), cred, kill_sgid=kill)


@handles(c.FUSE_GETXATTR)
def _getxattr(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    size = int(req.layer(FuseGetxattrIn).size)
    value = srv.fs.getxattr(req.nodeid, names(req)[0], cred)
    return sized_value(srv, value, size)


@handles(c.FUSE_LISTXATTR)
def _listxattr(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    size = int(req.layer(FuseGetxattrIn).size)
    listing = b"".join(name + b"\0" for name in srv.fs.listxattr(req.nodeid, cred))
    return sized_value(srv, listing, size)


def sized_value(srv: ReferenceServer, value: bytes, size: int) -> Part:
    """GETXATTR/LISTXATTR: the size for a size-0 probe, ERANGE when it does not fit."""
    if size == 0:
        return srv.part(FuseGetxattrOut, size=len(value))
    if len(value) > size:
        raise FsError(errno.ERANGE)
    return srv.raw(value)


@handles(c.FUSE_REMOVEXATTR)
def _removexattr(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.removexattr(req.nodeid, names(req)[0], cred)


@handles(c.FUSE_OPENDIR)
def _opendir(srv: ReferenceServer, req: Request, cred: Cred) -> Part:
    return srv.open_out(srv.fs.opendir(req.nodeid, cred), directory=True)


@handles(c.FUSE_READDIR, c.FUSE_READDIRPLUS)
def _readdir(srv: ReferenceServer, req: Request, cred: Cred) -> Part | None:
    arg = req.layer(FuseReadIn)
    plus = req.opcode == c.FUSE_READDIRPLUS
    records = dirents(srv, int(arg.fh), int(arg.offset), int(arg.size), plus, cred)
    if not records:
        return None
    cls = FuseDirentplusList if plus else FuseDirentList
    if srv.encode_fast:
        return Encoded(cls, b"".join(records))
    return cls(dirents=records)


def dirents(srv: ReferenceServer, fh: int, offset: int, room: int, plus: bool, cred: Cred) -> list[Any]:
    """The entries from the offset on, as many as the kernel's buffer (``room``) takes.
    READDIRPLUS looks each up too: a record with a nodeid counts one kernel reference; ``.``,
    ``..`` and names the caller may not look up go with nodeid 0 (no attributes)."""
    directory = srv.fs.directory_of(fh) if plus else 0
    records: list[Any] = []
    for name, ino, kind, next_offset in srv.fs.readdir(fh, offset):
        length = ((c.FUSE_NAME_OFFSET + len(name) + 7) & ~7) + (_ENTRY_SIZE if plus else 0)
        if length > room:
            break
        room -= length
        entry: Any = None
        if plus and name not in (b".", b".."):
            try:
                entry = srv.entry(srv.fs.lookup(directory, name, cred))
            except FsError:
                pass
        records.append(_dirent(srv, ino, next_offset, kind, name, plus, entry))
    return records


def _dirent(srv: ReferenceServer, ino: int, off: int, kind: int, name: bytes, plus: bool,
            entry: Any) -> Any:
    """One READDIR(PLUS) record: a packet, or its bytes when encoding fast (no entry: zeros)."""
    if not srv.encode_fast:
        dirent = FuseDirent(ino=ino, off=off, type=kind, name=name)
        return FuseDirentplus(entry_out=entry or FuseEntryOut(), dirent=dirent) if plus else dirent
    raw = _DIRENT(ino, off, len(name), kind) + name
    raw += b"\0" * (-len(raw) % DIRENT_ALIGN)
    return (entry.data if entry is not None else _NO_ENTRY) + raw if plus else raw


@handles(c.FUSE_STATX)
def _statx(srv: ReferenceServer, req: Request, cred: Cred) -> Packet:
    """The basic stats (no birth time: the model keeps none)."""
    inode = srv.fs.getattr(req.nodeid)
    valid, nsec = srv.timeout()
    stx = FuseStatx(mask=STATX_BASIC_STATS, blksize=4096, nlink=inode.nlink, uid=inode.uid,
                    gid=inode.gid, mode=inode.mode, ino=inode.ino, size=inode.size,
                    blocks=inode.blocks, rdev_major=os.major(inode.rdev), rdev_minor=os.minor(inode.rdev),
                    atime=_sx_time(inode.atime), ctime=_sx_time(inode.ctime),
                    mtime=_sx_time(inode.mtime))
    return FuseStatxOut(attr_valid=valid, attr_valid_nsec=nsec, stat=stx)


def _sx_time(ns: int) -> FuseSxTime:
    """statx's signed seconds; fuse_attr's are unsigned, so times before 1970 come wrapped."""
    seconds = ns // NS
    return FuseSxTime(tv_sec=seconds - (1 << 64) if seconds >= 1 << 63 else seconds, tv_nsec=ns % NS)


@handles(c.FUSE_GETLK)
def _getlk(srv: ReferenceServer, req: Request, cred: Cred) -> Packet:
    arg = req.packet[FuseLkIn]
    lk = arg.lk
    start, end, kind, pid = srv.fs.getlk(int(arg.fh), int(arg.owner), int(lk.start), int(lk.end),
                                         int(lk.type), int(lk.pid))
    out = FuseLkOut()
    out.lk.start, out.lk.end, out.lk.type, out.lk.pid = start, end, kind, pid
    return out


@handles(c.FUSE_SETLK, c.FUSE_SETLKW)
def _setlk(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    """SETLK answers EAGAIN on a conflict; SETLKW waits (holding no lock) until the conflicting
    lock goes or an INTERRUPT for it comes (then EINTR)."""
    arg = req.packet[FuseLkIn]
    lk = arg.lk
    fh, owner, kind, wait = int(arg.fh), int(arg.owner), int(lk.type), req.opcode == c.FUSE_SETLKW

    def attempt() -> None:
        if int(arg.lk_flags) & c.FUSE_LK_FLOCK:
            srv.fs.flock(fh, owner, kind, wait)
        else:
            srv.fs.setlk(fh, owner, int(lk.start), int(lk.end), kind, int(lk.pid), wait)

    if wait:
        srv.wait_for(req, attempt)
    else:
        attempt()


@handles(c.FUSE_ACCESS)
def _access(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.fs.access(req.nodeid, int(req.layer(FuseAccessIn).mask), cred)


@handles(c.FUSE_CREATE)
def _create(srv: ReferenceServer, req: Request, cred: Cred) -> tuple[Part, Part]:
    arg = req.layer(FuseCreateIn)
    inode, fh = srv.fs.create(req.nodeid, names(req)[0], int(arg.mode), int(arg.flags), cred,
                              umask=int(arg.umask or 0))
    return srv.entry(inode), srv.open_out(fh)


@handles(c.FUSE_TMPFILE)
def _tmpfile(srv: ReferenceServer, req: Request, cred: Cred) -> tuple[Part, Part]:
    arg = req.packet[FuseCreateIn]
    inode, fh = srv.fs.tmpfile(req.nodeid, int(arg.mode), cred, umask=int(arg.umask or 0),
                               flags=int(arg.flags))
    return srv.entry(inode), srv.open_out(fh)


@handles(c.FUSE_INTERRUPT)
def _interrupt(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    """Marks a request still in progress (a waiting SETLKW then answers EINTR); one already
    answered is ignored, as the kernel expects."""
    unique = int(req.layer(FuseInterruptIn).unique)
    if unique in srv.pending:
        srv.interrupted.add(unique)


@handles(c.FUSE_DESTROY)
def _destroy(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    srv.destroyed = True


@handles(c.FUSE_FALLOCATE)
def _fallocate(srv: ReferenceServer, req: Request, cred: Cred) -> None:
    arg = req.packet[FuseFallocateIn]
    srv.fs.fallocate(int(arg.fh), int(arg.mode), int(arg.offset), int(arg.length))


@handles(c.FUSE_LSEEK)
def _lseek(srv: ReferenceServer, req: Request, cred: Cred) -> Packet:
    arg = req.packet[FuseLseekIn]
    return FuseLseekOut(offset=srv.fs.lseek(int(arg.fh), int(arg.offset), int(arg.whence)))


@handles(c.FUSE_COPY_FILE_RANGE, c.FUSE_COPY_FILE_RANGE_64)
def _copy_file_range(srv: ReferenceServer, req: Request, cred: Cred) -> Packet:
    arg = req.packet[FuseCopyFileRangeIn]
    copied = srv.fs.copy_file_range(int(arg.fh_in), int(arg.off_in), int(arg.fh_out),
                                    int(arg.off_out), int(arg.len))
    if req.opcode == c.FUSE_COPY_FILE_RANGE_64:
        return FuseCopyFileRangeOut(bytes_copied=copied)
    return FuseWriteOut(size=min(copied, 0xFFFFFFFF))


from targets.reference import express as express_lane  # noqa: E402  (it builds on the above)
