"""The model's state and the helpers every operation shares: inode table, handles, clock,
permission checks, timestamps, privilege dropping and the making of new inodes."""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Callable

from targets.reference import fs_acl
from targets.reference.fs_locks import Locks
from targets.reference.fs_types import (
    BOGO_DIRENT_SIZE,
    DAY_NS,
    MAY_EXEC,
    MAY_WRITE,
    ROOT_INO,
    Cred,
    FsError,
    Handle,
    Inode,
    valid_name,
)


class FsCore:
    """State and shared helpers; the operations live in the mixins ``Filesystem`` combines."""

    def __init__(self, clock: Callable[[], int] | None = None, *, root_mode: int = 0o40755,
                 root_uid: int = 0, root_gid: int = 0, acl: bool = True, relatime: bool = True,
                 capacity: int = 1 << 31, max_inodes: int = 1 << 20, writeback: bool = False) -> None:
        self.clock = clock or time.time_ns
        self.acls = acl
        #: FUSE_WRITEBACK_CACHE: the kernel reads through write-only handles (to fill pages it
        #: writes partly) and places O_APPEND writes itself
        self.writeback = writeback
        self.relatime = relatime
        self.capacity_pages = capacity // 4096
        self.max_inodes = max_inodes
        self.inodes: dict[int, Inode] = {}
        self.handles: dict[int, Handle] = {}
        self.locks: dict[int, Locks] = {}
        self.next_ino = ROOT_INO
        self.next_fh = 1
        self.used_pages = 0
        now = self.clock()
        root = self._new_inode(stat.S_IFDIR | (root_mode & 0o7777), root_uid, root_gid, now)
        root.nlink, root.parent, root.size, root.nlookup = 2, root.ino, 2 * BOGO_DIRENT_SIZE, 1

    # -- inodes -----------------------------------------------------------
    def _new_inode(self, mode: int, uid: int, gid: int, now: int) -> Inode:
        if len(self.inodes) >= self.max_inodes:
            raise FsError(errno.ENOSPC)
        node = Inode(ino=self.next_ino, mode=mode, uid=uid, gid=gid, atime=now, mtime=now, ctime=now)
        self.next_ino += 1
        self.inodes[node.ino] = node
        return node

    def _get(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _dir(self, ino: int, cred: Cred | None = None) -> Inode:
        """A directory, searchable by ``cred`` when given."""
        node = self._get(ino)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        if cred is not None:
            self._check(node, MAY_EXEC, cred)
        return node

    def _handle(self, fh: int, *, directory: bool = False) -> Handle:
        handle = self.handles.get(fh)
        if handle is None or handle.directory != directory:
            raise FsError(errno.EBADF)
        return handle

    def _maybe_free(self, node: Inode) -> None:
        """Forget an inode nobody can reach any more: no name, no kernel reference, not open."""
        if node.ino != ROOT_INO and node.nlink == 0 and node.nlookup == 0 and node.open_count == 0:
            del self.inodes[node.ino]
            self.locks.pop(node.ino, None)
            self.used_pages -= node.data.allocated

    # -- checks -----------------------------------------------------------
    def _check(self, node: Inode, mask: int, cred: Cred) -> None:
        fs_acl.check(node, mask, cred, acls=self.acls)

    @staticmethod
    def _owner_or_root(node: Inode, cred: Cred) -> bool:
        return cred.root or cred.uid == node.uid

    _valid_name = staticmethod(valid_name)

    def _may_create(self, parent: int, name: bytes, cred: Cred, *, write: bool = True) -> Inode:
        """filename_create + may_create: search, a live directory, EEXIST, write permission
        (checked later by the caller if not ``write``)."""
        directory = self._dir(parent, cred)
        if name in (b".", b".."):
            raise FsError(errno.EEXIST)
        self._valid_name(name)
        if directory.nlink == 0:
            raise FsError(errno.ENOENT)
        if name in directory.entries:
            raise FsError(errno.EEXIST)
        if write:
            self._check(directory, MAY_WRITE | MAY_EXEC, cred)
        return directory

    def _sticky_denies(self, directory: Inode, node: Inode, cred: Cred) -> bool:
        sticky = bool(directory.mode & stat.S_ISVTX)
        return sticky and not cred.root and cred.uid not in (node.uid, directory.uid)

    def _may_delete(self, directory: Inode, name: bytes, cred: Cred, isdir: bool) -> Inode:
        """may_delete: the victim exists, the directory is writable, the sticky bit, its type."""
        ino = directory.entries.get(name)
        if ino is None:
            raise FsError(errno.ENOENT)
        node = self.inodes[ino]
        self._check(directory, MAY_WRITE | MAY_EXEC, cred)
        if self._sticky_denies(directory, node, cred):
            raise FsError(errno.EPERM)
        if isdir and not node.is_dir:
            raise FsError(errno.ENOTDIR)
        if not isdir and node.is_dir:
            raise FsError(errno.EISDIR)
        return node

    # -- times and privileges ---------------------------------------------
    def _now(self) -> int:
        return self.clock()

    def _modified(self, node: Inode, now: int | None = None) -> None:
        node.mtime = node.ctime = self._now() if now is None else now

    def _accessed(self, node: Inode) -> None:
        """Update atime, relatime-style by default: only if not newer than mtime/ctime or a day old."""
        now = self._now()
        if not self.relatime or node.atime <= max(node.mtime, node.ctime) or now - node.atime >= DAY_NS:
            node.atime = now

    @staticmethod
    def _drop_privs(node: Inode, cred: Cred, *, forced: bool = False) -> None:
        """setattr_should_drop_suidgid: suid, and sgid when group-executable or the caller is
        outside the group; for writers and truncaters without CAP_FSETID (not root), or ``forced``
        (chown, and the kernel's KILL_SUIDGID flags)."""
        if node.is_dir or (not forced and (cred.root or not node.is_reg)):
            return
        node.mode &= ~stat.S_ISUID
        if node.mode & stat.S_IXGRP or not (cred.root or cred.in_group(node.gid)):
            node.mode &= ~stat.S_ISGID

    def _resize(self, node: Inode, size: int) -> None:
        if size < node.size:
            before = node.data.allocated
            node.data.truncate(size)
            self.used_pages -= before - node.data.allocated
        node.size = size

    def _truncate(self, node: Inode, size: int, cred: Cred) -> None:
        """open(O_TRUNC): privileges dropped, mtime and ctime set even when the size stays."""
        self._drop_privs(node, cred)
        self._resize(node, size)
        self._modified(node)

    # -- directories ------------------------------------------------------
    @staticmethod
    def _add_entry(directory: Inode, name: bytes, node: Inode) -> None:
        directory.entries[name] = node.ino
        directory.cookies[name] = directory.next_cookie
        directory.next_cookie += 1
        directory.size += BOGO_DIRENT_SIZE
        if node.is_dir:
            directory.nlink += 1
            node.parent = directory.ino

    @staticmethod
    def _remove_entry(directory: Inode, name: bytes) -> None:
        del directory.entries[name]
        del directory.cookies[name]
        directory.size -= BOGO_DIRENT_SIZE

    def _make(self, parent: int, name: bytes, mode: int, cred: Cred, umask: int, *,
              rdev: int = 0, target: bytes = b"") -> Inode:
        """A new inode under ``parent``: owner, sgid inheritance, umask or default ACL, link count."""
        directory = self._may_create(parent, name, cred)
        node = self._init_inode(directory, mode, cred, umask)
        node.rdev, node.target = rdev, target
        if node.is_dir:
            node.nlink, node.size = 2, 2 * BOGO_DIRENT_SIZE
        elif stat.S_ISLNK(mode):
            node.size = len(target)
        self._add_entry(directory, name, node)
        self._modified(directory, node.ctime)
        node.nlookup += 1
        return node

    def _init_inode(self, directory: Inode, mode: int, cred: Cred, umask: int) -> Inode:
        """inode_init_owner + vfs_prepare_mode + posix_acl_create, for a new inode in ``directory``."""
        kind = stat.S_IFMT(mode)
        perms = mode & (0o1777 if kind == stat.S_IFDIR else 0o7777)
        gid = cred.gid
        if directory.mode & stat.S_ISGID:
            gid = directory.gid
            if kind == stat.S_IFDIR:
                perms |= stat.S_ISGID
            elif perms & 0o2010 == 0o2010 and not (cred.root or cred.in_group(directory.gid)):
                perms &= ~stat.S_ISGID
        access = None
        default = directory.acl_default if self.acls and kind != stat.S_IFLNK else None
        if default is not None:
            access, perms = fs_acl.create_masq(default, perms)
        elif kind != stat.S_IFLNK:
            perms &= ~umask
        node = self._new_inode(kind | perms, cred.uid, gid, self._now())
        node.acl_access = access
        if kind == stat.S_IFDIR:
            node.acl_default = default
        return node
