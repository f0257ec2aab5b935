"""The reference server's in-memory POSIX model (targets.reference.fs).

Unit tests of each rule, then differential tests: the same random operations on the model and on
a tmpfs of this kernel (as root and, in forked children, as other users), with results, errnos,
stat fields, listings, contents, xattrs and the order of timestamps compared after every step.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import pickle
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from targets.reference.fs import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT,
    ROOT_INO,
    XATTR_CREATE,
    XATTR_REPLACE,
    Cred,
    Filesystem,
    FsError,
    Inode,
    LockWouldBlock,
)
from targets.skip import require

ALICE = Cred(1000, 1000, (1000,))
BOB = Cred(1001, 1001, (1001, 1002))
CAROL = Cred(1002, 1002, (1002,))
USERS = {"root": ROOT, "alice": ALICE, "bob": BOB, "carol": CAROL}
UNDEF = 0xFFFFFFFF
ACCESS, DEFAULT = b"system.posix_acl_access", b"system.posix_acl_default"
F_RDLCK, F_WRLCK, F_UNLCK = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK
OFFSET_MAX = (1 << 63) - 1


class Clock:
    """A fake clock: one microsecond later at every call."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def fs() -> Filesystem:
    return Filesystem(clock=Clock(), root_mode=0o40777)


@contextmanager
def fails(code: int) -> Iterator[None]:
    with pytest.raises(FsError) as info:
        yield
    got = info.value.errno or 0
    assert got == code, f"{errno.errorcode.get(got)} != {errno.errorcode[code]}"


def acl(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


def new_file(fs: Filesystem, name: bytes, mode: int = 0o644, cred: Cred = ROOT, parent: int = ROOT_INO,
             data: bytes = b"") -> Inode:
    node, fh = fs.create(parent, name, mode, os.O_RDWR, cred)
    if data:
        fs.write(fh, 0, data)
    fs.release(fh)
    return node


def names(fs: Filesystem, ino: int) -> list[bytes]:
    fh = fs.opendir(ino, ROOT)
    try:
        return [name for name, *_ in fs.readdir(fh, 0)]
    finally:
        fs.releasedir(fh)


# -- namespace -----------------------------------------------------------------
def test_root_and_constructor() -> None:
    fs = Filesystem()
    root = fs.getattr(ROOT_INO)
    assert (root.mode, root.uid, root.gid, root.nlink, root.size) == (0o40755, 0, 0, 2, 40)
    other = Filesystem(root_mode=0o1777, root_uid=5, root_gid=6)
    assert (other.getattr(1).mode, other.getattr(1).uid, other.getattr(1).gid) == (0o41777, 5, 6)


def test_lookup_errors_and_counts(fs: Filesystem) -> None:
    d = fs.mkdir(ROOT_INO, b"d", 0o700, ALICE)
    f = new_file(fs, b"f", cred=ALICE, parent=d.ino)
    with fails(errno.ENOENT):
        fs.lookup(ROOT_INO, b"missing", ROOT)
    with fails(errno.ENOTDIR):
        fs.lookup(f.ino, b"x", ALICE)
    with fails(errno.EACCES):
        fs.lookup(d.ino, b"f", BOB)
    with fails(errno.ENAMETOOLONG):
        fs.lookup(ROOT_INO, b"x" * 256, ROOT)
    before = f.nlookup
    assert fs.lookup(d.ino, b"f", ROOT) is f and f.nlookup == before + 1
    assert fs.lookup(d.ino, b"..", ROOT).ino == ROOT_INO and fs.lookup(d.ino, b".", ROOT) is d


def test_forget_frees_only_unreachable_inodes(fs: Filesystem) -> None:
    f = new_file(fs, b"f")
    free = fs.statfs()["ffree"]
    _, fh = fs.create(ROOT_INO, b"g", 0o644, os.O_RDWR, ROOT)
    fs.unlink(ROOT_INO, b"f", ROOT)
    fs.forget(f.ino, f.nlookup)
    with fails(errno.ENOENT):
        fs.getattr(f.ino)
    g = fs.lookup(ROOT_INO, b"g", ROOT)
    fs.unlink(ROOT_INO, b"g", ROOT)
    fs.forget(g.ino, g.nlookup)
    assert fs.getattr(g.ino).nlink == 0  # still open
    assert fs.write(fh, 0, b"x") == 1
    fs.release(fh)
    with fails(errno.ENOENT):
        fs.getattr(g.ino)
    assert fs.statfs()["ffree"] == free + 1
    fs.forget(ROOT_INO, 100)
    fs.forget(12345, 1)
    assert fs.getattr(ROOT_INO).nlink == 2


def test_mknod_kinds_and_privileges(fs: Filesystem) -> None:
    fifo = fs.mknod(ROOT_INO, b"p", stat.S_IFIFO | 0o666, 0, ALICE, umask=0o022)
    assert fifo.mode == stat.S_IFIFO | 0o644 and fifo.uid == 1000 and fifo.rdev == 0
    dev = fs.mknod(ROOT_INO, b"c", stat.S_IFCHR | 0o600, os.makedev(1, 3), ROOT)
    assert dev.rdev == os.makedev(1, 3) and dev.dtype == 2
    assert stat.S_ISREG(fs.mknod(ROOT_INO, b"r", 0o600, 0, ALICE).mode)
    with fails(errno.EPERM):
        fs.mknod(ROOT_INO, b"c2", stat.S_IFBLK | 0o600, 1, ALICE)
    with fails(errno.EPERM):
        fs.mknod(ROOT_INO, b"d", stat.S_IFDIR | 0o700, 0, ROOT)
    with fails(errno.EEXIST):
        fs.mknod(ROOT_INO, b"p", stat.S_IFIFO | 0o600, 0, ALICE)


def test_mkdir_links_sizes_times_and_sgid(fs: Filesystem) -> None:
    root = fs.getattr(ROOT_INO)
    mtime = root.mtime
    d = fs.mkdir(ROOT_INO, b"d", 0o7777, ALICE, umask=0o022)
    assert d.mode == stat.S_IFDIR | 0o1755 and d.nlink == 2 and d.size == 40
    assert root.nlink == 3 and root.size == 60 and root.mtime == root.ctime > mtime
    fs.setattr(d.ino, ALICE, mode=0o2777)
    sub = fs.mkdir(d.ino, b"s", 0o755, BOB)
    assert sub.gid == 1000 and sub.mode & stat.S_ISGID  # inherited group and sgid
    f = new_file(fs, b"f", 0o2755, BOB, parent=d.ino)  # bob is not in group 1000: sgid stripped
    assert f.gid == 1000 and f.mode == stat.S_IFREG | 0o755
    g = new_file(fs, b"g", 0o2755, ALICE, parent=d.ino)
    assert g.mode == stat.S_IFREG | 0o2755
    with fails(errno.EEXIST):
        fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    with fails(errno.EEXIST):
        fs.mkdir(d.ino, b"..", 0o755, ROOT)
    with fails(errno.ENAMETOOLONG):
        fs.mkdir(ROOT_INO, b"n" * 256, 0o755, ROOT)
    locked = fs.mkdir(ROOT_INO, b"locked", 0o755, ALICE)
    with fails(errno.EACCES):
        fs.mkdir(locked.ino, b"x", 0o755, BOB)


def test_symlink_and_readlink(fs: Filesystem) -> None:
    link = fs.symlink(ROOT_INO, b"l", b"some/where", ALICE)
    assert link.mode == stat.S_IFLNK | 0o777 and link.size == 10
    assert fs.readlink(link.ino) == b"some/where"
    with fails(errno.EINVAL):
        fs.readlink(ROOT_INO)
    with fails(errno.ENOENT):
        fs.symlink(ROOT_INO, b"e", b"", ROOT)
    with fails(errno.ENAMETOOLONG):
        fs.symlink(ROOT_INO, b"big", b"x" * 4096, ROOT)
    assert fs.symlink(ROOT_INO, b"max", b"x" * 4095, ROOT).size == 4095
    with fails(errno.ELOOP):
        fs.open(link.ino, os.O_RDONLY, ROOT)


def test_link_counts_and_rules(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o600, ALICE)
    ctime = f.ctime
    assert fs.link(f.ino, ROOT_INO, b"g", ALICE) is f
    assert f.nlink == 2 and f.ctime > ctime and fs.getattr(ROOT_INO).size == 80
    with fails(errno.EEXIST):
        fs.link(f.ino, ROOT_INO, b"g", ALICE)
    with fails(errno.EPERM):  # protected_hardlinks: bob may not read/write it
        fs.link(f.ino, ROOT_INO, b"h", BOB)
    fs.setattr(f.ino, ALICE, mode=0o666)
    fs.link(f.ino, ROOT_INO, b"h", BOB)
    fs.setattr(f.ino, ALICE, mode=0o4666)
    with fails(errno.EPERM):  # setuid
        fs.link(f.ino, ROOT_INO, b"i", BOB)
    d = fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    with fails(errno.EPERM):
        fs.link(d.ino, ROOT_INO, b"d2", ROOT)


def test_unlink_and_rmdir(fs: Filesystem) -> None:
    d = fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    f = new_file(fs, b"f", parent=d.ino)
    fs.link(f.ino, ROOT_INO, b"f2", ROOT)
    with fails(errno.EISDIR):
        fs.unlink(ROOT_INO, b"d", ROOT)
    with fails(errno.ENOTDIR):
        fs.rmdir(ROOT_INO, b"f2", ROOT)
    with fails(errno.ENOTEMPTY):
        fs.rmdir(ROOT_INO, b"d", ROOT)
    with fails(errno.EINVAL):
        fs.rmdir(d.ino, b".", ROOT)
    with fails(errno.EACCES):
        fs.unlink(d.ino, b"f", ALICE)
    with fails(errno.ENOENT):
        fs.unlink(d.ino, b"nope", ROOT)
    ctime = f.ctime
    fs.unlink(d.ino, b"f", ROOT)
    assert f.nlink == 1 and f.ctime > ctime and d.size == 40 and d.mtime == d.ctime == f.ctime
    fs.rmdir(ROOT_INO, b"d", ROOT)
    assert d.nlink == 0 and fs.getattr(ROOT_INO).nlink == 2
    with fails(errno.ENOENT):
        fs.mkdir(d.ino, b"x", 0o755, ROOT)  # a removed directory takes no new names


def test_sticky_directory(fs: Filesystem) -> None:
    tmp = fs.mkdir(ROOT_INO, b"tmp", 0o1777, ROOT)
    new_file(fs, b"a", 0o666, ALICE, parent=tmp.ino)
    with fails(errno.EPERM):
        fs.unlink(tmp.ino, b"a", BOB)
    with fails(errno.EPERM):
        fs.rename(tmp.ino, b"a", tmp.ino, b"b", BOB)
    new_file(fs, b"b", 0o666, BOB, parent=tmp.ino)
    with fails(errno.EPERM):  # replacing alice's file
        fs.rename(tmp.ino, b"b", tmp.ino, b"a", BOB)
    fs.rename(tmp.ino, b"a", tmp.ino, b"c", ALICE)
    fs.unlink(tmp.ino, b"c", ROOT)
    fs.symlink(tmp.ino, b"l", b"target", ALICE)
    with fails(errno.EACCES):  # O_CREAT on another user's symlink in a sticky directory
        fs.create(tmp.ino, b"l", 0o644, os.O_WRONLY | os.O_NOFOLLOW, BOB)
    with fails(errno.ELOOP):
        fs.create(tmp.ino, b"l", 0o644, os.O_WRONLY | os.O_NOFOLLOW, ALICE)


def test_rename_replaces_and_counts(fs: Filesystem) -> None:
    a, b = fs.mkdir(ROOT_INO, b"a", 0o755, ROOT), fs.mkdir(ROOT_INO, b"b", 0o755, ROOT)
    sub = fs.mkdir(a.ino, b"sub", 0o755, ROOT)
    fs.mkdir(b.ino, b"empty", 0o755, ROOT)
    fs.rename(a.ino, b"sub", b.ino, b"empty", ROOT)  # a dir over an empty dir, across parents
    assert (a.nlink, b.nlink, sub.parent) == (2, 3, b.ino)
    assert names(fs, b.ino) == [b".", b"..", b"empty"] and a.size == 40 and b.size == 60
    assert fs.readdir(fs.opendir(sub.ino, ROOT), 1)[0][:2] == (b"..", b.ino)
    f = new_file(fs, b"f", parent=a.ino)
    g = new_file(fs, b"g", parent=a.ino)
    ctimes = f.ctime, g.ctime
    fs.rename(a.ino, b"f", a.ino, b"g", ROOT)
    assert names(fs, a.ino) == [b".", b"..", b"g"] and g.nlink == 0 and f.nlink == 1
    assert f.ctime > ctimes[0] and g.ctime > ctimes[1] and a.mtime == f.ctime
    fs.link(f.ino, a.ino, b"h", ROOT)
    fs.rename(a.ino, b"g", a.ino, b"h", ROOT)  # two names of one inode: nothing happens
    assert sorted(names(fs, a.ino)) == [b".", b"..", b"g", b"h"]
    fs.rename(a.ino, b"g", a.ino, b"g", ROOT)


def test_rename_errors(fs: Filesystem) -> None:
    a = fs.mkdir(ROOT_INO, b"a", 0o755, ROOT)
    sub = fs.mkdir(a.ino, b"sub", 0o755, ROOT)
    new_file(fs, b"f")
    new_file(fs, b"x", parent=sub.ino)
    with fails(errno.EINVAL):
        fs.rename(ROOT_INO, b"a", sub.ino, b"moved", ROOT)
    with fails(errno.EINVAL):
        fs.rename(ROOT_INO, b"a", a.ino, b"moved", ROOT)
    with fails(errno.ENOTEMPTY):
        fs.rename(sub.ino, b"x", ROOT_INO, b"a", ROOT)  # target is an ancestor of the source
    with fails(errno.EINVAL):
        fs.rename(sub.ino, b"x", ROOT_INO, b"a", ROOT, RENAME_EXCHANGE)
    fs.mkdir(ROOT_INO, b"e", 0o755, ROOT)
    with fails(errno.ENOTEMPTY):
        fs.rename(ROOT_INO, b"e", ROOT_INO, b"a", ROOT)
    with fails(errno.EISDIR):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"a", ROOT)
    with fails(errno.ENOTDIR):
        fs.rename(ROOT_INO, b"a", ROOT_INO, b"f", ROOT)
    with fails(errno.ENOENT):
        fs.rename(ROOT_INO, b"nope", ROOT_INO, b"x", ROOT)
    with fails(errno.EEXIST):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"a", ROOT, RENAME_NOREPLACE)
    with fails(errno.ENOENT):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"nope", ROOT, RENAME_EXCHANGE)
    with fails(errno.EINVAL):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"g", ROOT, RENAME_EXCHANGE | RENAME_NOREPLACE)
    with fails(errno.EBUSY):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"..", ROOT)
    with fails(errno.EEXIST):
        fs.rename(ROOT_INO, b"f", ROOT_INO, b"..", ROOT, RENAME_NOREPLACE)
    mine = fs.mkdir(ROOT_INO, b"mine", 0o555, ALICE)
    elsewhere = fs.mkdir(ROOT_INO, b"elsewhere", 0o777, ROOT)
    with fails(errno.EACCES):  # to another parent a directory needs write permission ('..')
        fs.rename(ROOT_INO, b"mine", elsewhere.ino, b"mine", ALICE)
    fs.rename(ROOT_INO, b"mine", ROOT_INO, b"mine2", ALICE)
    assert mine.parent == ROOT_INO


