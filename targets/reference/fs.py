"""The reference server's in-memory POSIX filesystem: pure Python, no IO, no FUSE structs.

Operations take inode numbers (the root is 1) and a ``Cred``, and raise ``FsError`` with the
errno Linux gives, checked in the kernel's order (the tests compare with a tmpfs of this kernel,
as root and as other users). Where POSIX leaves a choice the model does what tmpfs does:
directory sizes (20 bytes a name), 4 KiB data/hole granularity with fallocated pages counted as
holes, xattr listing order, times touched by a same-size truncate. It also applies the VFS rules
a FUSE server never has to (protected_hardlinks=1, sticky-directory O_CREAT), so it can stand in
for the kernel's view. Every reply that hands an inode to the kernel (lookup, mknod, mkdir,
symlink, link, create, tmpfile) counts one kernel reference; ``forget`` drops them and an inode
goes when it has no name, no reference and no open handle. atime follows relatime unless
``relatime=False``; inode numbers are never reused (generation stays 0).

Parts: ``fs_types`` (Cred, FsError, Inode, Handle), ``fs_data`` (sparse pages), ``fs_acl``
(ACL format and permission checks), ``fs_locks``, ``fs_core`` (state and shared rules), and the
operations in ``fs_namespace``, ``fs_io`` and ``fs_attr``.
"""

from __future__ import annotations

from targets.reference.fs_acl import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
)
from targets.reference.fs_attr import XATTR_CREATE, XATTR_REPLACE, AttrOps
from targets.reference.fs_io import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, IoOps
from targets.reference.fs_namespace import RENAME_EXCHANGE, RENAME_NOREPLACE
from targets.reference.fs_types import ROOT, ROOT_INO, Cred, FsError, Handle, Inode, LockWouldBlock


class Filesystem(IoOps, AttrOps):
    """The whole model: ``Filesystem(clock=None, *, root_mode=0o40755, root_uid=0, root_gid=0,
    acl=True, relatime=True, capacity=2 GiB, max_inodes=2**20)``."""


__all__ = [
    "ACL_GROUP", "ACL_GROUP_OBJ", "ACL_MASK", "ACL_OTHER", "ACL_USER", "ACL_USER_OBJ",
    "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_ZERO_RANGE", "RENAME_EXCHANGE",
    "RENAME_NOREPLACE", "ROOT", "ROOT_INO", "XATTR_CREATE", "XATTR_REPLACE", "Cred", "Filesystem",
    "FsError", "Handle", "Inode", "LockWouldBlock",
]
