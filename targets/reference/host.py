"""The reference server's second backend: a host directory, every operation passed through.

``HostFilesystem(source, acl=...)`` answers the calls the server's handlers make of the
in-memory model (``fs.Filesystem``), with the same signatures and return shapes, by doing
them on ``source``, so the host side can change the tree behind the server's back. It is
built like libfuse's passthrough_ll and virtiofsd: a table of the nodeids the kernel holds,
keyed by the host's (st_dev, st_ino), each with an ``O_PATH | O_NOFOLLOW`` fd and its lookup
count (FORGET closes the fd at zero); operations go through ``*at`` calls on those fds or
through ``/proc/self/fd/N``; a file handle is a real fd reopened from ``/proc/self/fd/N``.

A nodeid is the host's inode number (the root is 1; an inode of another device, or a number
in use, gets one from a high range), so ``st_ino`` and ``d_ino`` through the mount are the
host's. The kernel checks permissions (the mount uses default_permissions) and the server
runs as root, so what the kernel leaves to a FUSE server is done here explicitly, as the
model does it: new inodes belong to the caller (made by root, then chowned, with the
set-group-ID directory rule and ``umask`` applied here, FUSE_DONT_MASK), and suid/sgid are
dropped on chown, on writes and truncates by non-root openers, and on the kernel's
FATTR_KILL_SUIDGID / FUSE_WRITE_KILL_SUIDGID (root's own writes do not drop them on Linux).
Byte-range and flock locks live in memory (``fs_locks``), keyed by nodeid: only the mount
sees them. Directory listings are snapshots taken at OPENDIR (and again at a rewind to
offset 0), with offsets that are positions in the snapshot.

Like the model it expects one caller at a time (the server holds its lock around each call).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import resource
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from targets.reference import fs_acl
from targets.reference.fs_locks import LockOps, Locks
from targets.reference.fs_types import NAME_MAX, ROOT_INO, AccessMode, Cred, FsError, Inode, valid_name

AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW = 0x1000, 0x100
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
XATTR_CREATE, XATTR_REPLACE = 1, 2
ACL_NAMES = (fs_acl.ACCESS, fs_acl.DEFAULT)
#: open(2) flags that make no sense on a reopened fd: the kernel has created and resolved it
#: already; O_NOFOLLOW would refuse the /proc magic link; O_DIRECT needs aligned buffers.
DROPPED_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_NOFOLLOW | os.O_DIRECT
#: Nodeids for inodes whose host number cannot be used (another device, or taken).
SYNTHETIC_BASE = 0xFFFF_0000_0000_0000
NS = 1_000_000_000

P = ParamSpec("P")
R = TypeVar("R")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _ok(result: int) -> None:
    """A libc call's result: FsError with its errno when it failed."""
    if result != 0:
        raise FsError(ctypes.get_errno() or errno.EIO)


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    """The host's OSErrors become FsError with the same errno (what the server answers)."""
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FsError:
            raise
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO) from exc
    return call


def proc(fd: int) -> str:
    """The magic link that names what ``fd`` refers to (also O_PATH fds, deleted files)."""
    return f"/proc/self/fd/{fd}"


def encode_dev(dev: int) -> int:
    """A host dev_t as the kernel's new_encode_dev, the form fuse_attr.rdev and MKNOD use."""
    major, minor = os.major(dev), os.minor(dev)
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF


def decode_dev(dev: int) -> int:
    """new_decode_dev: MKNOD's rdev as a host dev_t."""
    return os.makedev((dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00))


def dropped_mode(mode: int, gid: int, cred: Cred, *, forced: bool) -> int:
    """The model's setattr_should_drop_suidgid: suid, and sgid when group-executable or the
    caller is outside ``gid``; for callers without CAP_FSETID (not root) on regular files,
    or ``forced`` (chown, the kernel's KILL_SUIDGID flags) on anything but a directory."""
    if stat.S_ISDIR(mode) or (not forced and (cred.root or not stat.S_ISREG(mode))):
        return mode
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP or not (cred.root or cred.in_group(gid)):
        mode &= ~stat.S_ISGID
    return mode