def test_rename_exchange(fs: Filesystem) -> None:
    a, b = fs.mkdir(ROOT_INO, b"a", 0o755, ROOT), fs.mkdir(ROOT_INO, b"b", 0o755, ROOT)
    d = fs.mkdir(a.ino, b"d", 0o755, ROOT)
    f = new_file(fs, b"f", parent=b.ino)
    fs.rename(a.ino, b"d", b.ino, b"f", ROOT, RENAME_EXCHANGE)
    assert a.entries == {b"d": f.ino} and b.entries == {b"f": d.ino}
    assert (a.nlink, b.nlink, d.parent) == (2, 3, b.ino) and a.size == b.size == 60


# -- open files ----------------------------------------------------------------
def test_create_and_open_flags(fs: Filesystem) -> None:
    node, fh = fs.create(ROOT_INO, b"f", 0o444, os.O_WRONLY, ALICE, umask=0o022)
    assert fs.write(fh, 0, b"hello") == 5  # the creator may write through its handle
    fs.release(fh)
    with fails(errno.EEXIST):
        fs.create(ROOT_INO, b"f", 0o644, os.O_WRONLY | os.O_EXCL, ALICE)
    with fails(errno.EACCES):
        fs.create(ROOT_INO, b"f", 0o644, os.O_WRONLY, ALICE)
    again, fh = fs.create(ROOT_INO, b"f", 0o644, os.O_RDONLY, ALICE)
    assert again is node and fs.read(fh, 0, 10) == b"hello"
    with fails(errno.EBADF):
        fs.write(fh, 0, b"x")
    fs.release(fh)
    with fails(errno.EBADF):
        fs.release(fh)
    with fails(errno.EISDIR):
        fs.open(ROOT_INO, os.O_RDWR, ROOT)
    with fails(errno.ENOTDIR):
        fs.open(node.ino, os.O_RDONLY | os.O_DIRECTORY, ROOT)
    with fails(errno.EACCES):
        fs.open(node.ino, os.O_RDONLY | os.O_TRUNC, ALICE)
    with fails(errno.EPERM):
        fs.open(node.ino, os.O_RDONLY | os.O_NOATIME, BOB)
    mtime = node.mtime
    fh = fs.open(node.ino, os.O_WRONLY | os.O_TRUNC, ROOT)
    assert node.size == 0 and node.mtime == node.ctime > mtime
    fs.release(fh)


def test_read_write_append_and_sparse(fs: Filesystem) -> None:
    node, fh = fs.create(ROOT_INO, b"f", 0o644, os.O_RDWR, ROOT)
    assert fs.write(fh, 10, b"abc") == 3 and node.size == 13
    assert fs.read(fh, 0, 100) == b"\0" * 10 + b"abc" and fs.read(fh, 13, 5) == b""
    assert fs.write(fh, 5, b"") == 0
    fs.release(fh)
    fh = fs.open(node.ino, os.O_WRONLY | os.O_APPEND, ROOT)
    fs.write(fh, 0, b"!")
    assert node.size == 14 and bytes(node.data)[:14].endswith(b"c!")
    with fails(errno.EBADF):
        fs.read(fh, 0, 1)
    with fails(errno.EINVAL):
        fs.write(fh, -1, b"x")
    fs.release(fh)
    fh = fs.open(node.ino, os.O_RDWR, ROOT)
    fs.write(fh, 1 << 40, b"far")
    assert node.size == (1 << 40) + 3 and node.blocks == 16
    assert fs.read(fh, (1 << 40) - 2, 10) == b"\0\0far"
    with fails(errno.EFBIG):
        fs.write(fh, OFFSET_MAX, b"x")


def test_timestamps_of_read_and_write() -> None:
    clock = Clock()
    fs = Filesystem(clock=clock)
    node, fh = fs.create(ROOT_INO, b"f", 0o644, os.O_RDWR, ROOT)
    fs.write(fh, 0, b"x")
    times = node.atime, node.mtime, node.ctime
    fs.read(fh, 0, 1)
    assert node.atime > times[0] and (node.mtime, node.ctime) == times[1:]
    atime = node.atime
    fs.read(fh, 0, 1)
    assert node.atime == atime  # relatime: atime is already newer than mtime
    clock.now += 25 * 3600 * 10**9
    fs.read(fh, 0, 1)
    assert node.atime > atime
    strict = Filesystem(clock=Clock(), relatime=False)
    node, fh = strict.create(ROOT_INO, b"f", 0o644, os.O_RDWR, ROOT)
    strict.read(fh, 0, 1)
    atime = node.atime
    strict.read(fh, 0, 1)
    assert node.atime > atime


