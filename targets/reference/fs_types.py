"""The model's data types: credentials, the error, inodes and open handles."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from targets.reference.fs_data import PAGE, SparseData

ROOT_INO = 1
NAME_MAX = 255
PATH_MAX = 4096
MAX_FILE_SIZE = (1 << 63) - 1  # MAX_LFS_FILESIZE, also OFFSET_MAX for locks
BOGO_DIRENT_SIZE = 20  # tmpfs's directory size per entry ('.' and '..' count too)
DAY_NS = 24 * 3600 * 1_000_000_000

MAY_EXEC, MAY_WRITE, MAY_READ = 1, 2, 4

Acl = tuple[tuple[int, int, int], ...]  # (tag, perm, id) entries in xattr order


@dataclass(frozen=True)
class Cred:
    """Who asks: fsuid, fsgid, supplementary groups, pid. uid 0 has every capability."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    pid: int = 0

    @property
    def root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


ROOT = Cred(0, 0)


class FsError(OSError):
    """An operation failed with ``errno``, as Linux would fail it."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


class LockWouldBlock(FsError):
    """A lock request conflicts; raised for waiting requests too (the server does the waiting)."""

    def __init__(self, wait: bool) -> None:
        super().__init__(errno.EAGAIN)
        self.wait = wait


@dataclass(eq=False)
class Inode:
    """One file of any type; times are integer nanoseconds."""

    ino: int
    mode: int
    uid: int
    gid: int
    generation: int = 0
    nlink: int = 1
    rdev: int = 0
    size: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    data: SparseData = field(default_factory=SparseData)
    entries: dict[bytes, int] = field(default_factory=dict)  # directories: name -> ino
    cookies: dict[bytes, int] = field(default_factory=dict)  # directories: name -> readdir position
    next_cookie: int = 2  # directories: positions 0 and 1 are '.' and '..'
    parent: int = 0  # directories: '..'
    target: bytes = b""  # symlinks
    xattrs: dict[bytes, bytes] = field(default_factory=dict)  # all but the POSIX ACLs
    acl_access: Acl | None = None  # only when not expressible as mode bits
    acl_default: Acl | None = None
    nlookup: int = 0
    open_count: int = 0
    linkable: bool = False  # an O_TMPFILE inode that may still be linked in

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def dtype(self) -> int:
        """The DT_* type readdir reports."""
        return self.kind >> 12

    @property
    def blocks(self) -> int:
        """Allocated 512-byte blocks."""
        return self.data.allocated * (PAGE // 512)


def valid_name(name: bytes) -> None:
    """One path component, at most NAME_MAX bytes: never a way out of its directory."""
    if not name or b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL)
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


class AccessMode:
    """What an open file's flags allow (both backends' handles)."""

    flags: int

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_WRONLY

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    @property
    def append(self) -> bool:
        return bool(self.flags & os.O_APPEND)

    @property
    def noatime(self) -> bool:
        return bool(self.flags & os.O_NOATIME)


@dataclass(eq=False)
class Handle(AccessMode):
    """An open file or directory: what the kernel's fh stands for."""

    ino: int
    flags: int
    cred: Cred
    directory: bool = False
