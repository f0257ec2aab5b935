"""Mutants: named faults the reference server can be run with (``ref:mutant=NAME``).

Each mutant is a realistic server bug in one area (metadata, data, namespace,
xattr, acl, permissions, protocol framing, coherency) and names the rules that must
catch it; the suite's own tests run the conformance rules against every mutant
and require that at least one of them fails (the mutation score).

A mutant changes the request before the model sees it, the handler's result
before it is encoded, or the reply bytes before they are sent.  What a mutant
must carry from a request's hook to its result hook lives on the server's
``Applied`` (``srv.mutant.notes``, by unique), dropped when the reply is made.
"""

from __future__ import annotations

import errno
import fcntl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.events import Request
from protocol.layers import (
    FuseAttrOut,
    FuseCreateIn,
    FuseDirentList,
    FuseDirentplusList,
    FuseEntryOut,
    FuseFallocateIn,
    FuseGetxattrIn,
    FuseLkIn,
    FuseLseekOut,
    FuseMkdirIn,
    FuseMknodIn,
    FuseName,
    FuseOpenOut,
    FuseRename2In,
    FuseSetattrIn,
    FuseSetxattrIn,
)
from targets.reference import fs_acl
from targets.reference.fs_types import FsError

RequestHook = Callable[[Any, Request], None]
ResultHook = Callable[[Any, Request, Any], Any]
ReplyHook = Callable[[Any, Request, bytes], bytes]


@dataclass(frozen=True)
class Mutant:
    name: str
    area: str
    description: str
    caught_by: tuple[str, ...]  # rule ids expected to fail
    runs_with: str = ""  # the ref options the fault needs to show (``cache=none``), if any
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
    """The fuse_attr records of a reply: entry and attr replies, and READDIRPLUS's entries."""
    parts = result if isinstance(result, tuple) else (result,)
    found = [p.attr for p in parts if isinstance(p, FuseEntryOut | FuseAttrOut)]
    return found + [d.entry_out.attr for p in parts if isinstance(p, FuseDirentplusList) for d in p.dirents]


# -- metadata -----------------------------------------------------------------
def _nlink_plus_one_for_files(srv: Any, req: Request, result: Any) -> Any:
    for attr in _attrs(result):
        if attr.mode & 0o170000 == 0o100000 and attr.nlink >= 1:
            attr.nlink += 1
    return result


mutant("nlink-off-by-one", "metadata", "regular files report one link too many",
       "POSIX-LINK-001", "POSIX-MACHINE-001", "FUSE-MACHINE-001",
       result=_on({c.FUSE_GETATTR, c.FUSE_LOOKUP, c.FUSE_LINK, c.FUSE_READDIRPLUS},
                  _nlink_plus_one_for_files))


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
       "FUSE-READ-001", "POSIX-RW-001", "POSIX-MACHINE-001", "FUSE-MACHINE-001",
       result=_on({c.FUSE_READ}, _short_read))


def _keep_size_ignored(srv: Any, req: Request) -> None:
    req.packet[FuseFallocateIn].mode &= ~1  # FALLOC_FL_KEEP_SIZE


mutant("fallocate-ignores-keep-size", "data", "fallocate grows the file even with KEEP_SIZE",
       "POSIX-FALLOCATE-001", "FUSE-FALLOCATE-001", request=_on({c.FUSE_FALLOCATE}, _keep_size_ignored))


def _hole_at_zero(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseLseekOut):
        return FuseLseekOut(offset=0)
    return result


mutant("seek-hole-at-zero", "data", "lseek SEEK_DATA/SEEK_HOLE always answer offset 0",
       "POSIX-LSEEK-001", "FUSE-LSEEK-001", result=_on({c.FUSE_LSEEK}, _hole_at_zero))


# -- namespace ------------------------------------------------------------------
def _drop_rename_flags(srv: Any, req: Request) -> None:
    req.packet[FuseRename2In].flags = 0


mutant("rename-flags-ignored", "namespace", "RENAME2 ignores NOREPLACE and EXCHANGE",
       "POSIX-RENAME-002", "FUSE-RENAME-002", request=_on({c.FUSE_RENAME2}, _drop_rename_flags))


def _drop_boundary_entry(srv: Any, req: Request, result: Any) -> Any:
    """Loses the first entry of every READDIR(PLUS) reply after the first."""
    if (isinstance(result, FuseDirentList | FuseDirentplusList) and int(req.packet.payload.offset) > 0
            and result.dirents):
        result.dirents = result.dirents[1:]
    return result


mutant("readdir-drops-at-boundary", "namespace",
       "READDIR loses the entry at each reply boundary (it shows only in long listings)",
       "FUSE-READDIR-002", "FUSE-READDIR-003", "POSIX-READDIR-001",
       result=_on({c.FUSE_READDIR, c.FUSE_READDIRPLUS}, _drop_boundary_entry))


# -- xattrs ---------------------------------------------------------------------
def _xattr_flags_ignored(srv: Any, req: Request) -> None:
    req.packet[FuseSetxattrIn].flags = 0


