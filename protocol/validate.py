"""Validators: what is wrong with a reply or a notification, as named findings.

Every check states the kernel's behaviour it comes from; ``KERNEL`` cites the
files.  Validators never raise: they return findings.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator

from scapy.packet import Packet

from protocol import constants as c
from protocol.findings import Finding
from protocol.layers.base import fixed_size
from protocol.layers.header import FUSE_OUT_HEADER_SIZE
from protocol.layers.messages import NOTIFY_LAYERS, VARIABLE_REPLY, Layers
from protocol.layers.structs import (
    FuseAttr,
    FuseCopyFileRangeIn,
    FuseGetxattrIn,
    FuseGetxattrOut,
    FuseIoctlIn,
    FuseReadIn,
    FuseWriteIn,
)
from protocol.sizes import fixed_reply_size

DEV = "linux fs/fuse/dev.c fuse_dev_do_write"
DIR = "linux fs/fuse/readdir.c parse_dirfile"
ATTR = "linux fs/fuse/dir.c fuse_invalid_attr"
NOTIFY = "linux fs/fuse/dev.c fuse_notify_*"

ERRNO_MIN = -511  # the kernel refuses error <= -512 with EINVAL
FUSE_NAME_MAX = 4095  # PATH_MAX - 1 since Linux 6.14 (1024 before); the lenient limit
LLONG_MAX = (1 << 63) - 1
_VALID_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO,
                stat.S_IFSOCK}


def check_frame(data: bytes, declared_len: int) -> Iterator[Finding]:
    """The length field must equal the bytes written (else EINVAL for the whole write)."""
    if declared_len != len(data):
        yield Finding(code="reply.len-mismatch", source=DEV,
                      message=f"len field says {declared_len} bytes, the message has {len(data)}")


def check_interrupt_reply(error: int, body_len: int) -> Iterator[Finding]:
    """An INTERRUPT is answered, if at all, by the header alone (EAGAIN and ENOSYS mean something)."""
    if body_len:
        yield Finding(code="reply.interrupt-body", source=DEV,
                      message=f"INTERRUPT reply has a {body_len}-byte body; the kernel takes only "
                              "the header and rejects this with EINVAL")


def check_error(error: int, body_len: int) -> Iterator[Finding]:
    """Errors are negative errnos the kernel accepts, and carry no body."""
    if error > 0 or error < ERRNO_MIN:
        yield Finding(code="reply.error-range", source=DEV,
                      message=f"error {error} is outside {ERRNO_MIN}..0 (a negative errno); "
                              "the kernel rejects the reply with EINVAL")
    if error and body_len:
        yield Finding(code="reply.body-after-error", source=DEV,
                      message=f"error {error} with a {body_len}-byte body; an error reply is the "
                              "header alone, the kernel rejects it with EINVAL")


PAGE_SIZE = 4096
READLINK_MAX = 4095  # fs/fuse/dir.c: the link is read into one page, NUL kept free
CUSE_INFO_MAX = c.CUSE_INIT_INFO_MAX


def is_argvar(opcode: int, request: Packet | None) -> bool:
    """Whether the kernel takes this reply shorter than its layers (``out_argvar``)."""
    if opcode in (c.FUSE_GETXATTR, c.FUSE_LISTXATTR):
        return not (request is not None and FuseGetxattrIn in request
                    and request[FuseGetxattrIn].size == 0)  # a size probe is fixed: 8 bytes
    return opcode in VARIABLE_REPLY


def reply_size_bounds(opcode: int, layers: Layers, request: Packet | None) -> tuple[int, int | None]:
    """(least, most) bytes of a successful reply body, as the kernel's copy_out_args allows.

    Fixed replies have one size; with ``out_argvar`` only the last argument may be
    short, so the parts before it are required whole (cuse_init_out, fuse_ioctl_out).
    """
    if not is_argvar(opcode, request):
        exact = fixed_reply_size(layers)
        return (exact, exact) if exact is not None else (0, None)
    head = sum_fixed_prefix(layers[:-1])
    last: int | None
    try:
        last = fixed_size(layers[-1])
    except TypeError:
        last = None
    if opcode in (c.FUSE_READ, c.FUSE_READDIR, c.FUSE_READDIRPLUS):
        last = int(request[FuseReadIn].size) if request is not None and FuseReadIn in request else None
    elif opcode in (c.FUSE_GETXATTR, c.FUSE_LISTXATTR):
        last = int(request[FuseGetxattrIn].size) if request is not None and FuseGetxattrIn in request \
            else None
    elif opcode == c.FUSE_READLINK:
        last = READLINK_MAX
    elif opcode == c.CUSE_INIT:
        last = CUSE_INFO_MAX
    elif opcode == c.FUSE_IOCTL:  # the kernel's buffer is out_size, at least a page (for iovecs)
        last = max(int(request[FuseIoctlIn].out_size), PAGE_SIZE) \
            if request is not None and FuseIoctlIn in request else None
    return head, (head + last if last is not None else None)


def check_body_size(opcode: int, layers: Layers, body_len: int, request: Packet | None,
                    minor: int) -> Iterator[Finding]:
    """A successful reply's body has the size the opcode, the minor and the request allow."""
    name = c.OPCODE_NAMES.get(opcode, str(opcode))
    least, most = reply_size_bounds(opcode, layers, request)
    parts = "+".join(cls.__name__ for cls in layers) or "no body"
    if least == most and body_len != least:
        yield Finding(code="reply.body-size", source=DEV,
                      message=f"{name} reply body is {body_len} bytes; at minor {minor} it must be "
                              f"exactly {least} ({parts}); the kernel answers EINVAL and the caller EIO")
    elif body_len < least or (most is not None and body_len > most):
        yield Finding(code="reply.body-size", source=DEV,
                      message=f"{name} reply body is {body_len} bytes; the kernel takes "
                              f"{least}..{most if most is not None else 'any'} here ({parts}) and "
                              "answers EINVAL otherwise")


