"""Mutants the per-opcode protocol rules catch (conformance/protocol): faults of a server
that a kernel-role suite sees in the replies, one or two rules each.

Registered into ``mutants.MUTANTS`` when ``mutants`` is imported.
"""

from __future__ import annotations

import errno
import stat
import struct
from typing import Any

from scapy.packet import Raw

from protocol import constants as c
from protocol.events import Request
from protocol.layers import (
    FuseCopyFileRangeIn,
    FuseCopyFileRangeOut,
    FuseDirentplusList,
    FuseEntryOut,
    FuseLkOut,
    FuseName,
    FuseOpenOut,
    FuseSetattrIn,
    FuseStatxOut,
    FuseWriteOut,
)
from targets.reference.mutants import _model_inode, _on, mutant

S_IFREG = 0o100000


def _error_of(data: bytes) -> int:
    return int(struct.unpack_from("<i", data, 4)[0])


def _as_error(data: bytes, code: int) -> bytes:
    """The reply turned into the bare error ``-code`` (same unique)."""
    return struct.pack("<Ii", 16, -code) + data[8:16]


def _as_success(data: bytes) -> bytes:
    return struct.pack("<Ii", 16, 0) + data[8:16]


# -- entries and names ------------------------------------------------------------
def _drift_generation(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseEntryOut) and int(result.nodeid):
        count = srv.mutant.notes.setdefault("generation", 0) + 1
        srv.mutant.notes["generation"] = count
        result.generation = int(result.generation) + count
    return result


mutant("generation-drifts", "namespace", "every LOOKUP answers a new generation for the same nodeid",
       "FUSE-ENTRY-001", result=_on({c.FUSE_LOOKUP}, _drift_generation))


def _stale_plus_size(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseDirentplusList):
        for d in result.dirents:
            if int(d.entry_out.attr.mode) & 0o170000 == S_IFREG:
                d.entry_out.attr.size = 0
    return result


mutant("readdirplus-stale-size", "metadata", "READDIRPLUS entries report regular files as empty",
       "FUSE-LOOKUP-003", result=_on({c.FUSE_READDIRPLUS}, _stale_plus_size))


def _nul_terminated(srv: Any, req: Request, result: Any) -> Any:
    return Raw(result.load + b"\0") if isinstance(result, Raw) else result


mutant("readlink-nul", "namespace", "READLINK answers the target with a NUL after it",
       "FUSE-READLINK-001", result=_on({c.FUSE_READLINK}, _nul_terminated))


def _stale_link_count(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseEntryOut):
        result.attr.nlink = max(int(result.attr.nlink) - 1, 1)
    return result


mutant("link-stale-nlink", "metadata", "LINK answers the inode's link count from before the link",
       "FUSE-LINK-001", "FUSE-MACHINE-001", result=_on({c.FUSE_LINK}, _stale_link_count))


def _absent_is_fine(srv: Any, req: Request, data: bytes) -> bytes:
    absent = (errno.ENOENT, errno.ENODATA)
    if req.opcode in (c.FUSE_UNLINK, c.FUSE_REMOVEXATTR) and -_error_of(data) in absent:
        return _as_success(data)
    return data


mutant("remove-absent-ok", "namespace", "UNLINK of an absent name and REMOVEXATTR of an absent xattr succeed",
       "FUSE-UNLINK-001", "FUSE-XATTR-002", reply=_absent_is_fine)


def _notempty_as_eio(srv: Any, req: Request, data: bytes) -> bytes:
    if req.opcode == c.FUSE_RMDIR and -_error_of(data) == errno.ENOTEMPTY:
        return _as_error(data, errno.EIO)
    return data


mutant("rmdir-notempty-eio", "namespace", "RMDIR of a non-empty directory answers EIO",
       "FUSE-RMDIR-001", reply=_notempty_as_eio)


def _rename_to_itself(srv: Any, req: Request) -> None:
    names = [layer for layer in req.packet.iterpayloads() if isinstance(layer, FuseName)]
    if len(names) == 2:
        # POSIX: a rename onto itself succeeds and does nothing
        names[1].setfieldval("name", names[0].getfieldval("name"))