mutant("xattr-flags-ignored", "xattr", "setxattr ignores XATTR_CREATE and XATTR_REPLACE",
       "POSIX-XATTR-002", request=_on({c.FUSE_SETXATTR}, _xattr_flags_ignored))


def _widen_buffer(srv: Any, req: Request) -> None:
    arg = req.packet[FuseGetxattrIn]
    if int(arg.size):
        srv.mutant.notes[req.unique] = int(arg.size)  # the size the kernel asked for
        arg.size = 1 << 16


def _truncate_value(srv: Any, req: Request, result: Any) -> Any:
    size = srv.mutant.notes.pop(req.unique, 0)
    if isinstance(result, Raw) and size and len(result.load) > size:
        return Raw(result.load[:size])
    return result


mutant("getxattr-truncates", "xattr", "a value larger than the buffer is cut instead of ERANGE",
       "POSIX-XATTR-004", "FUSE-XATTR-001", request=_on({c.FUSE_GETXATTR}, _widen_buffer),
       result=_on({c.FUSE_GETXATTR}, _truncate_value))


# -- POSIX ACLs (FUSE_POSIX_ACL: the kernel decides with what GETATTR and GETXATTR answer) ----
def _model_inode(srv: Any, ino: int) -> Any:
    """The in-memory model's inode (None for a server without one, e.g. serving a host dir)."""
    inodes = getattr(srv.fs, "inodes", None)
    return inodes.get(ino) if isinstance(inodes, dict) else None


def _perm(acl: fs_acl.Acl | None, tag: int) -> int | None:
    return next((perm for t, perm, _ in acl or () if t == tag), None)


def _with_perm(acl: fs_acl.Acl, tag: int, perm: int) -> fs_acl.Acl:
    return tuple((t, perm if t == tag else p, i) for t, p, i in acl)


def _remember_mask(srv: Any, req: Request) -> None:
    node = _model_inode(srv, req.nodeid)
    if int(req.packet[FuseSetattrIn].valid) & c.FATTR_MODE and node is not None:
        srv.mutant.notes[req.unique] = _perm(node.acl_access, fs_acl.ACL_MASK)


def _ignore_mask(srv: Any, req: Request, result: Any) -> Any:
    node = _model_inode(srv, req.nodeid)
    if node is None or not node.acl_access or _perm(node.acl_access, fs_acl.ACL_MASK) is None:
        return result
    if req.opcode == c.FUSE_SETATTR:  # chmod: the group bits went to GROUP_OBJ, the mask stays
        old_mask = srv.mutant.notes.pop(req.unique, None)
        if old_mask is not None:
            acl = _with_perm(node.acl_access, fs_acl.ACL_GROUP_OBJ, (node.mode >> 3) & 7)
            node.acl_access = _with_perm(acl, fs_acl.ACL_MASK, old_mask)
    elif _setxattr_name(req) == fs_acl.ACCESS:  # an ACL set: the group bits come from GROUP_OBJ
        group = _perm(node.acl_access, fs_acl.ACL_GROUP_OBJ) or 0
        node.mode = (node.mode & ~0o070) | group << 3
    return result


def _setxattr_name(req: Request) -> bytes:
    return next((bytes(p.getfieldval("name")) for p in req.packet.iterpayloads()
                 if isinstance(p, FuseName)), b"")


mutant("acl-mask-ignored", "acl",
       "with a mask in the ACL the server still takes the owning group's entry for the group class: "
       "chmod rewrites that entry and leaves the mask, and an ACL's mode gets its group bits from it",
       "POSIX-ACL-003", "POSIX-ACL-005", "POSIX-ACL-006", "POSIX-ACL-014", runs_with="acl=on",
       request=_on({c.FUSE_SETATTR}, _remember_mask),
       result=_on({c.FUSE_SETATTR, c.FUSE_SETXATTR}, _ignore_mask))


_CREATE_ARGS = {c.FUSE_CREATE: FuseCreateIn, c.FUSE_MKDIR: FuseMkdirIn, c.FUSE_MKNOD: FuseMknodIn}


def _default_not_inherited(srv: Any, req: Request, result: Any) -> Any:
    """The new inode gets the asked mode less the umask and no ACL, whatever the parent's default."""
    parent = _model_inode(srv, req.nodeid)
    entry = (result if isinstance(result, tuple) else (result,))[0]
    node = _model_inode(srv, int(entry.nodeid)) if isinstance(entry, FuseEntryOut) else None
    if parent is None or parent.acl_default is None or node is None:
        return result
    arg = req.packet[_CREATE_ARGS[req.opcode]]
    node.mode = (node.mode & ~0o777) | (int(arg.mode) & 0o777 & ~int(arg.umask or 0))
    node.acl_access = None
    if node.is_dir:
        node.acl_default = None
    entry.attr.mode = node.mode
    return result


