"""Shorter layouts of structs as sent at older minors (the FUSE_COMPAT_* sizes).

Each variant is derived from the full class by cutting it at the compat size,
so a layout is still written once.
"""

from __future__ import annotations

from typing import Any

from scapy.fields import PacketLenField

from protocol import constants as c
from protocol.layers.base import FuseStruct, field_size, fixed_size, nested, unwrap
from protocol.layers.structs import (
    FuseAttr,
    FuseAttrOut,
    FuseCreateIn,
    FuseEntryOut,
    FuseInitOut,
    FuseKstatfs,
    FuseMknodIn,
    FuseSetxattrIn,
    FuseStatfsOut,
    FuseWriteIn,
)


def truncated(cls: type[FuseStruct], size: int) -> type[FuseStruct]:
    """``cls`` cut to its first ``size`` bytes (nested structs cut too)."""
    if size == fixed_size(cls):
        return cls
    fields: list[Any] = []
    used = 0
    for f in cls.fields_desc:
        if used >= size:
            break
        width = field_size(f)
        if used + width > size:
            f = unwrap(f)
            if not isinstance(f, PacketLenField):
                raise ValueError(f"{cls.__name__}: {size} cuts field {f.name}")
            fields.append(nested(f.name, truncated(f.cls, size - used)))  # type: ignore[arg-type]
            used = size
            break
        fields.append(f)
        used += width
    name = f"{cls.__name__}Compat{size}"
    namespace = {"fields_desc": fields, "__doc__": f"{cls.c_name}, first {size} bytes.",
                 "match_subclass": True}  # ``FuseWriteIn in pkt`` finds the variant too
    variant = type(name, (cls,), namespace)
    return variant  # type: ignore[return-value]


FuseAttrCompat = truncated(FuseAttr, c.FUSE_COMPAT_ATTR_OUT_SIZE - 16)
FuseEntryOutCompat = truncated(FuseEntryOut, c.FUSE_COMPAT_ENTRY_OUT_SIZE)
FuseAttrOutCompat = truncated(FuseAttrOut, c.FUSE_COMPAT_ATTR_OUT_SIZE)
FuseKstatfsCompat = truncated(FuseKstatfs, c.FUSE_COMPAT_STATFS_SIZE)
FuseStatfsOutCompat = truncated(FuseStatfsOut, c.FUSE_COMPAT_STATFS_SIZE)
FuseInitOutCompat = truncated(FuseInitOut, c.FUSE_COMPAT_INIT_OUT_SIZE)
FuseInitOut22 = truncated(FuseInitOut, c.FUSE_COMPAT_22_INIT_OUT_SIZE)
FuseWriteInCompat = truncated(FuseWriteIn, c.FUSE_COMPAT_WRITE_IN_SIZE)
FuseMknodInCompat = truncated(FuseMknodIn, c.FUSE_COMPAT_MKNOD_IN_SIZE)
FuseCreateInCompat = truncated(FuseCreateIn, 8)  # fuse_open_in's size, before 7.12
FuseSetxattrInCompat = truncated(FuseSetxattrIn, c.FUSE_COMPAT_SETXATTR_IN_SIZE)
