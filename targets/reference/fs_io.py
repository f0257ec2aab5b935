"""Open files: open/create/tmpfile, read and write, fallocate, lseek, copy_file_range, locks."""

from __future__ import annotations

import errno
import os
import stat

from targets.reference.fs_data import PAGE
from targets.reference.fs_locks import LockOps
from targets.reference.fs_namespace import NamespaceOps
from targets.reference.fs_types import (
    MAX_FILE_SIZE,
    MAY_EXEC,
    MAY_READ,
    MAY_WRITE,
    AccessMode,
    Cred,
    FsError,
    Handle,
    Inode,
)

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
FALLOC_MODES = (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)


class IoOps(NamespaceOps, LockOps):
    def open(self, ino: int, flags: int, cred: Cred) -> int:
        """may_open's checks, then O_TRUNC; O_APPEND and O_NOATIME stay with the handle."""
        node = self._get(ino)
        return self._open(node, flags, cred, check=True)

    def _open(self, node: Inode, flags: int, cred: Cred, *, check: bool) -> int:
        access = flags & os.O_ACCMODE
        mask = (MAY_READ if access != os.O_WRONLY else 0) | (MAY_WRITE if access != os.O_RDONLY else 0)
        if flags & os.O_TRUNC:
            mask |= MAY_WRITE
        if check:
            if stat.S_ISLNK(node.mode):
                raise FsError(errno.ELOOP)
            if flags & os.O_DIRECTORY and not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if node.is_dir and mask & MAY_WRITE:
                raise FsError(errno.EISDIR)
            self._check(node, mask, cred)
            if flags & os.O_NOATIME and not self._owner_or_root(node, cred):
                raise FsError(errno.EPERM)
        if flags & os.O_TRUNC and node.is_reg:
            self._truncate(node, 0, cred)
        if self.writeback:
            flags = (flags & ~(os.O_ACCMODE | os.O_APPEND)) | (os.O_RDWR if access else os.O_RDONLY)
        return self._open_handle(Handle(node.ino, flags, cred, directory=False), node)

    def create(self, parent: int, name: bytes, mode: int, flags: int, cred: Cred,
               umask: int = 0) -> tuple[Inode, int]:
        """O_CREAT: a new regular file opened with ``flags`` (no permission check on it); an
        existing name is opened unless O_EXCL (EEXIST), with may_create_in_sticky's rule for
        others' symlinks and devices in sticky directories (protected_regular/fifos off)."""
        directory = self._dir(parent, cred)
        existing = directory.entries.get(name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            node = self.inodes[existing]
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if (directory.mode & stat.S_ISVTX and directory.mode & 0o022 and not node.is_reg
                    and not stat.S_ISFIFO(node.mode) and node.uid not in (directory.uid, cred.uid)):
                raise FsError(errno.EACCES)
            fh = self._open(node, flags, cred, check=True)
            node.nlookup += 1
            return node, fh
        node = self._make(parent, name, stat.S_IFREG | (mode & 0o7777), cred, umask)
        return node, self._open(node, flags & ~os.O_TRUNC, cred, check=False)

    def tmpfile(self, parent: int, mode: int, cred: Cred, umask: int = 0,
                flags: int = os.O_RDWR) -> tuple[Inode, int]:
        """O_TMPFILE: an unnamed regular file, linkable later unless O_EXCL."""
        directory = self._dir(parent, cred)
        self._check(directory, MAY_WRITE | MAY_EXEC, cred)
        node = self._init_inode(directory, stat.S_IFREG | (mode & 0o7777), cred, umask)
        node.nlink, node.linkable, node.nlookup = 0, not flags & os.O_EXCL, 1
        return node, self._open(node, flags & ~(os.O_TRUNC | os.O_CREAT), cred, check=False)

    def release(self, fh: int) -> None:
        self._release(fh, directory=False)

    def flush(self, fh: int, lock_owner: int | None = None) -> None:
        """close(2): ``lock_owner`` loses its POSIX locks on the file."""
        handle = self._handle(fh)
        locks = self.locks.get(handle.ino)
        if locks is not None and lock_owner is not None:
            locks.drop_owner(lock_owner)

    def fsync(self, fh: int, datasync: bool = False) -> None:
        self._handle(fh)

    def _file(self, fh: int, *, write: bool) -> tuple[Handle, Inode]:
        handle = self._handle(fh)
        if not (handle.writable if write else handle.readable):
            raise FsError(errno.EBADF)
        node = self.inodes[handle.ino]
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if not node.is_reg:
            raise FsError(errno.EINVAL)
        return handle, node

    def read(self, fh: int, offset: int, size: int) -> bytes:
        handle, node = self._file(fh, write=False)
        if offset < 0 or size < 0:
            raise FsError(errno.EINVAL)
        if size == 0:
            return b""
        data = node.data.read(offset, max(0, min(size, node.size - offset)))
        if not handle.noatime:
            self._accessed(node)
        return data

    def write(self, fh: int, offset: int, data: bytes, *, kill_suidgid: bool = False,
              cred: Cred | None = None) -> int:
        """pwrite (or append under O_APPEND); a writer without CAP_FSETID (``cred``, by default the
        opener; or ``kill_suidgid`` from the kernel) drops suid/sgid like file_remove_privs."""
        handle, node = self._file(fh, write=True)
        if offset < 0:
            raise FsError(errno.EINVAL)
        if handle.append:
            offset = node.size
        if not data:
            return 0
        return self._store(node, offset, bytes(data), cred or handle.cred, kill_suidgid)

    def _store(self, node: Inode, offset: int, data: bytes, cred: Cred, kill: bool) -> int:
        if offset >= MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        data = data[:MAX_FILE_SIZE - offset]
        free = self.capacity_pages - self.used_pages
        if node.data.new_pages(offset, len(data)) > free:  # ENOSPC, or the prefix that fits
            pos, end = offset, offset + len(data)
            while pos < end and (pos // PAGE in node.data.pages or free > 0):
                free -= pos // PAGE not in node.data.pages
                pos = (pos // PAGE + 1) * PAGE
            if pos == offset:
                raise FsError(errno.ENOSPC)
            data = data[:min(pos, end) - offset]
        self._drop_privs(node, cred, forced=kill)
        self._modified(node)
        before = node.data.allocated
        node.data.write(offset, data)
        self.used_pages += node.data.allocated - before
        node.size = max(node.size, offset + len(data))
        return len(data)

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE[|KEEP_SIZE]; others EOPNOTSUPP."""
        if offset < 0 or length <= 0:
            raise FsError(errno.EINVAL)
        if mode not in FALLOC_MODES:
            raise FsError(errno.EOPNOTSUPP)
        handle, node = self._file(fh, write=True)
        if offset + length > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            before = node.data.allocated
            node.data.punch(offset, length)
            self.used_pages -= before - node.data.allocated
        if not mode & FALLOC_FL_PUNCH_HOLE:
            if node.data.new_pages(offset, length) > self.capacity_pages - self.used_pages:
                raise FsError(errno.ENOSPC)
            before = node.data.allocated
            node.data.allocate(offset, length)
            self.used_pages += node.data.allocated - before
            if not mode & FALLOC_FL_KEEP_SIZE:
                node.size = max(node.size, offset + length)
        self._drop_privs(node, handle.cred)
        self._modified(node)

    def lseek(self, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA / SEEK_HOLE (the kernel does the others); ENXIO at or past the end."""
        handle = self._handle(fh)
        node = self.inodes[handle.ino]
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE) or not node.is_reg:
            raise FsError(errno.EINVAL)
        found = node.data.seek(offset, whence == os.SEEK_DATA, node.size)
        if found is None:
            raise FsError(errno.ENXIO)
        return found

    def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int, length: int,
                        flags: int = 0) -> int:
        """Copy up to ``length`` bytes (fewer at the source's end); overlapping ranges of one file
        are EINVAL, an O_APPEND destination EBADF."""
        if flags:
            raise FsError(errno.EINVAL)
        _, source = self._file(fh_in, write=False)
        out, dest = self._file(fh_out, write=True)
        if out.append:
            raise FsError(errno.EBADF)
        if off_in < 0 or off_out < 0 or length < 0:
            raise FsError(errno.EINVAL)
        count = max(0, min(length, source.size - off_in))
        if source is dest and count and off_in < off_out + count and off_out < off_in + count:
            raise FsError(errno.EINVAL)
        if count == 0:
            return 0
        data = source.data.read(off_in, count)
        self._accessed(source)
        return self._store(dest, off_out, data, out.cred, False)

    # -- locks ------------------------------------------------------------
    def _lock_key(self, handle: AccessMode) -> int:
        assert isinstance(handle, Handle)
        return handle.ino
