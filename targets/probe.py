"""Find out once what a mounted filesystem supports, by trying it in a scratch directory.

Feature names (``MountTarget.features``):

- ``readonly``: creating a directory fails (EROFS, or ENOSYS/EPERM/EACCES from a
  daemon without write support); nothing else is tried then;
- ``symlink``, ``hardlink`` (nlink 2, one inode), ``xattr`` (a ``user.`` xattr round-trips);
- ``mknod``: a FIFO, and as root a character device;
- ``rename_exchange``: renameat2 RENAME_EXCHANGE swaps two names;
- ``fallocate``: fallocate(2) mode 0 (no emulation by writing);
- ``other_users``: another uid can open a 0644 file (FUSE needs ``allow_other``);
- ``permissions``: another uid is refused a 0600 file;
- ``acl``: ``system.posix_acl_access`` round-trips and a named-user entry that
  denies is enforced for that user.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path

FEATURES = frozenset({"readonly", "symlink", "hardlink", "xattr", "mknod", "rename_exchange",
                      "fallocate", "other_users", "permissions", "acl"})
OTHER_UID = 65534  # nobody
AT_FDCWD = -100
RENAME_EXCHANGE = 2
ACL_XATTR = "system.posix_acl_access"

_LIBC = ctypes.CDLL(None, use_errno=True)


def acl_xattr(*entries: tuple[int, int, int]) -> bytes:
    """The kernel's POSIX ACL xattr: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


UNDEFINED_ID = 0xFFFFFFFF
#: user::rw- user:nobody:--- group::r-- mask::r-- other::r--
DENY_NOBODY = acl_xattr((0x01, 6, UNDEFINED_ID), (0x02, 0, OTHER_UID), (0x04, 4, UNDEFINED_ID),
                        (0x10, 4, UNDEFINED_ID), (0x20, 4, UNDEFINED_ID))


def _tries(action: object) -> bool:
    try:
        return bool(action() if callable(action) else action)
    except OSError:
        return False


def _open_as_other(dir_fd: int, name: str) -> int:
    """Open ``name`` (relative to ``dir_fd``) as OTHER_UID in a child: 0 opened, else the errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(OTHER_UID, OTHER_UID, OTHER_UID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
            os.close(os.open(name, os.O_RDONLY, dir_fd=dir_fd))
        except OSError as exc:
            code = exc.errno or 255
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _access_features(root: Path) -> set[str]:
    found: set[str] = set()
    if os.geteuid() != 0:
        return found  # changing uid needs root
    os.chmod(root, 0o755)
    for name, mode in (("open", 0o644), ("closed", 0o600), ("acl", 0o644)):
        (root / name).write_bytes(b"x")
        os.chmod(root / name, mode)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _open_as_other(dir_fd, "open") != 0:
            return found
        found.add("other_users")
        if _open_as_other(dir_fd, "closed") == errno.EACCES:
            found.add("permissions")
        try:
            os.setxattr(root / "acl", ACL_XATTR, DENY_NOBODY)
            stored = os.getxattr(root / "acl", ACL_XATTR) == DENY_NOBODY
        except OSError:
            stored = False
        if stored and _open_as_other(dir_fd, "acl") == errno.EACCES:
            found.add("acl")
    finally:
        os.close(dir_fd)
    return found


def _fallocate(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return _LIBC.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(65536)) == 0 and (
            os.fstat(fd).st_size == 65536)
    finally:
        os.close(fd)


def _rename_exchange(a: Path, b: Path) -> bool:
    a.write_text("a")
    b.write_text("b")
    done = _LIBC.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0
    return done and a.read_text() == "b" and b.read_text() == "a"


def _hardlink(a: Path, b: Path) -> bool:
    a.write_text("x")
    os.link(a, b)
    sa, sb = os.lstat(a), os.lstat(b)
    return sa.st_ino == sb.st_ino and sa.st_nlink == sb.st_nlink == 2


def _mknod(root: Path) -> bool:
    os.mkfifo(root / "fifo")
    if not stat.S_ISFIFO(os.lstat(root / "fifo").st_mode):
        return False
    if os.geteuid() != 0:
        return True
    os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    st = os.lstat(root / "null")
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def _xattr(path: Path) -> bool:
    path.write_text("x")
    os.setxattr(path, "user.fusecheck", b"probe")
    return os.getxattr(path, "user.fusecheck") == b"probe"


def _symlink(path: Path) -> bool:
    os.symlink("target/name", path)
    return stat.S_ISLNK(os.lstat(path).st_mode) and os.readlink(path) == "target/name"


def probe_features(path: str | os.PathLike[str]) -> set[str]:
    """What the filesystem at ``path`` supports, tried in a directory removed afterwards."""
    try:
        root = Path(tempfile.mkdtemp(prefix=".fusecheck-probe-", dir=path))
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.ENOSYS, errno.EPERM, errno.EACCES):
            return {"readonly"}
        raise
    try:
        found = {name for name, ok in (
            ("symlink", lambda: _symlink(root / "sym")),
            ("hardlink", lambda: _hardlink(root / "h1", root / "h2")),
            ("xattr", lambda: _xattr(root / "xa")),
            ("mknod", lambda: _mknod(root)),
            ("rename_exchange", lambda: _rename_exchange(root / "r1", root / "r2")),
            ("fallocate", lambda: _fallocate(root / "fa")),
        ) if _tries(ok)}
        return found | _access_features(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
