"""virtio-fs rules: FUSE over the device's queues, as Linux's driver lays requests out."""

from __future__ import annotations

import errno

import pytest

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from conformance.virtiofs.device import Device, Offer
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.header import FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE
from protocol.layers.structs import (
    FuseBatchForgetIn,
    FuseForgetIn,
    FuseForgetOne,
    FuseGetattrIn,
    FuseOpenIn,
    FuseReadIn,
)
from protocol.layers.variable import FuseName
from protocol.vhost import constants as v
from targets.vhost_user.target import VhostUserTarget

VIRTIO = "virtio 1.2, 5.11 File System Device"
LINUX = "linux fs/fuse/virtio_fs.c"
FILE = b"hello.txt"  # in every back-end's tree (targets.daemons.populate, the reference seed)
HIPRIO = v.VIRTIO_FS_HIPRIO_QUEUE


def _lookup(device: Device, name: bytes = FILE) -> int:
    reply = device.call(c.FUSE_LOOKUP, FuseName(name=name), nodeid=c.FUSE_ROOT_ID)
    assert reply.ok and reply.body is not None, f"LOOKUP {name!r} answered {errno_name(reply.error)}"
    return int(reply.body.nodeid)


def _clean(device: Device, offer: Offer) -> None:
    problems = device.trespass(offer)
    assert not problems, "; ".join(problems)


@rule("VIRTIOFS-INIT-001",
      "INIT on the first request queue is answered there: a valid INIT reply, in the writable "
      "buffers, with the used length equal to the reply's length",
      source=f"{VIRTIO} 5.11.6 (requests on request queues); {LINUX} virtio_fs_enqueue_req",
      area="virtiofs", feature="INIT", opcodes=("FUSE_INIT",))
def test_init_on_request_queue(device: Device) -> None:
    offer, reply = device.exchange(device.session.init())
    assert isinstance(reply, Reply), "INIT: nothing written"
    assert reply.ok, f"INIT answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    assert offer.used == len(reply.raw) == int.from_bytes(reply.raw[:4], "little"), (
        f"used length {offer.used}, reply of {len(reply.raw)} bytes, its len field "
        f"{int.from_bytes(reply.raw[:4], 'little')}")
    _clean(device, offer)


@rule("VIRTIOFS-INIT-002",
      "A second INIT on the device (a guest that restarted) is answered, with an error or with a "
      "valid INIT reply that starts a new session, and the device serves on",
      source=f"{VIRTIO} 5.11.6; virtiofsd's 'reinit' (a rebooted guest sends INIT again, no DESTROY)",
      area="virtiofs", feature="INIT", opcodes=("FUSE_INIT",))
def test_second_init(device: Device) -> None:
    device.init()
    device.session = type(device.session)()  # the restarted guest's kernel
    _offer, reply = device.exchange(device.session.init())
    assert isinstance(reply, Reply), "the second INIT: nothing written"
    assert_well_formed(reply)
    if reply.error:
        return  # refused: the device keeps its old session (the kernel would fail the mount)
    assert device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok, (
        "GETATTR of the root after the second INIT failed")


@rule("VIRTIOFS-HIPRIO-001",
      "FORGET and BATCH_FORGET on the hiprio queue (no writable buffer) come back used with length 0; "
      "the device serves on, and nothing is written to any queue for them",
      source=f"{VIRTIO} 5.11.6.1 (the hiprio queue); {LINUX} send_forget_request",
      area="virtiofs", feature="HIPRIO", opcodes=("FUSE_FORGET", "FUSE_BATCH_FORGET"))
def test_forgets_on_hiprio(device: Device) -> None:
    device.init()
    first, second = _lookup(device), _lookup(device)
    assert first == second
    forget = device.offer(device.session.request(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=first), [],
                          queue=HIPRIO)
    batch = device.offer(device.session.request(
        c.FUSE_BATCH_FORGET, FuseBatchForgetIn(count=1), FuseForgetOne(nodeid=first, nlookup=1), nodeid=0),
        [], queue=HIPRIO)
    device.wait(forget, batch)
    assert (forget.used, batch.used) == (0, 0), f"used lengths {forget.used}, {batch.used} for no buffer"
    assert not device.stray, f"used ids that head no chain: {device.stray}"
    assert _lookup(device) > 0, "LOOKUP after the FORGETs failed"


