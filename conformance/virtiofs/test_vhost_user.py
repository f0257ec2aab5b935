"""vhost-user rules: what a back-end owes the front-end on the control socket."""

from __future__ import annotations

import time

import pytest

from conformance.rules import rule
from conformance.virtiofs.device import Device
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn
from protocol.vhost import constants as v
from protocol.vhost.messages import VhostUserU64, message
from protocol.vhost.virtqueue import U16, USED_ELEM, USED_RING
from targets.errors import TargetError
from targets.vhost_user.frontend import DRIVER_PROTOCOL_FEATURES, VhostUserFrontend
from targets.vhost_user.target import VhostUserTarget

SPEC = "QEMU docs/interop/vhost-user.rst"
VIRTIO = "virtio 1.2"


def _frontend(target: VhostUserTarget) -> VhostUserFrontend:
    assert target.frontend is not None
    return target.frontend


@rule("VHOST-USER-001", "GET_FEATURES offers VIRTIO_F_VERSION_1 (virtio-fs has no legacy interface)",
      source=f"{VIRTIO} 5.11 (a device defined since 1.1 is modern only) and 6.1 (VIRTIO_F_VERSION_1)",
      area="virtiofs", feature="FEATURES")
def test_offers_version_1(device_target: VhostUserTarget) -> None:
    frontend = _frontend(device_target)
    features = frontend.get_u64(v.VHOST_USER_GET_FEATURES)
    assert features & (1 << v.VIRTIO_F_VERSION_1), f"features {features:#x} lack VIRTIO_F_VERSION_1"


@rule("VHOST-USER-002",
      "The protocol features offered match the messages answered: MQ gives a queue count of at least "
      "2 (hiprio and a request queue), CONFIG a virtio_fs_config with a NUL-terminated tag and at "
      "least one request queue",
      source=f"{SPEC}: VHOST_USER_GET_QUEUE_NUM, VHOST_USER_GET_CONFIG; {VIRTIO} 5.11.4 (config)",
      area="virtiofs", feature="FEATURES")
def test_protocol_features_answered(device_target: VhostUserTarget) -> None:
    frontend = _frontend(device_target)
    features = frontend.get_u64(v.VHOST_USER_GET_FEATURES)
    if not features & (1 << v.VHOST_USER_F_PROTOCOL_FEATURES):
        pytest.skip("not applicable: the back-end offers no VHOST_USER_F_PROTOCOL_FEATURES")
    offered = frontend.get_u64(v.VHOST_USER_GET_PROTOCOL_FEATURES)
    frontend.call(v.VHOST_USER_SET_PROTOCOL_FEATURES, VhostUserU64(u64=offered & DRIVER_PROTOCOL_FEATURES))
    frontend.protocol_acked = offered & DRIVER_PROTOCOL_FEATURES
    checked = []
    if offered & (1 << v.VHOST_USER_PROTOCOL_F_MQ):
        count = frontend.get_u64(v.VHOST_USER_GET_QUEUE_NUM)
        assert count >= 2, f"GET_QUEUE_NUM answered {count}: virtio-fs needs hiprio and a request queue"
        checked.append("MQ")
    if offered & (1 << v.VHOST_USER_PROTOCOL_F_CONFIG):
        config = frontend.get_config()
        assert b"\0" in bytes(config.tag) and bytes(config.tag)[0], f"tag {bytes(config.tag)!r}"
        assert int(config.num_request_queues) >= 1, "num_request_queues is 0"
        checked.append("CONFIG")
    if not checked:
        pytest.skip("not applicable: neither MQ nor CONFIG is offered")


@rule("VHOST-USER-003",
      "With REPLY_ACK negotiated, a request flagged NEED_REPLY gets one reply of its own type with "
      "status 0, and the same request unflagged gets none",
      source=f"{SPEC}: VHOST_USER_PROTOCOL_F_REPLY_ACK", area="virtiofs", feature="REPLY_ACK")
