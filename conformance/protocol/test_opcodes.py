"""FUSE-OPCODE-001: every opcode a server can receive is answered well formed (or, for
FORGET, BATCH_FORGET and NOTIFY_REPLY, deliberately not at all) at the negotiated minor.

Each opcode is sent once, valid, on a subject fitting it (a scratch directory and file
where the tree is writable, existing entries otherwise); the reply is judged by the
layer's validators: frame, unique, error range, body size for the opcode and minor,
attributes, dirents, entry types, sizes the kernel bounds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from scapy.packet import Packet, Raw

from conformance.checks import assert_well_formed, errno_name, not_over_virtio_fs
from conformance.protocol.scratch import MADE, open_out
from conformance.protocol.subject import Subject, open_subject
from conformance.rules import rule
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.notify import FuseNotifyRetrieveIn
from protocol.layers.structs import (
    FuseAccessIn,
    FuseBatchForgetIn,
    FuseBmapIn,
    FuseCopyFileRangeIn,
    FuseCreateIn,
    FuseFallocateIn,
    FuseFileLock,
    FuseFlushIn,
    FuseForgetIn,
    FuseForgetOne,
    FuseFsyncIn,
    FuseGetattrIn,
    FuseGetxattrIn,
    FuseIoctlIn,
    FuseLinkIn,
    FuseLkIn,
    FuseLseekIn,
    FuseMkdirIn,
    FuseMknodIn,
    FuseOpenIn,
    FusePollIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseRename2In,
    FuseRenameIn,
    FuseSetattrIn,
    FuseSetxattrIn,
    FuseStatxIn,
    FuseSyncfsIn,
    FuseWriteIn,
)
from protocol.layers.variable import FuseName
from protocol.state import CLOSED
from targets.connection import KernelConnection

SOURCE = "linux fs/fuse/dev.c fuse_dev_do_write and copy_out_args; uapi linux/fuse.h"
XATTR = b"user.fusecheck"
F_UNLCK, F_RDLCK, OFFSET_MAX = 2, 0, (1 << 63) - 1
FIONREAD, POLLIN, SEEK_DATA, FALLOC_FL_KEEP_SIZE = 0x541B, 1, 3, 1
RENAME_NOREPLACE = 1
STATX_BASIC_STATS = 0x7FF

Send = Callable[[Subject], Reply | None]  # None: the opcode gets no reply


def _name(sub: Subject, opcode: int, *layers: Packet, on: str = "dir") -> Reply:
    nodeid = sub.directory if on == "dir" else sub.file.nodeid
    return sub.conn.call(opcode, *layers, nodeid=nodeid)


def _silent(sub: Subject, opcode: int, *layers: Packet, nodeid: int) -> None:
    if opcode == c.FUSE_NOTIFY_REPLY:
        not_over_virtio_fs(sub.conn, "no notification queue was negotiated, so there is no RETRIEVE "
                                     "a NOTIFY_REPLY could answer (and every buffer comes back used)")
    sub.conn.send(opcode, *layers, nodeid=nodeid)


def _made(sub: Subject, reply: Reply, name: bytes, directory: bool = False) -> Reply:
    """After a successful create-like request, undo it (the rules after it see the same tree)."""
    if reply.ok:
        sub.conn.call(c.FUSE_RMDIR if directory else c.FUSE_UNLINK, FuseName(name=name),
                      nodeid=sub.directory)
    return reply


def _file_fh(sub: Subject) -> int:
    return sub.file.fh


def _readlink(sub: Subject) -> Reply:
    nodeid = sub.symlink() or sub.file.nodeid  # no symlink at all: a file gets EINVAL
    return sub.conn.call(c.FUSE_READLINK, nodeid=nodeid)


def _create(sub: Subject) -> Reply:
    reply = _name(sub, c.FUSE_CREATE, FuseCreateIn(flags=os.O_RDWR | os.O_CREAT, mode=0o644),
                  FuseName(name=b"created"))
    if reply.ok:
        nodeid = int(reply.body.nodeid) if reply.body is not None else 0
        sub.conn.call(c.FUSE_RELEASE, FuseReleaseIn(fh=int(open_out(reply).fh)), nodeid=nodeid)
    return _made(sub, reply, b"created")


def _tmpfile(sub: Subject) -> Reply:
    reply = _name(sub, c.FUSE_TMPFILE, FuseCreateIn(flags=os.O_RDWR, mode=0o100644), FuseName(name=b"/"))
    if reply.ok and reply.body is not None:
        sub.conn.call(c.FUSE_RELEASE, FuseReleaseIn(fh=int(open_out(reply).fh)),
                      nodeid=int(reply.body.nodeid))
    return reply


def _fresh_name(sub: Subject) -> bytes:
    """A name made for RENAME/UNLINK to act on (mknod'ed; created read-only trees fail)."""
    _name(sub, c.FUSE_MKNOD, FuseMknodIn(mode=0o100644), FuseName(name=b"victim"))
    return b"victim"


def _lookup_and_forget(sub: Subject, batch: bool) -> None:
    found = sub.conn.call(c.FUSE_LOOKUP, FuseName(name=sub.file.name), nodeid=sub.directory)
    assert found.ok and found.body is not None, f"LOOKUP answered {errno_name(found.error)}"
    nodeid = int(found.body.nodeid)
    if batch:
        _silent(sub, c.FUSE_BATCH_FORGET, FuseBatchForgetIn(count=1), FuseForgetOne(nodeid=nodeid, nlookup=1),
                nodeid=0)
    else:
        _silent(sub, c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=nodeid)


def _lock(type_: int) -> FuseFileLock:
    return FuseFileLock(start=0, end=OFFSET_MAX, type=type_, pid=os.getpid())


SENDS: dict[int, Send] = {
    c.FUSE_LOOKUP: lambda s: _name(s, c.FUSE_LOOKUP, FuseName(name=s.file.name)),
    c.FUSE_FORGET: lambda s: _lookup_and_forget(s, batch=False),
    c.FUSE_BATCH_FORGET: lambda s: _lookup_and_forget(s, batch=True),
    c.FUSE_GETATTR: lambda s: _name(s, c.FUSE_GETATTR, FuseGetattrIn(), on="file"),
    c.FUSE_SETATTR: lambda s: _name(s, c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=0o100640),
                                    on="file"),
    c.FUSE_READLINK: _readlink,
    c.FUSE_SYMLINK: lambda s: _made(s, _name(s, c.FUSE_SYMLINK, FuseName(name=b"symlink"),
                                             FuseName(name=b"target")), b"symlink"),
    c.FUSE_MKNOD: lambda s: _made(s, _name(s, c.FUSE_MKNOD, FuseMknodIn(mode=0o10644),
                                           FuseName(name=b"fifo")), b"fifo"),
    c.FUSE_MKDIR: lambda s: _made(s, _name(s, c.FUSE_MKDIR, FuseMkdirIn(mode=0o755),
                                           FuseName(name=b"subdir")), b"subdir", directory=True),
    c.FUSE_UNLINK: lambda s: _name(s, c.FUSE_UNLINK, FuseName(name=_fresh_name(s))),
    c.FUSE_RMDIR: lambda s: (_name(s, c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"gone")),
                             _name(s, c.FUSE_RMDIR, FuseName(name=b"gone")))[1],
    c.FUSE_RENAME: lambda s: _made(s, _name(s, c.FUSE_RENAME, FuseRenameIn(newdir=s.directory),
                                            FuseName(name=_fresh_name(s)), FuseName(name=b"renamed")),
                                   b"renamed"),
    c.FUSE_RENAME2: lambda s: _made(s, _name(s, c.FUSE_RENAME2,
                                             FuseRename2In(newdir=s.directory, flags=RENAME_NOREPLACE),
                                             FuseName(name=_fresh_name(s)), FuseName(name=b"renamed2")),
                                    b"renamed2"),
    c.FUSE_LINK: lambda s: _made(s, _name(s, c.FUSE_LINK, FuseLinkIn(oldnodeid=s.file.nodeid),
                                          FuseName(name=b"hardlink")), b"hardlink"),
    c.FUSE_OPEN: lambda s: _name(s, c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), on="file"),
    c.FUSE_READ: lambda s: _name(s, c.FUSE_READ, FuseReadIn(fh=_file_fh(s), size=4096), on="file"),
    c.FUSE_WRITE: lambda s: _name(s, c.FUSE_WRITE, FuseWriteIn(fh=_file_fh(s), offset=0, size=4),
                                  Raw(b"fuse"), on="file"),
    c.FUSE_STATFS: lambda s: s.conn.call(c.FUSE_STATFS, nodeid=s.directory),
    c.FUSE_RELEASE: lambda s: _name(s, c.FUSE_RELEASE, FuseReleaseIn(fh=_file_fh(s)), on="file"),
    c.FUSE_FSYNC: lambda s: _name(s, c.FUSE_FSYNC, FuseFsyncIn(fh=_file_fh(s)), on="file"),
    c.FUSE_SETXATTR: lambda s: _name(s, c.FUSE_SETXATTR, FuseSetxattrIn(size=5), FuseName(name=XATTR),
                                     Raw(b"value"), on="file"),
    c.FUSE_GETXATTR: lambda s: _name(s, c.FUSE_GETXATTR, FuseGetxattrIn(size=0), FuseName(name=XATTR),
                                     on="file"),
    c.FUSE_LISTXATTR: lambda s: _name(s, c.FUSE_LISTXATTR, FuseGetxattrIn(size=4096), on="file"),
    c.FUSE_REMOVEXATTR: lambda s: _name(s, c.FUSE_REMOVEXATTR, FuseName(name=XATTR), on="file"),
    c.FUSE_FLUSH: lambda s: _name(s, c.FUSE_FLUSH, FuseFlushIn(fh=_file_fh(s), lock_owner=1), on="file"),
    c.FUSE_OPENDIR: lambda s: _name(s, c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000)),
    c.FUSE_READDIR: lambda s: _name(s, c.FUSE_READDIR, FuseReadIn(fh=s.dir_fh(), size=4096)),
    c.FUSE_READDIRPLUS: lambda s: _name(s, c.FUSE_READDIRPLUS, FuseReadIn(fh=s.dir_fh(), size=4096)),
    c.FUSE_RELEASEDIR: lambda s: s.release_dir(),
    c.FUSE_FSYNCDIR: lambda s: _name(s, c.FUSE_FSYNCDIR, FuseFsyncIn(fh=s.dir_fh())),
    c.FUSE_GETLK: lambda s: _name(s, c.FUSE_GETLK, FuseLkIn(fh=_file_fh(s), owner=1, lk=_lock(F_RDLCK)),
                                  on="file"),
    c.FUSE_SETLK: lambda s: _name(s, c.FUSE_SETLK, FuseLkIn(fh=_file_fh(s), owner=1, lk=_lock(F_UNLCK)),
                                  on="file"),
    c.FUSE_SETLKW: lambda s: _name(s, c.FUSE_SETLKW, FuseLkIn(fh=_file_fh(s), owner=1, lk=_lock(F_UNLCK)),
                                   on="file"),
    c.FUSE_ACCESS: lambda s: _name(s, c.FUSE_ACCESS, FuseAccessIn(mask=os.R_OK), on="file"),
    c.FUSE_CREATE: _create,
    c.FUSE_INTERRUPT: lambda s: None,  # FUSE-INTERRUPT-001 judges it, with a request in flight
    c.FUSE_BMAP: lambda s: _name(s, c.FUSE_BMAP, FuseBmapIn(block=0, blocksize=4096), on="file"),
    c.FUSE_DESTROY: lambda s: _destroy(s),
    c.FUSE_IOCTL: lambda s: _name(s, c.FUSE_IOCTL, FuseIoctlIn(fh=_file_fh(s), cmd=FIONREAD, out_size=4),
                                  Raw(b""), on="file"),
    c.FUSE_POLL: lambda s: _name(s, c.FUSE_POLL, FusePollIn(fh=_file_fh(s), events=POLLIN), on="file"),
    c.FUSE_NOTIFY_REPLY: lambda s: _silent(s, c.FUSE_NOTIFY_REPLY,
                                           FuseNotifyRetrieveIn(offset=0, size=0), Raw(b""), nodeid=0),
    c.FUSE_FALLOCATE: lambda s: _name(s, c.FUSE_FALLOCATE,
                                      FuseFallocateIn(fh=_file_fh(s), length=4096, mode=FALLOC_FL_KEEP_SIZE),
                                      on="file"),
    c.FUSE_LSEEK: lambda s: _name(s, c.FUSE_LSEEK, FuseLseekIn(fh=_file_fh(s), whence=SEEK_DATA), on="file"),
    c.FUSE_COPY_FILE_RANGE: lambda s: _name(s, c.FUSE_COPY_FILE_RANGE, _copy(s), on="file"),
    c.FUSE_COPY_FILE_RANGE_64: lambda s: _name(s, c.FUSE_COPY_FILE_RANGE_64, _copy(s), on="file"),
    c.FUSE_SYNCFS: lambda s: s.conn.call(c.FUSE_SYNCFS, FuseSyncfsIn(), nodeid=s.directory),
    c.FUSE_TMPFILE: _tmpfile,
    c.FUSE_STATX: lambda s: _name(s, c.FUSE_STATX, FuseStatxIn(sx_mask=STATX_BASIC_STATS), on="file"),
}