mutant("acl-default-not-inherited", "acl",
       "files and directories created under a default ACL get the asked mode less the umask, and no ACL",
       "POSIX-ACL-009", "POSIX-ACL-010", runs_with="acl=on",
       result=_on(set(_CREATE_ARGS), _default_not_inherited))


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
       "FUSE-LOOKUP-002", "POSIX-MACHINE-001", "FUSE-MACHINE-001",
       result=_on({c.FUSE_LOOKUP}, _retype_regular))


# -- locks and times -------------------------------------------------------------
def _setlkw_as_setlk(srv: Any, req: Request) -> None:
    """A conflicting F_SETLKW is answered EAGAIN at once, as if it were F_SETLK."""
    arg = req.packet[FuseLkIn]
    lk = arg.lk
    if int(arg.lk_flags) & c.FUSE_LK_FLOCK or int(lk.type) == fcntl.F_UNLCK:
        return
    held = srv.fs.getlk(int(arg.fh), int(arg.owner), int(lk.start), int(lk.end), int(lk.type), int(lk.pid))
    if held[2] != fcntl.F_UNLCK:
        raise FsError(errno.EAGAIN)


mutant("setlkw-never-waits", "data", "F_SETLKW fails with EAGAIN instead of waiting for the lock",
       "POSIX-LOCK-002", "POSIX-LOCK-003", request=_on({c.FUSE_SETLKW}, _setlkw_as_setlk))


def _note_ctime(srv: Any, req: Request) -> None:
    if int(req.packet[FuseSetattrIn].valid) & c.FATTR_MODE:
        srv.mutant.notes[req.unique] = srv.fs.getattr(req.nodeid).ctime


def _keep_ctime(srv: Any, req: Request, result: Any) -> Any:
    """chmod leaves ctime where it was, in the model and in the reply."""
    old = srv.mutant.notes.get(req.unique)
    if old is not None and isinstance(result, FuseAttrOut):
        srv.fs.getattr(req.nodeid).ctime = old
        result.attr.ctime, result.attr.ctimensec = old // 1_000_000_000, old % 1_000_000_000
    return result


mutant("chmod-keeps-ctime", "metadata", "chmod does not update ctime", "POSIX-TIMES-005",
       "POSIX-MACHINE-001", request=_on({c.FUSE_SETATTR}, _note_ctime),
       result=_on({c.FUSE_SETATTR}, _keep_ctime))


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
       "FUSE-CACHE-001", "FUSE-CACHE-005", "COHERENCY-HOST-002", runs_with="cache=none",
       result=_on({c.FUSE_LOOKUP, c.FUSE_GETATTR, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_CREATE,
                   c.FUSE_SYMLINK, c.FUSE_LINK, c.FUSE_SETATTR}, _long_timeouts))


def _keep_cache(srv: Any, req: Request, result: Any) -> Any:
    parts = result if isinstance(result, tuple) else (result,)
    for part in parts:
        if isinstance(part, FuseOpenOut):
            part.open_flags = int(part.open_flags) | c.FOPEN_KEEP_CACHE
    return result


mutant("auto-keeps-cache", "coherency",
       "cache=auto keeps the page cache across opens (FOPEN_KEEP_CACHE): no close-to-open",
       "FUSE-CACHE-003", "FUSE-CACHE-005", "COHERENCY-HOST-001", runs_with="cache=auto",
       result=_on({c.FUSE_OPEN, c.FUSE_CREATE}, _keep_cache))


def _short_timeouts(srv: Any, req: Request, result: Any) -> Any:
    parts = result if isinstance(result, tuple) else (result,)
    for part in parts:
        if isinstance(part, FuseEntryOut):
            part.entry_valid = part.attr_valid = 1
        elif isinstance(part, FuseAttrOut):
            part.attr_valid = 1
    return result


mutant("always-expires", "coherency", "cache=always grants one-second timeouts",
       "FUSE-CACHE-004", "FUSE-CACHE-005", runs_with="cache=always",
       result=_on({c.FUSE_LOOKUP, c.FUSE_GETATTR}, _short_timeouts))


@dataclass
class Applied:
    """The mutant a server runs with (or none): the server calls these three."""

    mutant: Mutant | None = None
    seen: dict[str, int] = field(default_factory=dict)
    #: what a mutant's request hook leaves for its result hook, by unique (this server's own)
    notes: dict[int, Any] = field(default_factory=dict)

    def request(self, srv: Any, req: Request) -> None:
        if self.mutant and self.mutant.request:
            self.mutant.request(srv, req)

    def result(self, srv: Any, req: Request, result: Any) -> Any:
        if self.mutant and self.mutant.result:
            return self.mutant.result(srv, req, result)
        return result

    def reply(self, srv: Any, req: Request, data: bytes) -> bytes:
        self.notes.pop(req.unique, None)  # answered (or refused): nothing left to carry
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



# the wire mutants, and those only the fuzzer finds, register themselves
from targets.reference import mutants_fuzz, mutants_wire  # noqa: E402, F401