def test_reply_ack(device: Device) -> None:
    frontend = device.frontend
    if not frontend.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK):
        pytest.skip("not applicable: REPLY_ACK is not offered")
    frontend.protocol_acked &= ~(1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK)  # our call() must not wait
    try:
        frontend.send(message(v.VHOST_USER_SET_FEATURES, VhostUserU64(u64=frontend.acked), need_reply=True))
        reply = frontend.receive()
        flags = int(reply.flags)
        answered = int(reply.request) == v.VHOST_USER_SET_FEATURES and flags & v.VHOST_USER_REPLY_MASK
        assert answered, f"NEED_REPLY was answered with {reply.summary()}"
        assert int(reply[VhostUserU64].u64) == 0, f"status {reply[VhostUserU64].u64} for a valid request"
        frontend.send(message(v.VHOST_USER_SET_FEATURES, VhostUserU64(u64=frontend.acked)))
        assert not frontend.pending(0.3), "a request without NEED_REPLY was answered"
    finally:
        frontend.protocol_acked |= 1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK
    device.init()  # the device still works


@rule("VHOST-USER-004",
      "Without VIRTIO_RING_F_EVENT_IDX the device leaves the used ring's avail_event word alone, and "
      "it serves a driver that took fewer features than it offered",
      source=f"{VIRTIO} 2.7.10 (avail_event is the device's only with EVENT_IDX); 3.1.1 (the driver "
             "accepts a subset)", area="virtiofs", feature="FEATURES")
def test_uses_only_negotiated_features(device: Device) -> None:
    frontend = device.frontend
    assert not frontend.acked & (1 << v.VIRTIO_RING_F_EVENT_IDX)
    device.init()
    for _ in range(5):
        assert device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok
    for q in frontend.started:
        ring = q.ring
        at = ring.used_addr + USED_RING + USED_ELEM.size * ring.num
        word = int(U16.unpack(ring.memory.read(at, U16.size))[0])
        assert word == 0, f"queue {q.index}: avail_event was set to {word} without EVENT_IDX"


@rule("VHOST-USER-005",
      "GET_VRING_BASE stops a queue and answers the next available index it would take (all it was "
      "given, once served); the queue restarted there serves again",
      source=f"{SPEC}: VHOST_USER_GET_VRING_BASE, VHOST_USER_SET_VRING_BASE (ring stop and start)",
      area="virtiofs", feature="QUEUES")
def test_queue_stop_and_restart(device: Device) -> None:
    device.init()
    for _ in range(3):
        assert device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok
    ring = device.frontend.queue(1)
    base = device.frontend.stop_queue(1)
    assert base == ring.avail_idx, (
        f"GET_VRING_BASE answered {base}; the driver made {ring.avail_idx} available")
    device.frontend.resume_queue(1, base)
    reply = device.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID)
    assert reply.ok, f"after the restart GETATTR answered {reply.error}"


@rule("VHOST-USER-006",
      "When the front-end hangs up, the back-end ends with status 0, or accepts a new connection and "
      "serves INIT on it",
      source=f"{SPEC} (a back-end may serve a reconnecting front-end); virtiofsd ends after its one",
      area="virtiofs", feature="CONNECTION")
def test_second_connection(device: Device, device_target: VhostUserTarget) -> None:
    device.init()
    frontend = device.frontend
    frontend.close()
    deadline = time.monotonic() + 5
    daemon = device_target.daemon
    while daemon is not None and daemon.alive() and time.monotonic() < deadline:
        if _serves_again(device_target):
            return
        time.sleep(0.1)
    if daemon is None:
        assert _serves_again(device_target), "the back-end accepts no second connection"
        return
    status = daemon.wait_exit(0)
    assert status == 0, f"after the front-end hung up the back-end {daemon.exit_description()}"


def _serves_again(target: VhostUserTarget) -> bool:
    assert target.frontend is not None
    second = VhostUserFrontend(target.frontend.path, name="second connection", timeout=2)
    try:
        with second:
            second.connect(time.monotonic() + 0.2).setup()
            Device(second).init()
    except (TargetError, OSError):  # not listening, or it closed as it ended
        return False
    return True