def test_write_drops_privileges_like_file_remove_privs(fs: Filesystem) -> None:
    node, fh = fs.create(ROOT_INO, b"f", 0o6777, os.O_RDWR, ALICE)
    fs.write(fh, 0, b"x")
    assert node.mode & 0o7777 == 0o777
    fs.setattr(node.ino, ALICE, mode=0o6767)  # sgid without group exec: kept for a group member
    fs.write(fh, 0, b"x")
    assert node.mode & 0o7777 == 0o2767
    fs.setattr(node.ino, ALICE, mode=0o6767)
    other = fs.open(node.ino, os.O_WRONLY, BOB)
    fs.write(other, 0, b"x")  # bob is not in group 1000: sgid goes too
    assert node.mode & 0o7777 == 0o767
    fs.setattr(node.ino, ROOT, mode=0o6777)
    root_fh = fs.open(node.ino, os.O_WRONLY, ROOT)
    fs.write(root_fh, 0, b"x")
    assert node.mode & 0o7777 == 0o6777
    fs.write(root_fh, 0, b"x", kill_suidgid=True)
    assert node.mode & 0o7777 == 0o777


def test_tmpfile(fs: Filesystem) -> None:
    node, fh = fs.tmpfile(ROOT_INO, 0o600, ALICE)
    assert node.nlink == 0 and names(fs, ROOT_INO) == [b".", b".."]
    fs.write(fh, 0, b"data")
    fs.link(node.ino, ROOT_INO, b"named", ALICE)
    assert node.nlink == 1
    excl, fh2 = fs.tmpfile(ROOT_INO, 0o600, ALICE, flags=os.O_RDWR | os.O_EXCL)
    with fails(errno.ENOENT):
        fs.link(excl.ino, ROOT_INO, b"nope", ALICE)
    fs.release(fh2)
    fs.forget(excl.ino, 1)
    with fails(errno.ENOENT):
        fs.getattr(excl.ino)


# -- attributes ----------------------------------------------------------------
def test_chmod_rules(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o644, ALICE)
    with fails(errno.EPERM):
        fs.setattr(f.ino, BOB, mode=0o777)
    ctime = f.ctime
    fs.setattr(f.ino, ALICE, mode=0o100755)
    assert f.mode == stat.S_IFREG | 0o755 and f.ctime > ctime
    fs.setattr(f.ino, ROOT, gid=1002)
    fs.setattr(f.ino, ALICE, mode=0o2755)  # not in group 1002: sgid silently dropped
    assert f.mode & 0o7777 == 0o755
    fs.setattr(f.ino, ROOT, mode=0o2755)
    assert f.mode & 0o7777 == 0o2755


def test_chown_rules(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o6755, BOB)
    with fails(errno.EPERM):
        fs.setattr(f.ino, BOB, uid=1000)
    with fails(errno.EPERM):
        fs.setattr(f.ino, BOB, gid=1000)
    with fails(errno.EPERM):
        fs.setattr(f.ino, ALICE, gid=1000)
    fs.setattr(f.ino, BOB, uid=1001, gid=1002)  # own uid, a group bob is in
    assert (f.uid, f.gid, f.mode & 0o7777) == (1001, 1002, 0o755)
    fs.setattr(f.ino, ROOT, mode=0o6745)
    fs.setattr(f.ino, ROOT, uid=1000)  # root: suid goes, sgid without group exec stays
    assert (f.uid, f.mode & 0o7777) == (1000, 0o2745)
    d = fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    fs.setattr(d.ino, ROOT, mode=0o6755)
    fs.setattr(d.ino, ROOT, uid=5, gid=5)
    assert d.mode & 0o7777 == 0o6755


def test_truncate_rules(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o6666, ALICE, data=b"0123456789")
    mtime = f.mtime
    fs.setattr(f.ino, BOB, size=4)
    assert f.size == 4 and bytes(f.data)[:10] == b"0123" + bytes(6) and f.mtime == f.ctime > mtime
    assert f.mode & 0o7777 == 0o666
    fs.setattr(f.ino, ROOT, size=10)
    assert f.data.read(0, 10) == b"0123" + bytes(6)
    with fails(errno.EISDIR):
        fs.setattr(ROOT_INO, ROOT, size=0)
    with fails(errno.EINVAL):
        fs.setattr(f.ino, ROOT, size=-1)
    fs.setattr(f.ino, ALICE, mode=0o644)
    with fails(errno.EACCES):
        fs.setattr(f.ino, BOB, size=0)
    fh = fs.open(f.ino, os.O_RDONLY, BOB)
    with fails(errno.EINVAL):
        fs.setattr(f.ino, BOB, size=0, fh=fh)
    link = fs.symlink(ROOT_INO, b"l", b"t", ROOT)
    with fails(errno.EINVAL):
        fs.setattr(link.ino, ROOT, size=0)


def test_utimens_rules(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o666, ALICE)
    ctime = f.ctime
    fs.setattr(f.ino, ALICE, atime=5, mtime=7)
    assert (f.atime, f.mtime) == (5, 7) and f.ctime > ctime
    fs.setattr(f.ino, ALICE, mtime=9)  # atime: UTIME_OMIT
    assert (f.atime, f.mtime) == (5, 9)
    with fails(errno.EPERM):
        fs.setattr(f.ino, BOB, atime=1, mtime=1)
    with fails(errno.EPERM):
        fs.setattr(f.ino, BOB, atime_now=True)  # one UTIME_NOW, one UTIME_OMIT
    fs.setattr(f.ino, BOB, atime_now=True, mtime_now=True)  # touch: write permission suffices
    assert f.atime == f.mtime == f.ctime
    fs.setattr(f.ino, ALICE, mode=0o644)
    with fails(errno.EACCES):
        fs.setattr(f.ino, BOB, atime_now=True, mtime_now=True)
    ctime = f.ctime
    fs.setattr(f.ino, BOB)  # nothing to do
    assert f.ctime == ctime
    fs.setattr(f.ino, BOB, mtime=1, ctime=2)  # the kernel's writeback cache syncing times
    assert (f.mtime, f.ctime) == (1, 2)


def test_access(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o640, ALICE)
    fs.setattr(f.ino, ROOT, gid=1002)
    fs.access(f.ino, os.R_OK | os.W_OK, ALICE)
    fs.access(f.ino, os.R_OK, BOB)  # group 1002 is one of bob's
    fs.access(f.ino, os.F_OK, CAROL)
    with fails(errno.EACCES):
        fs.access(f.ino, os.W_OK, BOB)
    with fails(errno.EACCES):
        fs.access(f.ino, os.R_OK, Cred(7, 7))
    fs.access(f.ino, os.R_OK | os.W_OK, ROOT)
    with fails(errno.EACCES):
        fs.access(f.ino, os.X_OK, ROOT)  # root needs one execute bit on files
    fs.access(fs.mkdir(ROOT_INO, b"d", 0, ALICE).ino, os.X_OK | os.W_OK, ROOT)
    with fails(errno.EINVAL):
        fs.access(f.ino, 8, ROOT)


def test_statfs_counts_and_enospc() -> None:
    fs = Filesystem(capacity=4 * 4096, max_inodes=3)
    st0 = fs.statfs()
    assert st0["blocks"] == 4 and st0["bfree"] == 4 and st0["files"] == 3 and st0["ffree"] == 2
    node, fh = fs.create(ROOT_INO, b"f", 0o644, os.O_RDWR, ROOT)
    assert fs.write(fh, 4000, b"x" * 200) == 200
    assert fs.statfs()["bfree"] == 2 and fs.statfs()["ffree"] == 1
    assert fs.write(fh, 8192, b"y" * 20000) == 8192  # the part that fits
    with fails(errno.ENOSPC):
        fs.write(fh, 40000, b"z")
    fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    with fails(errno.ENOSPC):
        fs.mkdir(ROOT_INO, b"e", 0o755, ROOT)
    fs.setattr(node.ino, ROOT, size=0)
    assert fs.statfs()["bfree"] == 4


# -- directories ---------------------------------------------------------------
def test_readdir_offsets_are_stable(fs: Filesystem) -> None:
    d = fs.mkdir(ROOT_INO, b"d", 0o755, ROOT)
    for name in (b"a", b"b", b"c", b"e"):
        new_file(fs, name, parent=d.ino)
    fh = fs.opendir(d.ino, ROOT)
    first = fs.readdir(fh, 0)
    assert [n for n, *_ in first] == [b".", b"..", b"a", b"b", b"c", b"e"]
    assert first[0][1:3] == (d.ino, 4) and first[1][1] == ROOT_INO and first[2][2] == 8
    resume = first[3][3]  # after b
    fs.unlink(d.ino, b"a", ROOT)
    fs.unlink(d.ino, b"c", ROOT)
    new_file(fs, b"new", parent=d.ino)
    assert [n for n, *_ in fs.readdir(fh, resume)] == [b"e", b"new"]
    assert fs.readdir(fh, first[-1][3] + 5) == []
    fs.releasedir(fh)
    with fails(errno.EACCES):
        fs.opendir(fs.mkdir(ROOT_INO, b"x", 0o311, ROOT).ino, ALICE)
    with fails(errno.ENOTDIR):
        fs.opendir(fs.lookup(d.ino, b"e", ROOT).ino, ROOT)
    fh = fs.opendir(d.ino, ROOT)
    for name in (b"b", b"e", b"new"):
        fs.unlink(d.ino, name, ROOT)
    fs.rmdir(ROOT_INO, b"d", ROOT)
    with fails(errno.ENOENT):
        fs.readdir(fh, 0)


