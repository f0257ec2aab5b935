"""Attributes: setattr (chmod, chown, truncate, utimens), access, statfs and xattrs with POSIX ACLs."""

from __future__ import annotations

import errno
import stat

from targets.reference import fs_acl
from targets.reference.fs_core import FsCore
from targets.reference.fs_types import MAX_FILE_SIZE, MAY_READ, MAY_WRITE, NAME_MAX, Cred, FsError, Inode

XATTR_CREATE, XATTR_REPLACE = 1, 2
XATTR_SIZE_MAX = 65536
PREFIXES = (b"user.", b"trusted.", b"security.")
ACL_NAMES = (fs_acl.ACCESS, fs_acl.DEFAULT)


class AttrOps(FsCore):
    def setattr(self, ino: int, cred: Cred, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, atime: int | None = None,
                mtime: int | None = None, atime_now: bool = False, mtime_now: bool = False,
                ctime: int | None = None, kill_suidgid: bool = False, fh: int | None = None) -> Inode:
        """chmod/chown/truncate/utimensat in one, checked like setattr_prepare, all or nothing.

        ctime changes with everything but a truncate to the same size of a file without pages
        (tmpfs's rule for truncate(2); ftruncate and O_TRUNC also pass "mtime now"). ``*_now``
        win over values; both times "now" is touch (owner or write permission), any other time
        change needs the owner. ``fh``: the truncate comes from an open file (ftruncate). An
        explicit ``ctime`` (the kernel's writeback cache syncing times) skips the time checks.
        """
        node = self._get(ino)
        if size is not None:
            self._may_truncate(node, size, cred, fh)
        if uid is not None and not cred.root and not (cred.uid == node.uid == uid):
            raise FsError(errno.EPERM)
        if gid is not None and not cred.root and not (
                cred.uid == node.uid and (gid == node.gid or cred.in_group(gid))):
            raise FsError(errno.EPERM)
        if mode is not None and not self._owner_or_root(node, cred):
            raise FsError(errno.EPERM)
        explicit = (atime is not None and not atime_now) or (mtime is not None and not mtime_now)
        if size is None and ctime is None and not self._owner_or_root(node, cred):
            if explicit or atime_now != mtime_now:
                raise FsError(errno.EPERM)
            if atime_now:
                self._check(node, MAY_WRITE, cred)
        now = self._now()
        # tmpfs: a truncate to the same size still touches the times when pages are allocated
        changed = size is not None and (size != node.size or node.data.allocated > 0)
        if size is not None or kill_suidgid:
            self._drop_privs(node, cred, forced=kill_suidgid)
        if size is not None and changed:
            self._resize(node, size)
            node.mtime = now
        if (uid is not None or gid is not None) and not node.is_dir:
            self._drop_privs(node, cred, forced=True)
        if mode is not None:
            new_gid = node.gid if gid is None else gid
            mode &= 0o7777
            if not cred.root and not cred.in_group(new_gid):
                mode &= ~stat.S_ISGID
            node.mode = stat.S_IFMT(node.mode) | mode
            if node.acl_access is not None:
                node.acl_access = fs_acl.chmod(node.acl_access, node.mode)
        node.uid = node.uid if uid is None else uid
        node.gid = node.gid if gid is None else gid
        if atime_now:
            node.atime = now
        elif atime is not None:
            node.atime = atime
        if mtime_now:
            node.mtime = now
        elif mtime is not None:
            node.mtime = mtime
        changed = (changed or atime_now or mtime_now or kill_suidgid
                   or any(v is not None for v in (mode, uid, gid, atime, mtime)))
        if ctime is not None:
            node.ctime = ctime
        elif changed:
            node.ctime = now
        return node

    def _may_truncate(self, node: Inode, size: int, cred: Cred, fh: int | None) -> None:
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if not node.is_reg or size < 0:
            raise FsError(errno.EINVAL)
        if fh is not None:
            if not self._handle(fh).writable:
                raise FsError(errno.EINVAL)
        else:
            self._check(node, MAY_WRITE, cred)
        if size > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)

    def access(self, ino: int, mask: int, cred: Cred) -> None:
        """access(2): F_OK, or R_OK | W_OK | X_OK; EACCES when refused."""
        node = self._get(ino)
        if mask & ~7:
            raise FsError(errno.EINVAL)
        if mask:
            self._check(node, mask, cred)

    def statfs(self) -> dict[str, int]:
        blocks = self.capacity_pages
        free = max(0, blocks - self.used_pages)
        return {"blocks": blocks, "bfree": free, "bavail": free, "files": self.max_inodes,
                "ffree": self.max_inodes - len(self.inodes), "bsize": 4096, "namelen": NAME_MAX,
                "frsize": 4096}

    # -- xattrs -----------------------------------------------------------
    def _xattr_name(self, name: bytes) -> bytes:
        """ERANGE for empty or long names; the namespace, or EOPNOTSUPP / EINVAL (bare prefix)."""
        if not name or len(name) > NAME_MAX:
            raise FsError(errno.ERANGE)
        if name in ACL_NAMES:
            if not self.acls:
                raise FsError(errno.EOPNOTSUPP)
            return b"system."
        for prefix in PREFIXES:
            if name.startswith(prefix):
                if name == prefix:
                    raise FsError(errno.EINVAL)
                return prefix
        raise FsError(errno.EOPNOTSUPP)

    def _xattr_permission(self, node: Inode, prefix: bytes, mask: int, cred: Cred) -> None:
        """xattr_permission plus the capability checks for security.*."""
        write = bool(mask & MAY_WRITE)
        if prefix == b"trusted." and not cred.root:
            raise FsError(errno.EPERM if write else errno.ENODATA)
        if prefix == b"security." and write and not cred.root:
            raise FsError(errno.EPERM)
        if prefix != b"user.":
            return
        if not node.is_reg and not node.is_dir:
            raise FsError(errno.EPERM if write else errno.ENODATA)
        if write and node.is_dir and node.mode & stat.S_ISVTX and not self._owner_or_root(node, cred):
            raise FsError(errno.EPERM)
        self._check(node, mask, cred)

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int, cred: Cred, *,
                 kill_sgid: bool = False) -> None:
        """XATTR_CREATE (EEXIST) / XATTR_REPLACE (ENODATA); ACL names take ACLs, ignoring flags;
        ``kill_sgid``: the kernel's FUSE_SETXATTR_ACL_KILL_SGID (drop sgid with the access ACL)."""
        node = self._get(ino)
        if flags & ~(XATTR_CREATE | XATTR_REPLACE):
            raise FsError(errno.EINVAL)
        prefix = self._xattr_name(name)
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG)
        if prefix == b"system.":
            self._set_acl(node, name, fs_acl.parse(bytes(value)), cred, kill_sgid=kill_sgid)
            return
        self._xattr_permission(node, prefix, MAY_WRITE, cred)
        if flags & XATTR_CREATE and name in node.xattrs:
            raise FsError(errno.EEXIST)
        if flags & XATTR_REPLACE and name not in node.xattrs:
            raise FsError(errno.ENODATA)
        node.xattrs[bytes(name)] = bytes(value)
        node.ctime = self._now()

    def _set_acl(self, node: Inode, name: bytes, acl: fs_acl.Acl | None, cred: Cred, *,
                 kill_sgid: bool = False) -> None:
        """set_posix_acl, then simple_set_acl's mode update; None removes the ACL."""
        if stat.S_ISLNK(node.mode):
            raise FsError(errno.EOPNOTSUPP)
        if name == fs_acl.DEFAULT and not node.is_dir:
            if acl is not None:
                raise FsError(errno.EACCES)
            return
        if not self._owner_or_root(node, cred):
            raise FsError(errno.EPERM)
        if acl is not None and not fs_acl.valid(acl):
            raise FsError(errno.EINVAL)
        if name == fs_acl.ACCESS:
            mode, equiv = node.mode, True
            if acl is not None:
                mode, equiv = fs_acl.equiv_mode(acl, node.mode)
            if kill_sgid or (not cred.root and not cred.in_group(node.gid)):
                mode &= ~stat.S_ISGID
            node.mode = mode
            node.acl_access = None if equiv else acl
        else:
            node.acl_default = acl
        node.ctime = self._now()

    def getxattr(self, ino: int, name: bytes, cred: Cred) -> bytes:
        """The value (the server answers size probes and ERANGE); ENODATA when absent."""
        node = self._get(ino)
        prefix = self._xattr_name(name)
        if prefix == b"system.":
            if stat.S_ISLNK(node.mode):
                raise FsError(errno.EOPNOTSUPP)
            acl = node.acl_access if name == fs_acl.ACCESS else node.acl_default
            if acl is None:
                raise FsError(errno.ENODATA)
            return fs_acl.encode(acl)
        self._xattr_permission(node, prefix, MAY_READ, cred)
        value = node.xattrs.get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def listxattr(self, ino: int, cred: Cred) -> list[bytes]:
        """Names in tmpfs's order: the ACLs, then the rest by name, descending; trusted.* for root only."""
        node = self._get(ino)
        names = [n for n, acl in zip(ACL_NAMES, (node.acl_access, node.acl_default), strict=True)
                 if acl is not None]
        names += sorted((n for n in node.xattrs if cred.root or not n.startswith(b"trusted.")), reverse=True)
        return names

    def removexattr(self, ino: int, name: bytes, cred: Cred) -> None:
        node = self._get(ino)
        prefix = self._xattr_name(name)
        if prefix == b"system.":
            self._set_acl(node, name, None, cred)
            return
        self._xattr_permission(node, prefix, MAY_WRITE, cred)
        if name not in node.xattrs:
            raise FsError(errno.ENODATA)
        del node.xattrs[name]
        node.ctime = self._now()
