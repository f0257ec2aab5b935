"""Mutants: named faults the reference server can be run with (``ref:mutant=NAME``).

Each mutant is a realistic server bug in one area (metadata, data, namespace,
xattr, permissions, protocol framing, coherency) and names the rules that must
catch it; the suite's own tests run the conformance rules against every mutant
and require that at least one of them fails (the mutation score).

A mutant changes the request before the model sees it, the handler's result
before it is encoded, or the reply bytes before they are sent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.events import Request
from protocol.layers import (
    FuseAttrOut,
    FuseDirentList,
    FuseDirentplusList,
    FuseEntryOut,
    FuseFallocateIn,
    FuseGetxattrIn,
    FuseLseekOut,
    FuseRename2In,
    FuseSetxattrIn,
)

RequestHook = Callable[[Any, Request], None]
ResultHook = Callable[[Any, Request, Any], Any]
ReplyHook = Callable[[Any, Request, bytes], bytes]


@dataclass(frozen=True)
class Mutant:
    name: str
    area: str
    description: str
    caught_by: tuple[str, ...]  # rule ids expected to fail
    request: RequestHook | None = None
    result: ResultHook | None = None
    reply: ReplyHook | None = None


MUTANTS: dict[str, Mutant] = {}


def mutant(name: str, area: str, description: str, *caught_by: str, **hooks: Any) -> None:
    MUTANTS[name] = Mutant(name, area, description, caught_by, **hooks)


def _on(opcodes: set[int], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Apply ``fn`` only to requests of these opcodes (pass the value through otherwise)."""
    def hook(srv: Any, req: Request, *rest: Any) -> Any:
        if req.opcode in opcodes:
            return fn(srv, req, *rest)
        return rest[0] if rest else None
    return hook


def _attrs(result: Any) -> list[Packet]:
    parts = result if isinstance(result, tuple) else (result,)
    return [p.attr for p in parts if isinstance(p, FuseEntryOut | FuseAttrOut)]


# -- metadata -----------------------------------------------------------------
def _nlink_plus_one_for_files(srv: Any, req: Request, result: Any) -> Any:
    for attr in _attrs(result):
        if attr.mode & 0o170000 == 0o100000 and attr.nlink >= 1:
            attr.nlink += 1
    return result


mutant("nlink-off-by-one", "metadata", "regular files report one link too many",
       "POSIX-LINK-001", "POSIX-MACHINE-001",
       result=_on({c.FUSE_GETATTR, c.FUSE_LOOKUP, c.FUSE_LINK}, _nlink_plus_one_for_files))


def _new_dirs_nlink_one(srv: Any, req: Request, result: Any) -> Any:
    for attr in _attrs(result):
        if attr.mode & 0o170000 == 0o040000:
            attr.nlink = 1
    return result


mutant("dir-nlink-one", "metadata", "directories report nlink 1", "POSIX-MKDIR-001",
       "POSIX-MACHINE-001", result=_on({c.FUSE_GETATTR, c.FUSE_LOOKUP, c.FUSE_MKDIR},
                                       _new_dirs_nlink_one))


def _keep_suid(srv: Any, req: Request, result: Any) -> Any:
    for attr in _attrs(result):
        attr.mode |= 0o4000 if attr.mode & 0o100 and attr.mode & 0o170000 == 0o100000 else 0
    return result


mutant("suid-sticks", "metadata", "an executable file keeps (or gains) suid whatever is done to it",
       "POSIX-CHOWN-001", "POSIX-WRITE-001", "POSIX-CHMOD-001",
       result=_on({c.FUSE_GETATTR, c.FUSE_SETATTR, c.FUSE_LOOKUP}, _keep_suid))


# -- data -----------------------------------------------------------------------
def _short_read(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, Raw) and len(result.load) > 1:
        return Raw(result.load[:-1])
    return result


mutant("read-drops-last-byte", "data", "READ returns one byte less than it has",
       "FUSE-READ-001", "POSIX-RW-001", "POSIX-MACHINE-001",
       result=_on({c.FUSE_READ}, _short_read))


def _keep_size_ignored(srv: Any, req: Request) -> None:
    req.packet[FuseFallocateIn].mode &= ~1  # FALLOC_FL_KEEP_SIZE


mutant("fallocate-ignores-keep-size", "data", "fallocate grows the file even with KEEP_SIZE",
       "POSIX-FALLOCATE-001", request=_on({c.FUSE_FALLOCATE}, _keep_size_ignored))


def _hole_at_zero(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseLseekOut):
        return FuseLseekOut(offset=0)
    return result


mutant("seek-hole-at-zero", "data", "lseek SEEK_DATA/SEEK_HOLE always answer offset 0",
       "POSIX-LSEEK-001", result=_on({c.FUSE_LSEEK}, _hole_at_zero))


# -- namespace ------------------------------------------------------------------
def _drop_rename_flags(srv: Any, req: Request) -> None:
    req.packet[FuseRename2In].flags = 0


mutant("rename-flags-ignored", "namespace", "RENAME2 ignores NOREPLACE and EXCHANGE",
       "POSIX-RENAME-002", request=_on({c.FUSE_RENAME2}, _drop_rename_flags))


def _drop_boundary_entry(srv: Any, req: Request, result: Any) -> Any:
    """Loses the first entry of every READDIR(PLUS) reply after the first."""
    if (isinstance(result, FuseDirentList | FuseDirentplusList) and int(req.packet.payload.offset) > 0
            and result.dirents):
        result.dirents = result.dirents[1:]
    return result