# -- xattrs and ACLs -----------------------------------------------------------
def test_xattr_flags_names_and_sizes(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o644, ALICE)
    fs.setxattr(f.ino, b"user.a", b"1", 0, ALICE)
    with fails(errno.EEXIST):
        fs.setxattr(f.ino, b"user.a", b"2", XATTR_CREATE, ALICE)
    with fails(errno.ENODATA):
        fs.setxattr(f.ino, b"user.b", b"2", XATTR_REPLACE, ALICE)
    with fails(errno.EINVAL):
        fs.setxattr(f.ino, b"user.b", b"2", 4, ALICE)
    with fails(errno.ERANGE):
        fs.setxattr(f.ino, b"user." + b"x" * 251, b"", 0, ALICE)
    with fails(errno.ERANGE):
        fs.getxattr(f.ino, b"", ALICE)
    with fails(errno.E2BIG):
        fs.setxattr(f.ino, b"user.big", b"x" * 65537, 0, ALICE)
    with fails(errno.EINVAL):
        fs.setxattr(f.ino, b"user.", b"x", 0, ALICE)
    with fails(errno.EOPNOTSUPP):
        fs.setxattr(f.ino, b"other.x", b"x", 0, ALICE)
    with fails(errno.EOPNOTSUPP):
        fs.getxattr(f.ino, b"system.other", ALICE)
    ctime = f.ctime
    fs.setxattr(f.ino, b"user.a", b"", XATTR_REPLACE, ALICE)
    assert fs.getxattr(f.ino, b"user.a", BOB) == b"" and f.ctime > ctime
    with fails(errno.ENODATA):
        fs.getxattr(f.ino, b"user.zz", ALICE)
    fs.removexattr(f.ino, b"user.a", ALICE)
    with fails(errno.ENODATA):
        fs.removexattr(f.ino, b"user.a", ALICE)


def test_xattr_namespaces_and_permissions(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o640, ALICE)
    with fails(errno.EACCES):
        fs.setxattr(f.ino, b"user.a", b"1", 0, BOB)
    with fails(errno.EACCES):
        fs.getxattr(f.ino, b"user.a", BOB)
    with fails(errno.EPERM):
        fs.setxattr(f.ino, b"trusted.t", b"1", 0, ALICE)
    with fails(errno.EPERM):
        fs.setxattr(f.ino, b"security.s", b"1", 0, ALICE)
    for name in (b"trusted.t", b"security.s", b"user.u"):
        fs.setxattr(f.ino, name, b"v", 0, ROOT)
    with fails(errno.ENODATA):
        fs.getxattr(f.ino, b"trusted.t", ALICE)
    assert fs.getxattr(f.ino, b"security.s", CAROL) == b"v"
    assert fs.listxattr(f.ino, ALICE) == [b"user.u", b"security.s"]
    assert fs.listxattr(f.ino, ROOT) == [b"user.u", b"trusted.t", b"security.s"]
    link = fs.symlink(ROOT_INO, b"l", b"f", ALICE)
    with fails(errno.EPERM):
        fs.setxattr(link.ino, b"user.a", b"1", 0, ALICE)
    with fails(errno.ENODATA):
        fs.getxattr(link.ino, b"user.a", ALICE)
    fs.setxattr(link.ino, b"trusted.t", b"1", 0, ROOT)
    tmp = fs.mkdir(ROOT_INO, b"tmp", 0o1777, ROOT)
    with fails(errno.EPERM):
        fs.setxattr(tmp.ino, b"user.a", b"1", 0, ALICE)


def test_acl_format_validation(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o640, ALICE)
    good = [(ACL_USER_OBJ, 7, UNDEF), (ACL_USER, 5, 1001), (ACL_GROUP_OBJ, 4, UNDEF),
            (ACL_MASK, 7, UNDEF), (ACL_OTHER, 0, UNDEF)]
    bad = {
        "no mask": [good[0], good[1], good[2], good[4]],
        "order": [good[2], good[0], good[1], good[3], good[4]],
        "perm": [(ACL_USER_OBJ, 8, UNDEF), *good[1:]],
        "tag": [*good[:4], (0x40, 0, UNDEF)],
        "id": [good[0], (ACL_USER, 5, UNDEF), *good[2:]],
        "two owners": [good[0], *good],
    }
    for entries in bad.values():
        with fails(errno.EINVAL):
            fs.setxattr(f.ino, ACCESS, acl(*entries), 0, ALICE)
    with fails(errno.EINVAL):
        fs.setxattr(f.ino, ACCESS, acl(*good)[:-2], 0, ALICE)
    with fails(errno.EINVAL):
        fs.setxattr(f.ino, ACCESS, b"\x02\0", 0, ALICE)
    with fails(errno.EOPNOTSUPP):
        fs.setxattr(f.ino, ACCESS, acl(*good, version=1), 0, ALICE)
    with fails(errno.EPERM):
        fs.setxattr(f.ino, ACCESS, acl(*good), 0, BOB)
    dup = [good[0], good[1], good[1], *good[2:]]  # the kernel takes repeated ids
    fs.setxattr(f.ino, ACCESS, acl(*dup), XATTR_REPLACE, ALICE)  # flags mean nothing for ACLs
    assert fs.getxattr(f.ino, ACCESS, CAROL) == acl(*dup) and f.mode & 0o777 == 0o770
    assert fs.listxattr(f.ino, CAROL) == [ACCESS]
    fs.setxattr(f.ino, ACCESS, acl(), 0, ALICE)  # a header alone removes it
    with fails(errno.ENODATA):
        fs.getxattr(f.ino, ACCESS, ALICE)
    assert f.mode & 0o777 == 0o770
    link = fs.symlink(ROOT_INO, b"l", b"f", ALICE)
    with fails(errno.EOPNOTSUPP):
        fs.setxattr(link.ino, ACCESS, acl(*good), 0, ALICE)
    with fails(errno.EACCES):
        fs.setxattr(f.ino, DEFAULT, acl(*good), 0, ALICE)
    fs.removexattr(f.ino, DEFAULT, ALICE)
    noacl = Filesystem(acl=False)
    with fails(errno.EOPNOTSUPP):
        noacl.getxattr(ROOT_INO, ACCESS, ROOT)


def test_minimal_acl_is_mode_and_chmod_syncs(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o2640, ALICE)
    fs.setattr(f.ino, ROOT, gid=1002)
    fs.setxattr(f.ino, ACCESS, acl((ACL_USER_OBJ, 7, 0), (ACL_GROUP_OBJ, 5, 0), (ACL_OTHER, 4, 0)), 0, ALICE)
    assert f.mode == stat.S_IFREG | 0o754 and f.acl_access is None  # sgid dropped: not in group
    full = [(ACL_USER_OBJ, 6, UNDEF), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 4, UNDEF),
            (ACL_MASK, 5, UNDEF), (ACL_OTHER, 0, UNDEF)]
    fs.setxattr(f.ino, ACCESS, acl(*full), 0, ALICE)
    assert f.mode & 0o777 == 0o650
    fs.setattr(f.ino, ALICE, mode=0o741)
    synced = [(ACL_USER_OBJ, 7, UNDEF), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 4, UNDEF),
              (ACL_MASK, 4, UNDEF), (ACL_OTHER, 1, UNDEF)]
    assert fs.getxattr(f.ino, ACCESS, ROOT) == acl(*synced)


def test_acl_permission_checks(fs: Filesystem) -> None:
    f = new_file(fs, b"f", 0o600, ALICE)
    fs.setxattr(f.ino, ACCESS, acl((ACL_USER_OBJ, 6, 0), (ACL_USER, 6, 1001), (ACL_GROUP_OBJ, 0, 0),
                                   (ACL_GROUP, 4, 1002), (ACL_MASK, 4, 0), (ACL_OTHER, 0, 0)), 0, ALICE)
    fs.access(f.ino, os.R_OK, BOB)  # named user, limited by the mask
    with fails(errno.EACCES):
        fs.access(f.ino, os.W_OK, BOB)
    fs.access(f.ino, os.R_OK, CAROL)  # named group
    with fails(errno.EACCES):
        fs.access(f.ino, os.R_OK, Cred(9, 9))
    fs.setattr(f.ino, ALICE, mode=0o604)  # mask 0: no ACL check, group/other mode bits decide
    fs.access(f.ino, os.R_OK, Cred(9, 9))
    fs.access(f.ino, os.R_OK, BOB)  # bob is not in the owning group (1000): "other"
    fs.setattr(f.ino, ROOT, gid=1001)
    with fails(errno.EACCES):
        fs.access(f.ino, os.R_OK, BOB)


def test_default_acl_inheritance(fs: Filesystem) -> None:
    d = fs.mkdir(ROOT_INO, b"d", 0o777, ALICE)
    default = acl((ACL_USER_OBJ, 7, UNDEF), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 5, UNDEF),
                  (ACL_MASK, 7, UNDEF), (ACL_OTHER, 5, UNDEF))
    fs.setxattr(d.ino, DEFAULT, default, 0, ALICE)
    f, _ = fs.create(d.ino, b"f", 0o640, os.O_RDWR, ALICE, umask=0o077)  # umask ignored
    assert f.mode & 0o777 == 0o640
    assert fs.getxattr(f.ino, ACCESS, ALICE) == acl(
        (ACL_USER_OBJ, 6, UNDEF), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 5, UNDEF), (ACL_MASK, 4, UNDEF),
        (ACL_OTHER, 0, UNDEF))
    sub = fs.mkdir(d.ino, b"sub", 0o755, ALICE, umask=0o077)
    assert sub.mode & 0o777 == 0o755 and fs.getxattr(sub.ino, DEFAULT, ALICE) == default
    link = fs.symlink(d.ino, b"l", b"x", ALICE)
    assert link.acl_access is None
    minimal = fs.mkdir(ROOT_INO, b"m", 0o777, ALICE)
    fs.setxattr(minimal.ino, DEFAULT, acl((ACL_USER_OBJ, 7, 0), (ACL_GROUP_OBJ, 0, 0), (ACL_OTHER, 0, 0)),
                0, ALICE)
    g = fs.mkdir(minimal.ino, b"g", 0o777, ALICE, umask=0o022)
    assert g.mode & 0o777 == 0o700 and g.acl_access is None and g.acl_default is not None


