"""Message parts without a fixed size: names, dirents, xattr name lists, iovecs.

The kernel has no struct for these; they are named after what they carry.
"""

from __future__ import annotations

from scapy.fields import (
    FieldLenField,
    LEIntField,
    PacketField,
    PacketListField,
    PadField,
    StrLenField,
    StrNullField,
)
from scapy.packet import Packet, Raw

from protocol import constants as c
from protocol.layers.base import FuseStruct, nested, u64
from protocol.layers.structs import FuseEntryOut

# Requests that carry two names back to back
_TWO_NAMES = {c.FUSE_SYMLINK, c.FUSE_RENAME, c.FUSE_RENAME2}


class FuseName(FuseStruct):
    """A NUL-terminated name (LOOKUP, MKDIR, CREATE, xattr names, ...)."""

    fields_desc = [StrNullField("name", b"")]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        opcode = _request_opcode(self)
        if opcode in _TWO_NAMES and not isinstance(self.underlayer, FuseName):
            return FuseName
        return Raw


def _request_opcode(layer: Packet) -> int | None:
    while layer.underlayer is not None:
        layer = layer.underlayer
    return getattr(layer, "opcode", None)


class FuseDirent(FuseStruct):
    """``struct fuse_dirent``: its name is padded with NULs to the next 8 bytes."""

    c_name = "fuse_dirent"
    fields_desc = [
        u64("ino"), u64("off"),
        FieldLenField("namelen", None, length_of="name", fmt="<I"),
        LEIntField("type", 0),
        PadField(StrLenField("name", b"", length_from=lambda p: p.namelen), 8, padwith=b"\0"),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class FuseDirentplus(FuseStruct):
    """``struct fuse_direntplus``: an entry_out followed by a dirent (READDIRPLUS)."""

    c_name, since = "fuse_direntplus", 21
    fields_desc = [
        nested("entry_out", FuseEntryOut),
        PacketField("dirent", FuseDirent(), FuseDirent),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class FuseDirentList(FuseStruct):
    """A READDIR reply body: dirents back to back."""

    fields_desc = [PacketListField("dirents", [], FuseDirent)]


class FuseDirentplusList(FuseStruct):
    """A READDIRPLUS reply body: direntplus records back to back."""

    fields_desc = [PacketListField("dirents", [], FuseDirentplus)]


class FuseXattrName(FuseStruct):
    """One NUL-terminated name of a LISTXATTR list."""

    fields_desc = [StrNullField("name", b"")]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class FuseXattrNames(FuseStruct):
    """A LISTXATTR reply body: NUL-terminated names back to back."""

    fields_desc = [PacketListField("names", [], FuseXattrName)]