@contextlib.contextmanager
def _no_umask() -> Iterator[None]:
    """Create with exactly the mode given: the umask is applied here, not by the host."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@dataclass(eq=False)
class HostInode(Inode):
    """A host stat as the model's Inode (what the server's ``fuse_attr``/``entry`` read);
    ``blocks`` is the host's st_blocks. Built afresh for every reply."""

    st_blocks: int = 0

    @property
    def blocks(self) -> int:
        return self.st_blocks


@dataclass(eq=False)
class Node:
    """A nodeid the kernel holds: the host inode's O_PATH fd and the kernel's lookup count."""

    nodeid: int
    fd: int
    key: tuple[int, int]
    nlookup: int = 0


@dataclass(eq=False)
class HostHandle(AccessMode):
    """An open file or directory: a real host fd, and the flags the kernel asked for."""

    fd: int
    nodeid: int
    flags: int
    cred: Cred
    directory: bool = False
    entries: list[tuple[bytes, int, int]] | None = None  # directories: the snapshot
    error: int = 0  # directories: why the snapshot failed (readdir answers it)
    started: bool = False  # directories: read at least once (a later offset 0 is a rewind)
    special: bool = False  # a FIFO, socket or device: an O_PATH fd, never opened for I/O here



class HostFilesystem(LockOps):
    """``source`` served through the model's interface; ``acl``: POSIX ACLs are in use (as
    FUSE_POSIX_ACL); ``writeback``: the kernel caches writes (it then reads through
    write-only handles and does O_APPEND itself)."""

    def __init__(self, source: str | os.PathLike[str], *, acl: bool = False, writeback: bool = False) -> None:
        self.source = Path(source)
        self.acls = acl
        self.writeback = writeback
        _raise_fd_limit()
        fd = os.open(self.source, os.O_PATH | os.O_DIRECTORY)
        st = os.fstat(fd)
        root = Node(ROOT_INO, fd, (st.st_dev, st.st_ino), nlookup=1)
        self.root_dev = st.st_dev
        self.nodes: dict[int, Node] = {ROOT_INO: root}
        self.by_key: dict[tuple[int, int], int] = {root.key: ROOT_INO}
        self.handles: dict[int, HostHandle] = {}
        self.locks: dict[int, Locks] = {}
        self.next_fh = 1
        self.next_synthetic = SYNTHETIC_BASE
        #: (parent, name) -> the nodeid a LOOKUP answered, when a watcher asks (targets.reference.notify)
        self.names: dict[tuple[int, bytes], int] | None = None
        #: called with each new node, under the server's lock (a watcher watches directories)
        self.on_new_node: Callable[[Node], None] | None = None
        #: (parent, name) -> times the server itself made, removed or renamed that name, when a
        #: watcher asks: its inotify events are the kernel's own doing, not news for it
        self.own_names: dict[tuple[int, bytes], list[float]] | None = None

    def close(self) -> None:
        """Close every fd (handles, then nodes, the root too): the filesystem is done."""
        for handle in self.handles.values():
            with contextlib.suppress(OSError):
                os.close(handle.fd)
        for node in self.nodes.values():
            with contextlib.suppress(OSError):
                os.close(node.fd)
        self.handles.clear()
        self.nodes.clear()
        self.by_key.clear()

    # -- the node table ----------------------------------------------------
    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _nodeid_for(self, key: tuple[int, int]) -> int:
        """The host inode number, unless it is of another device or already taken."""
        dev, ino = key
        if dev == self.root_dev and ino > ROOT_INO and ino not in self.nodes:
            return ino
        while self.next_synthetic in self.nodes:
            self.next_synthetic += 1
        self.next_synthetic += 1
        return self.next_synthetic - 1

    def _ino_hint(self, dev: int, ino: int) -> int:
        """What readdir reports as an entry's inode number: its nodeid when known."""
        return self.by_key.get((dev, ino), ino)

    def _entry(self, fd: int) -> HostInode:
        """Take ``fd`` (an O_PATH fd, ours now) as a reference the kernel gets: its node's
        lookup count goes up by one; a known inode keeps its first fd."""
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        key = (st.st_dev, st.st_ino)
        nodeid = self.by_key.get(key)
        if nodeid is not None:
            os.close(fd)
            node = self.nodes[nodeid]
        else:
            node = Node(self._nodeid_for(key), fd, key)
            self.nodes[node.nodeid] = node
            self.by_key[key] = node.nodeid
            if self.on_new_node is not None and stat.S_ISDIR(st.st_mode):
                self.on_new_node(node)
        node.nlookup += 1
        return self._inode(node.nodeid, st)

    @staticmethod
    def _inode(nodeid: int, st: os.stat_result) -> HostInode:
        return HostInode(ino=nodeid, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, nlink=st.st_nlink,
                         rdev=encode_dev(st.st_rdev) if st.st_rdev else 0, size=st.st_size,
                         atime=wire_time(st.st_atime_ns), mtime=wire_time(st.st_mtime_ns),
                         ctime=wire_time(st.st_ctime_ns),
                         st_blocks=st.st_blocks)

    _valid_name = staticmethod(valid_name)

    def _handle(self, fh: int, *, directory: bool = False) -> HostHandle:
        handle = self.handles.get(fh)
        if handle is None or handle.directory != directory:
            raise FsError(errno.EBADF)
        return handle

    def _new_handle(self, handle: HostHandle) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = handle
        return fh

    # -- names -------------------------------------------------------------
    @_translated
    def lookup(self, parent: int, name: bytes, cred: Cred) -> HostInode:
        """The inode ``name`` names in ``parent`` (its lookup count goes up by one); '..' of
        the root is the root."""
        directory = self._node(parent)
        if name == b"." or (name == b".." and parent == ROOT_INO):
            fd = os.open(proc(directory.fd), os.O_PATH)
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise FsError(errno.ENOTDIR)
            return self._entry(fd)
        if name != b"..":
            self._valid_name(name)
        found = self._entry(os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=directory.fd))
        if self.names is not None and name != b"..":
            self.names[(parent, bytes(name))] = found.ino
        return found

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel drops ``nlookup`` references; at none the fd is closed."""
        node = self.nodes.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.nlookup = max(0, node.nlookup - nlookup)
        if node.nlookup == 0:
            del self.nodes[ino]
            del self.by_key[node.key]
            os.close(node.fd)
            if not any(h.nodeid == ino for h in self.handles.values()):
                self.locks.pop(ino, None)

    @_translated
    def getattr(self, ino: int) -> HostInode:
        return self._inode(ino, os.fstat(self._node(ino).fd))

    @_translated
    def readlink(self, ino: int) -> bytes:
        return os.readlink(b"", dir_fd=self._node(ino).fd)

    def _has_default_acl(self, directory: Node) -> bool:
        try:
            os.getxattr(proc(directory.fd), fs_acl.DEFAULT)
        except OSError:
            return False
        return True

    def _new_mode(self, directory: Node, mode: int, cred: Cred, umask: int) -> tuple[int, int]:
        """The permission bits and group of a new inode in ``directory`` (inode_init_owner with
        the set-group-ID directory rule, then the umask unless a default ACL applies: then the
        host applies the ACL to the bits given)."""
        kind = stat.S_IFMT(mode)
        perms = mode & (0o1777 if kind == stat.S_IFDIR else 0o7777)
        st = os.fstat(directory.fd)
        if not stat.S_ISDIR(st.st_mode):
            raise FsError(errno.ENOTDIR)
        gid = cred.gid
        if st.st_mode & stat.S_ISGID:
            gid = st.st_gid
            if kind == stat.S_IFDIR:
                perms |= stat.S_ISGID
            elif perms & 0o2010 == 0o2010 and not (cred.root or cred.in_group(st.st_gid)):
                perms &= ~stat.S_ISGID
        if kind != stat.S_IFLNK and not (self.acls and self._has_default_acl(directory)):
            perms &= ~umask
        return perms, gid

    def _own(self, fd: int, cred: Cred, gid: int, perms: int) -> None:
        """Give a new inode (made by root, without special bits) to the caller, then its
        suid/sgid/sticky bits (a chown by root would have dropped them)."""
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (cred.uid, gid):
            _ok(_libc.fchownat(fd, b"", cred.uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
            st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            return
        want = (st.st_mode & 0o777) | (perms & 0o7000)
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(proc(fd), want)

    def _mark_own(self, parent: int, name: bytes) -> None:
        """Note a change of ``name`` in ``parent`` the server has just made for the kernel (see
        own_names); made after the change, under the lock the watcher takes to read its events."""
        if self.own_names is not None:
            self.own_names.setdefault((parent, bytes(name)), []).append(time.monotonic())

    def _make(self, parent: int, name: bytes, mode: int, cred: Cred, umask: int,
              create: Callable[[int, int], None]) -> HostInode:
        """A new entry: ``create(dir_fd, permission bits)`` makes it as root, then it is the caller's."""
        directory = self._node(parent)
        if name in (b".", b".."):
            raise FsError(errno.EEXIST)
        self._valid_name(name)
        perms, gid = self._new_mode(directory, mode, cred, umask)
        with _no_umask():
            create(directory.fd, perms & 0o777)
        self._mark_own(parent, name)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=directory.fd)
        try:
            self._own(fd, cred, gid, perms)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                (os.rmdir if stat.S_ISDIR(mode) else os.unlink)(name, dir_fd=directory.fd)
            raise
        return self._entry(fd)

    @_translated
    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, cred: Cred, umask: int = 0) -> HostInode:
        """Regular files, FIFOs, sockets and (for root) device nodes."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise FsError(errno.EPERM)
        if kind not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise FsError(errno.EINVAL)
        device = kind in (stat.S_IFCHR, stat.S_IFBLK)
        if device and not cred.root:
            raise FsError(errno.EPERM)
        dev = decode_dev(rdev) if device else 0
        return self._make(parent, name, kind | (mode & 0o7777), cred, umask,
                          lambda dir_fd, perms: os.mknod(name, kind | perms, dev, dir_fd=dir_fd))

    @_translated
    def mkdir(self, parent: int, name: bytes, mode: int, cred: Cred, umask: int = 0) -> HostInode:
        return self._make(parent, name, stat.S_IFDIR | (mode & 0o7777), cred, umask,
                          lambda dir_fd, perms: os.mkdir(name, perms, dir_fd=dir_fd))

    @_translated
    def symlink(self, parent: int, name: bytes, target: bytes, cred: Cred) -> HostInode:
        if not target:
            raise FsError(errno.ENOENT)
        return self._make(parent, name, stat.S_IFLNK | 0o777, cred, 0,
                          lambda dir_fd, perms: os.symlink(target, name, dir_fd=dir_fd))

    @_translated
    def link(self, ino: int, newparent: int, newname: bytes, cred: Cred) -> HostInode:
        """A new name for ``ino`` (also an O_TMPFILE file made without O_EXCL)."""
        node, directory = self._node(ino), self._node(newparent)
        if newname in (b".", b".."):
            raise FsError(errno.EEXIST)
        self._valid_name(newname)
        if stat.S_ISDIR(os.fstat(node.fd).st_mode):
            raise FsError(errno.EPERM)
        os.link(proc(node.fd), newname, dst_dir_fd=directory.fd, follow_symlinks=True)
        self._mark_own(newparent, newname)
        return self._entry(os.open(proc(node.fd), os.O_PATH))

    @_translated
    def unlink(self, parent: int, name: bytes, cred: Cred) -> None:
        directory = self._node(parent)
        if name in (b".", b".."):
            raise FsError(errno.EISDIR)
        self._valid_name(name)
        os.unlink(name, dir_fd=directory.fd)
        self._mark_own(parent, name)

    @_translated
    def rmdir(self, parent: int, name: bytes, cred: Cred) -> None:
        directory = self._node(parent)
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        self._valid_name(name)
        os.rmdir(name, dir_fd=directory.fd)
        self._mark_own(parent, name)

    @_translated
    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes, cred: Cred,
               flags: int = 0) -> None:
        """renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE (others: EINVAL, as the model)."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise FsError(errno.EINVAL)
        old_dir, new_dir = self._node(parent), self._node(newparent)
        if name in (b".", b"..") or newname in (b".", b".."):
            raise FsError(errno.EEXIST if flags & RENAME_NOREPLACE and name not in (b".", b"..")
                          else errno.EBUSY)
        self._valid_name(name)
        self._valid_name(newname)
        _ok(_libc.renameat2(old_dir.fd, name, new_dir.fd, newname, flags))
        for where, what in ((parent, name), (newparent, newname)) * (2 if flags & RENAME_EXCHANGE else 1):
            self._mark_own(where, what)

    # -- listings ------------------------------------------------------------
    @_translated
    def opendir(self, ino: int, cred: Cred, flags: int = os.O_RDONLY) -> int:
        node = self._node(ino)
        fd = os.open(proc(node.fd), os.O_RDONLY | os.O_DIRECTORY)
        handle = HostHandle(fd, ino, flags | os.O_DIRECTORY, cred, directory=True)
        self._snapshot(handle)
        return self._new_handle(handle)

    def _snapshot(self, handle: HostHandle) -> None:
        """'.', '..', then the host's entries (name, inode number, DT_ type), in its order."""
        try:
            st = os.fstat(handle.fd)
            if st.st_nlink == 0:  # removed: getdents fails with ENOENT (glibc's readdir hides it)
                raise FsError(errno.ENOENT)
            if handle.nodeid == ROOT_INO:
                up = ROOT_INO
            else:
                parent = os.stat("..", dir_fd=handle.fd, follow_symlinks=False)
                up = self._ino_hint(parent.st_dev, parent.st_ino)  # the root's key is known: 1
            entries = [(b".", handle.nodeid, stat.S_IFDIR >> 12), (b"..", up, stat.S_IFDIR >> 12)]
            os.lseek(handle.fd, 0, os.SEEK_SET)
            with os.scandir(handle.fd) as listing:
                for entry in listing:
                    entries.append((os.fsencode(entry.name), self._ino_hint(st.st_dev, entry.inode()),
                                    _dtype(entry)))
        except OSError as exc:
            handle.entries, handle.error = [], exc.errno or errno.EIO
            return
        handle.entries, handle.error = entries, 0

    def readdir(self, fh: int, offset: int) -> list[tuple[bytes, int, int, int]]:
        """(name, ino, DT_ type, next offset) from ``offset`` on; offset 0 after a read rewinds
        (a fresh snapshot, as rewinddir(3) sees the directory as it is now)."""
        handle = self._handle(fh, directory=True)
        if offset == 0 and handle.started:
            self._snapshot(handle)
        handle.started = True
        if handle.error:
            raise FsError(handle.error)
        start = max(0, offset)
        return [(name, ino, kind, index + 1)
                for index, (name, ino, kind) in enumerate((handle.entries or [])[start:], start)]

    def directory_of(self, fh: int) -> int:
        """The nodeid an open directory handle stands for (READDIRPLUS looks its entries up)."""
        return self._handle(fh, directory=True).nodeid

    def releasedir(self, fh: int) -> None:
        handle = self._handle(fh, directory=True)
        del self.handles[fh]
        os.close(handle.fd)

    # -- open files ------------------------------------------------------------
    def _host_flags(self, flags: int) -> int:
        """The flags to reopen with: with the writeback cache the kernel reads through any handle
        and appends itself, so write-only becomes read-write and O_APPEND goes."""
        flags &= ~DROPPED_FLAGS
        if self.writeback:
            flags &= ~os.O_APPEND
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags

    def _drop_privs(self, fd: int, cred: Cred, *, forced: bool) -> None:
        """Drop suid/sgid as the model would (root's own calls do not drop them on the host)."""
        if not forced and cred.root:
            return
        st = os.stat(fd)
        mode = dropped_mode(st.st_mode, st.st_gid, cred, forced=forced)
        if mode != st.st_mode:
            os.chmod(proc(fd), stat.S_IMODE(mode))

    @_translated
    def open(self, ino: int, flags: int, cred: Cred) -> int:
        """A host fd with the kernel's flags; O_TRUNC by a non-root caller drops suid/sgid."""
        node = self._node(ino)
        mode = os.fstat(node.fd).st_mode
        if stat.S_ISLNK(mode):
            raise FsError(errno.ELOOP)
        if _special(mode):
            return self._opened(os.open(proc(node.fd), os.O_PATH), ino, flags, cred, special=True)
        return self._opened(os.open(proc(node.fd), self._host_flags(flags)), ino, flags, cred)

    def _opened(self, fd: int, ino: int, flags: int, cred: Cred, *, special: bool = False) -> int:
        """A handle for ``fd``; a special file is not opened on the host (a FIFO would block, a
        device is the host's): its handle has an O_PATH fd and refuses I/O as the model does."""
        try:
            if flags & os.O_TRUNC and not special:
                self._drop_privs(fd, cred, forced=False)
        except OSError:
            os.close(fd)
            raise
        return self._new_handle(HostHandle(fd, ino, flags, cred, special=special))

    @_translated
    def create(self, parent: int, name: bytes, mode: int, flags: int, cred: Cred,
               umask: int = 0) -> tuple[HostInode, int]:
        """O_CREAT: a new regular file of the caller's opened with ``flags``; a name that exists
        (made on the host since the kernel looked) is opened unless O_EXCL."""
        directory = self._node(parent)
        if name in (b".", b".."):
            raise FsError(errno.EISDIR)
        self._valid_name(name)
        perms, gid = self._new_mode(directory, stat.S_IFREG | (mode & 0o7777), cred, umask)
        host_flags = self._host_flags(flags) | os.O_NOFOLLOW
        try:
            with _no_umask():
                fd = os.open(name, host_flags | os.O_CREAT | os.O_EXCL, perms & 0o777, dir_fd=directory.fd)
            self._mark_own(parent, name)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            existing = os.stat(name, dir_fd=directory.fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(existing):
                raise FsError(errno.EISDIR) from None
            if stat.S_ISLNK(existing):
                raise FsError(errno.ELOOP) from None
            special = _special(existing)
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW if special else host_flags, dir_fd=directory.fd)
            fh = self._opened(fd, 0, flags, cred, special=special)
        else:
            try:
                self._own(fd, cred, gid, perms)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=directory.fd)
                raise
            fh = self._new_handle(HostHandle(fd, 0, flags & ~os.O_TRUNC, cred))
        handle = self.handles[fh]
        try:
            inode = self._entry(os.open(proc(handle.fd), os.O_PATH))
        except OSError:
            self.release(fh)
            raise
        handle.nodeid = inode.ino
        return inode, fh

    @_translated
    def tmpfile(self, parent: int, mode: int, cred: Cred, umask: int = 0,
                flags: int = os.O_RDWR) -> tuple[HostInode, int]:
        """O_TMPFILE: an unnamed regular file of the caller's, linkable later unless O_EXCL."""
        directory = self._node(parent)
        perms, gid = self._new_mode(directory, stat.S_IFREG | (mode & 0o7777), cred, umask)
        host_flags = (self._host_flags(flags) & ~os.O_TRUNC) | (flags & os.O_EXCL) | os.O_TMPFILE
        if host_flags & os.O_ACCMODE == os.O_RDONLY:
            host_flags |= os.O_RDWR
        with _no_umask():
            fd = os.open(proc(directory.fd), host_flags, perms & 0o777)
        try:
            self._own(fd, cred, gid, perms)
            inode = self._entry(os.open(proc(fd), os.O_PATH))
        except OSError:
            os.close(fd)
            raise
        return inode, self._new_handle(HostHandle(fd, inode.ino, flags & ~os.O_TRUNC, cred))

    def release(self, fh: int) -> None:
        handle = self._handle(fh)
        del self.handles[fh]
        os.close(handle.fd)
        locks = self.locks.get(handle.nodeid)
        if locks is not None:
            locks.drop_fh(fh)
            if not locks and handle.nodeid not in self.nodes:
                del self.locks[handle.nodeid]

    def flush(self, fh: int, lock_owner: int | None = None) -> None:
        """close(2): ``lock_owner`` loses its POSIX locks on the file."""
        handle = self._handle(fh)
        locks = self.locks.get(handle.nodeid)
        if locks is not None and lock_owner is not None:
            locks.drop_owner(lock_owner)

    @_translated
    def fsync(self, fh: int, datasync: bool = False) -> None:
        """FSYNC and FSYNCDIR: the host's fsync/fdatasync of the handle's fd."""
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        (os.fdatasync if datasync else os.fsync)(handle.fd)

    def _file(self, fh: int, *, write: bool) -> HostHandle:
        """An open regular file that allows the access; with the writeback cache the kernel also
        reads through write-only handles (to fill a page it writes part of)."""
        handle = self._handle(fh)
        if not (handle.writable if write else handle.readable or self.writeback):
            raise FsError(errno.EBADF)
        if handle.special:
            raise FsError(errno.EINVAL)
        return handle

    @_translated
    def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._file(fh, write=False)
        if offset < 0 or size < 0:
            raise FsError(errno.EINVAL)
        return os.pread(handle.fd, size, offset) if size else b""

    @_translated
    def write(self, fh: int, offset: int, data: bytes, *, kill_suidgid: bool = False,
              cred: Cred | None = None) -> int:
        """pwrite (appending under O_APPEND: Linux's pwrite ignores the offset then); a writer
        without CAP_FSETID (``cred``, by default the opener), or ``kill_suidgid``, drops suid/sgid."""
        handle = self._file(fh, write=True)
        if offset < 0:
            raise FsError(errno.EINVAL)
        if not data:
            return 0
        written = os.pwrite(handle.fd, data, offset)
        self._drop_privs(handle.fd, cred or handle.cred, forced=kill_suidgid)
        return written

    @_translated
    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Any mode the host's filesystem takes (it answers EOPNOTSUPP for the others)."""
        if offset < 0 or length <= 0:
            raise FsError(errno.EINVAL)
        handle = self._file(fh, write=True)
        _ok(_libc.fallocate64(handle.fd, mode, offset, length))
        self._drop_privs(handle.fd, handle.cred, forced=False)

    @_translated
    def lseek(self, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA / SEEK_HOLE on the host fd (the kernel does the others)."""
        handle = self._handle(fh)
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE) or handle.special:
            raise FsError(errno.EINVAL)
        return os.lseek(handle.fd, offset, whence)

    @_translated
    def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int, length: int,
                        flags: int = 0) -> int:
        """The host's copy_file_range; an O_APPEND destination is EBADF (as the model)."""
        if flags:
            raise FsError(errno.EINVAL)
        source, out = self._file(fh_in, write=False), self._file(fh_out, write=True)
        if out.append:
            raise FsError(errno.EBADF)
        if off_in < 0 or off_out < 0 or length < 0:
            raise FsError(errno.EINVAL)
        copied = os.copy_file_range(source.fd, out.fd, length, off_in, off_out)
        if copied:
            self._drop_privs(out.fd, out.cred, forced=False)
        return copied

    # -- locks (in memory: only the mount sees them; LockOps) --------------------
    def _lock_key(self, handle: AccessMode) -> int:
        assert isinstance(handle, HostHandle)
        return handle.nodeid

    # -- attributes --------------------------------------------------------------
    @_translated
    def setattr(self, ino: int, cred: Cred, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, atime: int | None = None,
                mtime: int | None = None, atime_now: bool = False, mtime_now: bool = False,
                ctime: int | None = None, kill_suidgid: bool = False, fh: int | None = None) -> HostInode:
        """truncate, chown, chmod, utimensat in that order, each on the host; suid/sgid
        dropped as the model drops them. An explicit ``ctime`` cannot be set on a host: the
        host's own change time stays."""
        node = self._node(ino)
        if size is not None:
            if size < 0:
                raise FsError(errno.EINVAL)
            if fh is not None:
                handle = self._handle(fh)
                if not handle.writable:
                    raise FsError(errno.EINVAL)
                os.ftruncate(handle.fd, size)
            else:
                os.truncate(proc(node.fd), size)
        if size is not None or kill_suidgid:
            self._drop_privs(node.fd, cred, forced=kill_suidgid)
        if uid is not None or gid is not None:
            before = os.fstat(node.fd)
            _ok(_libc.fchownat(node.fd, b"", 0xFFFFFFFF if uid is None else uid,
                               0xFFFFFFFF if gid is None else gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
            want = stat.S_IMODE(dropped_mode(before.st_mode, before.st_gid, cred, forced=True))
            after = os.fstat(node.fd)
            if not stat.S_ISLNK(after.st_mode) and stat.S_IMODE(after.st_mode) != want:
                os.chmod(proc(node.fd), want)
        if mode is not None:
            mode &= 0o7777
            if not cred.root and not cred.in_group(os.fstat(node.fd).st_gid):
                mode &= ~stat.S_ISGID
            os.chmod(proc(node.fd), mode)
        if atime_now or mtime_now or atime is not None or mtime is not None:
            times = (_Timespec * 2)(_timespec(atime, atime_now), _timespec(mtime, mtime_now))
            _ok(_libc.utimensat(node.fd, b"", times, AT_EMPTY_PATH))
        return self._inode(ino, os.fstat(node.fd))

    @_translated
    def access(self, ino: int, mask: int, cred: Cred) -> None:
        """access(2) by mode bits (and the access ACL, when ACLs are on), as the model checks."""
        node = self._node(ino)
        if mask & ~7:
            raise FsError(errno.EINVAL)
        if not mask:
            return
        st = os.fstat(node.fd)
        probe = Inode(ino=ino, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid)
        if self.acls and not stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                probe.acl_access = fs_acl.parse(os.getxattr(proc(node.fd), fs_acl.ACCESS))
        fs_acl.check(probe, mask, cred, acls=self.acls)

    @_translated
    def statfs(self) -> dict[str, int]:
        sv = os.statvfs(self.nodes[ROOT_INO].fd)
        return {"blocks": sv.f_blocks, "bfree": sv.f_bfree, "bavail": sv.f_bavail, "files": sv.f_files,
                "ffree": sv.f_ffree, "bsize": sv.f_bsize, "namelen": sv.f_namemax, "frsize": sv.f_frsize}

    # -- xattrs ------------------------------------------------------------------
    def _xattr_name(self, name: bytes) -> None:
        if not name or len(name) > NAME_MAX:
            raise FsError(errno.ERANGE)
        if name in ACL_NAMES and not self.acls:
            raise FsError(errno.EOPNOTSUPP)

    @_translated
    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int, cred: Cred, *,
                 kill_sgid: bool = False) -> None:
        """The host's setxattr; setting an access ACL drops sgid for a caller outside the group,
        or when the kernel says so (``kill_sgid``: FUSE_SETXATTR_ACL_KILL_SGID)."""
        node = self._node(ino)
        if flags & ~(XATTR_CREATE | XATTR_REPLACE):
            raise FsError(errno.EINVAL)
        self._xattr_name(name)
        os.setxattr(proc(node.fd), name, value, flags)
        if name == fs_acl.ACCESS and (kill_sgid or not cred.root):
            st = os.fstat(node.fd)
            if st.st_mode & stat.S_ISGID and (kill_sgid or not cred.in_group(st.st_gid)):
                os.chmod(proc(node.fd), stat.S_IMODE(st.st_mode) & ~stat.S_ISGID)

    @_translated
    def getxattr(self, ino: int, name: bytes, cred: Cred) -> bytes:
        node = self._node(ino)
        self._xattr_name(name)
        return os.getxattr(proc(node.fd), name)

    @_translated
    def listxattr(self, ino: int, cred: Cred) -> list[bytes]:
        """The host's names, in its order; trusted.* for root only; no ACL names without ACLs."""
        names = [os.fsencode(n) for n in os.listxattr(proc(self._node(ino).fd))]
        return [n for n in names if (cred.root or not n.startswith(b"trusted."))
                and (self.acls or n not in ACL_NAMES)]

    @_translated
    def removexattr(self, ino: int, name: bytes, cred: Cred) -> None:
        node = self._node(ino)
        self._xattr_name(name)
        os.removexattr(proc(node.fd), name)


def wire_time(ns: int) -> int:
    """A host time (signed nanoseconds) as the model keeps times: the kernel's unsigned 64-bit
    seconds (a time before 1970 wraps, as in fuse_attr) times NS, plus the nanoseconds."""
    seconds, nsec = divmod(ns, NS)
    return (seconds % (1 << 64)) * NS + nsec


def _timespec(value: int | None, now: bool) -> _Timespec:
    """SETATTR's time (unsigned seconds from the kernel, times NS, plus nanoseconds) for utimensat."""
    if now:
        return _Timespec(0, UTIME_NOW)
    if value is None:
        return _Timespec(0, UTIME_OMIT)
    seconds, nsec = divmod(value, NS)
    seconds %= 1 << 64
    return _Timespec(seconds - (1 << 64) if seconds >= 1 << 63 else seconds, nsec)


def _special(mode: int) -> bool:
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _dtype(entry: os.DirEntry[str]) -> int:
    """An entry's DT_ type (0, DT_UNKNOWN, when it went away meanwhile)."""
    try:
        if entry.is_symlink():
            return stat.S_IFLNK >> 12
        if entry.is_dir(follow_symlinks=False):
            return stat.S_IFDIR >> 12
        if entry.is_file(follow_symlinks=False):
            return stat.S_IFREG >> 12
        return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode) >> 12
    except OSError:
        return 0


def _raise_fd_limit() -> None:
    """Every inode the kernel holds keeps an fd open: as many as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