@rule("VIRTIOFS-QUEUE-001",
      "With more than one request queue offered, a request on each request queue is answered on "
      "that queue",
      source=f"{VIRTIO} 5.11.2 (num_request_queues), 5.11.6; QEMU docs/interop/vhost-user.rst: "
             "VHOST_USER_GET_QUEUE_NUM",
      area="virtiofs", feature="QUEUES")
def test_multiple_request_queues(device_target: VhostUserTarget) -> None:
    frontend = device_target.frontend
    assert frontend is not None
    probe_features = frontend.get_u64(v.VHOST_USER_GET_FEATURES)
    count = 2
    if probe_features & (1 << v.VHOST_USER_F_PROTOCOL_FEATURES) and \
            frontend.get_u64(v.VHOST_USER_GET_PROTOCOL_FEATURES) & (1 << v.VHOST_USER_PROTOCOL_F_MQ):
        count = frontend.get_u64(v.VHOST_USER_GET_QUEUE_NUM)
    if count < 3:
        pytest.skip(f"not applicable: the back-end has {max(count - 1, 1)} request queue "
                    "(GET_QUEUE_NUM, or no MQ)")
    frontend.queues = min(count, 4)
    frontend.setup()
    device = Device(frontend)
    device.init()
    for queue in range(1, frontend.queues):
        offer, reply = device.exchange(
            device.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID), queue=queue)
        assert isinstance(reply, Reply) and reply.ok, f"GETATTR on request queue {queue}: {reply}"
        _clean(device, offer)


@pytest.mark.parametrize("indirect", [pytest.param(False, id="chained"), pytest.param(True, id="indirect")])
@rule("VIRTIOFS-BUFFER-001",
      "Replies go only into the device-writable buffers, within their lengths, also when a request is "
      "split over several readable descriptors and its reply over several writable ones (Linux: in "
      "header and arguments, out header and out arguments and pages), chained or indirect; the used "
      "length is the reply's length",
      source=f"{VIRTIO} 2.7.4 (the device writes only device-writable buffers), 2.7.8 (used len: "
             f"bytes written), 2.7.5 (indirect); {LINUX} sg_init_fuse_args",
      area="virtiofs", feature="BUFFERS", opcodes=("FUSE_READ", "FUSE_GETATTR"))
def test_replies_in_writable_buffers(device: Device, indirect: bool) -> None:
    if indirect and not device.frontend.acked & (1 << v.VIRTIO_RING_F_INDIRECT_DESC):
        pytest.skip("not applicable: VIRTIO_RING_F_INDIRECT_DESC is not offered")
    device.init()
    nodeid = _lookup(device)
    opened = device.call(c.FUSE_OPEN, FuseOpenIn(flags=0), nodeid=nodeid)
    assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
    fh = int(opened.body.fh)
    whole_offer, whole = device.exchange(
        device.session.request(c.FUSE_READ, FuseReadIn(fh=fh, size=4096), nodeid=nodeid), indirect=indirect)
    assert isinstance(whole, Reply) and whole.ok, f"READ answered {whole}"
    assert_well_formed(whole)  # its header's len is the used length: a short read is short
    _clean(device, whole_offer)
    data = whole.raw[FUSE_OUT_HEADER_SIZE:]
    request = device.session.request(c.FUSE_READ, FuseReadIn(fh=fh, size=4096), nodeid=nodeid)
    offer, split = device.exchange(request, writable=[FUSE_OUT_HEADER_SIZE, 5, 4096 - 5],
                                   split=(FUSE_IN_HEADER_SIZE,), indirect=indirect)
    assert isinstance(split, Reply) and split.ok, f"the split READ answered {split}"
    assert_well_formed(split)
    assert split.raw[FUSE_OUT_HEADER_SIZE:] == data, "the split READ gave other bytes"
    assert offer.used == len(split.raw), f"used length {offer.used} for a {len(split.raw)}-byte reply"
    _clean(device, offer)
    offer, attr = device.exchange(device.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid),
                                  writable=[FUSE_OUT_HEADER_SIZE, 50, 54], split=(FUSE_IN_HEADER_SIZE,),
                                  indirect=indirect)
    assert isinstance(attr, Reply) and attr.ok, f"the split GETATTR answered {attr}"
    assert_well_formed(attr)
    assert offer.used == len(attr.raw), f"used length {offer.used} for a {len(attr.raw)}-byte reply"
    _clean(device, offer)


