"""Notification bodies (``fuse_out_header.unique == 0``, ``error`` = notify code)
and the NOTIFY_REPLY request body the kernel sends back for RETRIEVE."""

from __future__ import annotations

import struct

from scapy.fields import FieldListField, LEIntField, LELongField

from protocol.layers.base import FuseStruct, i64, u32, u64


class FuseNotifyPollWakeupOut(FuseStruct):
    c_name = "fuse_notify_poll_wakeup_out"
    fields_desc = [u64("kh")]


class FuseNotifyInvalInodeOut(FuseStruct):
    c_name = "fuse_notify_inval_inode_out"
    fields_desc = [u64("ino"), i64("off"), i64("len")]


class FuseNotifyInvalEntryOut(FuseStruct):
    """Followed by the name (``namelen`` bytes and a NUL)."""

    c_name = "fuse_notify_inval_entry_out"
    fields_desc = [u64("parent"), LEIntField("namelen", None), u32("flags")]  # flags: 7.38

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        return _fill_namelen(self, hdr, pay, 8)


class FuseNotifyDeleteOut(FuseStruct):
    """Followed by the name (``namelen`` bytes and a NUL)."""

    c_name = "fuse_notify_delete_out"
    fields_desc = [u64("parent"), u64("child"), LEIntField("namelen", None), u32("padding")]

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        return _fill_namelen(self, hdr, pay, 16)


def _fill_namelen(layer: FuseStruct, hdr: bytes, pay: bytes, offset: int) -> bytes:
    """Fill ``namelen`` from the NUL-terminated name that follows, unless given."""
    if layer.namelen is None:
        name = pay.split(b"\0", 1)[0]
        hdr = hdr[:offset] + struct.pack("<I", len(name)) + hdr[offset + 4 :]
    return hdr + pay


class FuseNotifyStoreOut(FuseStruct):
    """Followed by ``size`` bytes of data."""

    c_name = "fuse_notify_store_out"
    fields_desc = [u64("nodeid"), u64("offset"), u32("size"), u32("padding")]


class FuseNotifyRetrieveOut(FuseStruct):
    c_name = "fuse_notify_retrieve_out"
    fields_desc = [u64("notify_unique"), u64("nodeid"), u64("offset"), u32("size"), u32("padding")]


class FuseNotifyRetrieveIn(FuseStruct):
    """Body of the kernel's NOTIFY_REPLY request (matches fuse_write_in), then the data."""

    c_name = "fuse_notify_retrieve_in"
    fields_desc = [
        u64("dummy1"), u64("offset"), u32("size"), u32("dummy2"), u64("dummy3"), u64("dummy4"),
    ]


class FuseNotifyPruneOut(FuseStruct):
    """Followed by ``count`` nodeids (7.45)."""

    c_name, since = "fuse_notify_prune_out", 45
    fields_desc = [u32("count"), u32("padding"), u64("spare")]


class FuseNodeidList(FuseStruct):
    """The nodeids after ``fuse_notify_prune_out``."""

    fields_desc = [FieldListField("nodeids", [], LELongField("", 0))]
