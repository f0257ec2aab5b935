"""The express lane: the hottest requests answered without events.

When no mutant is on and nothing audits the replies, a request the session
admits as clean (``DaemonSession.admit``: a hot opcode, well formed at the
negotiated minor, a reply layout without compat sizes) whose opcode is in
``EXPRESS`` is answered here from its header values and body record: no
``Request``, no caller credentials unless the call checks permissions, the
reply packed at once.  Each express handler makes the same model call and the
same encoding as its ``HANDLERS`` twin in ``targets.reference.server`` (the
self-test ``tests/test_express.py`` holds both lanes to byte-equal replies);
everything else takes the general path.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scapy.packet import Packet

from protocol import constants as c
from protocol.codec import codec
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FuseInHeader
from protocol.layers.structs import (
    FuseAccessIn,
    FuseFlushIn,
    FuseOpenIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseWriteIn,
)
from targets.reference.fs_types import FsError
from targets.reference.server import Caller, dirents, registrar, statfs_data, write_data

if TYPE_CHECKING:
    from targets.reference.server import ReferenceServer

#: (server, fuse_in_header values, the request's bytes) -> the reply body
Express = Callable[["ReferenceServer", tuple[Any, ...], bytes], bytes]
EXPRESS: dict[int, Express] = {}
_OPCODE, _OPCODE_AT = codec(FuseInHeader).field("opcode")
_NODEID, _UNIQUE, _UID, _GID, _PID = (codec(FuseInHeader).names.index(name)
                                      for name in ("nodeid", "unique", "uid", "gid", "pid"))


def answer(srv: ReferenceServer, data: bytes) -> bytes | None:
    """The reply to ``data`` if it takes the express lane, else None (the caller holds the lock)."""
    if len(data) < FUSE_IN_HEADER_SIZE:
        return None
    handler = EXPRESS.get(_OPCODE.unpack_from(data, _OPCODE_AT)[0])
    if handler is None:
        return None
    session = srv.session
    head = session.admit(data, express=True)
    if head is None:
        return None
    try:
        return session.answer(head[_UNIQUE], handler(srv, head, data))
    except FsError as exc:
        return session.answer(head[_UNIQUE], error=exc.errno or errno.EIO)
    except Exception:  # a bug of ours: answer EIO, never leave the kernel waiting
        traceback.print_exc(file=sys.stderr)
        return session.answer(head[_UNIQUE], error=errno.EIO)
    finally:
        if srv.waiting:  # a RELEASE or FLUSH may free a lock a SETLKW waits for
            srv.changed.notify_all()


express = registrar(EXPRESS)


def _cred(head: tuple[Any, ...]) -> Caller:
    return Caller(head[_UID], head[_GID], head[_PID])


def _arg(cls: type[Packet], data: bytes) -> Any:
    return codec(cls).record(data, FUSE_IN_HEADER_SIZE)


def _name(data: bytes) -> bytes:
    """The one name a LOOKUP carries (admitted: NUL-terminated)."""
    return data[FUSE_IN_HEADER_SIZE: data.index(b"\0", FUSE_IN_HEADER_SIZE)]


@express(c.FUSE_GETATTR)
def _getattr(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    return srv.attr_data(srv.fs.getattr(head[_NODEID]))


@express(c.FUSE_LOOKUP)
def _lookup(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    return srv.entry_data(srv.fs.lookup(head[_NODEID], _name(data), _cred(head)))


@express(c.FUSE_OPEN)
def _open(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    return srv.open_data(srv.fs.open(head[_NODEID], _arg(FuseOpenIn, data).flags, _cred(head)))


@express(c.FUSE_OPENDIR)
def _opendir(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    return srv.open_data(srv.fs.opendir(head[_NODEID], _cred(head)), directory=True)


@express(c.FUSE_READ)
def _read(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    arg = _arg(FuseReadIn, data)
    return srv.fs.read(arg.fh, arg.offset, arg.size)


@express(c.FUSE_WRITE)
def _write(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    arg = _arg(FuseWriteIn, data)
    start = FUSE_IN_HEADER_SIZE + codec(FuseWriteIn).size
    written = srv.fs.write(arg.fh, arg.offset, data[start: start + arg.size],
                           kill_suidgid=bool(arg.write_flags & c.FUSE_WRITE_KILL_SUIDGID))
    return write_data(written)


@express(c.FUSE_FLUSH)
def _flush(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    arg = _arg(FuseFlushIn, data)
    srv.fs.flush(arg.fh, arg.lock_owner)
    return b""


@express(c.FUSE_RELEASE)
def _release(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    srv.fs.release(_arg(FuseReleaseIn, data).fh)
    return b""


@express(c.FUSE_RELEASEDIR)
def _releasedir(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    srv.fs.releasedir(_arg(FuseReleaseIn, data).fh)
    return b""


@express(c.FUSE_ACCESS)
def _access(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    srv.fs.access(head[_NODEID], _arg(FuseAccessIn, data).mask, _cred(head))
    return b""


@express(c.FUSE_STATFS)
def _statfs(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    return statfs_data(srv.fs.statfs())


@express(c.FUSE_READDIR, c.FUSE_READDIRPLUS)
def _readdir(srv: ReferenceServer, head: tuple[Any, ...], data: bytes) -> bytes:
    arg = _arg(FuseReadIn, data)
    plus = _OPCODE.unpack_from(data, _OPCODE_AT)[0] == c.FUSE_READDIRPLUS
    return b"".join(dirents(srv, arg.fh, arg.offset, arg.size, plus, _cred(head)))
