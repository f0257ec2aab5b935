"""Names: lookup and forget, making and removing entries, rename, directory listings."""

from __future__ import annotations

import errno
import os
import stat

from targets.reference import fs_acl
from targets.reference.fs_core import FsCore
from targets.reference.fs_types import (
    MAY_EXEC,
    MAY_READ,
    MAY_WRITE,
    PATH_MAX,
    ROOT_INO,
    Cred,
    FsError,
    Handle,
    Inode,
)

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


class NamespaceOps(FsCore):
    def lookup(self, parent: int, name: bytes, cred: Cred) -> Inode:
        """The inode ``name`` names in ``parent`` (its kernel lookup count goes up by one)."""
        directory = self._dir(parent, cred)
        if name == b".":
            node = directory
        elif name == b"..":
            node = self._get(directory.parent)
        else:
            self._valid_name(name)
            ino = directory.entries.get(name)
            if ino is None:
                raise FsError(errno.ENOENT)
            node = self.inodes[ino]
        node.nlookup += 1
        return node

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel drops ``nlookup`` references; unknown inodes are ignored."""
        node = self.inodes.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.nlookup = max(0, node.nlookup - nlookup)
        self._maybe_free(node)

    def getattr(self, ino: int) -> Inode:
        return self._get(ino)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, cred: Cred, umask: int = 0) -> Inode:
        """Regular files, FIFOs, sockets and (for root) device nodes."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise FsError(errno.EPERM)
        if kind not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise FsError(errno.EINVAL)
        self._may_create(parent, name, cred)
        device = kind in (stat.S_IFCHR, stat.S_IFBLK)
        if device and not cred.root:
            raise FsError(errno.EPERM)
        return self._make(parent, name, kind | (mode & 0o7777), cred, umask, rdev=rdev if device else 0)

    def mkdir(self, parent: int, name: bytes, mode: int, cred: Cred, umask: int = 0) -> Inode:
        return self._make(parent, name, stat.S_IFDIR | (mode & 0o7777), cred, umask)

    def symlink(self, parent: int, name: bytes, target: bytes, cred: Cred) -> Inode:
        if not target:
            raise FsError(errno.ENOENT)
        if len(target) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG)
        return self._make(parent, name, stat.S_IFLNK | 0o777, cred, 0, target=bytes(target))

    def readlink(self, ino: int) -> bytes:
        node = self._get(ino)
        if not stat.S_ISLNK(node.mode):
            raise FsError(errno.EINVAL)
        self._accessed(node)
        return node.target

    def link(self, ino: int, newparent: int, newname: bytes, cred: Cred) -> Inode:
        """A new name for ``ino``; protected_hardlinks=1 rules for callers who do not own it."""
        node = self._get(ino)
        directory = self._may_create(newparent, newname, cred, write=False)
        if not self._owner_or_root(node, cred) and not self._may_hardlink(node, cred):
            raise FsError(errno.EPERM)
        self._check(directory, MAY_WRITE | MAY_EXEC, cred)
        if node.is_dir:
            raise FsError(errno.EPERM)
        if node.nlink == 0 and not node.linkable:
            raise FsError(errno.ENOENT)
        node.nlink += 1
        node.linkable = False
        self._add_entry(directory, newname, node)
        now = self._now()
        node.ctime = now
        self._modified(directory, now)
        node.nlookup += 1
        return node

    def _may_hardlink(self, node: Inode, cred: Cred) -> bool:
        """A regular file, not setuid or setgid-executable, that ``cred`` may read and write."""
        if not node.is_reg or node.mode & stat.S_ISUID or node.mode & 0o2010 == 0o2010:
            return False
        return fs_acl.permitted(node, MAY_READ | MAY_WRITE, cred, acls=self.acls)

    def unlink(self, parent: int, name: bytes, cred: Cred) -> None:
        directory = self._dir(parent, cred)
        if name in (b".", b".."):
            raise FsError(errno.EISDIR)
        self._valid_name(name)
        node = self._may_delete(directory, name, cred, isdir=False)
        self._remove_entry(directory, name)
        self._unlinked(directory, node)

    def rmdir(self, parent: int, name: bytes, cred: Cred) -> None:
        directory = self._dir(parent, cred)
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        self._valid_name(name)
        node = self._may_delete(directory, name, cred, isdir=True)
        if node.ino == ROOT_INO:
            raise FsError(errno.EBUSY)
        if node.entries:
            raise FsError(errno.ENOTEMPTY)
        self._remove_entry(directory, name)
        self._unlinked(directory, node)

    def _unlinked(self, directory: Inode, node: Inode, now: int | None = None) -> None:
        """A name of ``node`` left ``directory``: link counts, times, maybe the inode itself."""
        now = self._now() if now is None else now
        if node.is_dir:
            node.nlink = 0
            directory.nlink -= 1
        else:
            node.nlink -= 1
        node.ctime = now
        self._modified(directory, now)
        self._maybe_free(node)

    def _is_ancestor(self, node: Inode, of: Inode) -> bool:
        """Whether directory ``node`` is ``of`` or one of its ancestors."""
        current = of
        while True:
            if current is node:
                return True
            if current.ino == ROOT_INO or current.parent not in self.inodes:
                return False
            current = self.inodes[current.parent]

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes, cred: Cred,
               flags: int = 0) -> None:
        """rename/renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE, checked in the kernel's order."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise FsError(errno.EINVAL)
        old_dir, new_dir = self._dir(parent, cred), self._dir(newparent, cred)
        if name in (b".", b"..") or newname in (b".", b".."):
            raise FsError(errno.EEXIST if flags & RENAME_NOREPLACE and name not in (b".", b"..")
                          else errno.EBUSY)
        self._valid_name(name)
        self._valid_name(newname)
        source_ino = old_dir.entries.get(name)
        if source_ino is None:
            raise FsError(errno.ENOENT)
        source = self.inodes[source_ino]
        target_ino = new_dir.entries.get(newname)
        target = None if target_ino is None else self.inodes[target_ino]
        if flags & RENAME_NOREPLACE and target is not None:
            raise FsError(errno.EEXIST)
        if flags & RENAME_EXCHANGE and target is None:
            raise FsError(errno.ENOENT)
        if old_dir is not new_dir:
            if source.is_dir and self._is_ancestor(source, new_dir):
                raise FsError(errno.EINVAL)
            if target is not None and target.is_dir and self._is_ancestor(target, old_dir):
                raise FsError(errno.EINVAL if flags & RENAME_EXCHANGE else errno.ENOTEMPTY)
        if source is target:
            return
        self._may_delete(old_dir, name, cred, source.is_dir)
        if target is None:
            self._may_create(newparent, newname, cred)
        else:
            isdir = target.is_dir if flags & RENAME_EXCHANGE else source.is_dir
            self._may_delete(new_dir, newname, cred, isdir)
        if old_dir is not new_dir:
            if source.is_dir:
                self._check(source, MAY_WRITE, cred)
            if flags & RENAME_EXCHANGE and target is not None and target.is_dir:
                self._check(target, MAY_WRITE, cred)
        if target is not None and target.is_dir and target.entries and not flags & RENAME_EXCHANGE:
            raise FsError(errno.ENOTEMPTY)
        now = self._now()
        if flags & RENAME_EXCHANGE and target is not None:
            self._exchange(old_dir, name, source, new_dir, newname, target)
        else:
            if target is not None:
                self._remove_entry(new_dir, newname)
                self._unlinked(new_dir, target, now)
            self._remove_entry(old_dir, name)
            if source.is_dir:
                old_dir.nlink -= 1
            self._add_entry(new_dir, newname, source)
        source.ctime = now
        if target is not None:
            target.ctime = now
        self._modified(old_dir, now)
        self._modified(new_dir, now)

    @staticmethod
    def _exchange(old_dir: Inode, name: bytes, source: Inode, new_dir: Inode, newname: bytes,
                  target: Inode) -> None:
        """Swap two names' inodes; each name keeps its place in its directory's listing."""
        old_dir.entries[name], new_dir.entries[newname] = target.ino, source.ino
        if old_dir is not new_dir:
            for node, directory in ((source, new_dir), (target, old_dir)):
                if node.is_dir:
                    node.parent = directory.ino
            if source.is_dir != target.is_dir:
                moved_dir_to = new_dir if source.is_dir else old_dir
                moved_from = old_dir if source.is_dir else new_dir
                moved_from.nlink -= 1
                moved_dir_to.nlink += 1

    # -- listings ---------------------------------------------------------
    def opendir(self, ino: int, cred: Cred, flags: int = os.O_RDONLY) -> int:
        node = self._dir(ino)
        self._check(node, MAY_READ, cred)
        return self._open_handle(Handle(ino, flags | os.O_DIRECTORY, cred, directory=True), node)

    def _open_handle(self, handle: Handle, node: Inode) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = handle
        node.open_count += 1
        return fh

    def readdir(self, fh: int, offset: int) -> list[tuple[bytes, int, int, int]]:
        """(name, ino, DT_ type, next offset) from ``offset`` on: '.', '..', then entries by the
        position each got when its name appeared, so resuming survives additions and removals."""
        node = self.inodes[self._handle(fh, directory=True).ino]
        if node.nlink == 0:
            raise FsError(errno.ENOENT)
        out = []
        if offset <= 0:
            out.append((b".", node.ino, node.dtype, 1))
        if offset <= 1:
            out.append((b"..", node.parent, self.inodes[node.parent].dtype, 2))
        for name, position in node.cookies.items():
            if position >= offset:
                child = self.inodes[node.entries[name]]
                out.append((name, child.ino, child.dtype, position + 1))
        self._accessed(node)
        return out

    def directory_of(self, fh: int) -> int:
        """The inode an open directory handle stands for (READDIRPLUS looks its entries up)."""
        return self._handle(fh, directory=True).ino

    def releasedir(self, fh: int) -> None:
        self._release(fh, directory=True)

    def _release(self, fh: int, *, directory: bool) -> None:
        handle = self._handle(fh, directory=directory)
        del self.handles[fh]
        node = self.inodes[handle.ino]
        node.open_count -= 1
        locks = self.locks.get(node.ino)
        if locks is not None:
            locks.drop_fh(fh)
        self._maybe_free(node)