def sum_fixed_prefix(layers: Layers) -> int:
    """Bytes of the leading fixed-size layers (before the first variable part)."""
    total = 0
    for cls in layers:
        try:
            total += fixed_size(cls)
        except TypeError:
            break
    return total


def check_attr(attr: Packet, where: str) -> Iterator[Finding]:
    """fuse_attr: a valid file type and a size the kernel accepts."""
    mode = int(attr.mode)
    if stat.S_IFMT(mode) not in _VALID_TYPES:
        yield Finding(code="reply.attr-type", source=ATTR,
                      message=f"{where}: mode {mode:#o} has no valid file type; the kernel answers EIO")
    if int(attr.size) > LLONG_MAX:
        yield Finding(code="reply.attr-size", source=ATTR,
                      message=f"{where}: size {attr.size} exceeds LLONG_MAX; the kernel answers EIO")


def check_dirents(raw: bytes, plus: bool) -> Iterator[Finding]:
    """Dirents as parse_dirfile/parse_dirplusfile read them: 8-aligned, names without '/'."""
    head = c.FUSE_NAME_OFFSET_DIRENTPLUS if plus else c.FUSE_NAME_OFFSET
    pos = 0
    index = 0
    while len(raw) - pos >= head:
        namelen = int.from_bytes(raw[pos + head - 8: pos + head - 4], "little")
        reclen = (head + namelen + 7) & ~7
        where = f"dirent #{index} at byte {pos}"
        if namelen == 0 or namelen > FUSE_NAME_MAX:
            yield Finding(code="reply.dirent-namelen", source=DIR,
                          message=f"{where}: namelen {namelen} is outside 1..{FUSE_NAME_MAX}; "
                                  "the kernel fails the readdir with EIO")
            return
        if reclen > len(raw) - pos:
            yield Finding(code="reply.dirent-truncated", source=DIR,
                          message=f"{where}: record of {reclen} bytes (name padded to 8) but only "
                                  f"{len(raw) - pos} remain; the kernel silently drops it")
            return
        name = raw[pos + head: pos + head + namelen]
        if b"/" in name:
            yield Finding(code="reply.dirent-name", source=DIR,
                          message=f"{where}: name {name!r} contains '/'; the kernel fails the "
                                  "readdir with EIO")
        if plus and name not in (b".", b".."):
            nodeid = int.from_bytes(raw[pos: pos + 8], "little")
            if nodeid:
                for finding in check_attr(FuseAttr(raw[pos + 40: pos + 128]), where):
                    yield Finding(code="reply.direntplus-attr", source="linux fs/fuse/readdir.c "
                                  "fuse_direntplus_link",
                                  message=finding.message.replace(
                                      "the kernel answers EIO",
                                      "the kernel lists the name but does not cache the entry "
                                      "and sends FORGET"))
        pos += reclen
        index += 1
    if pos != len(raw):
        yield Finding(code="reply.dirent-trailing", source=DIR,
                      message=f"{len(raw) - pos} stray bytes after the last dirent (a record needs "
                              f"at least {head}); the kernel ignores them")


STATX_TYPE = 0x1
STATX_SIZE = 0x200
NEW_ENTRY = "linux fs/fuse/dir.c create_new_entry / fuse_create_open"
_NEW_TYPES = {c.FUSE_MKDIR: stat.S_IFDIR, c.FUSE_SYMLINK: stat.S_IFLNK, c.FUSE_CREATE: stat.S_IFREG,
              c.FUSE_TMPFILE: stat.S_IFREG}


