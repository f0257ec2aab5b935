"""CUSE in the kernel's role: the device info block, CUSE_INIT negotiation, and the stand-in
/dev/cuse with libfuse's unmodified example behind it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol import constants as c
from protocol.cuse import init_reply_problems, parse_devinfo
from protocol.layers.header import FuseOutHeader
from protocol.layers.structs import CuseInitOut
from protocol.session import KernelSession
from targets import fusedev
from targets.build import build_example
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget
from targets.errors import TargetError
from targets.skip import require


def test_devinfo_is_read_as_the_kernel_reads_it() -> None:
    info = parse_devinfo(b"DEVNAME=fcx\0 MODE = 0600 \0\0")
    assert info.devname == "fcx" and ("MODE", "0600") in info.pairs and not info.problems
    assert parse_devinfo(b"DEVNAME=fcx").problems == ("the last info string has no NUL after it",)
    assert "not KEY=VALUE" in parse_devinfo(b"junk\0").problems[0]


def _reply(session: KernelSession, body: CuseInitOut, info: bytes) -> object:
    payload = bytes(body) + info
    return session.receive(bytes(FuseOutHeader(len=16 + len(payload), unique=session.last_unique)) + payload)


def test_cuse_init_negotiates_as_cuse_process_init_reply() -> None:
    session = KernelSession()
    session.cuse_init()
    reply = _reply(session, CuseInitOut(major=7, minor=31, flags=c.CUSE_UNRESTRICTED_IOCTL,
                                        max_read=1 << 17, max_write=1 << 20), b"DEVNAME=fcx\0")
    assert not reply.findings and session.negotiated is not None  # type: ignore[attr-defined]
    assert session.negotiated.minor == 31 and session.negotiated.has(c.CUSE_UNRESTRICTED_IOCTL)
    refused = KernelSession()
    refused.cuse_init()
    reply = _reply(refused, CuseInitOut(major=7, minor=10, flags=2), b"NAME=x\0")
    assert refused.negotiated is None
    found = " ".join(f.message for f in reply.findings)  # type: ignore[attr-defined]
    assert "7.11" in found and "not offered" in found and "DEVNAME" in found
    assert init_reply_problems(1, CuseInitOut(major=7, minor=31, dev_major=5000), b"DEVNAME=a\0")


@pytest.fixture
def example() -> Path:
    try:
        return build_example("cuse")
    except TargetError as exc:
        require(False, f"machine lacks libfuse's cuse example: {exc.message}")
        raise


@pytest.mark.parametrize("spec", ["cuse-example:name=selftest", "ref:cuse,name=selftest"])
def test_server_through_the_stand_in_leaves_nothing(example: Path, tmp_path: Path, spec: str) -> None:
    """The unmodified example (and the reference FIFO) answer CUSE_INIT through the stand-in;
    closing ends the server by itself (its read of /dev/cuse fails) and removes the mount and
    the scratch dir."""
    require(os.path.exists(fusedev.FUSE_DEVICE), "machine lacks /dev/fuse")
    target = CuseTarget(spec, scratch_root=tmp_path).open()
    assert target.standin is not None and target.daemon is not None
    mountpoint, pid = target.standin.mountpoint, target.daemon.proc.pid if target.daemon.proc else 0
    conn = KernelConnection(target.channel, timeout=5.0)
    data = conn.session.cuse_init()
    reply = conn.wait(conn.session.last_unique, data)
    assert reply.ok and not reply.findings and conn.session.negotiated is not None
    assert b"DEVNAME=selftest\0" in reply.raw
    target.close()
    assert target.exited_by_itself, f"the server had to be stopped: {target.exit_status}"
    assert not fusedev.is_mounted(mountpoint) and list(tmp_path.iterdir()) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_device_machine_judges_by_the_model(example: Path) -> None:
    """CUSE-MACHINE-001 fails a device that does not behave as its model: libfuse's example
    (a buffer: reads do not consume) judged as a FIFO, with the failure named."""
    from conformance.cuse.machine import run_device_machine

    require(os.path.exists(fusedev.FUSE_DEVICE), "machine lacks /dev/fuse")
    with CuseTarget("cuse-example") as target:
        conn = KernelConnection(target.channel, timeout=5.0)
        data = conn.session.cuse_init()
        assert conn.wait(conn.session.last_unique, data).ok
        with pytest.raises(AssertionError, match="CUSE-MACHINE-001"):
            run_device_machine(conn, "fifo", counts={"dev": 50, "ci": 50, "smoke": 50, "soak": 50})


def test_reference_device_over_a_socket(tmp_path: Path) -> None:
    """``ref:cuse,socket``: the reference device over a SEQPACKET socket (no mount, no
    namespace); closing our end ends it by itself."""
    target = CuseTarget("ref:cuse,socket", scratch_root=tmp_path).open()
    assert target.standin is None and target.daemon is not None
    conn = KernelConnection(target.channel, timeout=5.0)
    data = conn.session.cuse_init()
    reply = conn.wait(conn.session.last_unique, data)
    assert reply.ok and not reply.findings and b"DEVNAME=fusecheck-fifo\0" in reply.raw
    target.close()
    assert target.exited_cleanly, f"the server exited with {target.exit_status}"
    assert list(tmp_path.iterdir()) == []
