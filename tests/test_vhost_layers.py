"""The vhost-user and virtqueue layers: layouts against the machine's Linux headers
(virtio_ring.h, virtio_fs.h, vhost_types.h, virtio_config.h) through a C probe, message
round trips and golden bytes, and ``SplitQueue`` against a toy device that walks the
rings as a backend does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.packet import Packet

from protocol.codec import codec
from protocol.layers.base import fixed_size
from protocol.vhost import constants as v
from protocol.vhost.messages import (
    REQUEST_PAYLOADS,
    VhostUserConfig,
    VhostUserMemory,
    VhostUserMemoryRegion,
    VhostUserMsg,
    VhostUserU64,
    VhostUserVringAddr,
    VhostUserVringState,
    VirtioFsConfig,
    message,
)
from protocol.vhost.virtqueue import (
    GuestMemory,
    SplitQueue,
    VringAvail,
    VringDesc,
    VringUsed,
    VringUsedElem,
)
from targets.skip import require

#: (C struct, layer, {C member: layer field}) the probe measures
STRUCTS: list[tuple[str, type[Packet], dict[str, str]]] = [
    ("struct vring_desc", VringDesc, {"addr": "addr", "len": "len", "flags": "flags", "next": "next"}),
    ("struct vring_avail", VringAvail, {"flags": "flags", "idx": "idx"}),
    ("struct vring_used_elem", VringUsedElem, {"id": "id", "len": "len"}),
    ("struct vring_used", VringUsed, {"flags": "flags", "idx": "idx"}),
    ("struct virtio_fs_config", VirtioFsConfig, {"tag": "tag", "num_request_queues": "num_request_queues"}),
    ("struct vhost_vring_state", VhostUserVringState, {"index": "index", "num": "num"}),
    ("struct vhost_vring_addr", VhostUserVringAddr, {
        "index": "index", "flags": "flags", "desc_user_addr": "desc_user_addr",
        "used_user_addr": "used_user_addr", "avail_user_addr": "avail_user_addr",
        "log_guest_addr": "log_guest_addr"}),
    ("struct vhost_memory_region", VhostUserMemoryRegion, {
        "guest_phys_addr": "guest_phys_addr", "memory_size": "memory_size",
        "userspace_addr": "userspace_addr", "flags_padding": "mmap_offset"}),
]
CONSTANTS = ["VRING_DESC_F_NEXT", "VRING_DESC_F_WRITE", "VRING_DESC_F_INDIRECT",
             "VRING_AVAIL_F_NO_INTERRUPT", "VRING_USED_F_NO_NOTIFY", "VIRTIO_RING_F_INDIRECT_DESC",
             "VIRTIO_RING_F_EVENT_IDX", "VIRTIO_F_NOTIFY_ON_EMPTY", "VIRTIO_F_ANY_LAYOUT",
             "VIRTIO_F_VERSION_1", "VIRTIO_F_ACCESS_PLATFORM", "VIRTIO_F_RING_PACKED",
             "VIRTIO_F_IN_ORDER", "VIRTIO_F_ORDER_PLATFORM", "VIRTIO_F_SR_IOV", "VHOST_F_LOG_ALL"]
HEADERS = ["linux/virtio_ring.h", "linux/virtio_fs.h", "linux/vhost_types.h", "linux/virtio_config.h",
           "stddef.h", "stdio.h"]


def _offset(cls: type[Packet], name: str) -> int:
    return sum(fixed_size_of(f) for f in cls.fields_desc[: [f.name for f in cls.fields_desc].index(name)])


def fixed_size_of(f: Any) -> int:
    return int(f.sz) if hasattr(f, "sz") else int(f.length_from(None))


def test_layouts_match_the_linux_headers(tmp_path: Path) -> None:
    require(shutil.which("gcc") is not None, "gcc is needed for the layout probe")
    lines = [f"#include <{h}>" for h in HEADERS] + ["int main(void) {"]
    for c_struct, _cls, members in STRUCTS:
        lines.append(f'printf("{c_struct} %zu\\n", sizeof({c_struct}));')
        for member in members:
            lines.append(f'printf("{c_struct}.{member} %zu\\n", offsetof({c_struct}, {member}));')
    for name in CONSTANTS:
        lines.append(f'printf("{name} %lld\\n", (long long)({name}));')
    lines.append("return 0; }")
    source = tmp_path / "probe.c"
    source.write_text("\n".join(lines))
    built = subprocess.run(["gcc", "-o", str(tmp_path / "probe"), str(source)], capture_output=True,
                           text=True, check=False)
    assert built.returncode == 0, built.stderr
    out = dict(line.rsplit(" ", 1) for line in subprocess.run(
        [str(tmp_path / "probe")], capture_output=True, text=True, check=True).stdout.splitlines())
    for c_struct, cls, members in STRUCTS:
        assert int(out[c_struct]) == fixed_size(cls), c_struct
        for member, name in members.items():
            assert int(out[f"{c_struct}.{member}"]) == _offset(cls, name), f"{c_struct}.{member}"
    for name in CONSTANTS:
        assert int(out[name]) == getattr(v, name), name


def test_golden_bytes() -> None:
    assert bytes(message(v.VHOST_USER_SET_VRING_NUM, VhostUserVringState(index=1, num=128))) == \
        bytes.fromhex("08000000" "01000000" "08000000" "01000000" "80000000")
    assert bytes(message(v.VHOST_USER_GET_FEATURES)) == bytes.fromhex("01000000" "01000000" "00000000")
    assert bytes(message(v.VHOST_USER_SET_OWNER, need_reply=True)) == \
        bytes.fromhex("03000000" "09000000" "00000000")


def test_replies_carry_what_their_request_returns() -> None:
    features = VhostUserMsg(bytes(message(v.VHOST_USER_GET_FEATURES, VhostUserU64(u64=0x175000000),
                                          reply=True)))
    assert features[VhostUserU64].u64 == 0x175000000
    ack = VhostUserMsg(bytes(message(v.VHOST_USER_SET_MEM_TABLE, VhostUserU64(u64=0), reply=True)))
    assert VhostUserU64 in ack and VhostUserMemory not in ack  # a REPLY_ACK status, not a table
    base = VhostUserMsg(bytes(message(v.VHOST_USER_GET_VRING_BASE, VhostUserVringState(index=1, num=7),
                                      reply=True)))
    assert base[VhostUserVringState].num == 7
    config = VhostUserMsg(bytes(message(v.VHOST_USER_GET_CONFIG, VhostUserConfig(
        region=bytes(VirtioFsConfig(tag=b"fusecheck", num_request_queues=1))), reply=True)))
    fs = VirtioFsConfig(config[VhostUserConfig].region)
    assert fs.tag.rstrip(b"\0") == b"fusecheck" and fs.num_request_queues == 1


def _payloads() -> st.SearchStrategy[tuple[int, Packet]]:
    u64s = st.integers(0, 2**64 - 1)
    u32s = st.integers(0, 2**32 - 1)
    region = st.builds(VhostUserMemoryRegion, guest_phys_addr=u64s, memory_size=u64s,
                       userspace_addr=u64s, mmap_offset=u64s)
    by_class: dict[type[Packet], st.SearchStrategy[Packet]] = {
        VhostUserU64: st.builds(VhostUserU64, u64=u64s),
        VhostUserVringState: st.builds(VhostUserVringState, index=u32s, num=u32s),
        VhostUserVringAddr: st.builds(VhostUserVringAddr, index=u32s, flags=u32s, desc_user_addr=u64s,
                                      used_user_addr=u64s, avail_user_addr=u64s, log_guest_addr=u64s),
        VhostUserMemory: st.builds(VhostUserMemory, regions=st.lists(region, max_size=8)),
        VhostUserConfig: st.builds(VhostUserConfig, offset=u32s, flags=u32s,
                                   region=st.binary(max_size=v.VHOST_USER_MAX_CONFIG_SIZE)),
    }
    requests = [(r, cls) for r, cls in REQUEST_PAYLOADS.items() if cls in by_class]
    return st.sampled_from(requests).flatmap(lambda rc: st.tuples(st.just(rc[0]), by_class[rc[1]]))


@settings(max_examples=200, deadline=None)
@given(request_and_payload=_payloads(), need_reply=st.booleans())
def test_requests_round_trip(request_and_payload: tuple[int, Packet], need_reply: bool) -> None:
    request, payload = request_and_payload
    raw = bytes(message(request, payload, need_reply=need_reply))
    parsed = VhostUserMsg(raw)
    assert parsed.size == len(raw) - v.VHOST_USER_HEADER_SIZE == len(bytes(payload))
    assert bytes(parsed) == raw and type(payload) in parsed
    assert bytes(parsed[type(payload)]) == bytes(payload)


class ToyDevice:
    """A device's half: walks what the driver offered, answers each chain by writing
    ``answer(readable bytes)`` into its writable buffers, and reports it used."""

    def __init__(self, memory: GuestMemory, queue: SplitQueue) -> None:
        self.memory, self.queue, self.seen, self.used = memory, queue, 0, 0

    def _chain(self, head: int) -> list[tuple[int, int, int]]:
        out, desc_at, index = [], self.queue.desc_addr, head
        while True:
            addr, length, flags, next_ = codec(VringDesc).struct.unpack(
                self.memory.read(desc_at + 16 * index, 16))
            if flags & v.VRING_DESC_F_INDIRECT:
                desc_at, index = addr, 0
                continue
            out.append((addr, length, flags))
            if not flags & v.VRING_DESC_F_NEXT:
                return out
            index = next_

    def serve(self, answer: Any) -> int:
        q, served = self.queue, 0
        avail_idx = int.from_bytes(self.memory.read(q.avail_addr + 2, 2), "little")
        while self.seen != avail_idx:
            head = int.from_bytes(self.memory.read(q.avail_addr + 4 + 2 * (self.seen % q.num), 2), "little")
            parts = self._chain(head)
            readable = b"".join(self.memory.read(a, n) for a, n, f in parts if not f & v.VRING_DESC_F_WRITE)
            reply = answer(readable)
            written = 0
            for addr, length, flags in parts:
                if flags & v.VRING_DESC_F_WRITE and written < len(reply):
                    piece = reply[written: written + length]
                    self.memory.write(addr, piece)
                    written += len(piece)
            self.memory.write(q.used_addr + 4 + 8 * (self.used % q.num), codec(VringUsedElem).struct.pack(
                head, written))
            self.used = (self.used + 1) & 0xFFFF
            self.memory.write(q.used_addr + 2, self.used.to_bytes(2, "little"))
            self.seen = (self.seen + 1) & 0xFFFF
            served += 1
        return served


@pytest.mark.parametrize("indirect", [False, True])
def test_split_queue_offers_and_takes_back(indirect: bool) -> None:
    memory = GuestMemory(memoryview(bytearray(1 << 20)), base=0x4000_0000)
    queue = SplitQueue(memory, num=8)
    device = ToyDevice(memory, queue)
    request, reply, more = memory.alloc(32), memory.alloc(8), memory.alloc(24)
    rounds = 66_000  # past the u16 index wrap
    for n in range(rounds):
        data = f"request {n}".encode()
        memory.write(request, data.ljust(32, b"\0"))
        chain = queue.add([(request, 32)], [(reply, 8), (more, 24)], indirect=indirect)
        assert queue.pending() == 1
        assert device.serve(lambda got: b"OK:" + got.rstrip(b"\0")) == 1
        used = queue.take_used()
        assert [(c, ident) for c, ident, _ in used] == [(chain, chain.head)]
        length = used[0][2]
        got = b"".join(memory.read(a, size) for a, size in chain.writable)[:length]
        assert got == b"OK:" + data
        assert sorted(queue.free) == list(range(queue.num)) and queue.pending() == 0
    assert queue.avail_idx == rounds & 0xFFFF == queue.last_used
    assert len(queue.tables) <= queue.num  # indirect tables are reused, not made per chain


def test_split_queue_refuses_what_does_not_fit() -> None:
    memory = GuestMemory(memoryview(bytearray(1 << 16)))
    with pytest.raises(ValueError):
        SplitQueue(memory, num=6)
    queue = SplitQueue(memory, num=2)
    queue.add([(0, 1)], [(0, 1)])
    with pytest.raises(BufferError):
        queue.add([(0, 1)], [(0, 1)])
    with pytest.raises(ValueError):
        memory.read(1 << 16, 1)