mutant("rename-ignores-new-name", "namespace", "RENAME answers success and leaves the name where it was",
       "FUSE-RENAME-001", "FUSE-MACHINE-001", request=_on({c.FUSE_RENAME}, _rename_to_itself))


def _tmpfile_linked(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, tuple) and isinstance(result[0], FuseEntryOut):
        result[0].attr.nlink = 1
    return result


mutant("tmpfile-linked", "namespace", "TMPFILE answers a file with nlink 1, as if it had a name",
       "FUSE-TMPFILE-001", result=_on({c.FUSE_TMPFILE}, _tmpfile_linked))


# -- data -------------------------------------------------------------------------
def _short_count(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseWriteOut) and int(result.size) > 1:
        result.size = int(result.size) - 1
    return result


mutant("write-short-count", "data", "WRITE stores every byte but answers one byte fewer",
       "FUSE-WRITE-001", "FUSE-MACHINE-001", result=_on({c.FUSE_WRITE}, _short_count))


def _zeros_past_end(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, Raw) and not result.load:
        return Raw(b"\0" * 16)
    return result if result is not None else Raw(b"\0" * 16)


mutant("read-past-eof-zeros", "data", "READ at or after the end of a file answers 16 zero bytes",
       "FUSE-READ-002", result=_on({c.FUSE_READ}, _zeros_past_end))


def _chmod_truncates(srv: Any, req: Request) -> None:
    arg = req.packet[FuseSetattrIn]
    if int(arg.valid) & c.FATTR_MODE:
        arg.valid = int(arg.valid) | c.FATTR_SIZE
        arg.size = 0


mutant("chmod-truncates", "metadata", "SETATTR of the mode also truncates the file",
       "FUSE-SETATTR-001", "FUSE-MACHINE-001", request=_on({c.FUSE_SETATTR}, _chmod_truncates))


def _truncate_resets_mode(srv: Any, req: Request) -> None:
    arg = req.packet[FuseSetattrIn]
    if int(arg.valid) & c.FATTR_SIZE and not int(arg.valid) & c.FATTR_MODE:
        arg.valid = int(arg.valid) | c.FATTR_MODE
        arg.mode = S_IFREG | 0o600


mutant("truncate-resets-mode", "metadata", "SETATTR of the size also resets the mode to 0600",
       "FUSE-SETATTR-002", request=_on({c.FUSE_SETATTR}, _truncate_resets_mode))


def _drop_nsec(srv: Any, req: Request) -> None:
    arg = req.packet[FuseSetattrIn]
    arg.atimensec = arg.mtimensec = 0


mutant("utimens-drops-nsec", "metadata", "SETATTR of the times drops their nanoseconds",
       "FUSE-SETATTR-003", request=_on({c.FUSE_SETATTR}, _drop_nsec))


def _fsync_eio(srv: Any, req: Request, data: bytes) -> bytes:
    if req.opcode in (c.FUSE_FSYNC, c.FUSE_FSYNCDIR) and _error_of(data) == 0:
        return _as_error(data, errno.EIO)
    return data


mutant("fsync-eio", "data", "FSYNC and FSYNCDIR answer EIO", "FUSE-FSYNC-001", reply=_fsync_eio)


def _copy_nothing(srv: Any, req: Request) -> None:
    arg = req.packet[FuseCopyFileRangeIn]
    srv.mutant.notes[req.unique] = int(arg.len)
    arg.len = 0


def _claim_copied(srv: Any, req: Request, result: Any) -> Any:
    asked = srv.mutant.notes.pop(req.unique, 0)
    if isinstance(result, FuseWriteOut):
        result.size = asked
    elif isinstance(result, FuseCopyFileRangeOut):
        result.bytes_copied = asked
    return result


