"""POSIX ACLs in Linux's xattr format, and the permission check that uses them.

Follows the kernel: ``posix_acl_from_xattr`` (format), ``posix_acl_valid``
(entry order; named ids may repeat), ``posix_acl_equiv_mode``, ``__posix_acl_chmod``,
``posix_acl_create_masq``, ``posix_acl_permission`` and ``generic_permission``.
"""

from __future__ import annotations

import errno
import stat
import struct

from targets.reference.fs_types import MAY_EXEC, Acl, Cred, FsError, Inode

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
XATTR_VERSION = 2
ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


def parse(value: bytes) -> Acl | None:
    """The ACL an xattr value holds (None: no entries, i.e. remove); EINVAL/EOPNOTSUPP if malformed."""
    if not value:
        return None
    if len(value) < _HEADER.size:
        raise FsError(errno.EINVAL)
    if _HEADER.unpack_from(value)[0] != XATTR_VERSION:
        raise FsError(errno.EOPNOTSUPP)
    if (len(value) - _HEADER.size) % _ENTRY.size:
        raise FsError(errno.EINVAL)
    entries = []
    for tag, perm, ident in _ENTRY.iter_unpack(value[_HEADER.size:]):
        if tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            ident = ACL_UNDEFINED_ID
        elif tag not in (ACL_USER, ACL_GROUP) or ident == ACL_UNDEFINED_ID:
            raise FsError(errno.EINVAL)
        entries.append((tag, perm, ident))
    return tuple(entries) or None


def encode(acl: Acl) -> bytes:
    return _HEADER.pack(XATTR_VERSION) + b"".join(_ENTRY.pack(*entry) for entry in acl)


def valid(acl: Acl) -> bool:
    """posix_acl_valid: USER_OBJ, USER*, GROUP_OBJ, GROUP*, [MASK], OTHER; a mask when named."""
    state, needs_mask = ACL_USER_OBJ, False
    for tag, perm, _ in acl:
        if perm & ~7:
            return False
        if tag == ACL_USER_OBJ and state == ACL_USER_OBJ:
            state = ACL_USER
        elif tag == ACL_USER and state == ACL_USER:
            needs_mask = True
        elif tag == ACL_GROUP_OBJ and state == ACL_USER:
            state = ACL_GROUP
        elif tag == ACL_GROUP and state == ACL_GROUP:
            needs_mask = True
        elif tag == ACL_MASK and state == ACL_GROUP:
            state = ACL_OTHER
        elif tag == ACL_OTHER and (state == ACL_OTHER or (state == ACL_GROUP and not needs_mask)):
            state = 0
        else:
            return False
    return state == 0


def equiv_mode(acl: Acl, mode: int) -> tuple[int, bool]:
    """The mode an access ACL sets, and whether the ACL says nothing more than that mode."""
    bits, equiv = 0, True
    for tag, perm, _ in acl:
        if tag == ACL_USER_OBJ:
            bits |= (perm & 7) << 6
        elif tag == ACL_GROUP_OBJ:
            bits |= (perm & 7) << 3
        elif tag == ACL_OTHER:
            bits |= perm & 7
        elif tag == ACL_MASK:
            bits = (bits & ~0o070) | (perm & 7) << 3
            equiv = False
        else:
            equiv = False
    return (mode & ~0o777) | bits, equiv


def chmod(acl: Acl, mode: int) -> Acl:
    """The access ACL after chmod: owner, mask (or owning group) and other follow the mode."""
    has_mask = any(tag == ACL_MASK for tag, _, _ in acl)
    out = []
    for tag, perm, ident in acl:
        if tag == ACL_USER_OBJ:
            perm = (mode >> 6) & 7
        elif tag == ACL_OTHER:
            perm = mode & 7
        elif tag == ACL_MASK or (tag == ACL_GROUP_OBJ and not has_mask):
            perm = (mode >> 3) & 7
        out.append((tag, perm, ident))
    return tuple(out)


def create_masq(acl: Acl, mode: int) -> tuple[Acl | None, int]:
    """A new inode's access ACL (None when mode bits say it all) and mode, from the default ACL."""
    bits = mode & 0o777
    out = list(acl)
    not_equiv = False
    group_at = mask_at = -1
    for i, (tag, perm, ident) in enumerate(out):
        if tag == ACL_USER_OBJ:
            perm &= (bits >> 6) | ~0o7
            bits &= (perm << 6) | ~0o700
        elif tag == ACL_OTHER:
            perm &= bits | ~0o7
            bits &= perm | ~0o7
        elif tag == ACL_GROUP_OBJ:
            group_at = i
        elif tag == ACL_MASK:
            mask_at, not_equiv = i, True
        else:
            not_equiv = True
        out[i] = (tag, perm & 0xFFFF, ident)
    at = mask_at if mask_at >= 0 else group_at
    tag, perm, ident = out[at]
    perm &= (bits >> 3) | ~0o7
    bits &= (perm << 3) | ~0o070
    out[at] = (tag, perm & 0xFFFF, ident)
    return (tuple(out) if not_equiv else None), (mode & ~0o777) | bits


def _acl_check(acl: Acl, node: Inode, want: int, cred: Cred) -> bool:
    """posix_acl_permission for a caller that is not the owner."""
    found = False
    for i, (tag, perm, ident) in enumerate(acl):
        matched = False
        if tag == ACL_USER and ident == cred.uid:
            matched = True
        elif tag in (ACL_GROUP_OBJ, ACL_GROUP) and cred.in_group(node.gid if tag == ACL_GROUP_OBJ else ident):
            found = True
            matched = perm & want == want
        elif tag == ACL_OTHER:
            return not found and perm & want == want
        if matched:
            mask = next((p for t, p, _ in acl[i + 1:] if t == ACL_MASK), None)
            return perm & (7 if mask is None else mask) & want == want
    return False


def permitted(node: Inode, mask: int, cred: Cred, *, acls: bool = True) -> bool:
    """generic_permission: mode bits or the access ACL, then root's overrides."""
    want = mask & 7
    mode = node.mode
    if cred.uid == node.uid:
        ok = want & ~(mode >> 6) == 0
    elif acls and node.acl_access is not None and mode & 0o070:
        ok = _acl_check(node.acl_access, node, want, cred)
    else:
        bits = mode >> 3 if cred.in_group(node.gid) else mode
        ok = want & ~bits == 0
    if ok or not cred.root:
        return ok
    if stat.S_ISDIR(mode):
        return True
    return not (want & MAY_EXEC) or bool(mode & 0o111)


def check(node: Inode, mask: int, cred: Cred, *, acls: bool = True) -> None:
    """EACCES unless ``cred`` may ``mask`` (MAY_READ | MAY_WRITE | MAY_EXEC) ``node``."""
    if not permitted(node, mask, cred, acls=acls):
        raise FsError(errno.EACCES)

