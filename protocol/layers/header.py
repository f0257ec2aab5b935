"""The two message headers and the request header extensions (7.38+)."""

from __future__ import annotations

import struct

from scapy.fields import FieldLenField, FieldListField, LEIntEnumField, LEIntField, LELongField
from scapy.packet import Packet, Padding

from protocol import constants as c
from protocol.layers.base import FuseStruct, i32, u16, u32, u64

FUSE_IN_HEADER_SIZE = 40
FUSE_OUT_HEADER_SIZE = 16


class FuseInHeader(FuseStruct):
    """``struct fuse_in_header``; ``len`` (header + body + extensions) is computed if None."""

    c_name = "fuse_in_header"
    fields_since = {"total_extlen": 38}
    fields_desc = [
        LEIntField("len", None),
        LEIntEnumField("opcode", 0, c.OPCODE_NAMES),
        u64("unique"), u64("nodeid"), u32("uid"), u32("gid"), u32("pid"),
        u16("total_extlen"),  # in units of 8 bytes, 7.38 (was padding)
        u16("padding"),
    ]

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        if self.len is None:
            hdr = struct.pack("<I", len(hdr) + len(pay)) + hdr[4:]
        return hdr + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        """Request extensions sit after the body: dissected apart, as ``FuseExtHeader``s."""
        ext = (self.total_extlen or 0) * 8
        if ext and ext <= len(s):
            return s[: len(s) - ext], s[len(s) - ext :]
        return s, b""

    def hashret(self) -> bytes:
        return struct.pack("<Q", self.unique or 0)


class FuseOutHeader(FuseStruct):
    """``struct fuse_out_header``: a reply (``unique`` != 0) or a notification (``unique`` == 0)."""

    c_name = "fuse_out_header"
    fields_desc = [LEIntField("len", None), i32("error"), LELongField("unique", 0)]

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        if self.len is None:
            hdr = struct.pack("<I", len(hdr) + len(pay)) + hdr[4:]
        return hdr + pay

    def hashret(self) -> bytes:
        return struct.pack("<Q", self.unique or 0)

    def answers(self, other: Packet) -> int:
        return int(isinstance(other, FuseInHeader) and other.unique == self.unique != 0)


class FuseExtHeader(FuseStruct):
    """``struct fuse_ext_header``: ``size`` counts the header and its payload, 8-aligned."""

    c_name, since = "fuse_ext_header", 38
    fields_desc = [LEIntField("size", None), u32("type")]

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        if self.size is None:
            total = len(hdr) + len(pay)
            pay += b"\0" * (-total % 8)
            hdr = struct.pack("<I", len(hdr) + len(pay)) + hdr[4:]
        return hdr + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        body = max(0, (self.size or 0) - 8)
        return s[:body], s[body:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.type == c.FUSE_EXT_GROUPS:
            return FuseSuppGroups
        return super().guess_payload_class(payload)


class FuseSuppGroups(FuseStruct):
    """``struct fuse_supp_groups`` with its ``groups[]`` (FUSE_EXT_GROUPS extension)."""

    c_name, since = "fuse_supp_groups", 38
    fields_desc = [
        FieldLenField("nr_groups", None, count_of="groups", fmt="<I"),
        FieldListField("groups", [], LEIntField("", 0), count_from=lambda p: p.nr_groups),
    ]


class FuseSecctxHeader(FuseStruct):
    """``struct fuse_secctx_header``: the security context extension (FUSE_SECURITY_CTX)."""

    c_name = "fuse_secctx_header"
    fields_desc = [u32("size"), u32("nr_secctx")]


class FuseSecctx(FuseStruct):
    """``struct fuse_secctx``, followed by a NUL-terminated name and ``size`` bytes of context."""

    c_name = "fuse_secctx"
    fields_desc = [u32("size"), u32("padding")]


def ext_groups(groups: list[int]) -> FuseExtHeader:
    """The FUSE_EXT_GROUPS request extension carrying ``groups``."""
    return FuseExtHeader(type=c.FUSE_EXT_GROUPS) / FuseSuppGroups(groups=groups)


def extensions(request: Packet) -> list[FuseExtHeader]:
    """The request extensions of a dissected ``FuseInHeader`` (empty when none)."""
    raw = request[Padding].load if Padding in request else b""
    found: list[FuseExtHeader] = []
    while len(raw) >= 8:
        ext = FuseExtHeader(raw)
        found.append(ext)
        raw = raw[max(8, ext.size or 0):]
    return found