# -- fallocate, lseek, copy_file_range -----------------------------------------
def test_fallocate_and_seek(fs: Filesystem) -> None:
    node, fh = fs.create(ROOT_INO, b"f", 0o644, os.O_RDWR, ROOT)
    fs.write(fh, 10000, b"x")
    assert fs.lseek(fh, 0, os.SEEK_DATA) == 8192 and fs.lseek(fh, 8192, os.SEEK_HOLE) == 10001
    assert fs.lseek(fh, 0, os.SEEK_HOLE) == 0
    with fails(errno.ENXIO):
        fs.lseek(fh, 10001, os.SEEK_DATA)
    with fails(errno.ENXIO):
        fs.lseek(fh, -1, os.SEEK_HOLE)
    with fails(errno.EINVAL):
        fs.lseek(fh, 0, os.SEEK_END)
    fs.fallocate(fh, 0, 20000, 100)
    assert node.size == 20100 and node.blocks == 16
    with fails(errno.ENXIO):  # reserved pages are holes, as on tmpfs
        fs.lseek(fh, 12288, os.SEEK_DATA)
    fs.fallocate(fh, FALLOC_FL_KEEP_SIZE, 30000, 100)
    assert node.size == 20100
    fs.write(fh, 0, b"a" * 12288)
    fs.fallocate(fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 4096)
    assert fs.read(fh, 0, 4300) == b"a" * 100 + bytes(4096) + b"a" * 104
    assert fs.lseek(fh, 0, os.SEEK_HOLE) == 12288  # partial pages stay data
    fs.fallocate(fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096)
    assert fs.lseek(fh, 0, os.SEEK_HOLE) == 4096 and fs.lseek(fh, 4096, os.SEEK_DATA) == 8192
    fs.fallocate(fh, FALLOC_FL_ZERO_RANGE, 20000, 1000)
    assert node.size == 21000 and fs.read(fh, 20000, 1000) == bytes(1000)
    for mode, code in ((FALLOC_FL_PUNCH_HOLE, errno.EOPNOTSUPP), (0x08, errno.EOPNOTSUPP)):
        with fails(code):
            fs.fallocate(fh, mode, 0, 1)
    with fails(errno.EINVAL):
        fs.fallocate(fh, 0, 0, 0)
    ro = fs.open(node.ino, os.O_RDONLY, ROOT)
    with fails(errno.EBADF):
        fs.fallocate(ro, 0, 0, 1)


def test_copy_file_range(fs: Filesystem) -> None:
    _, a = fs.create(ROOT_INO, b"a", 0o644, os.O_RDWR, ROOT)
    fs.write(a, 0, b"0123456789")
    dst, b = fs.create(ROOT_INO, b"b", 0o644, os.O_RDWR, ROOT)
    assert fs.copy_file_range(a, 2, b, 5, 100) == 8
    assert fs.read(b, 0, 20) == bytes(5) + b"23456789"
    assert fs.copy_file_range(a, 50, b, 0, 10) == 0
    with fails(errno.EINVAL):
        fs.copy_file_range(a, 0, a, 5, 10)
    assert fs.copy_file_range(a, 0, a, 10, 10) == 10
    appender = fs.open(dst.ino, os.O_WRONLY | os.O_APPEND, ROOT)
    with fails(errno.EBADF):
        fs.copy_file_range(a, 0, appender, 0, 1)
    ro = fs.open(dst.ino, os.O_RDONLY, ROOT)
    with fails(errno.EBADF):
        fs.copy_file_range(a, 0, ro, 0, 1)


# -- locks ---------------------------------------------------------------------
def test_posix_locks_split_merge_and_conflicts(fs: Filesystem) -> None:
    node, fh = fs.create(ROOT_INO, b"f", 0o666, os.O_RDWR, ROOT)
    fs.setlk(fh, 1, 0, 99, F_WRLCK, pid=11)
    fs.setlk(fh, 1, 40, 49, F_UNLCK)
    assert fs.getlk(fh, 2, 0, OFFSET_MAX, F_RDLCK) == (0, 39, F_WRLCK, 11)
    assert fs.getlk(fh, 2, 40, 49, F_WRLCK)[2] == F_UNLCK
    assert fs.getlk(fh, 1, 0, 99, F_WRLCK)[2] == F_UNLCK  # own locks never conflict
    with pytest.raises(LockWouldBlock) as info:
        fs.setlk(fh, 2, 45, 55, F_RDLCK, wait=True)
    assert info.value.errno == errno.EAGAIN and info.value.wait
    fs.setlk(fh, 1, 40, 49, F_WRLCK)  # merges back into one range
    assert [(r.start, r.end) for r in fs.locks[node.ino].posix] == [(0, 99)]
    fs.setlk(fh, 1, 0, 99, F_RDLCK)
    fs.setlk(fh, 2, 50, OFFSET_MAX, F_RDLCK)
    assert fs.getlk(fh, 3, 60, 60, F_WRLCK)[:3] == (0, 99, F_RDLCK)
    fs.flush(fh, lock_owner=1)
    assert fs.getlk(fh, 3, 60, 60, F_WRLCK)[:3] == (50, OFFSET_MAX, F_RDLCK)
    with fails(errno.EINVAL):
        fs.setlk(fh, 1, 10, 5, F_RDLCK)
    ro = fs.open(node.ino, os.O_RDONLY, ROOT)
    with fails(errno.EBADF):
        fs.setlk(ro, 4, 0, 0, F_WRLCK)


def test_flock(fs: Filesystem) -> None:
    node, one = fs.create(ROOT_INO, b"f", 0o666, os.O_RDWR, ROOT)
    two = fs.open(node.ino, os.O_RDWR, ROOT)
    fs.flock(one, 1, F_RDLCK)
    fs.flock(two, 2, F_RDLCK)
    with pytest.raises(LockWouldBlock):
        fs.flock(one, 1, F_WRLCK)  # a failed conversion loses the shared lock, as on Linux
    fs.flock(two, 2, F_WRLCK)
    with pytest.raises(LockWouldBlock):
        fs.flock(one, 1, F_RDLCK)
    fs.release(two)
    fs.flock(one, 1, F_WRLCK)
    fs.flock(one, 1, F_UNLCK)


# -- the differential tests against tmpfs --------------------------------------
AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
CLOCK_REALTIME_COARSE = 5
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _ok(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def renameat2(src: str, dst: str, flags: int) -> None:
    _ok(_libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)))


def _timespec(spec: str | int) -> Timespec:
    if spec == "now":
        return Timespec(0, UTIME_NOW)
    if spec == "omit":
        return Timespec(0, UTIME_OMIT)
    return Timespec(*divmod(int(spec), 10**9))


def lutimens(path: str, atime: str | int, mtime: str | int) -> None:
    times = (Timespec * 2)(_timespec(atime), _timespec(mtime))
    _ok(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, AT_SYMLINK_NOFOLLOW))


def faccess(path: str, mask: int) -> None:
    _ok(_libc.faccessat(AT_FDCWD, os.fsencode(path), mask, 0))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _ok(_libc.fallocate(fd, mode, offset, length))


Outcome = tuple[str, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as exc:  # FsError too
        return ("err", errno.errorcode.get(exc.errno or 0, exc.errno))


def as_user(cred: Cred, umask: int, fn: Callable[[], Any]) -> Outcome:
    """Run ``fn`` with ``cred``'s ids and ``umask``: in this process for root, else in a fork."""
    if cred.root:
        old = os.umask(umask)
        try:
            return outcome(fn)
        finally:
            os.umask(old)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups(list(cred.groups))
            os.setresgid(cred.gid, cred.gid, cred.gid)
            os.setresuid(cred.uid, cred.uid, cred.uid)
            os.umask(umask)
            result: Outcome = outcome(fn)
        except BaseException as exc:
            result = ("crash", repr(exc))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pickle.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)  # type: ignore[no-any-return]


class Skip(Exception):
    """The operation would open a FIFO, socket or device: left out."""


def m_parent(fs: Filesystem, path: str, cred: Cred) -> tuple[int, bytes]:
    """Path resolution as the kernel does it, on the model (every symlink here dangles)."""
    parts = path.encode().split(b"/")
    ino = ROOT_INO
    for part in parts[:-1]:
        node = fs.lookup(ino, part, cred)
        if stat.S_ISLNK(node.mode):
            raise FsError(errno.ENOENT)
        ino = node.ino
    fs.lookup(ino, b".", cred)  # the walk checks search permission before the last name
    return ino, parts[-1]


def m_resolve(fs: Filesystem, path: str, cred: Cred, follow: bool = False) -> Inode:
    parent, name = m_parent(fs, path, cred)
    node = fs.lookup(parent, name, cred)
    if follow and stat.S_ISLNK(node.mode):
        raise FsError(errno.ENOENT)
    return node


def special(node: Inode) -> bool:
    """FIFOs, sockets and devices: opening them on tmpfs is not the filesystem's business."""
    return not (node.is_reg or node.is_dir or stat.S_ISLNK(node.mode))


NAMES = ("a", "b", "c")
PATHS = [*NAMES, *(f"{x}/{y}" for x in NAMES for y in NAMES), "a/a/a", "a/b/c", "b/a/a"]
IDS = (1000, 1001, 1002)
paths = st.sampled_from(PATHS)
users = st.sampled_from(sorted(USERS))
umasks = st.sampled_from([0, 0o022, 0o077, 0o002])
modes = st.one_of(st.sampled_from([0o777, 0o755, 0o700, 0o644, 0o666, 0o600, 0o1777, 0o2775, 0o6777]),
                  st.integers(0, 0o7777))
offsets = st.sampled_from([0, 1, 100, 4095, 4096, 5000, 8192, 12000])
EXPLICIT_TIMES = (0, 10**9 + 5, 1_234_567_890_123_456_789)
times = st.sampled_from(["now", "omit", *EXPLICIT_TIMES])
XATTR_NAMES = ["user.a", "user.b", "trusted.t", "security.s"]
owners = st.tuples(st.sampled_from([-1, 0, *IDS]), st.sampled_from([-1, 0, *IDS])).filter(
    lambda ids: ids != (-1, -1))  # chown(-1, -1) is a VFS-only special case
falloc_modes = st.sampled_from([0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE])
xattr_flags = st.sampled_from([0, 0, XATTR_CREATE, XATTR_REPLACE])