def _destroy(sub: Subject) -> Reply:
    """DESTROY, after the scratch directory is gone (no request may follow it)."""
    for workdir in [w for w in MADE if w.conn is sub.conn]:
        MADE.remove(workdir)
        workdir.remove()
    return sub.conn.call(c.FUSE_DESTROY, nodeid=0)


def _copy(sub: Subject) -> FuseCopyFileRangeIn:
    """Copy the file's first 16 bytes to its end (within the same file: no second open)."""
    return FuseCopyFileRangeIn(fh_in=sub.file.fh, off_in=0, nodeid_out=sub.file.nodeid,
                               fh_out=sub.file.fh, off_out=4096, len=16)


@pytest.fixture
def subject(ready: KernelConnection) -> Iterator[Subject]:
    opened = open_subject(ready)
    yield opened
    if opened.conn.session.state != CLOSED:
        opened.close()


def _param(opcode: int) -> object:
    return pytest.param(opcode, id=c.OPCODE_NAMES[opcode].removeprefix("FUSE_"))


@pytest.mark.parametrize("opcode", [_param(op) for op in SENDS if op != c.FUSE_INTERRUPT])
@rule("FUSE-OPCODE-001",
      "Every opcode a server can receive, sent valid, is answered well formed for the negotiated "
      "minor (FORGET, BATCH_FORGET and NOTIFY_REPLY: not answered, "
      "and the server keeps serving)",
      source=SOURCE, feature="opcodes", opcodes=tuple(c.OPCODE_NAMES[op] for op in SENDS))
def test_opcode_answered_well_formed(subject: Subject, opcode: int) -> None:
    reply = SENDS[opcode](subject)
    if reply is None:  # no reply is due: none may come, and the server still serves
        after = subject.conn.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID)
        assert after.ok, f"GETATTR after {c.OPCODE_NAMES[opcode]} answered {errno_name(after.error)}"
        late = [e for e in subject.conn.quiet(0.2) if isinstance(e, Reply)]
        stray = [e for e in [*subject.conn.replies, *late] if e.opcode == 0]  # no request is waiting
        assert not stray, (
            f"{c.OPCODE_NAMES[opcode]} was answered: {[str(f) for e in stray for f in e.findings]}")
        return
    assert reply.opcode == opcode
    assert_well_formed(reply)
    if reply.error:
        assert reply.body is None
