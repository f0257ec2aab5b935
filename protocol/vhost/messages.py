"""vhost-user messages as scapy layers (QEMU docs/interop/vhost-user.rst, "Message
specification"): a 12-byte header, then the payload its request type and size select.

``VhostUserMsg(request=VHOST_USER_SET_VRING_NUM, flags=VHOST_USER_VERSION) /
VhostUserVringState(index=1, num=128)`` builds a message (``size`` is filled in);
``VhostUserMsg(data)`` dissects one. A reply (the REPLY bit set) carries what its request
returns: a u64 for the GET_* of features and numbers and for a REPLY_ACK status, a vring
state for GET_VRING_BASE, a config space for GET_CONFIG, an inflight area for
GET_INFLIGHT_FD. File descriptors travel beside the bytes (SCM_RIGHTS), not in them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scapy.fields import FieldLenField, PacketListField, StrFixedLenField, StrLenField
from scapy.packet import NoPayload, Packet, Raw

from protocol.layers.base import FlagsIntField, nested, u16, u32, u64
from protocol.vhost import constants as v


class VhostStruct(Packet):
    """A vhost-user or virtio struct; ``c_name`` is its name in the spec or a Linux header."""

    c_name: ClassVar[str | None] = None

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


_FLAG_NAMES = {v.VHOST_USER_REPLY_MASK: "REPLY", v.VHOST_USER_NEED_REPLY_MASK: "NEED_REPLY",
               v.VHOST_USER_VERSION: "VERSION_1"}


class VhostUserMsg(VhostStruct):
    """The header every message starts with: request type, flags (version in bits 0-1,
    REPLY, NEED_REPLY), and the payload's size."""

    c_name = "VhostUserHeader"
    fields_desc = [u32("request"), FlagsIntField("flags", v.VHOST_USER_VERSION, _FLAG_NAMES),
                   u32("size", None)]  # type: ignore[arg-type]

    def post_build(self, hdr: bytes, pay: bytes) -> bytes:
        if self.size is None:
            hdr = hdr[:8] + len(pay).to_bytes(4, "little")
        return hdr + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        size = self.size or 0
        return s[:size], s[size:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if not payload:
            return NoPayload
        return payload_class(int(self.request), bool(int(self.flags) & v.VHOST_USER_REPLY_MASK))

    def mysummary(self) -> str:
        name = v.REQUEST_NAMES.get(int(self.request), f"request {self.request}")
        return f"{name}{' reply' if int(self.flags) & v.VHOST_USER_REPLY_MASK else ''}"


class VhostUserU64(VhostStruct):
    """A u64: feature bits, a queue count, a status, a REPLY_ACK result (0: success)."""

    c_name = "VhostUserU64"
    fields_desc = [u64("u64")]


class VhostUserVringState(VhostStruct):
    c_name = "vhost_vring_state"
    fields_desc = [u32("index"), u32("num")]


class VhostUserVringAddr(VhostStruct):
    """Where a queue's rings live, as front-end virtual addresses (``log_guest_addr``: a
    guest physical one)."""

    c_name = "vhost_vring_addr"
    fields_desc = [u32("index"), u32("flags"), u64("desc_user_addr"), u64("used_user_addr"),
                   u64("avail_user_addr"), u64("log_guest_addr")]


class VhostUserMemoryRegion(VhostStruct):
    c_name = "VhostUserMemoryRegion"
    fields_desc = [u64("guest_phys_addr"), u64("memory_size"), u64("userspace_addr"),
                   u64("mmap_offset")]


class VhostUserMemory(VhostStruct):
    """SET_MEM_TABLE's table: one fd per region goes with the message."""

    c_name = "VhostUserMemory"
    fields_desc = [FieldLenField("nregions", None, fmt="<I", count_of="regions"), u32("padding"),
                   PacketListField("regions", [], VhostUserMemoryRegion,
                                   count_from=lambda p: p.nregions)]


class VhostUserMemRegMsg(VhostStruct):
    """ADD_MEM_REG / REM_MEM_REG: one region."""

    c_name = "VhostUserMemRegMsg"
    fields_desc = [u64("padding"), nested("region", VhostUserMemoryRegion)]  # type: ignore[arg-type]


class VhostUserLog(VhostStruct):
    c_name = "VhostUserLog"
    fields_desc = [u64("mmap_size"), u64("mmap_offset")]


class VhostUserConfig(VhostStruct):
    """GET_CONFIG / SET_CONFIG: ``size`` bytes of the device's config space from ``offset``."""

    c_name = "VhostUserConfig"
    fields_desc = [u32("offset"), FieldLenField("size", None, fmt="<I", length_of="region"),
                   u32("flags"), StrLenField("region", b"", length_from=lambda p: p.size)]


class VhostUserInflight(VhostStruct):
    c_name = "VhostUserInflight"
    fields_desc = [u64("mmap_size"), u64("mmap_offset"), u16("num_queues"), u16("queue_size")]


class VirtioFsConfig(VhostStruct):
    """The virtio-fs device's config space (linux/virtio_fs.h ``struct virtio_fs_config``)."""

    c_name = "virtio_fs_config"
    fields_desc = [StrFixedLenField("tag", b"", v.VIRTIO_FS_TAG_SIZE), u32("num_request_queues")]


#: What a request carries (front-end to back-end), when it carries anything
REQUEST_PAYLOADS: dict[int, type[Packet]] = {
    v.VHOST_USER_SET_FEATURES: VhostUserU64,
    v.VHOST_USER_SET_PROTOCOL_FEATURES: VhostUserU64,
    v.VHOST_USER_SET_MEM_TABLE: VhostUserMemory,
    v.VHOST_USER_SET_LOG_BASE: VhostUserLog,
    v.VHOST_USER_SET_VRING_NUM: VhostUserVringState,
    v.VHOST_USER_SET_VRING_ADDR: VhostUserVringAddr,
    v.VHOST_USER_SET_VRING_BASE: VhostUserVringState,
    v.VHOST_USER_GET_VRING_BASE: VhostUserVringState,
    v.VHOST_USER_SET_VRING_KICK: VhostUserU64,
    v.VHOST_USER_SET_VRING_CALL: VhostUserU64,
    v.VHOST_USER_SET_VRING_ERR: VhostUserU64,
    v.VHOST_USER_SET_VRING_ENABLE: VhostUserVringState,
    v.VHOST_USER_SET_VRING_ENDIAN: VhostUserVringState,
    v.VHOST_USER_GET_CONFIG: VhostUserConfig,
    v.VHOST_USER_SET_CONFIG: VhostUserConfig,
    v.VHOST_USER_GET_INFLIGHT_FD: VhostUserInflight,
    v.VHOST_USER_SET_INFLIGHT_FD: VhostUserInflight,
    v.VHOST_USER_ADD_MEM_REG: VhostUserMemRegMsg,
    v.VHOST_USER_REM_MEM_REG: VhostUserMemRegMsg,
    v.VHOST_USER_SET_STATUS: VhostUserU64,
    v.VHOST_USER_VRING_KICK: VhostUserVringState,
}

#: What a reply carries besides the REPLY_ACK u64 every other request's reply is
REPLY_PAYLOADS: dict[int, type[Packet]] = {
    v.VHOST_USER_GET_VRING_BASE: VhostUserVringState,
    v.VHOST_USER_GET_CONFIG: VhostUserConfig,
    v.VHOST_USER_GET_INFLIGHT_FD: VhostUserInflight,
}

#: Requests the back-end always answers (the others only with NEED_REPLY under REPLY_ACK)
ANSWERED = frozenset({
    v.VHOST_USER_GET_FEATURES, v.VHOST_USER_GET_PROTOCOL_FEATURES, v.VHOST_USER_GET_VRING_BASE,
    v.VHOST_USER_GET_QUEUE_NUM, v.VHOST_USER_GET_CONFIG, v.VHOST_USER_GET_INFLIGHT_FD,
    v.VHOST_USER_GET_MAX_MEM_SLOTS, v.VHOST_USER_GET_STATUS, v.VHOST_USER_SET_LOG_BASE,
    v.VHOST_USER_POSTCOPY_ADVISE, v.VHOST_USER_POSTCOPY_LISTEN, v.VHOST_USER_POSTCOPY_END,
    v.VHOST_USER_GET_SHARED_OBJECT, v.VHOST_USER_SET_DEVICE_STATE_FD,
    v.VHOST_USER_CHECK_DEVICE_STATE,
})


def payload_class(request: int, reply: bool) -> type[Packet]:
    """The payload layer of a message of ``request`` type, either way."""
    if reply:
        return REPLY_PAYLOADS.get(request, VhostUserU64)
    return REQUEST_PAYLOADS.get(request, Raw)


def message(request: int, payload: Packet | None = None, *, reply: bool = False,
            need_reply: bool = False, **fields: Any) -> VhostUserMsg:
    """``VhostUserMsg`` of ``request`` with the version bit and the asked flags set."""
    flags = v.VHOST_USER_VERSION | (v.VHOST_USER_REPLY_MASK if reply else 0) \
        | (v.VHOST_USER_NEED_REPLY_MASK if need_reply else 0)
    msg = VhostUserMsg(request=request, flags=flags, **fields)
    return msg / payload if payload is not None else msg
