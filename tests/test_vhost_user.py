"""The vhost-user front-end and the virtio-fs channel against Debian's virtiofsd.

virtiofsd is an independent back-end: what it accepts of our set-up and answers
over our queues checks the front-end from the other side of the socket.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import constants as c
from protocol.layers.structs import FuseForgetIn, FuseGetattrIn
from protocol.layers.variable import FuseName
from protocol.vhost import constants as v
from targets.connection import KernelConnection
from targets.skip import require
from targets.vhost_user.frontend import DRIVER_FEATURES, DRIVER_PROTOCOL_FEATURES
from targets.vhost_user.target import VhostUserTarget
from targets.vhost_user.virtiofsd import VIRTIOFSD, virtiofsd_argv

POPULATED_FILE = "hello.txt"  # one of the files targets.daemons.populate makes


@pytest.fixture
def virtiofsd() -> Iterator[VhostUserTarget]:
    require(os.access(VIRTIOFSD, os.X_OK), f"machine lacks virtiofsd ({VIRTIOFSD}): "
            "apt-get install --no-install-recommends qemu-system-common")
    with VhostUserTarget("virtiofsd") as target:
        yield target


@pytest.fixture
def conn(virtiofsd: VhostUserTarget) -> KernelConnection:
    connection = KernelConnection(virtiofsd.channel, timeout=5.0)
    reply = connection.init()
    assert reply.ok and connection.session.negotiated, f"INIT over the request queue: {reply.error}"
    return connection


def test_negotiation_takes_only_what_was_offered(virtiofsd: VhostUserTarget) -> None:
    frontend = virtiofsd.frontend
    assert frontend is not None
    assert frontend.features & (1 << v.VIRTIO_F_VERSION_1), "virtio-fs is a virtio 1.x device"
    assert frontend.acked == frontend.features & DRIVER_FEATURES
    assert frontend.protocol_acked == frontend.protocol_features & DRIVER_PROTOCOL_FEATURES
    assert frontend.protocol_acked & (1 << v.VHOST_USER_PROTOCOL_F_REPLY_ACK), (
        "virtiofsd offers REPLY_ACK, so every SET_* got a status")
    sent = [int(m.request) for way, m in frontend.log if way == "to_backend"]
    assert sent[:2] == [v.VHOST_USER_GET_FEATURES, v.VHOST_USER_GET_PROTOCOL_FEATURES]
    assert sent.count(v.VHOST_USER_SET_VRING_KICK) == frontend.queues


def test_lookup_and_getattr_over_the_request_queue(conn: KernelConnection,
                                                   virtiofsd: VhostUserTarget) -> None:
    assert virtiofsd.backing is not None
    looked = conn.call(c.FUSE_LOOKUP, FuseName(name=POPULATED_FILE.encode()), nodeid=c.FUSE_ROOT_ID)
    assert looked.ok and looked.body is not None
    host = os.stat(virtiofsd.backing / POPULATED_FILE)
    assert int(looked.body.attr.size) == host.st_size and int(looked.body.attr.ino) == host.st_ino
    got = conn.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=int(looked.body.nodeid))
    assert got.ok and got.body is not None and int(got.body.attr.size) == host.st_size


def test_forget_goes_to_hiprio_and_gives_its_slot_back(conn: KernelConnection,
                                                       virtiofsd: VhostUserTarget) -> None:
    looked = conn.call(c.FUSE_LOOKUP, FuseName(name=POPULATED_FILE.encode()), nodeid=c.FUSE_ROOT_ID)
    assert looked.ok and looked.body is not None
    channel = virtiofsd.channel
    frontend = virtiofsd.frontend
    assert frontend is not None
    free = len(channel.free)
    hiprio_before = frontend.queue(v.VIRTIO_FS_HIPRIO_QUEUE).last_used
    conn.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=int(looked.body.nodeid))
    assert conn.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok
    conn.quiet(0.2)
    assert frontend.queue(v.VIRTIO_FS_HIPRIO_QUEUE).last_used == (hiprio_before + 1) & 0xFFFF, (
        "the FORGET did not come back on the hiprio queue")
    assert len(channel.free) == free, "a slot stayed busy after FORGET and GETATTR came back"
    assert not [e for e in conn.replies if e.opcode == c.FUSE_FORGET], "FORGET was answered"


def test_indirect_descriptors(virtiofsd: VhostUserTarget) -> None:
    frontend = virtiofsd.frontend
    assert frontend is not None
    require(frontend.acked & (1 << v.VIRTIO_RING_F_INDIRECT_DESC),
            "virtiofsd did not offer VIRTIO_RING_F_INDIRECT_DESC")
    virtiofsd.channel.indirect = True
    conn = KernelConnection(virtiofsd.channel, timeout=5.0)
    assert conn.init().ok
    for _ in range(3 * frontend.queue_size // 2):  # past the ring's size: tables reused per head
        assert conn.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=c.FUSE_ROOT_ID).ok


@pytest.mark.parametrize("spec", ["virtiofsd:cache=none", "virtiofsd:fd", "ref:vhost-user"])
def test_teardown_leaves_nothing(tmp_path: Path, spec: str) -> None:
    if spec.startswith("virtiofsd"):
        require(os.access(VIRTIOFSD, os.X_OK), f"machine lacks virtiofsd ({VIRTIOFSD})")
    target = VhostUserTarget(spec, scratch_root=tmp_path).open()
    assert target.daemon is not None and target.daemon.proc is not None
    pid = target.daemon.proc.pid
    scratch, socket_path = target.scratch, target.socket_path
    assert scratch is not None and socket_path is not None and socket_path.is_socket()
    conn = KernelConnection(target.channel, timeout=5.0)
    assert conn.init().ok
    target.close()
    assert target.exited_cleanly, f"{spec} exited with {target.exit_status} when we hung up"
    assert not scratch.exists(), "the scratch dir (backing tree and socket) is left behind"
    assert not socket_path.exists(), "the vhost-user socket is left behind"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert list(tmp_path.iterdir()) == []


def test_options_become_virtiofsd_arguments(tmp_path: Path) -> None:
    argv = virtiofsd_argv(tmp_path / "s", tmp_path, {"cache": "always", "writeback": True,
                                                    "posix_acl": True, "xattr": True})
    assert argv[1:] == [f"--socket-path={tmp_path / 's'}", "-o", f"source={tmp_path}", "-o",
                        "cache=always", "-o", "writeback", "-o", "posix_acl", "-o", "xattr"]
    assert virtiofsd_argv(7, tmp_path, {"fd": True})[1:] == ["--fd=7", "-o", f"source={tmp_path}"]


def test_fd_option_hands_over_a_listening_socket(tmp_path: Path) -> None:
    """``virtiofsd:fd``: the suite listens and passes the socket as --fd=N (as libvirt does);
    virtiofsd serves on it and the target leaves nothing behind."""
    require(os.access(VIRTIOFSD, os.X_OK), f"machine lacks virtiofsd ({VIRTIOFSD})")
    target = VhostUserTarget("virtiofsd:fd", scratch_root=tmp_path).open()
    try:
        assert target.daemon is not None
        assert any(arg.startswith("--fd=") for arg in target.daemon.argv), target.daemon.argv
        assert not any(arg.startswith("--socket-path") for arg in target.daemon.argv)
        assert KernelConnection(target.channel, timeout=5.0).init().ok
    finally:
        target.close()
    assert target.exited_cleanly, f"virtiofsd exited with {target.exit_status} when we hung up"
    assert list(tmp_path.iterdir()) == []


def test_setup_reads_queue_count_and_config() -> None:
    """Under MQ the front-end reads GET_QUEUE_NUM, under CONFIG the virtio_fs_config (the
    reference back-end offers both; virtiofsd 7.2 offers MQ only)."""
    with VhostUserTarget("ref:vhost-user") as target:
        frontend = target.frontend
        assert frontend is not None and frontend.config is not None
        assert frontend.queue_count is not None and frontend.queue_count >= frontend.queues
        assert bytes(frontend.config.tag).rstrip(b"\0") and int(frontend.config.num_request_queues) >= 1


def test_a_back_end_the_user_started(tmp_path: Path) -> None:
    """``--target vhost-user:SOCKET``: the reference back-end started by hand with
    ``--connections 0`` serves every rule's connection in turn; the virtio-fs rules pass."""
    import sys
    import time

    from targets.process import Daemon
    from tests.helpers import ROOT, rule_outcomes, run_conformance

    sock = tmp_path / "vfs.sock"
    daemon = Daemon([sys.executable, "-m", "targets.reference", "--vhost-user", str(sock),
                     "--connections", "0"], name="ref back-end", cwd=str(ROOT),
                    env={**os.environ, "PYTHONPATH": str(ROOT)}).start()
    try:
        deadline = time.monotonic() + 10
        while not sock.is_socket() and time.monotonic() < deadline and daemon.alive():
            time.sleep(0.05)
        assert sock.is_socket(), f"the back-end did not listen: {daemon.stderr_tail(500)}"
        result = run_conformance(f"vhost-user:{sock}", "-k", "virtiofs")
        found = rule_outcomes(result.stdout)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
        assert {r for r, o in found.items() if "PASSED" in o} >= {
            "VHOST-USER-001", "VHOST-USER-006", "VIRTIOFS-INIT-001", "VIRTIOFS-QUEUE-001",
            "VIRTIOFS-PARALLEL-001"}, found
        assert daemon.alive(), "the back-end ended, though it serves until killed"
    finally:
        daemon.stop()


def test_a_back_end_that_hangs_up_on_a_request_it_left_unread(tmp_path: Path) -> None:
    """A back-end that closes while our request sits unread in its socket makes the kernel
    reset the connection (ECONNRESET, not EOF): either way the front-end says it died."""
    import socket

    from scapy.packet import Raw

    from targets.errors import TargetDied
    from targets.vhost_user.frontend import VhostUserFrontend

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    listener.listen(1)
    try:
        frontend = VhostUserFrontend(str(tmp_path / "s"), timeout=2.0).connect()
        conn, _ = listener.accept()
        frontend.send(Raw(b"a request the back-end never reads"))
        conn.close()
        with pytest.raises(TargetDied, match="closed its vhost-user socket"):
            frontend.receive()
        frontend.close()
    finally:
        listener.close()
