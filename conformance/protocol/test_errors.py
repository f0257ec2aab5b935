"""Errors and absent answers: ENOSYS is stable, errnos are ones Linux defines, INTERRUPT is
answered only with a bare header, and directory listings resume without loss."""

from __future__ import annotations

import errno
import os

import pytest
from scapy.packet import Packet, Raw

from conformance.checks import assert_well_formed, errno_name
from conformance.protocol.scratch import Workdir
from conformance.rules import rule
from conformance.walk import find_entry, list_directory
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import (
    FuseAccessIn,
    FuseBmapIn,
    FuseFsyncIn,
    FuseGetattrIn,
    FuseGetxattrIn,
    FuseIoctlIn,
    FuseLseekIn,
    FuseMknodIn,
    FuseOpenIn,
    FusePollIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseStatxIn,
    FuseSyncfsIn,
)
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

DEV = "linux fs/fuse/dev.c fuse_dev_do_write"
#: errnos Linux assigns (asm-generic/errno-base.h and errno.h): 1..133 but for the two holes
LINUX_ERRNOS = frozenset(range(1, 134)) - {41, 58}
ENOSYS_RECHECKS = 2


def _optional_requests(conn: KernelConnection) -> list[tuple[int, tuple[Packet, ...], int]]:
    """Valid requests for the optional opcodes, on the root and a file the root lists (if any)."""
    found = find_entry(conn, lambda attr: int(attr.mode) & 0o170000 == 0o100000)
    root = c.FUSE_ROOT_ID
    asks: list[tuple[int, tuple[Packet, ...], int]] = [
        (c.FUSE_STATX, (FuseStatxIn(sx_mask=0x7FF),), root),
        (c.FUSE_ACCESS, (FuseAccessIn(mask=os.F_OK),), root),
        (c.FUSE_GETXATTR, (FuseGetxattrIn(size=0), FuseName(name=b"user.fusecheck")), root),
        (c.FUSE_LISTXATTR, (FuseGetxattrIn(size=0),), root),
        (c.FUSE_SYNCFS, (FuseSyncfsIn(),), root),
    ]
    if found is not None:
        opened = conn.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=found.nodeid)
        fh = int(opened.body.fh) if opened.ok and opened.body is not None else 0
        asks += [(c.FUSE_BMAP, (FuseBmapIn(block=0, blocksize=4096),), found.nodeid),
                 (c.FUSE_POLL, (FusePollIn(fh=fh, events=1),), found.nodeid),
                 (c.FUSE_IOCTL, (FuseIoctlIn(fh=fh, cmd=0x541B, out_size=4), Raw(b"")), found.nodeid),
                 (c.FUSE_LSEEK, (FuseLseekIn(fh=fh, whence=3),), found.nodeid),
                 (c.FUSE_FSYNC, (FuseFsyncIn(fh=fh),), found.nodeid)]
    return asks


@rule("FUSE-ENOSYS-001",
      "An opcode answered ENOSYS keeps being answered ENOSYS (the kernel remembers it and stops asking)",
      source="linux fs/fuse: no_statx, no_access, no_xattr, no_bmap, no_poll, no_lseek, no_fsync... are "
             "set on the first ENOSYS and never cleared",
      opcodes=("FUSE_STATX", "FUSE_ACCESS", "FUSE_GETXATTR", "FUSE_LISTXATTR", "FUSE_SYNCFS", "FUSE_BMAP",
               "FUSE_POLL", "FUSE_IOCTL", "FUSE_LSEEK", "FUSE_FSYNC"))
def test_enosys_is_stable(ready: KernelConnection) -> None:
    unanswered = 0
    for opcode, layers, nodeid in _optional_requests(ready):
        first = ready.call(opcode, *layers, nodeid=nodeid)
        if -first.error != errno.ENOSYS:
            continue
        unanswered += 1
        for _ in range(ENOSYS_RECHECKS):
            again = ready.call(opcode, *layers, nodeid=nodeid)
            assert -again.error == errno.ENOSYS, (
                f"{c.OPCODE_NAMES[opcode]} answered ENOSYS, then {errno_name(again.error)}: the kernel "
                "would never have asked again")
    if not unanswered:
        pytest.skip("not applicable: the server implements every optional opcode asked")


@rule("FUSE-ERRNO-001",
      "Every error reply to a request for an absent name is an errno Linux defines (1..133)",
      source=f"{DEV} (the error goes to the caller as it is); asm-generic/errno.h",
      opcodes=("FUSE_LOOKUP", "FUSE_UNLINK", "FUSE_RMDIR", "FUSE_GETXATTR"))
def test_errors_are_linux_errnos(ready: KernelConnection) -> None:
    absent = b"fusecheck-absent"
    replies: list[Reply] = [
        ready.call(c.FUSE_LOOKUP, FuseName(name=absent)),
        ready.call(c.FUSE_UNLINK, FuseName(name=absent)),
        ready.call(c.FUSE_RMDIR, FuseName(name=absent)),
        ready.call(c.FUSE_GETXATTR, FuseGetxattrIn(size=64), FuseName(name=b"user.fusecheck-absent")),
        ready.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000), nodeid=c.FUSE_ROOT_ID),
    ]
    odd = [(r.opcode_name, r.error) for r in replies if r.error and -r.error not in LINUX_ERRNOS]
    assert not odd, f"errors Linux does not define: {odd}"