@rule("VIRTIOFS-BUFFER-002",
      "A reply buffer too small for the reply gets an error reply that fits, or nothing (used length "
      "0), never bytes past the buffer, and the device serves on",
      source=f"{VIRTIO} 2.7.4 (never past a buffer), 5.11.6; a short buffer is a broken driver, "
             "the device must survive it", area="virtiofs", feature="BUFFERS", opcodes=("FUSE_GETATTR",))
def test_too_small_reply_buffer(device: Device) -> None:
    device.init()
    for room in (FUSE_OUT_HEADER_SIZE + 8, FUSE_OUT_HEADER_SIZE, 8):
        offer = device.offer(device.session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID),
                             [room])
        device.wait(offer)
        assert offer.used is not None and offer.used <= room, (
            f"used length {offer.used} for a {room}-byte buffer")
        _clean(device, offer)
        written = device.written(offer)
        if offer.used:
            reply = device.session.receive(written)
            assert isinstance(reply, Reply) and reply.error, (
                f"a {room}-byte buffer got {offer.used} bytes that are not an error reply")
            assert_well_formed(reply)
        else:
            device.session.forget_pending(device.session.last_unique)
    assert device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok, (
        "GETATTR with a buffer of the right size failed after the short ones")


@rule("VIRTIOFS-PARALLEL-001",
      "Many requests in flight at once, on the request queue and the hiprio queue, each get exactly "
      "one reply, to their own unique, in their own buffers",
      source=f"{VIRTIO} 2.7.8 (buffers may be used in any order); {LINUX} (requests are queued "
             "without waiting)", area="virtiofs", feature="QUEUES", opcodes=("FUSE_GETATTR", "FUSE_READ"))
def test_requests_in_parallel(device: Device) -> None:
    device.init()
    nodeid = _lookup(device)
    opened = device.call(c.FUSE_OPEN, FuseOpenIn(flags=0), nodeid=nodeid)
    assert opened.ok and opened.body is not None
    fh = int(opened.body.fh)
    lookups = [_lookup(device) for _ in range(8)]
    offers: list[tuple[Offer, int]] = []
    session = device.session
    for i in range(48):
        request = session.request(c.FUSE_READ, FuseReadIn(fh=fh, offset=i % 7, size=64), nodeid=nodeid) \
            if i % 2 else session.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID)
        offers.append((device.offer(request, [session.reply_room(request) or 0]), session.last_unique))
        if i < len(lookups):
            forget = session.request(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=lookups[i])
            device.offer(forget, [], queue=HIPRIO)
    device.wait(*(o for o, _ in offers))
    for offer, unique in offers:
        reply = device.session.receive(device.written(offer))
        assert isinstance(reply, Reply) and reply.unique == unique, (
            f"the chain of unique {unique} holds the reply to {getattr(reply, 'unique', None)}")
        assert reply.ok, f"unique {unique} answered {errno_name(reply.error)}"
        assert_well_formed(reply)
        _clean(device, offer)
    assert not device.session.pending or all(
        p.opcode == c.FUSE_FORGET for p in device.session.pending.values()), "requests left unanswered"
    assert -errno.ENOENT != device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).error
