"""File data and attributes over the wire: WRITE, READ at and past EOF, SETATTR applying
exactly its valid bits, FLUSH/FSYNC, FALLOCATE, LSEEK, COPY_FILE_RANGE(_64), locks."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from scapy.packet import Packet

from conformance.checks import assert_error, assert_well_formed, errno_name
from conformance.protocol.scratch import File, Workdir, not_offered, open_out
from conformance.rules import rule
from protocol import constants as c
from protocol.layers.structs import (
    FuseCopyFileRangeIn,
    FuseFallocateIn,
    FuseFileLock,
    FuseFlushIn,
    FuseFsyncIn,
    FuseLkIn,
    FuseLseekIn,
    FuseOpenIn,
    FuseSetattrIn,
    FuseStatxIn,
)
from targets.connection import KernelConnection

FILE_C = "linux fs/fuse/file.c"
F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
SEEK_DATA, SEEK_HOLE = 3, 4
FALLOC_FL_KEEP_SIZE = 1
DATA = bytes(range(256)) * 8  # 2 KiB


@pytest.fixture
def work(ready: KernelConnection) -> Iterator[Workdir]:
    yield Workdir(ready)


def _first_difference(got: bytes, expected: bytes) -> int:
    """The first offset where the two differ (the shorter length when one is a prefix of the other)."""
    return next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                min(len(got), len(expected)))


@pytest.fixture
def file(work: Workdir) -> File:
    return work.file(b"data", DATA)


@rule("FUSE-WRITE-001",
      "WRITE answers the size written (all of it, for a regular file), and READ gives the bytes back; "
      "a WRITE past the end leaves a hole that reads as zeros",
      source=f"{FILE_C} fuse_send_write/fuse_perform_write (the reply's size is what was written); write(2)",
      opcodes=("FUSE_WRITE", "FUSE_READ"))
def test_write_then_read(work: Workdir) -> None:
    file = work.file(b"written")
    for offset, data in ((0, DATA), (100, b"overwritten"), (len(DATA) + 4096, b"after a hole")):
        reply = work.write(file, offset, data)
        assert reply.ok and reply.body is not None, f"WRITE answered {errno_name(reply.error)}"
        assert int(reply.body.size) == len(data), (
            f"WRITE of {len(data)} bytes answered size {reply.body.size}")
    expected = bytearray(DATA) + bytes(4096) + b"after a hole"
    expected[100:111] = b"overwritten"
    got = work.read(file, 0, len(expected) + 100)
    assert got == bytes(expected), (
        f"READ gave {len(got)} bytes, first difference at {_first_difference(got, bytes(expected))}")


@rule("FUSE-READ-002",
      "READ at or past the end of a file returns no bytes; a READ across the end returns the bytes up to it",
      source=f"{FILE_C} fuse_short_read (fewer bytes mean end of file); read(2)", opcodes=("FUSE_READ",))
def test_read_at_end(work: Workdir, file: File) -> None:
    size = len(DATA)
    assert work.read(file, size - 10, 100) == DATA[-10:], "a READ across the end"
    for offset in (size, size + 1, size + (1 << 20)):
        got = work.read(file, offset, 4096)
        assert got == b"", f"READ at {offset} (the size is {size}) gave {len(got)} bytes"


def _setattr(work: Workdir, file: File, **fields: int) -> Packet:
    # the cast: mypy would match the ints against Packet.__init__'s own parameters (_pkt...) too
    body = FuseSetattrIn(**cast("dict[str, Any]", fields))
    reply = work.conn.call(c.FUSE_SETATTR, body, nodeid=file.nodeid)
    assert reply.ok and reply.body is not None, f"SETATTR answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    return reply.body.attr


def _same(before: Packet, after: Packet, fields: tuple[str, ...], what: str) -> None:
    moved = {f: (int(getattr(before, f)), int(getattr(after, f))) for f in fields
             if int(getattr(before, f)) != int(getattr(after, f))}
    assert not moved, f"{what} also changed {moved} (before, after)"


@rule("FUSE-SETATTR-001",
      "SETATTR with FATTR_MODE changes the permission bits and nothing else it was not asked to "
      "(size, uid, gid, mtime); its reply agrees with the GETATTR after it",
      source="linux fs/fuse/dir.c fuse_do_setattr (valid says which fields to apply); chmod(2)",
      opcodes=("FUSE_SETATTR",))
def test_setattr_mode_only(work: Workdir, file: File) -> None:
    before = work.getattr(file.nodeid)
    reply = _setattr(work, file, valid=c.FATTR_MODE, mode=0o100604)
    after = work.getattr(file.nodeid)
    assert int(after.mode) & 0o7777 == 0o604, f"mode {int(after.mode):o} after SETATTR mode 604"
    _same(before, after, ("size", "uid", "gid", "mtime", "mtimensec"), "SETATTR of the mode")
    _same(reply, after, ("mode", "size", "uid", "gid", "nlink"), "the GETATTR after SETATTR (vs its reply)")


@rule("FUSE-SETATTR-002",
      "SETATTR with FATTR_SIZE truncates or extends to that size and leaves mode, uid and gid alone",
      source="linux fs/fuse/dir.c fuse_do_setattr; truncate(2)", opcodes=("FUSE_SETATTR",))
def test_setattr_size_only(work: Workdir, file: File) -> None:
    before = work.getattr(file.nodeid)
    for size in (100, 10_000):
        attr = _setattr(work, file, valid=c.FATTR_SIZE, size=size)
        assert int(attr.size) == size, f"SETATTR size {size} answered size {attr.size}"
        _same(before, work.getattr(file.nodeid), ("mode", "uid", "gid"), f"SETATTR of the size to {size}")
    got = work.read(file, 0, 20_000)
    assert got == DATA[:100] + bytes(9_900), "after truncating to 100 and extending to 10000, the data differ"


@rule("FUSE-SETATTR-003",
      "SETATTR with FATTR_ATIME and FATTR_MTIME sets exactly those times (to the server's time_gran) "
      "and leaves size and mode alone",
      source="linux fs/fuse/dir.c fuse_do_setattr (iattr_to_fattr); utimensat(2); fuse_init_out time_gran",
      opcodes=("FUSE_SETATTR",))
def test_setattr_times(work: Workdir, file: File) -> None:
    negotiated = work.conn.session.negotiated
    gran = max(int(negotiated.reply.time_gran or 1), 1) if negotiated else 1
    before = work.getattr(file.nodeid)
    attr = _setattr(work, file, valid=c.FATTR_ATIME | c.FATTR_MTIME,
                    atime=1_000_000_000, atimensec=123_456_789,
                    mtime=2_000_000_000, mtimensec=987_654_321)
    after = work.getattr(file.nodeid)
    for got in (attr, after):
        for name, sec, nsec in (("atime", 1_000_000_000, 123_456_789), ("mtime", 2_000_000_000, 987_654_321)):
            seen = int(getattr(got, name)) * 10**9 + int(getattr(got, name + "nsec"))
            assert abs(seen - (sec * 10**9 + nsec)) < gran, f"{name} is {seen} ns, set to {sec}.{nsec:09d}"
    _same(before, after, ("size", "mode"), "SETATTR of the times")


@rule("FUSE-FSYNC-001",
      "FLUSH, FSYNC (data or all) and FSYNCDIR answer success (or ENOSYS: not offered), and what was "
      "written before still reads back",
      source=f"{FILE_C} fuse_flush and fuse_fsync_common "
             "(ENOSYS is remembered, other errors reach the caller)",
      opcodes=("FUSE_FLUSH", "FUSE_FSYNC", "FUSE_FSYNCDIR"))
def test_flush_and_fsync(work: Workdir, file: File) -> None:
    dir_fh = work.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000))
    assert dir_fh.ok and dir_fh.body is not None
    for opcode, body, nodeid in ((c.FUSE_FLUSH, FuseFlushIn(fh=file.fh, lock_owner=7), file.nodeid),
                                 (c.FUSE_FSYNC, FuseFsyncIn(fh=file.fh, fsync_flags=1), file.nodeid),
                                 (c.FUSE_FSYNC, FuseFsyncIn(fh=file.fh), file.nodeid),
                                 (c.FUSE_FSYNCDIR, FuseFsyncIn(fh=int(dir_fh.body.fh)), work.nodeid)):
        reply = work.conn.call(opcode, body, nodeid=nodeid)
        assert reply.ok or -reply.error == errno.ENOSYS, (
            f"{reply.opcode_name} answered {errno_name(reply.error)}")
        assert_well_formed(reply)
    assert work.read(file, 0, len(DATA)) == DATA, "the data changed across FLUSH/FSYNC"


@rule("FUSE-FALLOCATE-001",
      "FALLOCATE mode 0 grows the file to offset+length; with FALLOC_FL_KEEP_SIZE the size stays",
      source=f"{FILE_C} fuse_file_fallocate; fallocate(2)", opcodes=("FUSE_FALLOCATE",))
def test_fallocate(work: Workdir, file: File) -> None:
    for mode, want in ((FALLOC_FL_KEEP_SIZE, len(DATA)), (0, len(DATA) + 8192)):
        reply = work.conn.call(c.FUSE_FALLOCATE, FuseFallocateIn(fh=file.fh, offset=len(DATA), length=8192,
                                                                 mode=mode), nodeid=file.nodeid)
        not_offered(reply, f"FALLOCATE mode {mode}")
        assert reply.ok, f"FALLOCATE mode {mode} answered {errno_name(reply.error)}"
        size = int(work.getattr(file.nodeid).size)
        assert size == want, (
            f"after FALLOCATE mode {mode} of 8192 bytes at {len(DATA)}: size {size}, not {want}")


@rule("FUSE-LSEEK-001",
      "LSEEK SEEK_DATA in a dense file answers the offset itself, SEEK_HOLE the end; "
      "at or past the end, ENXIO",
      source=f"{FILE_C} fuse_lseek; lseek(2) SEEK_DATA/SEEK_HOLE (ENXIO at or beyond the end)",
      opcodes=("FUSE_LSEEK",))
def test_lseek(work: Workdir, file: File) -> None:
    def seek(offset: int, whence: int) -> int:
        reply = work.conn.call(c.FUSE_LSEEK, FuseLseekIn(fh=file.fh, offset=offset, whence=whence),
                               nodeid=file.nodeid)
        not_offered(reply, "LSEEK")
        assert reply.ok and reply.body is not None, (
            f"LSEEK {offset} {whence} answered {errno_name(reply.error)}")
        return int(reply.body.offset)

    assert seek(10, SEEK_DATA) == 10, "SEEK_DATA from 10 in a file with no holes"
    assert seek(10, SEEK_HOLE) == len(DATA), f"SEEK_HOLE in a dense file of {len(DATA)} bytes"
    past = work.conn.call(c.FUSE_LSEEK, FuseLseekIn(fh=file.fh, offset=len(DATA) + 1, whence=SEEK_DATA),
                          nodeid=file.nodeid)
    assert_error(past, errno.ENXIO, "SEEK_DATA past the end of the file")


@pytest.mark.parametrize("opcode", [pytest.param(c.FUSE_COPY_FILE_RANGE, id="COPY_FILE_RANGE"),
                                    pytest.param(c.FUSE_COPY_FILE_RANGE_64, id="COPY_FILE_RANGE_64")])
@rule("FUSE-COPY-001",
      "COPY_FILE_RANGE (and COPY_FILE_RANGE_64, 7.45) answers the bytes copied, and exactly those "
      "bytes appear at the destination",
      source=f"{FILE_C} __fuse_copy_file_range (ENOSYS: the kernel copies itself); copy_file_range(2)",
      opcodes=("FUSE_COPY_FILE_RANGE", "FUSE_COPY_FILE_RANGE_64"))
def test_copy_file_range(work: Workdir, file: File, opcode: int) -> None:
    target = work.file(b"copy", b"")
    copy = FuseCopyFileRangeIn(fh_in=file.fh, off_in=256, nodeid_out=target.nodeid,
                               fh_out=target.fh, off_out=0, len=1024)
    reply = work.conn.call(opcode, copy, nodeid=file.nodeid)
    not_offered(reply, c.OPCODE_NAMES[opcode])
    if -reply.error == errno.EXDEV:
        pytest.skip("not applicable: the server copies only within a file (EXDEV)")
    assert reply.ok and reply.body is not None, f"{reply.opcode_name} answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    copied = int(getattr(reply.body, "size", getattr(reply.body, "bytes_copied", 0)))
    assert 0 < copied <= 1024, f"{reply.opcode_name} of 1024 bytes answered {copied}"
    got = work.read(target, 0, 4096)
    assert got == DATA[256:256 + copied], f"the destination holds {len(got)} bytes, not the {copied} copied"


def _lock(type_: int, start: int = 0, end: int = 99, pid: int = 10) -> FuseFileLock:
    return FuseFileLock(start=start, end=end, type=type_, pid=pid)


@rule("FUSE-LOCK-001",
      "With FUSE_POSIX_LOCKS, GETLK reports a lock another owner holds (SETLK) "
      "and F_UNLCK once it is released",
      source=f"{FILE_C} fuse_getlk/fuse_setlk and convert_fuse_file_lock; fcntl(2) F_GETLK",
      opcodes=("FUSE_GETLK", "FUSE_SETLK", "FUSE_SETLKW"))
def test_locks(work: Workdir, file: File) -> None:
    negotiated = work.conn.session.negotiated
    if negotiated is None or not negotiated.has(c.FUSE_POSIX_LOCKS):
        pytest.skip("not applicable: FUSE_POSIX_LOCKS was not agreed (the kernel keeps locks itself)")

    def call(opcode: int, owner: int, lk: FuseFileLock) -> Packet | None:
        reply = work.conn.call(opcode, FuseLkIn(fh=file.fh, owner=owner, lk=lk), nodeid=file.nodeid)
        not_offered(reply, c.OPCODE_NAMES[opcode])
        assert reply.ok, f"{reply.opcode_name} answered {errno_name(reply.error)}"
        return reply.body.lk if reply.body is not None else None

    call(c.FUSE_SETLK, 1, _lock(F_WRLCK))
    seen = call(c.FUSE_GETLK, 2, _lock(F_RDLCK, pid=20))
    assert seen is not None and int(seen.type) == F_WRLCK and int(seen.start) == 0 and int(seen.end) == 99, (
        f"GETLK by another owner over a held write lock 0..99 answered {seen!r}")
    call(c.FUSE_SETLKW, 1, _lock(F_UNLCK))
    free = call(c.FUSE_GETLK, 2, _lock(F_RDLCK, pid=20))
    assert free is not None and int(free.type) == F_UNLCK, f"GETLK after the unlock answered {free!r}"


@rule("FUSE-STATFS-001",
      "STATFS answers consistent counts: bfree <= blocks, bavail <= bfree, ffree <= files",
      source="statfs(2) (free and available are parts of the totals); "
             "linux fs/fuse/inode.c convert_fuse_statfs",
      opcodes=("FUSE_STATFS",))
def test_statfs(ready: KernelConnection) -> None:
    reply = ready.call(c.FUSE_STATFS)
    assert reply.ok and reply.body is not None, f"STATFS answered {errno_name(reply.error)}"
    st = reply.body.st
    assert int(st.bfree) <= int(st.blocks) and int(st.bavail) <= int(st.bfree), (
        f"blocks {st.blocks}, bfree {st.bfree}, bavail {st.bavail}")
    assert int(st.ffree) <= int(st.files) or int(st.files) == 0, f"files {st.files}, ffree {st.ffree}"


@rule("FUSE-STATX-001",
      "STATX agrees with GETATTR on every field its mask says is filled "
      "(type and mode, nlink, uid, gid, ino, size)",
      source="linux fs/fuse/dir.c fuse_do_statx (the mask tells which fields are valid); statx(2)",
      opcodes=("FUSE_STATX",))
def test_statx(work: Workdir, file: File) -> None:
    reply = work.conn.call(c.FUSE_STATX, FuseStatxIn(sx_mask=0x7FF), nodeid=file.nodeid)
    not_offered(reply, "STATX")
    assert reply.ok and reply.body is not None, f"STATX answered {errno_name(reply.error)}"
    stx, attr = reply.body.stat, work.getattr(file.nodeid)
    bits = {"mode": 0x3, "nlink": 0x4, "uid": 0x8, "gid": 0x10, "ino": 0x100, "size": 0x200}
    wrong = {name: (int(getattr(stx, name)), int(getattr(attr, name))) for name, bit in bits.items()
             if int(stx.mask) & bit and int(getattr(stx, name)) != int(getattr(attr, name)) & (
                 0xFFFF if name == "mode" else (1 << 64) - 1)}
    assert not wrong, f"STATX vs GETATTR: {wrong}"


@rule("FUSE-OPEN-001",
      "OPEN, OPENDIR and CREATE set only defined FOPEN_* flags, FOPEN_PASSTHROUGH (with a backing_id) "
      "only when FUSE_PASSTHROUGH was agreed",
      source="uapi linux/fuse.h FOPEN_*; linux fs/fuse/iomode.c fuse_file_io_open (passthrough needs "
             "fc->passthrough)", opcodes=("FUSE_OPEN", "FUSE_OPENDIR", "FUSE_CREATE"))
def test_open_flags(work: Workdir) -> None:
    negotiated = work.conn.session.negotiated
    passthrough = bool(negotiated and negotiated.has(c.FUSE_PASSTHROUGH))
    created = work.create(b"opened")
    assert created.ok, f"CREATE answered {errno_name(created.error)}"
    nodeid = int(created.body.nodeid) if created.body is not None else 0
    answers = [open_out(created),
               *(r.body for r in (work.conn.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=nodeid),
                                  work.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000))) if r.ok and r.body)]
    defined = 0
    for bit in c.FOPEN_NAMES:
        defined |= bit
    for out in answers:
        flags = int(out.open_flags)
        assert not flags & ~defined, f"open_flags {flags:#x} has undefined bits {flags & ~defined:#x}"
        if flags & c.FOPEN_PASSTHROUGH:
            assert passthrough, "FOPEN_PASSTHROUGH without FUSE_PASSTHROUGH agreed in INIT"
        elif not passthrough:
            assert int(out.backing_id or 0) == 0, f"backing_id {out.backing_id} without FOPEN_PASSTHROUGH"