@rule("FUSE-INTERRUPT-001",
      "INTERRUPT gets no reply, or a bare fuse_out_header (EAGAIN, ENOSYS); the request it names still "
      "gets exactly one reply",
      source=f"{DEV} (a reply to an INTERRUPT must be the header alone: "
             "EAGAIN requeues, ENOSYS stops them)",
      opcodes=("FUSE_INTERRUPT",))
def test_interrupt(ready: KernelConnection) -> None:
    target = ready.send(c.FUSE_GETATTR, FuseGetattrIn())
    ready.send_raw(ready.session.interrupt(target))
    ready.send_raw(ready.session.interrupt(target + 1000 * c.FUSE_REQ_ID_STEP))  # names nothing
    reply = ready.wait(target)
    assert reply.ok or -reply.error == errno.EINTR, (
        f"the interrupted GETATTR answered {errno_name(reply.error)}")
    late = [e for e in ready.quiet(0.3) if isinstance(e, Reply)]
    for event in late:
        assert event.unique & c.FUSE_INT_REQ_BIT, f"a second reply to unique {event.unique}"
        assert_well_formed(event)
        assert len(event.raw) == 16, f"an INTERRUPT reply of {len(event.raw)} bytes (header only allowed)"
    assert ready.call(c.FUSE_GETATTR, FuseGetattrIn()).ok, "GETATTR after the INTERRUPTs failed"


@pytest.mark.parametrize("opcode", [pytest.param(c.FUSE_READDIR, id="READDIR"),
                                    pytest.param(c.FUSE_READDIRPLUS, id="READDIRPLUS")])
@rule("FUSE-READDIR-003",
      "A directory of 60 entries read in small buffers lists every name exactly once, and resuming at any "
      "returned offset continues without loss or duplicates "
      "(READDIRPLUS: with entries that look up the same)",
      source="linux fs/fuse/readdir.c fuse_readdir_uncached (the next request starts at the last off); "
             "telldir/seekdir",
      opcodes=("FUSE_READDIR", "FUSE_READDIRPLUS", "FUSE_OPENDIR", "FUSE_RELEASEDIR"))
def test_long_listing(ready: KernelConnection, opcode: int) -> None:
    work = Workdir(ready)
    names = {f"entry-{i:03d}-{'n' * (i % 40)}".encode() for i in range(60)}
    for name in names:
        made = work.call(c.FUSE_MKNOD, FuseMknodIn(mode=0o100644), FuseName(name=name))
        assert made.ok, f"MKNOD answered {errno_name(made.error)}"
    listing = _listing(work, opcode, 0)
    if listing is None:
        pytest.skip("not applicable: READDIRPLUS is not offered (ENOSYS)")
    got = [n for n, _, _ in listing if n not in (b".", b"..")]
    assert sorted(got) == sorted(names), (
        f"{len(got)} names listed for {len(names)} made; missing {sorted(names - set(got))[:3]}, "
        f"repeated {sorted({n for n in got if got.count(n) > 1})[:3]}")
    for index in range(0, len(listing), 7):
        rest = _listing(work, opcode, listing[index][1]) or []
        assert [n for n, _, _ in rest] == [n for n, _, _ in listing[index + 1:]], (
            f"resumed at off {listing[index][1]} (after {listing[index][0]!r}) the rest differs")
    if opcode == c.FUSE_READDIRPLUS:
        for name, _, nodeid in listing[:10]:
            if nodeid and name not in (b".", b".."):
                looked = work.lookup(name)
                assert looked.ok and looked.body is not None and int(looked.body.nodeid) == nodeid, (
                    f"READDIRPLUS gave {name!r} nodeid {nodeid}, "
                    f"LOOKUP {looked.body.nodeid if looked.body else '-'}")


def _listing(work: Workdir, opcode: int, offset: int) -> list[tuple[bytes, int, int]] | None:
    """(name, off, nodeid) of each entry from ``offset`` on, in 512-byte READDIR(PLUS) replies."""
    if opcode == c.FUSE_READDIR:
        return [(e.name, e.off, 0) for e in list_directory(work.conn, work.nodeid, size=512, offset=offset)]
    opened = work.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000))
    assert opened.ok and opened.body is not None
    fh = int(opened.body.fh)
    out: list[tuple[bytes, int, int]] = []
    try:
        for _ in range(512):
            reply = work.call(opcode, FuseReadIn(fh=fh, offset=offset, size=1024))
            if -reply.error == errno.ENOSYS:
                return None
            assert reply.ok, f"READDIRPLUS answered {errno_name(reply.error)}"
            assert_well_formed(reply)
            dirents = reply.body.dirents if reply.body is not None else []
            if not dirents:
                return out
            out += [(d.dirent.getfieldval("name"), int(d.dirent.off), int(d.entry_out.nodeid))
                    for d in dirents]
            offset = out[-1][1]
        raise AssertionError("READDIRPLUS did not end after 512 calls")
    finally:
        work.call(c.FUSE_RELEASEDIR, FuseReleaseIn(fh=fh))