mutant("readdir-drops-at-boundary", "namespace",
       "READDIR loses the entry at each reply boundary (it shows only in long listings)",
       "FUSE-READDIR-002", "POSIX-READDIR-001",
       result=_on({c.FUSE_READDIR, c.FUSE_READDIRPLUS}, _drop_boundary_entry))


# -- xattrs ---------------------------------------------------------------------
def _xattr_flags_ignored(srv: Any, req: Request) -> None:
    req.packet[FuseSetxattrIn].flags = 0


mutant("xattr-flags-ignored", "xattr", "setxattr ignores XATTR_CREATE and XATTR_REPLACE",
       "POSIX-XATTR-002", request=_on({c.FUSE_SETXATTR}, _xattr_flags_ignored))


_asked: dict[int, int] = {}  # unique -> the size the kernel asked for


def _widen_buffer(srv: Any, req: Request) -> None:
    arg = req.packet[FuseGetxattrIn]
    if int(arg.size):
        _asked[req.unique] = int(arg.size)
        arg.size = 1 << 16


def _truncate_value(srv: Any, req: Request, result: Any) -> Any:
    size = _asked.pop(req.unique, 0)
    if isinstance(result, Raw) and size and len(result.load) > size:
        return Raw(result.load[:size])
    return result


mutant("getxattr-truncates", "xattr", "a value larger than the buffer is cut instead of ERANGE",
       "POSIX-XATTR-004", request=_on({c.FUSE_GETXATTR}, _widen_buffer),
       result=_on({c.FUSE_GETXATTR}, _truncate_value))


# -- protocol framing -----------------------------------------------------------
def _wrong_unique(srv: Any, req: Request, data: bytes) -> bytes:
    if req.opcode == c.FUSE_GETATTR and req.nodeid == c.FUSE_ROOT_ID:
        return data[:8] + struct.pack("<Q", req.unique + 2) + data[16:]
    return data


mutant("wrong-unique", "protocol", "GETATTR of the root answers with the wrong unique",
       "FUSE-PROTO-001", reply=_wrong_unique)


def _error_with_body(srv: Any, req: Request, data: bytes) -> bytes:
    if struct.unpack_from("<i", data, 4)[0] < 0:
        body = b"\0" * 8
        return struct.pack("<I", len(data) + 8) + data[4:] + body
    return data


mutant("error-with-body", "protocol", "error replies carry 8 stray bytes",
       "FUSE-PROTO-003", "FUSE-LOOKUP-001", reply=_error_with_body)


def _enosys_as_eio(srv: Any, req: Request, data: bytes) -> bytes:
    if struct.unpack_from("<i", data, 4)[0] == -38:
        return data[:4] + struct.pack("<i", -5) + data[8:]
    return data


mutant("enosys-as-eio", "protocol", "unknown opcodes get EIO instead of ENOSYS",
       "FUSE-PROTO-005", reply=_enosys_as_eio)


def _retype_regular(srv: Any, req: Request, result: Any) -> Any:
    for attr in _attrs(result):
        if attr.mode & 0o170000 == 0o100000:
            attr.mode = (attr.mode & 0o7777) | 0o040000
    return result


mutant("lookup-type-lies", "namespace", "LOOKUP reports regular files as directories",
       "FUSE-LOOKUP-002", "POSIX-MACHINE-001", result=_on({c.FUSE_LOOKUP}, _retype_regular))


# -- coherency ------------------------------------------------------------------
def _long_timeouts(srv: Any, req: Request, result: Any) -> Any:
    parts = result if isinstance(result, tuple) else (result,)
    for part in parts:
        if isinstance(part, FuseEntryOut):
            part.entry_valid = part.attr_valid = 3600
        elif isinstance(part, FuseAttrOut):
            part.attr_valid = 3600
    return result


mutant("cache-none-caches", "coherency",
       "cache=none still grants one-hour entry and attr timeouts",
       "FUSE-CACHE-001", result=_on({c.FUSE_LOOKUP, c.FUSE_GETATTR, c.FUSE_MKNOD, c.FUSE_MKDIR,
                                    c.FUSE_CREATE, c.FUSE_SYMLINK, c.FUSE_LINK, c.FUSE_SETATTR},
                                   _long_timeouts))


@dataclass
class Applied:
    """The mutant a server runs with (or none): the server calls these three."""

    mutant: Mutant | None = None
    seen: dict[str, int] = field(default_factory=dict)

    def request(self, srv: Any, req: Request) -> None:
        if self.mutant and self.mutant.request:
            self.mutant.request(srv, req)

    def result(self, srv: Any, req: Request, result: Any) -> Any:
        if self.mutant and self.mutant.result:
            return self.mutant.result(srv, req, result)
        return result

    def reply(self, srv: Any, req: Request, data: bytes) -> bytes:
        if self.mutant and self.mutant.reply:
            return self.mutant.reply(srv, req, data)
        return data


def applied(name: str | None) -> Applied:
    """The hooks for ``name``; ValueError naming the known mutants for an unknown one."""
    if name is None:
        return Applied()
    if name not in MUTANTS:
        raise ValueError(f"unknown mutant {name!r}; known: {', '.join(sorted(MUTANTS))}")
    return Applied(MUTANTS[name])