def check_new_entry(opcode: int, body: Packet, request: Packet | None) -> Iterator[Finding]:
    """A created entry has a fresh nodeid (not 0, not the root) of the type asked for."""
    name = c.OPCODE_NAMES[opcode]
    nodeid = int(body.nodeid)
    if nodeid in (0, c.FUSE_ROOT_ID):
        yield Finding(code="reply.entry-nodeid", source=NEW_ENTRY,
                      message=f"{name} answered nodeid {nodeid}; a new entry needs a nodeid other "
                              "than 0 and the root's, else the kernel answers EIO")
    want = _NEW_TYPES.get(opcode)
    if opcode == c.FUSE_MKNOD and request is not None and hasattr(request.payload, "mode"):
        want = stat.S_IFMT(int(request.payload.mode))
    got = stat.S_IFMT(int(body.attr.mode))
    if want is not None and got != want:
        yield Finding(code="reply.entry-type", source=NEW_ENTRY,
                      message=f"{name} asked for type {want:#o} and answered {got:#o}; the kernel "
                              "answers EIO")


def check_semantics(opcode: int, body: Packet | None, raw_body: bytes,
                    request: Packet | None) -> Iterator[Finding]:
    """Opcode-specific checks of a successful reply: the ones the kernel enforces."""
    if body is None:
        return
    name = c.OPCODE_NAMES.get(opcode, str(opcode))
    if opcode in (c.FUSE_LOOKUP, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_SYMLINK, c.FUSE_LINK,
                  c.FUSE_CREATE, c.FUSE_TMPFILE, c.FUSE_GETATTR, c.FUSE_SETATTR):
        attr = getattr(body, "attr", None)
        negative = opcode == c.FUSE_LOOKUP and int(getattr(body, "nodeid", 1)) == 0
        if isinstance(attr, Packet) and not negative:
            yield from check_attr(attr, name)
        if opcode in (c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_SYMLINK, c.FUSE_LINK, c.FUSE_CREATE,
                      c.FUSE_TMPFILE):
            yield from check_new_entry(opcode, body, request)
    elif opcode in (c.FUSE_READDIR, c.FUSE_READDIRPLUS):
        yield from check_dirents(raw_body, opcode == c.FUSE_READDIRPLUS)
    elif opcode == c.FUSE_WRITE and request is not None and FuseWriteIn in request:
        asked = int(request[FuseWriteIn].size)
        if int(body.size) > asked:
            yield Finding(code="reply.write-size", source="linux fs/fuse/file.c fuse_send_write",
                          message=f"WRITE reply says {body.size} bytes written of {asked} sent; "
                                  "the kernel answers EIO")
    elif opcode in (c.FUSE_COPY_FILE_RANGE, c.FUSE_COPY_FILE_RANGE_64) and request is not None \
            and FuseCopyFileRangeIn in request:
        asked = int(request[FuseCopyFileRangeIn].len)
        copied = int(getattr(body, "size", getattr(body, "bytes_copied", 0)))
        if copied > asked:
            yield Finding(code="reply.copy-size", source="linux fs/fuse/file.c __fuse_copy_file_range",
                          message=f"{name} reply says {copied} bytes copied of {asked} asked; the "
                                  "kernel answers EIO")
    elif opcode == c.FUSE_LISTXATTR and raw_body and not isinstance(body, FuseGetxattrOut):
        if not raw_body.endswith(b"\0") or b"\0\0" in raw_body or raw_body.startswith(b"\0"):
            yield Finding(code="reply.xattr-list", source="linux fs/fuse/xattr.c fuse_verify_xattr_list",
                          message=f"LISTXATTR list {raw_body[:40]!r} has an empty or unterminated "
                                  "name; the kernel answers EIO")
    elif opcode == c.FUSE_IOCTL and int(body.flags) & c.FUSE_IOCTL_RETRY:
        yield from check_ioctl_retry(body, raw_body, request)
    elif opcode == c.FUSE_IOCTL and request is not None and FuseIoctlIn in request:
        asked = int(request[FuseIoctlIn].out_size)
        if len(raw_body) - 16 > asked:
            yield Finding(code="reply.ioctl-size", source="linux fs/fuse/ioctl.c fuse_do_ioctl",
                          message=f"IOCTL reply carries {len(raw_body) - 16} bytes of output, "
                                  f"more than out_size {asked}; the kernel answers EIO")
    elif opcode == c.FUSE_STATX:
        stx = body.stat
        if int(stx.mask) & STATX_TYPE and stat.S_IFMT(int(stx.mode)) not in _VALID_TYPES:
            yield Finding(code="reply.statx-type", source="linux fs/fuse/dir.c fuse_do_statx",
                          message=f"STATX mode {int(stx.mode):#o} has no valid type; the kernel "
                                  "answers EIO")
        if int(stx.mask) & STATX_SIZE and int(stx.size) > LLONG_MAX:
            yield Finding(code="reply.statx-size", source="linux fs/fuse/dir.c fuse_do_statx",
                          message=f"STATX size {stx.size} exceeds LLONG_MAX; the kernel answers EIO")


