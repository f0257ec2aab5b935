"""Device semantics: open, read, write and release as the kernel's CUSE file operations send
them (linux fs/fuse/cuse.c: every read and write at offset 0, FOPEN flags from the server)."""

from __future__ import annotations

import os

import pytest
from scapy.packet import Raw

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from protocol import constants as c
from protocol.layers.structs import FuseOpenIn, FuseReadIn, FuseReleaseIn, FuseWriteIn
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget

KERNEL = "linux fs/fuse/cuse.c cuse_open, cuse_read_iter, cuse_write_iter, cuse_release"
KEEPS_DATA = ("buffer", "fifo")  # models whose reads return what was written


def _open(device: KernelConnection, flags: int = os.O_RDWR) -> int:
    opened = device.call(c.FUSE_OPEN, FuseOpenIn(flags=flags), nodeid=0)
    assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
    assert_well_formed(opened)
    return int(opened.body.fh)


@rule("CUSE-IO-001",
      "OPEN, WRITE, READ and RELEASE of the device are answered with well-formed replies; WRITE "
      "says it took every byte, and a device that keeps data reads back what was written",
      source=f"{KERNEL} (offsets are always 0; fuse_direct_io)", area="cuse", feature="IO",
      opcodes=("FUSE_OPEN", "FUSE_READ", "FUSE_WRITE", "FUSE_RELEASE"))
def test_round_trip(device: KernelConnection, cuse_target: CuseTarget) -> None:
    fh = _open(device)
    data = b"fusecheck cuse round trip\n"
    wrote = device.call(c.FUSE_WRITE, FuseWriteIn(fh=fh, offset=0, size=len(data)), Raw(data), nodeid=0)
    assert wrote.ok and wrote.body is not None, f"WRITE answered {errno_name(wrote.error)}"
    assert_well_formed(wrote)
    assert int(wrote.body.size) == len(data), f"WRITE of {len(data)} bytes says {wrote.body.size}"
    read = device.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=4096), nodeid=0)
    assert read.ok, f"READ answered {errno_name(read.error)}"
    assert_well_formed(read)
    if cuse_target.model in KEEPS_DATA:
        assert read.raw[16:] == data, f"read back {read.raw[16:]!r} after writing {data!r}"
    released = device.call(c.FUSE_RELEASE, FuseReleaseIn(fh=fh, flags=os.O_RDWR), nodeid=0)
    assert released.ok, f"RELEASE answered {errno_name(released.error)}"


@rule("CUSE-IO-002",
      "A READ larger than what the device holds returns what it holds and no more; a READ of 0 "
      "bytes returns nothing",
      source=f"{KERNEL}; read(2)", area="cuse", feature="IO", opcodes=("FUSE_READ",))
def test_short_reads(device: KernelConnection, cuse_target: CuseTarget) -> None:
    if cuse_target.model not in KEEPS_DATA:
        pytest.skip("not applicable: the suite knows no model of this device's contents")
    fh = _open(device)
    data = b"12345"
    device.call(c.FUSE_WRITE, FuseWriteIn(fh=fh, offset=0, size=len(data)), Raw(data), nodeid=0)
    big = device.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=1 << 16), nodeid=0)
    assert big.ok and big.raw[16:] == data, f"READ of 64 KiB gave {big.raw[16:]!r}"
    empty = device.call(c.FUSE_READ, FuseReadIn(fh=fh, offset=0, size=0), nodeid=0)
    assert empty.ok and empty.raw[16:] == b"", f"READ of 0 bytes gave {empty.raw[16:]!r}"
    device.call(c.FUSE_RELEASE, FuseReleaseIn(fh=fh, flags=os.O_RDWR), nodeid=0)


@rule("CUSE-IO-003",
      "After RELEASE the device serves a new OPEN, and data written through the released handle "
      "is read back through the new one (the device, not the handle, holds it)",
      source=f"{KERNEL} (each open(2) of the device is its own OPEN and RELEASE)", area="cuse",
      feature="IO", opcodes=("FUSE_OPEN", "FUSE_RELEASE"))
def test_data_outlives_a_handle(device: KernelConnection, cuse_target: CuseTarget) -> None:
    if cuse_target.model not in KEEPS_DATA:
        pytest.skip("not applicable: the suite knows no model of this device's contents")
    first = _open(device)
    data = b"kept by the device"
    device.call(c.FUSE_WRITE, FuseWriteIn(fh=first, offset=0, size=len(data)), Raw(data), nodeid=0)
    released = device.call(c.FUSE_RELEASE, FuseReleaseIn(fh=first, flags=os.O_RDWR), nodeid=0)
    assert released.ok, f"RELEASE answered {errno_name(released.error)}"
    second = _open(device)
    read = device.call(c.FUSE_READ, FuseReadIn(fh=second, offset=0, size=4096), nodeid=0)
    assert read.ok and read.raw[16:] == data, f"through a new handle READ gave {read.raw[16:]!r}"
    device.call(c.FUSE_RELEASE, FuseReleaseIn(fh=second, flags=os.O_RDWR), nodeid=0)
