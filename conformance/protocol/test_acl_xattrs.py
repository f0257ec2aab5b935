"""POSIX ACLs as the kernel's FUSE_POSIX_ACL sends them, in the kernel's role (no mount): the
ACL xattrs in the kernel's format (linux/posix_acl_xattr.h: a version 2 header, then entries
of tag, perm and id), set, read back and removed by SETXATTR, GETXATTR, REMOVEXATTR."""

from __future__ import annotations

import errno
import stat

import pytest
from scapy.packet import Raw

from conformance.acl.xattr import ACCESS, DEFAULT, acl, encode
from conformance.checks import assert_well_formed, errno_name
from conformance.protocol.scratch import Workdir
from conformance.rules import rule
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn, FuseGetxattrIn, FuseSetattrIn, FuseSetxattrIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

SOURCE = "linux fs/fuse/acl.c fuse_set_acl, fuse_get_acl (FUSE_POSIX_ACL); uapi linux/posix_acl_xattr.h"
#: in the order the kernel writes them (posix_acl_to_xattr: sorted by tag, then id)
ACCESS_ACL = encode(acl("u::rw", "u:20002:r", "g::r", "m::r", "o::"))
DEFAULT_ACL = encode(acl("u::rwx", "u:20002:rx", "g::rx", "g:20100:rwx", "m::rwx", "o::x"))


OWNER, GROUP, OTHER_GROUP = 20001, 20102, 20100


def _set(ready: KernelConnection, nodeid: int, name: str, value: bytes, setxattr_flags: int = 0,
         **caller: int) -> int:
    reply = ready.call(c.FUSE_SETXATTR, FuseSetxattrIn(size=len(value), setxattr_flags=setxattr_flags),
                       FuseName(name=name.encode()), Raw(value), nodeid=nodeid, **caller)
    assert_well_formed(reply)
    return reply.error


def _get(ready: KernelConnection, nodeid: int, name: str) -> tuple[int, bytes]:
    reply = ready.call(c.FUSE_GETXATTR, FuseGetxattrIn(size=4096), FuseName(name=name.encode()),
                       nodeid=nodeid)
    assert_well_formed(reply)
    return reply.error, reply.raw[16:]


@rule("FUSE-ACL-001",
      "With FUSE_POSIX_ACL agreed, an access ACL set on a file and a default ACL set on a directory "
      "(SETXATTR system.posix_acl_access / _default, in the kernel's format) read back byte for byte "
      "with GETXATTR, and REMOVEXATTR removes them (GETXATTR then answers ENODATA)",
      source=SOURCE, area="acl", feature="POSIX_ACL",
      opcodes=("FUSE_SETXATTR", "FUSE_GETXATTR", "FUSE_REMOVEXATTR"))
def test_acl_xattrs_round_trip(ready: KernelConnection) -> None:
    negotiated = ready.session.negotiated
    assert negotiated is not None
    if not negotiated.has(c.FUSE_POSIX_ACL):
        pytest.skip("not applicable: the server did not agree to FUSE_POSIX_ACL")
    work = Workdir(ready)
    file = work.file(b"acl-file", b"x")
    made = work.mkdir(b"acl-dir")
    assert made.ok and made.body is not None, f"MKDIR answered {errno_name(made.error)}"
    directory = int(made.body.nodeid)
    for nodeid, name, value in ((file.nodeid, ACCESS, ACCESS_ACL), (directory, DEFAULT, DEFAULT_ACL)):
        error = _set(ready, nodeid, name, value)
        assert not error, f"SETXATTR {name} answered {errno_name(error)}, though FUSE_POSIX_ACL was agreed"
        error, got = _get(ready, nodeid, name)
        assert not error, f"GETXATTR {name} answered {errno_name(error)}"
        assert got == value, f"{name} reads back {got.hex()}, was set to {value.hex()}"
        removed = ready.call(c.FUSE_REMOVEXATTR, FuseName(name=name.encode()), nodeid=nodeid)
        assert removed.ok, f"REMOVEXATTR {name} answered {errno_name(removed.error)}"
        error, _ = _get(ready, nodeid, name)
        assert -error == errno.ENODATA, f"GETXATTR {name} after REMOVEXATTR answered {errno_name(error)}"


