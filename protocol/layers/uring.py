"""The io_uring transport's structs (7.42). Not FUSE messages themselves:
they frame a message in a ring entry; here for completeness and the probe."""

from __future__ import annotations

from scapy.fields import ByteField, StrFixedLenField

from protocol.layers.base import FuseStruct, array, nested, u16, u32, u64

FUSE_URING_IN_OUT_HEADER_SZ = 128
FUSE_URING_OP_IN_OUT_SZ = 128

# enum fuse_uring_cmd
FUSE_IO_URING_CMD_INVALID = 0
FUSE_IO_URING_CMD_REGISTER = 1
FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2


class FuseUringEntInOut(FuseStruct):
    c_name, since = "fuse_uring_ent_in_out", 42
    fields_desc = [u64("flags"), u64("commit_id"), u32("payload_sz"), u32("padding"), u64("reserved")]


class FuseUringReqHeader(FuseStruct):
    c_name, since = "fuse_uring_req_header", 42
    fields_desc = [
        StrFixedLenField("in_out", b"", FUSE_URING_IN_OUT_HEADER_SZ),
        StrFixedLenField("op_in", b"", FUSE_URING_OP_IN_OUT_SZ),
        nested("ring_ent_in_out", FuseUringEntInOut),
    ]


class FuseUringCmdReq(FuseStruct):
    c_name, since = "fuse_uring_cmd_req", 42
    fields_desc = [u64("flags"), u64("commit_id"), u16("qid"), array("padding", ByteField("", 0), 6)]