def check_ioctl_retry(body: Packet, raw_body: bytes, request: Packet | None) -> Iterator[Finding]:
    """A RETRY reply: only for unrestricted ioctls, at most 256 iovecs, all of them sent."""
    source = "linux fs/fuse/ioctl.c fuse_do_ioctl"
    if request is not None and FuseIoctlIn in request \
            and not int(request[FuseIoctlIn].flags) & c.FUSE_IOCTL_UNRESTRICTED:
        yield Finding(code="reply.ioctl-retry", source=source,
                      message="IOCTL answered FUSE_IOCTL_RETRY to a restricted ioctl; the kernel "
                              "answers EIO")
    count = int(body.in_iovs) + int(body.out_iovs)
    if max(int(body.in_iovs), int(body.out_iovs), count) > c.FUSE_IOCTL_MAX_IOV:
        yield Finding(code="reply.ioctl-retry", source=source,
                      message=f"IOCTL RETRY asks for {count} iovecs, more than "
                              f"{c.FUSE_IOCTL_MAX_IOV}; the kernel answers ENOMEM")
    elif len(raw_body) - 16 != 16 * count:
        yield Finding(code="reply.ioctl-retry", source=source,
                      message=f"IOCTL RETRY says {count} iovecs and carries {len(raw_body) - 16} "
                              "bytes of them (16 each); the kernel answers EIO")


# Notifications whose body the kernel ignores (fuse_notify_resend, fuse_notify_inc_epoch)
_BODY_IGNORED = {c.FUSE_NOTIFY_RESEND, c.FUSE_NOTIFY_INC_EPOCH}


def check_notify(code: int, body: bytes) -> Iterator[Finding]:
    """A notification has a known code, the body size that code defines and sane fields."""
    if code not in NOTIFY_LAYERS:
        yield Finding(code="notify.unknown-code", source=NOTIFY,
                      message=f"notification code {code} is not defined (1..{max(NOTIFY_LAYERS)}); "
                              "the kernel answers EINVAL")
        return
    if code in _BODY_IGNORED:
        return
    layers = NOTIFY_LAYERS[code]
    head = sum_fixed_prefix(layers)
    name = c.NOTIFY_CODE_NAMES[code]
    if len(body) < head:
        yield Finding(code="notify.body-size", source=NOTIFY,
                      message=f"{name} body is {len(body)} bytes, its struct needs {head}")
        return
    expected = head
    if code in (c.FUSE_NOTIFY_INVAL_ENTRY, c.FUSE_NOTIFY_DELETE):
        namelen = int.from_bytes(body[head - 8: head - 4], "little")
        expected = head + namelen + 1
        if namelen > FUSE_NAME_MAX:
            yield Finding(code="notify.namelen", source=NOTIFY,
                          message=f"{name} namelen {namelen} exceeds {FUSE_NAME_MAX}; the kernel "
                                  "answers ENAMETOOLONG")
    elif code == c.FUSE_NOTIFY_STORE:
        expected = head + int.from_bytes(body[16:20], "little")
    elif code == c.FUSE_NOTIFY_PRUNE:
        expected = head + 8 * int.from_bytes(body[0:4], "little")
    if code in (c.FUSE_NOTIFY_STORE, c.FUSE_NOTIFY_RETRIEVE):
        where = 8 if code == c.FUSE_NOTIFY_STORE else 16
        offset = int.from_bytes(body[where: where + 8], "little")
        if offset > LLONG_MAX:
            yield Finding(code="notify.offset", source=NOTIFY,
                          message=f"{name} offset {offset} is past the largest file size; the "
                                  "kernel answers EINVAL")
    if len(body) != expected:
        yield Finding(code="notify.body-size", source=NOTIFY,
                      message=f"{name} body is {len(body)} bytes; its fields say {expected}; the "
                              "kernel answers EINVAL")


__all__ = [
    "FUSE_OUT_HEADER_SIZE",
    "check_attr",
    "check_body_size",
    "check_dirents",
    "check_error",
    "check_frame",
    "check_new_entry",
    "check_notify",
    "check_semantics",
    "is_argvar",
    "reply_size_bounds",
]