mutant("copy-lies", "data", "COPY_FILE_RANGE copies nothing and answers the length asked",
       "FUSE-COPY-001", request=_on({c.FUSE_COPY_FILE_RANGE, c.FUSE_COPY_FILE_RANGE_64}, _copy_nothing),
       result=_on({c.FUSE_COPY_FILE_RANGE, c.FUSE_COPY_FILE_RANGE_64}, _claim_copied))


def _never_locked(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseLkOut):
        result.lk.type = 2  # F_UNLCK
    return result


mutant("getlk-always-free", "data", "GETLK reports every range unlocked", "FUSE-LOCK-001",
       result=_on({c.FUSE_GETLK}, _never_locked))


def _statx_size(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseStatxOut):
        result.stat.size = int(result.stat.size) + 1
    return result


mutant("statx-stale-size", "metadata", "STATX answers a size one byte larger than GETATTR's",
       "FUSE-STATX-001", result=_on({c.FUSE_STATX}, _statx_size))


def _passthrough_flag(srv: Any, req: Request, result: Any) -> Any:
    if isinstance(result, FuseOpenOut):
        result.open_flags = int(result.open_flags) | c.FOPEN_PASSTHROUGH
    return result


mutant("open-passthrough-unagreed", "protocol", "OPEN sets FOPEN_PASSTHROUGH although INIT did not agree it",
       "FUSE-OPEN-001", result=_on({c.FUSE_OPEN}, _passthrough_flag))


def _assume_setxattr_ext(srv: Any, req: Request) -> None:
    """Read the name and value 8 bytes later, as if fuse_setxattr_in were always 16 bytes."""
    if srv.session.proto_flags & c.FUSE_SETXATTR_EXT:
        return
    names = [layer for layer in req.packet.iterpayloads() if isinstance(layer, FuseName | Raw)]
    body = req.raw[40 + 16:]
    name, _, value = body.partition(b"\0")
    if len(names) == 2:
        names[0].setfieldval("name", name)
        names[1].load = value


mutant("setxattr-assumes-ext", "xattr",
       "SETXATTR always decodes the 16-byte fuse_setxattr_in, also from kernels that send 8 bytes",
       "FUSE-VERSION-002", request=_on({c.FUSE_SETXATTR}, _assume_setxattr_ext))




def _acl_without_named(srv: Any, req: Request, result: Any) -> Any:
    names = [bytes(layer.getfieldval("name")) for layer in req.packet.iterpayloads()
             if isinstance(layer, FuseName)]
    if not names or not names[0].startswith(b"system.posix_acl_") or not isinstance(result, Raw):
        return result
    value = result.load
    entries = [value[i:i + 8] for i in range(4, len(value), 8)]
    kept = [e for e in entries if int.from_bytes(e[:2], "little") not in (0x02, 0x08)]  # USER, GROUP
    return Raw(value[:4] + b"".join(kept))


mutant("acl-xattr-drops-named", "acl", "GETXATTR of an ACL answers it without its named user and "
       "group entries (an ACL kept as mode bits only)", "FUSE-ACL-001",
       result=_on({c.FUSE_GETXATTR}, _acl_without_named))


def _note_sgid(srv: Any, req: Request) -> None:
    node = _model_inode(srv, req.nodeid)
    names = [bytes(layer.getfieldval("name")) for layer in req.packet.iterpayloads()
             if isinstance(layer, FuseName)]
    if node is not None and names and names[0] == b"system.posix_acl_access":
        srv.mutant.notes[req.unique] = node.mode & stat.S_ISGID


def _restore_sgid(srv: Any, req: Request, result: Any) -> Any:
    node = _model_inode(srv, req.nodeid)
    if node is not None and srv.mutant.notes.pop(req.unique, 0):
        node.mode |= stat.S_ISGID
    return result


mutant("acl-keeps-sgid", "acl", "setting an access ACL never clears the setgid bit, whoever sets it "
       "and whatever FUSE_SETXATTR_ACL_KILL_SGID says", "FUSE-ACL-002", "POSIX-ACL-007",
       request=_on({c.FUSE_SETXATTR}, _note_sgid), result=_on({c.FUSE_SETXATTR}, _restore_sgid))