@st.composite
def acl_values(draw: st.DrawFn, damaged: bool = True) -> bytes:
    """Mostly valid ACLs (named users and groups, maybe repeated), sometimes damaged ones."""
    perm = st.integers(0, 7)
    named_users = draw(st.lists(st.tuples(st.just(ACL_USER), perm, st.sampled_from(IDS)), max_size=2))
    named_groups = draw(st.lists(st.tuples(st.just(ACL_GROUP), perm, st.sampled_from(IDS)), max_size=2))
    entries = [(ACL_USER_OBJ, draw(perm), UNDEF), *named_users, (ACL_GROUP_OBJ, draw(perm), UNDEF),
               *named_groups]
    mask: bool = draw(st.booleans())
    if named_users or named_groups or mask:
        entries.append((ACL_MASK, draw(perm), UNDEF))
    entries.append((ACL_OTHER, draw(perm), UNDEF))
    damage = draw(st.sampled_from(["none"] * 8 + ["swap", "drop", "perm", "version", "cut", "header"]
                                  if damaged else ["none"]))
    if damage == "swap":
        entries[0], entries[-1] = entries[-1], entries[0]
    elif damage == "drop":
        del entries[draw(st.integers(0, len(entries) - 1))]
    elif damage == "perm":
        entries[0] = (ACL_USER_OBJ, 9, UNDEF)
    value = acl(*entries, version=1 if damage == "version" else 2)
    if damage == "cut":
        value = value[:-3]
    elif damage == "header":
        value = value[:4]
    return value


xattrs = st.one_of(
    st.tuples(st.sampled_from(XATTR_NAMES), st.binary(max_size=6)),
    st.tuples(st.sampled_from([ACCESS.decode(), DEFAULT.decode()]), acl_values()),
)


