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
from protocol.layers.structs import FuseAttr, FuseGetxattrIn, FuseReadIn, FuseWriteIn
from protocol.sizes import fixed_reply_size

DEV = "linux fs/fuse/dev.c fuse_dev_do_write"
DIR = "linux fs/fuse/readdir.c parse_dirfile"
ATTR = "linux fs/fuse/dir.c fuse_invalid_attr"
NOTIFY = "linux fs/fuse/dev.c fuse_notify_*"

ERRNO_MIN = -511  # the kernel refuses error <= -512 with EINVAL
FUSE_NAME_MAX = 1024
LLONG_MAX = (1 << 63) - 1
_VALID_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO,
                stat.S_IFSOCK}


def check_frame(data: bytes, declared_len: int) -> Iterator[Finding]:
    """The length field must equal the bytes written (else EINVAL for the whole write)."""
    if declared_len != len(data):
        yield Finding(code="reply.len-mismatch", source=DEV,
                      message=f"len field says {declared_len} bytes, the message has {len(data)}")


def check_interrupt_reply(error: int, body_len: int) -> Iterator[Finding]:
    """An INTERRUPT is answered, if at all, by a bare EAGAIN or ENOSYS."""
    if body_len:
        yield Finding(code="reply.interrupt-body", source=DEV,
                      message=f"INTERRUPT reply has a {body_len}-byte body; the kernel takes only "
                              "the header and rejects this with EINVAL")
    if error not in (-11, -38):
        yield Finding(code="reply.interrupt-error", source=DEV,
                      message=f"INTERRUPT answered {error}; only -EAGAIN (resend) and -ENOSYS "
                              "(no interrupts) mean anything to the kernel, which ignores the rest")


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


def reply_size_limit(opcode: int, request: Packet | None) -> int | None:
    """Upper bound the request puts on a variable reply (READ size, xattr size ...)."""
    if request is None:
        return None
    if opcode in (c.FUSE_READ, c.FUSE_READDIR, c.FUSE_READDIRPLUS) and FuseReadIn in request:
        return int(request[FuseReadIn].size)
    if opcode in (c.FUSE_GETXATTR, c.FUSE_LISTXATTR) and FuseGetxattrIn in request:
        size = int(request[FuseGetxattrIn].size)
        return size or None
    return None


def check_body_size(opcode: int, layers: Layers, body_len: int, request: Packet | None,
                    minor: int) -> Iterator[Finding]:
    """Fixed replies have the exact size for the opcode and minor; variable ones fit."""
    name = c.OPCODE_NAMES.get(opcode, str(opcode))
    expected = fixed_reply_size(layers)
    if opcode in VARIABLE_REPLY:
        limit = reply_size_limit(opcode, request)
        if expected is not None and body_len > expected:
            yield Finding(code="reply.body-size", source=DEV,
                          message=f"{name} reply body is {body_len} bytes, more than the "
                                  f"{expected} of its struct at minor {minor}")
        elif limit is not None and body_len > limit:
            yield Finding(code="reply.body-size", source=DEV,
                          message=f"{name} reply body is {body_len} bytes, more than the "
                                  f"{limit} the request asked for")
        elif opcode in (c.FUSE_INIT, c.CUSE_INIT) and body_len < 8:
            yield Finding(code="reply.body-size", source=DEV,
                          message=f"{name} reply body is {body_len} bytes; major and minor "
                                  "(8 bytes) are the least a reply must carry")
        return
    if expected is not None and body_len != expected:
        yield Finding(code="reply.body-size", source=DEV,
                      message=f"{name} reply body is {body_len} bytes; at minor {minor} it must "
                              f"be exactly {expected} ({'+'.join(cls.__name__ for cls in layers) or 'none'})")


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
    """Dirents: 8-aligned records, names 1..1024 bytes without '/', no partial record."""
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
                                  f"{len(raw) - pos} remain; the kernel drops it")
            return
        name = raw[pos + head: pos + head + namelen]
        if b"/" in name or b"\0" in name:
            yield Finding(code="reply.dirent-name", source=DIR,
                          message=f"{where}: name {name!r} contains '/' or NUL")
        if plus:
            attr = FuseAttr(raw[pos + 40: pos + 128])
            if int.from_bytes(raw[pos: pos + 8], "little"):
                yield from check_attr(attr, where)
        pos += reclen
        index += 1
    if pos != len(raw):
        yield Finding(code="reply.dirent-truncated", source=DIR,
                      message=f"{len(raw) - pos} stray bytes after the last dirent (a record needs "
                              f"at least {head})")


def check_semantics(opcode: int, body: Packet | None, raw_body: bytes,
                    request: Packet | None) -> Iterator[Finding]:
    """Opcode-specific checks of a successful reply (the ones the kernel enforces)."""
    if body is None:
        return
    if opcode in (c.FUSE_LOOKUP, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_SYMLINK, c.FUSE_LINK,
                  c.FUSE_CREATE, c.FUSE_TMPFILE, c.FUSE_GETATTR, c.FUSE_SETATTR):
        attr = getattr(body, "attr", None)
        nodeid = getattr(body, "nodeid", None)
        if isinstance(attr, Packet) and not (opcode == c.FUSE_LOOKUP and nodeid == 0):
            yield from check_attr(attr, c.OPCODE_NAMES[opcode])
    elif opcode in (c.FUSE_READDIR, c.FUSE_READDIRPLUS):
        yield from check_dirents(raw_body, opcode == c.FUSE_READDIRPLUS)
    elif opcode == c.FUSE_WRITE and request is not None and FuseWriteIn in request:
        asked = int(request[FuseWriteIn].size)
        if int(body.size) > asked:
            yield Finding(code="reply.write-size", source="linux fs/fuse/file.c fuse_send_write",
                          message=f"WRITE reply says {body.size} bytes written of {asked} sent; "
                                  "the kernel answers EIO")


def check_notify(code: int, body: bytes) -> Iterator[Finding]:
    """A notification has a known code and the body size that code defines."""
    if code not in NOTIFY_LAYERS:
        yield Finding(code="notify.unknown-code", source=NOTIFY,
                      message=f"notification code {code} is not defined (1..{max(NOTIFY_LAYERS)})")
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
    elif code == c.FUSE_NOTIFY_STORE:
        expected = head + int.from_bytes(body[16:20], "little")
    elif code == c.FUSE_NOTIFY_PRUNE:
        expected = head + 8 * int.from_bytes(body[0:4], "little")
    if len(body) != expected:
        yield Finding(code="notify.body-size", source=NOTIFY,
                      message=f"{name} body is {len(body)} bytes; its fields say {expected}")


__all__ = [
    "FUSE_OUT_HEADER_SIZE",
    "check_attr",
    "check_body_size",
    "check_dirents",
    "check_error",
    "check_frame",
    "check_notify",
    "check_semantics",
    "reply_size_limit",
]