def _mode(ready: KernelConnection, nodeid: int) -> int:
    reply = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
    assert reply.ok and reply.body is not None, f"GETATTR answered {errno_name(reply.error)}"
    return int(reply.body.attr.mode)


def _setattr(ready: KernelConnection, nodeid: int, **fields: int) -> None:
    valid = sum(bit for key, bit in (("mode", c.FATTR_MODE), ("uid", c.FATTR_UID), ("gid", c.FATTR_GID))
                if key in fields)
    body = FuseSetattrIn(valid=valid)
    for key, value in fields.items():
        body.setfieldval(key, value)
    reply = ready.call(c.FUSE_SETATTR, body, nodeid=nodeid)
    assert reply.ok, f"SETATTR {fields} answered {errno_name(reply.error)}"


@rule("FUSE-ACL-002",
      "With FUSE_POSIX_ACL and FUSE_SETXATTR_EXT agreed, a SETXATTR of system.posix_acl_access "
      "carrying FUSE_SETXATTR_ACL_KILL_SGID (the kernel's word that the caller is outside the "
      "file's group and not capable) clears the file's setgid bit; from a caller in the group, "
      "without the flag, the bit stays",
      source="linux fs/fuse/acl.c fuse_set_acl (in_group_or_capable); libfuse fuse_common.h "
             "FUSE_SETXATTR_ACL_KILL_SGID; Linux acl(5)",
      area="acl", feature="setgid", opcodes=("FUSE_SETXATTR",))
def test_acl_kill_sgid(ready: KernelConnection) -> None:
    negotiated = ready.session.negotiated
    assert negotiated is not None
    missing = [name for flag, name in ((c.FUSE_POSIX_ACL, "FUSE_POSIX_ACL"),
                                       (c.FUSE_SETXATTR_EXT, "FUSE_SETXATTR_EXT"))
               if not negotiated.has(flag)]
    if missing:
        pytest.skip(f"not applicable: the server did not agree to {' and '.join(missing)}")
    file = Workdir(ready).file(b"acl-sgid", b"x", mode=0o775)
    _setattr(ready, file.nodeid, uid=OWNER, gid=GROUP)
    _setattr(ready, file.nodeid, mode=0o2775)
    if not _mode(ready, file.nodeid) & stat.S_ISGID:
        pytest.skip("not applicable: the server keeps no setgid bit on a file (SETATTR mode 02775)")
    error = _set(ready, file.nodeid, ACCESS, ACCESS_ACL, c.FUSE_SETXATTR_ACL_KILL_SGID,
                 uid=OWNER, gid=OTHER_GROUP)
    assert not error, f"SETXATTR {ACCESS} with KILL_SGID from the owner answered {errno_name(error)}"
    mode = _mode(ready, file.nodeid)
    assert not mode & stat.S_ISGID, (f"an access ACL set with FUSE_SETXATTR_ACL_KILL_SGID left mode "
                                     f"{stat.S_IMODE(mode):04o}: the setgid bit stays")
    _setattr(ready, file.nodeid, mode=0o2775)
    error = _set(ready, file.nodeid, ACCESS, ACCESS_ACL, uid=OWNER, gid=GROUP)
    assert not error, f"SETXATTR {ACCESS} from the owner in the file's group answered {errno_name(error)}"
    mode = _mode(ready, file.nodeid)
    assert mode & stat.S_ISGID, (f"an access ACL set by a member of the file's group, without "
                                 f"KILL_SGID, cleared the setgid bit (mode {stat.S_IMODE(mode):04o})")
