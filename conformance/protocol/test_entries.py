"""Names and the entries that answer them: MKDIR, MKNOD, SYMLINK, READLINK, CREATE, LINK,
UNLINK, RMDIR, RENAME, RENAME2, TMPFILE, and attributes agreeing between LOOKUP, GETATTR
and READDIRPLUS. Each rule works in a scratch directory of its own."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

import pytest
from scapy.packet import Packet

from conformance.checks import assert_absent, assert_error, assert_well_formed, errno_name
from conformance.protocol.scratch import File, Workdir, not_offered, open_out
from conformance.rules import rule
from conformance.walk import list_directory
from protocol import constants as c
from protocol.layers.structs import (
    FuseCreateIn,
    FuseLinkIn,
    FuseMknodIn,
    FuseOpenIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseRename2In,
    FuseRenameIn,
)
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

DIR_C = "linux fs/fuse/dir.c"
SAME = ("ino", "mode", "nlink", "uid", "gid", "size", "rdev")  # what must agree between replies
RENAME_NOREPLACE = 1


@pytest.fixture
def work(ready: KernelConnection) -> Iterator[Workdir]:
    yield Workdir(ready)


def _differ(a: Packet, b: Packet) -> dict[str, tuple[int, int]]:
    return {f: (int(getattr(a, f)), int(getattr(b, f))) for f in SAME
            if int(getattr(a, f)) != int(getattr(b, f))}


def _lookup(work: Workdir, name: bytes) -> Packet:
    reply = work.lookup(name)
    assert reply.ok and reply.body is not None and reply.body.nodeid, (
        f"LOOKUP of {name!r} answered {errno_name(reply.error)}")
    assert_well_formed(reply)
    return reply.body


def _names(work: Workdir, nodeid: int | None = None) -> set[bytes]:
    listed = list_directory(work.conn, work.nodeid if nodeid is None else nodeid)
    return {e.name for e in listed} - {b".", b".."}


@rule("FUSE-ENTRY-001",
      "A new entry (MKDIR, MKNOD, SYMLINK, CREATE) looks up again as the same nodeid and generation, "
      "with the permission bits asked for",
      source=f"{DIR_C} create_new_entry and fuse_dentry_revalidate: a nodeid or generation that "
             "changes makes the kernel drop the dentry; open(2)/mkdir(2) mode",
      opcodes=("FUSE_MKDIR", "FUSE_MKNOD", "FUSE_SYMLINK", "FUSE_CREATE", "FUSE_LOOKUP"))
def test_new_entries_look_up_the_same(work: Workdir) -> None:
    made = {b"dir": work.mkdir(b"dir", 0o755),
            b"fifo": work.call(c.FUSE_MKNOD, FuseMknodIn(mode=stat.S_IFIFO | 0o644), FuseName(name=b"fifo")),
            b"link": work.call(c.FUSE_SYMLINK, FuseName(name=b"link"), FuseName(name=b"dir")),
            b"file": work.create(b"file", 0o644)}
    modes = {b"dir": 0o755, b"fifo": 0o644, b"file": 0o644}
    for name, reply in made.items():
        if name != b"dir" and -reply.error in (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
            continue  # MKNOD of a FIFO, SYMLINK and CREATE are not every server's
        assert reply.ok and reply.body is not None, f"making {name!r} answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        again = _lookup(work, name)
        as_made = (int(reply.body.nodeid), int(reply.body.generation))
        assert (int(again.nodeid), int(again.generation)) == as_made, (
            f"{name!r} was made as nodeid {reply.body.nodeid} generation {reply.body.generation}, "
            f"looks up as {again.nodeid} generation {again.generation}")
        if name in modes:
            assert int(reply.body.attr.mode) & 0o7777 == modes[name], (
                f"{name!r} asked for mode {modes[name]:o}, answered {int(reply.body.attr.mode) & 0o7777:o}")


@rule("FUSE-LOOKUP-003",
      "LOOKUP, GETATTR and READDIRPLUS of the same inode agree on ino, mode, nlink, uid, gid, size and rdev",
      source=f"{DIR_C} fuse_lookup and fuse_do_getattr, linux fs/fuse/readdir.c fuse_direntplus_link: "
             "each reply overwrites the cached inode attributes",
      opcodes=("FUSE_LOOKUP", "FUSE_GETATTR", "FUSE_READDIRPLUS"))
def test_attributes_agree(work: Workdir) -> None:
    work.file(b"data", b"0123456789")
    work.mkdir(b"sub")
    plus = _readdirplus(work)
    for name in (b"data", b"sub"):
        looked = _lookup(work, name)
        got = work.getattr(int(looked.nodeid))
        assert not _differ(looked.attr, got), (
            f"{name!r}: LOOKUP vs GETATTR differ in {_differ(looked.attr, got)}")
        if plus is not None:
            assert name in plus, f"READDIRPLUS does not list {name!r}: {sorted(plus)}"
            assert not _differ(plus[name].attr, got), (
                f"{name!r}: READDIRPLUS vs GETATTR differ in {_differ(plus[name].attr, got)}")


def _readdirplus(work: Workdir) -> dict[bytes, Packet] | None:
    """The entry_out READDIRPLUS gives each name (None when the server does not offer it)."""
    opened = work.call(c.FUSE_OPENDIR, FuseOpenIn(flags=0o200000))
    assert opened.ok and opened.body is not None
    fh, offset = int(opened.body.fh), 0
    found: dict[bytes, Packet] = {}
    try:
        for _ in range(64):
            reply = work.call(c.FUSE_READDIRPLUS, FuseReadIn(fh=fh, offset=offset, size=8192))
            if -reply.error == errno.ENOSYS:
                return None
            assert reply.ok, f"READDIRPLUS answered {errno_name(reply.error)}"
            assert_well_formed(reply)
            dirents = reply.body.dirents if reply.body is not None else []
            if not dirents:
                return found
            for d in dirents:
                found[d.dirent.getfieldval("name")] = d.entry_out
            offset = int(dirents[-1].dirent.off)
        raise AssertionError("READDIRPLUS did not end after 64 calls")
    finally:
        work.call(c.FUSE_RELEASEDIR, FuseReleaseIn(fh=fh))


@rule("FUSE-READLINK-001",
      "READLINK answers exactly the target SYMLINK was given (no NUL), and the link's size is its length",
      source=f"{DIR_C} fuse_readlink_page (the reply is the target, unterminated); lstat(2) st_size",
      opcodes=("FUSE_READLINK", "FUSE_SYMLINK"))
def test_readlink_round_trip(work: Workdir) -> None:
    target = b"some/where/../target-" + b"x" * 40
    made = work.call(c.FUSE_SYMLINK, FuseName(name=b"link"), FuseName(name=target))
    not_offered(made, "SYMLINK")
    assert made.ok and made.body is not None, f"SYMLINK answered {errno_name(made.error)}"
    read = work.conn.call(c.FUSE_READLINK, nodeid=int(made.body.nodeid))
    assert read.ok, f"READLINK answered {errno_name(read.error)}"
    assert read.raw[16:] == target, f"READLINK answered {read.raw[16:]!r}, the target is {target!r}"
    size = int(work.getattr(int(made.body.nodeid)).size)
    assert size == len(target), f"the symlink's size is {size}, its target has {len(target)} bytes"


@rule("FUSE-LINK-001",
      "LINK answers the nodeid of the inode linked, with nlink one higher, and both names look it up",
      source=f"{DIR_C} fuse_link: the new dentry is bound to the inode the reply's nodeid names; link(2)",
      opcodes=("FUSE_LINK",))
def test_link_same_inode(work: Workdir) -> None:
    file = work.file(b"one", b"data")
    before = int(work.getattr(file.nodeid).nlink)
    linked = work.call(c.FUSE_LINK, FuseLinkIn(oldnodeid=file.nodeid), FuseName(name=b"two"))
    not_offered(linked, "LINK")
    if -linked.error == errno.EPERM:
        pytest.skip("not applicable: the server refuses hard links (EPERM)")
    assert linked.ok and linked.body is not None, f"LINK answered {errno_name(linked.error)}"
    assert int(linked.body.nodeid) == file.nodeid, (
        f"LINK of nodeid {file.nodeid} answered nodeid {linked.body.nodeid}")
    assert int(linked.body.attr.nlink) == before + 1, f"nlink {before} became {linked.body.attr.nlink}"
    assert int(_lookup(work, b"two").nodeid) == int(_lookup(work, b"one").nodeid) == file.nodeid


@rule("FUSE-UNLINK-001",
      "After UNLINK the name is gone (LOOKUP ENOENT, not listed) and a second UNLINK answers ENOENT",
      source="unlink(2): ENOENT for a name that does not exist; " f"{DIR_C} fuse_unlink",
      opcodes=("FUSE_UNLINK",))
def test_unlink_removes(work: Workdir) -> None:
    file = work.file(b"doomed", b"x")
    work.release(file)
    gone = work.call(c.FUSE_UNLINK, FuseName(name=b"doomed"))
    assert gone.ok, f"UNLINK answered {errno_name(gone.error)}"
    assert_absent(work.lookup(b"doomed"), "the name was unlinked")
    assert b"doomed" not in _names(work), "READDIR still lists the unlinked name"
    assert_error(work.call(c.FUSE_UNLINK, FuseName(name=b"doomed")), errno.ENOENT, "the name was unlinked")


@rule("FUSE-RMDIR-001",
      "RMDIR of a non-empty directory answers ENOTEMPTY (or EEXIST) and keeps it; "
      "of an empty one, removes it",
      source="rmdir(2): ENOTEMPTY or EEXIST when the directory has entries; " f"{DIR_C} fuse_rmdir",
      opcodes=("FUSE_RMDIR",))
def test_rmdir(work: Workdir) -> None:
    sub = work.mkdir(b"full")
    assert sub.ok and sub.body is not None
    work.mkdir(b"inner", parent=int(sub.body.nodeid))
    refused = work.call(c.FUSE_RMDIR, FuseName(name=b"full"))
    assert -refused.error in (errno.ENOTEMPTY, errno.EEXIST), (
        f"RMDIR of a non-empty directory answered {errno_name(refused.error)}")
    assert b"inner" in _names(work, int(sub.body.nodeid)), "the refused RMDIR lost the directory's entry"
    assert work.call(c.FUSE_RMDIR, FuseName(name=b"inner"), nodeid=int(sub.body.nodeid)).ok
    removed = work.call(c.FUSE_RMDIR, FuseName(name=b"full"))
    assert removed.ok, f"RMDIR of an empty directory answered {errno_name(removed.error)}"
    assert_absent(work.lookup(b"full"), "the directory was removed")


@rule("FUSE-RENAME-001",
      "RENAME moves the inode: the old name answers ENOENT, the new one the same nodeid, also over an "
      "existing file, which it replaces",
      source="rename(2); " f"{DIR_C} fuse_rename_common: the dentry moves, its inode stays",
      opcodes=("FUSE_RENAME",))
def test_rename_moves(work: Workdir) -> None:
    moved = work.file(b"a", b"moved")
    work.file(b"b", b"replaced")
    for new in (b"c", b"b"):
        old = b"a" if new == b"c" else b"c"
        reply = work.call(c.FUSE_RENAME, FuseRenameIn(newdir=work.nodeid),
                          FuseName(name=old), FuseName(name=new))
        assert reply.ok, f"RENAME {old!r} -> {new!r} answered {errno_name(reply.error)}"
        assert_absent(work.lookup(old), f"{old!r} was renamed to {new!r}")
        assert int(_lookup(work, new).nodeid) == moved.nodeid, f"{new!r} is not the inode renamed"
    assert _names(work) == {b"b"}, f"after the renames the directory lists {sorted(_names(work))}"


@rule("FUSE-RENAME-002",
      "RENAME2 with RENAME_NOREPLACE onto an existing name answers EEXIST and changes nothing",
      source="rename(2) RENAME_NOREPLACE; " f"{DIR_C} fuse_rename2 (ENOSYS or EINVAL: flags not offered)",
      opcodes=("FUSE_RENAME2",))
def test_rename_noreplace(work: Workdir) -> None:
    one, two = work.file(b"one", b"1"), work.file(b"two", b"2")
    reply = work.call(c.FUSE_RENAME2, FuseRename2In(newdir=work.nodeid, flags=RENAME_NOREPLACE),
                      FuseName(name=b"one"), FuseName(name=b"two"))
    if -reply.error in (errno.ENOSYS, errno.EINVAL):
        pytest.skip(f"not applicable: the server does not offer RENAME2 flags ({errno_name(reply.error)})")
    assert_error(reply, errno.EEXIST, "RENAME_NOREPLACE onto an existing name")
    assert (int(_lookup(work, b"one").nodeid), int(_lookup(work, b"two").nodeid)) == (one.nodeid, two.nodeid)


@rule("FUSE-TMPFILE-001",
      "TMPFILE answers an unnamed regular file: open, nlink 0, not listed, holding what is written to it",
      source="open(2) O_TMPFILE; linux fs/fuse/dir.c fuse_tmpfile (entry and open reply, no name)",
      opcodes=("FUSE_TMPFILE",))
def test_tmpfile(work: Workdir) -> None:
    reply = work.call(c.FUSE_TMPFILE, FuseCreateIn(flags=os.O_RDWR, mode=0o100600), FuseName(name=b"/"))
    not_offered(reply, "TMPFILE")
    assert reply.ok and reply.body is not None, f"TMPFILE answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    nodeid, fh = int(reply.body.nodeid), int(open_out(reply).fh)
    assert int(reply.body.attr.nlink) == 0, f"the tmpfile has nlink {reply.body.attr.nlink}"
    assert _names(work) == set(), f"the directory lists {sorted(_names(work))} after TMPFILE"
    file = File(b"", nodeid, fh, reply.body)
    assert work.write(file, 0, b"tmp data").ok
    assert work.read(file, 0, 64) == b"tmp data"