@pytest.fixture(scope="module")
def tmpfs() -> Iterator[Path]:
    """A tmpfs of this kernel, mounted for these tests (needs root)."""
    require(os.geteuid() == 0, "mounting tmpfs and switching users need root")
    where = Path(tempfile.mkdtemp(prefix="fusecheck-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True)
    try:
        require(mounted.returncode == 0, f"mount -t tmpfs failed: {mounted.stderr.strip()}")
        yield where
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def real_snapshot(base: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def visit(rel: str) -> None:
        full = os.path.join(base, rel) if rel else str(base)
        st_ = os.lstat(full)
        entry: dict[str, Any] = {
            "mode": oct(st_.st_mode), "nlink": st_.st_nlink, "size": st_.st_size, "uid": st_.st_uid,
            "gid": st_.st_gid, "rdev": st_.st_rdev, "ino": st_.st_ino,
            "times": (st_.st_mtime_ns, st_.st_ctime_ns),
            "xattrs": [(n.encode(), os.getxattr(full, n, follow_symlinks=False))
                       for n in os.listxattr(full, follow_symlinks=False)],
        }
        if stat.S_ISREG(st_.st_mode):
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                entry["data"] = os.pread(fd, st_.st_size + 1, 0)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(st_.st_mode):
            entry["data"] = os.fsencode(os.readlink(full))
        out[rel] = entry
        if stat.S_ISDIR(st_.st_mode):
            children = sorted(os.listdir(full))
            entry["data"] = children
            for name in children:
                visit(f"{rel}/{name}" if rel else name)

    visit("")
    return out


def model_snapshot(fs: Filesystem) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def visit(rel: str, node: Inode, parent: int) -> None:
        entry: dict[str, Any] = {
            "mode": oct(node.mode), "nlink": node.nlink, "size": node.size, "uid": node.uid,
            "gid": node.gid, "rdev": node.rdev, "ino": node.ino, "times": (node.mtime, node.ctime),
            "xattrs": [(n, fs.getxattr(node.ino, n, ROOT)) for n in fs.listxattr(node.ino, ROOT)],
        }
        if node.is_reg:
            fh = fs.open(node.ino, os.O_RDONLY, ROOT)
            entry["data"] = fs.read(fh, 0, node.size + 1)
            fs.release(fh)
        elif stat.S_ISLNK(node.mode):
            entry["data"] = fs.readlink(node.ino)
        out[rel] = entry
        if node.is_dir:
            fh = fs.opendir(node.ino, ROOT)
            listing = fs.readdir(fh, 0)
            fs.releasedir(fh)
            assert listing[0][:2] == (b".", node.ino) and listing[1][:2] == (b"..", parent)
            children = {name.decode(): ino for name, ino, _, _ in listing[2:]}
            entry["data"] = sorted(children)
            for name, ino in sorted(children.items()):
                visit(f"{rel}/{name}" if rel else name, fs.getattr(ino), node.ino)

    visit("", fs.getattr(ROOT_INO), ROOT_INO)
    return out


def coarse_now() -> int:
    """CLOCK_REALTIME_COARSE: never later than a timestamp tmpfs hands out afterwards."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def linked(snapshot: dict[str, dict[str, Any]]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for path, entry in snapshot.items():
        groups.setdefault(entry["ino"], set()).add(path)
    return {frozenset(g) for g in groups.values()}


class TmpfsDifferential(RuleBasedStateMachine):
    """Each rule runs one operation on the model and on tmpfs; the trees must stay the same."""

    mount: ClassVar[Path]

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(dir=self.mount))
        os.chmod(self.base, 0o777)
        self.fs = Filesystem(clock=Clock(), root_mode=0o40777)
        self.previous = (real_snapshot(self.base), model_snapshot(self.fs))
        self.started = coarse_now()

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def real(self, path: str) -> str:
        return os.path.join(self.base, path)

    def ino(self, path: str, cred: Cred, follow: bool = False) -> int:
        return m_resolve(self.fs, path, cred, follow).ino

    def pick(self, data: st.DataObject, label: str, fresh: bool = False, xattrs: bool = False) -> str:
        """Mostly a path that exists (with xattrs, for ``xattrs``); for ``fresh``, mostly a new name
        in an existing directory."""
        tree = self.previous[1]
        existing = sorted(p for p in tree if p)
        dirs = [p for p in sorted(tree) if stat.S_ISDIR(int(tree[p]["mode"], 8)) and p.count("/") < 2]
        new = [f"{d}/{n}" if d else n for d in dirs for n in NAMES if (f"{d}/{n}" if d else n) not in tree]
        choices = (new * 4 + existing * 2 + PATHS) if fresh else (existing * 6 + PATHS)
        if xattrs:
            choices += [p for p in existing if tree[p]["xattrs"]] * 12
        return data.draw(st.sampled_from(choices), label=label)

    def same(self, user: str, umask: int, real: Callable[[], Any], model: Callable[[Cred], Any]) -> None:
        cred = USERS[user]
        try:
            expected = outcome(lambda: model(cred))
        except Skip:
            return
        got = as_user(cred, umask, real)
        assert got == expected, f"tmpfs {got} != model {expected} as {user}"

    @initialize(dmode=st.sampled_from([0o777, 0o1777, 0o2777, 0o755, 0o750]),
                fmode=st.sampled_from([0o666, 0o644, 0o640, 0o6755, 0o2764, 0o600]), owner=users,
                acls=st.tuples(st.none() | acl_values(damaged=False), st.none() | acl_values(damaged=False)))
    def seed(self, dmode: int, fmode: int, owner: str, acls: tuple[bytes | None, bytes | None]) -> None:
        """A directory (maybe with a default ACL) and two files with data (one maybe with an
        access ACL), made by ``owner``."""
        default, access = acls
        self.same(owner, 0, lambda: os.mkdir(self.real("a"), dmode),
                  lambda cred: self.fs.mkdir(ROOT_INO, b"a", dmode, cred) and None)
        if default is not None:
            self.seed_acl("a", DEFAULT, default)
        for path in ("b", "a/c"):
            def real(path: str = path) -> None:
                fd = os.open(self.real(path), os.O_CREAT | os.O_WRONLY, fmode)
                os.write(fd, b"seed" * 1000)
                os.close(fd)

            def model(cred: Cred, path: str = path) -> None:
                _, fh = self.fs.create(*m_parent(self.fs, path, cred), fmode, os.O_WRONLY, cred)
                self.fs.write(fh, 0, b"seed" * 1000)
                self.fs.release(fh)

            self.same(owner, 0, real, model)
        if access is not None:
            self.seed_acl("b", ACCESS, access)

    def seed_acl(self, path: str, name: bytes, value: bytes) -> None:
        def model(cred: Cred) -> None:
            self.fs.setxattr(self.ino(path, cred), name, value, 0, cred)

        self.same("root", 0, partial(os.setxattr, self.real(path), name, value), model)

    # -- names
    @rule(data=st.data(), mode=modes, umask=umasks, user=users, excl=st.booleans())
    def create(self, data: st.DataObject, mode: int, umask: int, user: str, excl: bool) -> None:
        path = self.pick(data, "path", fresh=True)
        flags = os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | (os.O_EXCL if excl else 0)

        def model(cred: Cred) -> None:
            parent, name = m_parent(self.fs, path, cred)
            existing = self.fs.inodes[parent].entries.get(name) if parent in self.fs.inodes else None
            if existing is not None and not excl and special(self.fs.inodes[existing]):
                raise Skip
            _, fh = self.fs.create(parent, name, mode, flags, cred, umask)
            self.fs.release(fh)

        self.same(user, umask, lambda: os.close(os.open(self.real(path), flags | os.O_NONBLOCK, mode)), model)

    @rule(data=st.data(), mode=modes, umask=umasks, user=users)
    def mkdir(self, data: st.DataObject, mode: int, umask: int, user: str) -> None:
        path = self.pick(data, "path", fresh=True)
        self.same(user, umask, lambda: os.mkdir(self.real(path), mode),
                  lambda cred: self.fs.mkdir(*m_parent(self.fs, path, cred), mode, cred, umask) and None)

    @rule(data=st.data(), kind=st.sampled_from([stat.S_IFIFO, stat.S_IFCHR, stat.S_IFSOCK, stat.S_IFREG]),
          mode=modes, umask=umasks, user=users)
    def mknod(self, data: st.DataObject, kind: int, mode: int, umask: int, user: str) -> None:
        path = self.pick(data, "path", fresh=True)
        dev = os.makedev(1, 7) if kind == stat.S_IFCHR else 0

        def model(cred: Cred) -> None:
            self.fs.mknod(*m_parent(self.fs, path, cred), kind | mode, dev, cred, umask)

        self.same(user, umask, lambda: os.mknod(self.real(path), kind | mode, dev), model)

    @rule(data=st.data(), suffix=st.sampled_from(["x", "y" * 30]), user=users)
    def symlink(self, data: st.DataObject, suffix: str, user: str) -> None:
        path = self.pick(data, "path", fresh=True)
        target = "/nonexistent-fusecheck/" + suffix
        self.same(user, 0, lambda: os.symlink(target, self.real(path)),
                  lambda cred: self.fs.symlink(*m_parent(self.fs, path, cred), os.fsencode(target), cred)
                  and None)

    @rule(data=st.data(), user=users)
    def link(self, data: st.DataObject, user: str) -> None:
        src, dst = self.pick(data, "src"), self.pick(data, "dst", fresh=True)
        self.same(user, 0, lambda: os.link(self.real(src), self.real(dst), follow_symlinks=False),
                  lambda cred: self.fs.link(self.ino(src, cred), *m_parent(self.fs, dst, cred), cred)
                  and None)

    @rule(data=st.data(), user=users)
    def unlink(self, data: st.DataObject, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: os.unlink(self.real(path)),
                  lambda cred: self.fs.unlink(*m_parent(self.fs, path, cred), cred))

    @rule(data=st.data(), user=users)
    def rmdir(self, data: st.DataObject, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: os.rmdir(self.real(path)),
                  lambda cred: self.fs.rmdir(*m_parent(self.fs, path, cred), cred))

    @rule(data=st.data(), flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]), user=users)
    def rename(self, data: st.DataObject, flags: int, user: str) -> None:
        src, dst = self.pick(data, "src"), self.pick(data, "dst", fresh=True)

        def model(cred: Cred) -> None:
            parent, name = m_parent(self.fs, src, cred)
            self.fs.rename(parent, name, *m_parent(self.fs, dst, cred), cred, flags)

        self.same(user, 0, lambda: renameat2(self.real(src), self.real(dst), flags), model)

    # -- attributes
    @rule(data=st.data(), mode=modes, user=users)
    def chmod(self, data: st.DataObject, mode: int, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: os.chmod(self.real(path), mode),
                  lambda cred: self.fs.setattr(self.ino(path, cred, follow=True), cred, mode=mode) and None)

    @rule(data=st.data(), ids=owners, user=users)
    def chown(self, data: st.DataObject, ids: tuple[int, int], user: str) -> None:
        path = self.pick(data, "path")
        uid, gid = ids

        def model(cred: Cred) -> None:
            self.fs.setattr(self.ino(path, cred), cred, uid=None if uid < 0 else uid,
                            gid=None if gid < 0 else gid)

        self.same(user, 0, lambda: os.chown(self.real(path), uid, gid, follow_symlinks=False), model)

    @rule(data=st.data(), atime=times, mtime=times, user=users)
    def utimens(self, data: st.DataObject, atime: str | int, mtime: str | int, user: str) -> None:
        path = self.pick(data, "path")

        def model(cred: Cred) -> None:
            if atime == mtime == "omit":
                return  # the kernel returns before looking at the path
            self.fs.setattr(self.ino(path, cred), cred, atime=atime if isinstance(atime, int) else None,
                            mtime=mtime if isinstance(mtime, int) else None,
                            atime_now=atime == "now", mtime_now=mtime == "now")

        self.same(user, 0, lambda: lutimens(self.real(path), atime, mtime), model)

    @rule(data=st.data(), size=st.sampled_from([0, 1, 4096, 5000, 20000]), user=users)
    def truncate(self, data: st.DataObject, size: int, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: os.truncate(self.real(path), size),
                  lambda cred: self.fs.setattr(self.ino(path, cred, follow=True), cred, size=size) and None)

    @rule(data=st.data(), mask=st.integers(0, 7), user=users)
    def access(self, data: st.DataObject, mask: int, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: faccess(self.real(path), mask),
                  lambda cred: self.fs.access(self.ino(path, cred, follow=True), mask, cred))

    # -- data
    def with_fh(self, path: str, flags: int, cred: Cred, use: Callable[[int], Any]) -> Any:
        node = m_resolve(self.fs, path, cred)
        if special(node):
            raise Skip
        fh = self.fs.open(node.ino, flags, cred)
        try:
            return use(fh)
        finally:
            self.fs.release(fh)

    def with_fd(self, path: str, flags: int, use: Callable[[int], Any]) -> Any:
        fd = os.open(self.real(path), flags | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return use(fd)
        finally:
            os.close(fd)

    @rule(data=st.data(), offset=offsets, payload=st.binary(max_size=40), append=st.booleans(),
          trunc=st.booleans(), user=users)
    def write(self, data: st.DataObject, offset: int, payload: bytes, append: bool, trunc: bool,
              user: str) -> None:
        path = self.pick(data, "path")
        flags = os.O_WRONLY | (os.O_APPEND if append else 0) | (os.O_TRUNC if trunc else 0)
        self.same(user, 0, lambda: self.with_fd(path, flags, lambda fd: os.pwrite(fd, payload, offset)),
                  lambda cred: self.with_fh(path, flags, cred, lambda fh: self.fs.write(fh, offset, payload)))

    @rule(data=st.data(), offset=offsets, size=st.sampled_from([1, 10, 5000]), user=users)
    def read(self, data: st.DataObject, offset: int, size: int, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: self.with_fd(path, os.O_RDONLY, lambda fd: os.pread(fd, size, offset)),
                  lambda cred: self.with_fh(path, os.O_RDONLY, cred,
                                            lambda fh: self.fs.read(fh, offset, size)))

    @rule(data=st.data(), mode=falloc_modes, offset=offsets, length=st.sampled_from([1, 100, 4096, 9000]),
          user=users)
    def fallocate(self, data: st.DataObject, mode: int, offset: int, length: int, user: str) -> None:
        path = self.pick(data, "path")

        def model(cred: Cred) -> None:
            self.with_fh(path, os.O_WRONLY, cred, lambda fh: self.fs.fallocate(fh, mode, offset, length))

        self.same(user, 0, lambda: self.with_fd(path, os.O_WRONLY,
                                                lambda fd: fallocate(fd, mode, offset, length)), model)

    @rule(data=st.data(), whence=st.sampled_from([os.SEEK_DATA, os.SEEK_HOLE]), offset=offsets)
    def seek(self, data: st.DataObject, whence: int, offset: int) -> None:
        path = self.pick(data, "path")
        self.same("root", 0, lambda: self.with_fd(path, os.O_RDONLY, lambda fd: os.lseek(fd, offset, whence)),
                  lambda cred: self.with_fh(path, os.O_RDONLY, cred,
                                            lambda fh: self.fs.lseek(fh, offset, whence)))

    @rule(data=st.data(), off_in=offsets, off_out=offsets, length=st.sampled_from([1, 50, 10000]), user=users)
    def copy(self, data: st.DataObject, off_in: int, off_out: int, length: int, user: str) -> None:
        src, dst = self.pick(data, "src"), self.pick(data, "dst")

        def real() -> int:
            return self.with_fd(src, os.O_RDONLY, lambda fd_in: self.with_fd(
                dst, os.O_WRONLY, lambda fd_out: os.copy_file_range(fd_in, fd_out, length, off_in, off_out)))

        def model(cred: Cred) -> int:
            def copy_to(fh_in: int) -> int:
                return self.with_fh(  # type: ignore[no-any-return]
                    dst, os.O_WRONLY, cred,
                    lambda fh_out: self.fs.copy_file_range(fh_in, off_in, fh_out, off_out, length))

            return self.with_fh(src, os.O_RDONLY, cred, copy_to)  # type: ignore[no-any-return]

        self.same(user, 0, real, model)

    # -- xattrs
    @rule(data=st.data(), xattr=xattrs, flags=xattr_flags, user=users)
    def setxattr(self, data: st.DataObject, xattr: tuple[str, bytes], flags: int, user: str) -> None:
        path = self.pick(data, "path")
        name, value = xattr
        self.same(user, 0, lambda: os.setxattr(self.real(path), name, value, flags, follow_symlinks=False),
                  lambda cred: self.fs.setxattr(self.ino(path, cred), name.encode(), value, flags, cred))

    def xattr_name(self, data: st.DataObject, path: str) -> str:
        """Often a name the path has, else any."""
        present = [n.decode() for n, _ in self.previous[1].get(path, {}).get("xattrs", [])]
        return data.draw(st.sampled_from(present * 8 + [*XATTR_NAMES, ACCESS.decode(), DEFAULT.decode()]),
                         label="name")

    @rule(data=st.data(), user=users)
    def getxattr(self, data: st.DataObject, user: str) -> None:
        path = self.pick(data, "path", xattrs=True)
        name = self.xattr_name(data, path)
        self.same(user, 0, lambda: os.getxattr(self.real(path), name, follow_symlinks=False),
                  lambda cred: self.fs.getxattr(self.ino(path, cred), name.encode(), cred))

    @rule(data=st.data(), user=users)
    def removexattr(self, data: st.DataObject, user: str) -> None:
        path = self.pick(data, "path", xattrs=True)
        name = self.xattr_name(data, path)
        self.same(user, 0, lambda: os.removexattr(self.real(path), name, follow_symlinks=False),
                  lambda cred: self.fs.removexattr(self.ino(path, cred), name.encode(), cred))

    @rule(data=st.data(), user=users)
    def listxattr(self, data: st.DataObject, user: str) -> None:
        path = self.pick(data, "path")
        self.same(user, 0, lambda: [n.encode() for n in os.listxattr(self.real(path), follow_symlinks=False)],
                  lambda cred: self.fs.listxattr(self.ino(path, cred), cred))

    @invariant()
    def trees_match(self) -> None:
        real, model = real_snapshot(self.base), model_snapshot(self.fs)
        assert sorted(real) == sorted(model)
        for path in real:
            want = {k: v for k, v in real[path].items() if k not in ("ino", "times")}
            have = {k: v for k, v in model[path].items() if k not in ("ino", "times")}
            assert want == have, f"{path!r}: tmpfs {want} != model {have}"
        assert linked(real) == linked(model), "hard links differ"
        before_real, before_model = self.previous
        for path in real.keys() & before_real.keys():
            replaced = real[path]["ino"] != before_real[path]["ino"]
            assert replaced == (model[path]["ino"] != before_model[path]["ino"]), f"{path!r}: inode replaced?"
            if not replaced:
                self.times_match(path, real[path]["times"], before_real[path]["times"], model[path]["times"],
                                 before_model[path]["times"])
        self.previous = (real, model)
        self.started = coarse_now()

    def times_match(self, path: str, real: tuple[int, int], real_before: tuple[int, int],
                    model: tuple[int, int], model_before: tuple[int, int]) -> None:
        """By order: what the model left alone tmpfs left alone; an explicit time is that time; a
        time set to "now" is no older than the step's start (tmpfs stamps a step's changes with a
        coarse clock, so one may look unchanged when the last step set it in the same tick)."""
        for label, r, r0, m, m0 in zip(("mtime", "ctime"), real, real_before, model, model_before,
                                       strict=True):
            if m == m0:
                assert r == r0, f"{path!r}: {label} changed on tmpfs only"
            elif m in EXPLICIT_TIMES:
                assert r == m, f"{path!r}: {label} is {r} on tmpfs, {m} in the model"
            else:
                assert r >= self.started, f"{path!r}: {label} not updated on tmpfs ({r} < {self.started})"


def test_differential_against_tmpfs(tmpfs: Path) -> None:
    TmpfsDifferential.mount = tmpfs
    run_state_machine_as_test(TmpfsDifferential)


# -- POSIX locks against tmpfs (OFD locks: one owner per open file, in one process)
FLOCK = struct.Struct("@hhqqi4x")
lock_ops = st.lists(st.tuples(st.integers(0, 2), st.sampled_from([F_RDLCK, F_WRLCK, F_UNLCK]),
                              st.integers(0, 20), st.integers(0, 8)), max_size=25)


def ofd_getlk(fd: int, probe: int) -> tuple[int, ...]:
    """F_OFD_GETLK over the whole file: (F_UNLCK,) or (type, start, inclusive end)."""
    kind, _, start, length, _ = FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK,
                                                         FLOCK.pack(probe, os.SEEK_SET, 0, 0, 0)))
    return (kind,) if kind == F_UNLCK else (kind, start, OFFSET_MAX if length == 0 else start + length - 1)


def model_getlk(fs: Filesystem, fh: int, owner: int, probe: int) -> tuple[int, ...]:
    start, end, kind, _ = fs.getlk(fh, owner, 0, OFFSET_MAX, probe)
    return (kind,) if kind == F_UNLCK else (kind, start, end)


@given(ops=lock_ops)
def test_posix_locks_against_tmpfs(tmpfs: Path, ops: list[tuple[int, int, int, int]]) -> None:
    """Set, split, merge and conflicts of byte-range locks; F_GETLK reports the same lock."""
    fs = Filesystem(clock=Clock())
    node, first = fs.create(ROOT_INO, b"f", 0o666, os.O_RDWR, ROOT)
    handles = [first] + [fs.open(node.ino, os.O_RDWR, ROOT) for _ in range(2)]
    fd, path = tempfile.mkstemp(dir=tmpfs)
    os.close(fd)
    fds = [os.open(path, os.O_RDWR) for _ in range(3)]
    try:
        for owner, kind, start, length in ops:
            end = OFFSET_MAX if length == 0 else start + length - 1
            request = FLOCK.pack(kind, os.SEEK_SET, start, length, 0)
            real = outcome(partial(fcntl.fcntl, fds[owner], fcntl.F_OFD_SETLK, request))
            model = outcome(partial(fs.setlk, handles[owner], owner, start, end, kind))
            assert real[0] == model[0] and (real[0] == "ok" or real == model), (owner, kind, start, length)
            for probe_owner in range(3):
                for probe in (F_RDLCK, F_WRLCK):
                    assert ofd_getlk(fds[probe_owner], probe) == model_getlk(
                        fs, handles[probe_owner], probe_owner, probe), (probe_owner, probe)
    finally:
        for fd in fds:
            os.close(fd)
        os.unlink(path)


FLOCK_OPS = {F_RDLCK: fcntl.LOCK_SH, F_WRLCK: fcntl.LOCK_EX, F_UNLCK: fcntl.LOCK_UN}


@given(ops=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(sorted(FLOCK_OPS))), max_size=25))
def test_flock_against_tmpfs(tmpfs: Path, ops: list[tuple[int, int]]) -> None:
    """flock(LOCK_NB) from three open files: conflicts, conversions (a failed one loses the lock)."""
    fs = Filesystem(clock=Clock())
    node, first = fs.create(ROOT_INO, b"f", 0o666, os.O_RDWR, ROOT)
    handles = [first] + [fs.open(node.ino, os.O_RDWR, ROOT) for _ in range(2)]
    fd, path = tempfile.mkstemp(dir=tmpfs)
    os.close(fd)
    fds = [os.open(path, os.O_RDWR) for _ in range(3)]
    try:
        for owner, kind in ops:
            real = outcome(partial(fcntl.flock, fds[owner], FLOCK_OPS[kind] | fcntl.LOCK_NB))
            model = outcome(partial(fs.flock, handles[owner], owner, kind))
            assert real == model, (owner, kind)
    finally:
        for fd in fds:
            os.close(fd)
        os.unlink(path)


def fresh_dir(tmpfs: Path) -> str:
    where = tempfile.mkdtemp(dir=tmpfs)
    os.chmod(where, 0o777)
    return where


@given(mode=st.integers(0, 0o7777), owner=st.sampled_from([0, *IDS]), group=st.sampled_from([0, *IDS]),
       acl_value=st.none() | acl_values(damaged=False), is_dir=st.booleans())
def test_access_decisions_against_tmpfs(tmpfs: Path, mode: int, owner: int, group: int,
                                        acl_value: bytes | None, is_dir: bool) -> None:
    """generic_permission with mode bits or an access ACL: every user, every R/W/X mask."""
    path = os.path.join(fresh_dir(tmpfs), "x")
    fs = Filesystem(clock=Clock(), root_mode=0o40777)
    if is_dir:
        os.mkdir(path)
        node = fs.mkdir(ROOT_INO, b"x", 0o755, ROOT)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        node = new_file(fs, b"x")
    os.chown(path, owner, group)
    os.chmod(path, mode)
    fs.setattr(node.ino, ROOT, uid=owner, gid=group)
    fs.setattr(node.ino, ROOT, mode=mode)
    if acl_value is not None:
        os.setxattr(path, ACCESS, acl_value)
        fs.setxattr(node.ino, ACCESS, acl_value, 0, ROOT)
    assert oct(os.stat(path).st_mode) == oct(node.mode)
    for user, cred in USERS.items():
        real = as_user(cred, 0, lambda: [outcome(partial(faccess, path, mask)) for mask in range(8)])
        model = ("ok", [outcome(partial(fs.access, node.ino, mask, cred)) for mask in range(8)])
        assert real == model, user


MODE_OPS = ["chown", "chgrp", "write", "truncate", "open-trunc", "chmod", "acl"]


@given(mode=st.sampled_from([0o6755, 0o6745, 0o2755, 0o2745, 0o4755, 0o6777]) | st.integers(0, 0o7777),
       owner=st.sampled_from([0, *IDS]), group=st.sampled_from([0, *IDS]), actor=users,
       op=st.sampled_from(MODE_OPS), arg=st.sampled_from([0, *IDS]))
def test_privilege_bits_against_tmpfs(tmpfs: Path, mode: int, owner: int, group: int, actor: str, op: str,
                                      arg: int) -> None:
    """suid/sgid after chown, chgrp, write, truncate, O_TRUNC, chmod and an ACL, by any user."""
    path = os.path.join(fresh_dir(tmpfs), "x")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    os.chown(path, owner, group)
    os.chmod(path, mode)
    fs = Filesystem(clock=Clock(), root_mode=0o40777)
    node = new_file(fs, b"x")
    fs.setattr(node.ino, ROOT, uid=owner, gid=group)
    fs.setattr(node.ino, ROOT, mode=mode)
    cred = USERS[actor]
    minimal = acl((ACL_USER_OBJ, 7, UNDEF), (ACL_GROUP_OBJ, arg % 8, UNDEF), (ACL_OTHER, 5, UNDEF))

    def real() -> None:
        if op in ("chown", "chgrp"):
            os.chown(path, arg if op == "chown" else -1, arg if op == "chgrp" else -1)
        elif op in ("write", "open-trunc"):
            fd = os.open(path, os.O_WRONLY | (os.O_TRUNC if op == "open-trunc" else 0))
            os.write(fd, b"x")
            os.close(fd)
        elif op == "truncate":
            os.truncate(path, 1)
        elif op == "chmod":
            os.chmod(path, mode ^ arg)
        else:
            os.setxattr(path, ACCESS, minimal)

    def model() -> None:
        if op in ("chown", "chgrp"):
            fs.setattr(node.ino, cred, uid=arg if op == "chown" else None, gid=arg if op == "chgrp" else None)
        elif op in ("write", "open-trunc"):
            fh = fs.open(node.ino, os.O_WRONLY | (os.O_TRUNC if op == "open-trunc" else 0), cred)
            fs.write(fh, 0, b"x")
            fs.release(fh)
        elif op == "truncate":
            fs.setattr(node.ino, cred, size=1)
        elif op == "chmod":
            fs.setattr(node.ino, cred, mode=mode ^ arg)
        else:
            fs.setxattr(node.ino, ACCESS, minimal, 0, cred)

    assert as_user(cred, 0, real) == outcome(model)
    st_ = os.stat(path)
    assert (oct(st_.st_mode), st_.st_uid, st_.st_gid) == (oct(node.mode), node.uid, node.gid)
