"""The kernel's POSIX ACL xattr format, written by hand so a rule can also write it wrong.

A value is a little-endian u32 version (2) and then one 8-byte entry per ACL entry:
u16 tag, u16 perm, u32 id (``include/uapi/linux/posix_acl_xattr.h``).  The id of
USER_OBJ, GROUP_OBJ, MASK and OTHER is undefined (the kernel writes 0xFFFFFFFF).

``acl("u::rw", "u:20002:r", "g::r", "m::rw", "o::")`` is the short text form of
setfacl(1): tag letter, id (empty for the *_OBJ, mask and other entries), then any
of r, w, x.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
VERSION = 2
ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_TAGS = {"u": (USER_OBJ, USER), "g": (GROUP_OBJ, GROUP), "m": (MASK, MASK), "o": (OTHER, OTHER)}
_LETTERS = {USER_OBJ: "u", USER: "u", GROUP_OBJ: "g", GROUP: "g", MASK: "m", OTHER: "o"}


@dataclass(frozen=True)
class Entry:
    tag: int
    perm: int
    id: int = UNDEFINED_ID

    def __str__(self) -> str:
        who = "" if self.id == UNDEFINED_ID else str(self.id)
        bits = "".join(c if self.perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
        return f"{_LETTERS.get(self.tag, hex(self.tag))}:{who}:{bits}"


def perm(text: str) -> int:
    """``"rw"`` or ``"rw-"`` -> 6."""
    return sum(b for c, b in (("r", 4), ("w", 2), ("x", 1)) if c in text)


def entry(text: str) -> Entry:
    """One entry in the short text form: ``u::rw``, ``u:20002:r``, ``g:20100:rwx``, ``m::r``, ``o::``."""
    letter, ident, bits = text.split(":")
    obj, named = _TAGS[letter]
    if ident:
        return Entry(named, perm(bits), int(ident))
    return Entry(obj, perm(bits))


def acl(*texts: str) -> list[Entry]:
    return [entry(t) for t in texts]


def encode(entries: Iterable[Entry | tuple[int, int, int]], version: int = VERSION) -> bytes:
    """The xattr value; entries are written as given (any order, any tag: for malformed ones too)."""
    out = [_HEADER.pack(version)]
    for one in entries:
        tag, bits, ident = (one.tag, one.perm, one.id) if isinstance(one, Entry) else one
        out.append(_ENTRY.pack(tag, bits, ident))
    return b"".join(out)


def decode(value: bytes) -> list[Entry]:
    """The entries of a well-formed value (ValueError otherwise)."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"not an ACL xattr: {len(value)} bytes")
    if _HEADER.unpack_from(value)[0] != VERSION:
        raise ValueError(f"ACL xattr version {_HEADER.unpack_from(value)[0]}")
    return [Entry(*fields) for fields in _ENTRY.iter_unpack(value[_HEADER.size:])]


def text(value: bytes) -> str:
    """A value as ``u::rw-,u:20002:r--,...`` for messages."""
    return ",".join(str(e) for e in decode(value))


def set_acl(path: Path, entries: Iterable[Entry], *, default: bool = False) -> None:
    os.setxattr(path, DEFAULT if default else ACCESS, encode(entries))


def get_acl(path: Path, *, default: bool = False) -> str:
    """The ACL read back, as text (ENODATA when there is none)."""
    return text(os.getxattr(path, DEFAULT if default else ACCESS))
