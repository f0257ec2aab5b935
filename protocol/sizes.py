"""Which layout each message uses at a negotiated minor: the compat sizes, as data.

Facts from the kernel (fs/fuse) and libfuse (lib/fuse_lowlevel.c): a server
talking to an older kernel shrinks entry_out/attr_out (minor < 9), statfs
(minor < 4) and init_out (minor < 5: 8 bytes, < 23: 24 bytes); the kernel
shrinks write_in (minor < 9), mknod_in and create_in to 8 bytes (minor < 12) and
setxattr_in (without FUSE_SETXATTR_EXT).
"""

from __future__ import annotations

from scapy.packet import Packet

from protocol import constants as c
from protocol.layers import compat
from protocol.layers.base import fixed_size
from protocol.layers.messages import REQUEST_LAYERS, Layers, reply_layers
from protocol.layers.structs import (
    FuseAttrOut,
    FuseCreateIn,
    FuseEntryOut,
    FuseInitOut,
    FuseMknodIn,
    FuseSetxattrIn,
    FuseStatfsOut,
    FuseWriteIn,
)


def init_out_class(offered_minor: int) -> type[Packet]:
    """The fuse_init_out layout a server must use for a kernel offering ``offered_minor``."""
    if offered_minor < 5:
        return compat.FuseInitOutCompat
    if offered_minor < 23:
        return compat.FuseInitOut22
    return FuseInitOut


# Opcodes whose entry_out / attr_out the kernel shrinks below 7.9 (dev.c fuse_adjust_compat)
_COMPAT_ENTRY = frozenset({c.FUSE_LOOKUP, c.FUSE_CREATE, c.FUSE_MKNOD, c.FUSE_MKDIR,
                           c.FUSE_SYMLINK, c.FUSE_LINK})
_COMPAT_ATTR = frozenset({c.FUSE_GETATTR, c.FUSE_SETATTR})


def _reply_variant(opcode: int, cls: type[Packet], minor: int) -> type[Packet]:
    if minor < 9 and cls is FuseEntryOut and opcode in _COMPAT_ENTRY:
        return compat.FuseEntryOutCompat
    if minor < 9 and cls is FuseAttrOut and opcode in _COMPAT_ATTR:
        return compat.FuseAttrOutCompat
    if minor < 4 and cls is FuseStatfsOut:
        return compat.FuseStatfsOutCompat
    if cls is FuseInitOut:
        return init_out_class(minor)
    return cls


def reply_layers_at(opcode: int, minor: int, request: Packet | None = None) -> Layers:
    """Reply layers for ``opcode`` at ``minor`` (compat variants substituted)."""
    return tuple(_reply_variant(opcode, cls, minor) for cls in reply_layers(opcode, request))


def request_layers_at(opcode: int, minor: int, flags: int = 0) -> Layers:
    """Request layers the kernel sends for ``opcode`` at ``minor`` with INIT ``flags``."""
    out: list[type[Packet]] = []
    for cls in REQUEST_LAYERS.get(opcode, ()):
        if cls is FuseWriteIn and minor < 9:
            cls = compat.FuseWriteInCompat
        elif cls is FuseMknodIn and minor < 12:
            cls = compat.FuseMknodInCompat
        elif cls is FuseCreateIn and minor < 12:
            cls = compat.FuseCreateInCompat
        elif cls is FuseSetxattrIn and not flags & c.FUSE_SETXATTR_EXT:
            cls = compat.FuseSetxattrInCompat
        out.append(cls)
    return tuple(out)


def fixed_reply_size(layers: Layers) -> int | None:
    """Exact body size of a reply made of fixed-size layers only, else None."""
    try:
        return sum(fixed_size(cls) for cls in layers)
    except TypeError:
        return None
