"""IOCTL on a CUSE device, restricted (sizes from the command's _IOC bits) and unrestricted
(the server names the memory it needs with FUSE_IOCTL_RETRY and iovecs, the kernel asks again
with it), as linux fs/fuse/ioctl.c fuse_do_ioctl does; judged against libfuse's example
device (its FIOC_* commands, examples/ioctl.h) where the target has that model."""

from __future__ import annotations

import os
import struct

import pytest
from scapy.packet import Raw

from conformance.checks import assert_well_formed, errno_name
from conformance.rules import rule
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseIoctlIn, FuseIoctlIovec, FuseIoctlOut, FuseOpenIn, FuseWriteIn
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget

KERNEL = "linux fs/fuse/ioctl.c fuse_do_ioctl, fuse_verify_ioctl_iov"
SIZE_T = struct.Struct("<Q")
ARG = 0x7F00_0000_1000  # the caller's argument: a user address, as the kernel passes it


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    """Linux's _IOC: direction (1 write, 2 read), size, type and number."""
    return direction << 30 | size << 16 | ord(kind) << 8 | number


FIOC_GET_SIZE = _ioc(2, "E", 0, SIZE_T.size)
FIOC_SET_SIZE = _ioc(1, "E", 1, SIZE_T.size)


def _example(target: CuseTarget) -> None:
    """FIOC_GET_SIZE is known for libfuse's example (a buffer) and the reference FIFO."""
    if target.model not in ("buffer", "fifo"):
        pytest.skip("not applicable: the suite knows the FIOC_* commands of libfuse's example and "
                    "the reference FIFO only")


def _open(device: KernelConnection) -> int:
    opened = device.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDWR), nodeid=0)
    assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
    return int(opened.body.fh)


def _ioctl(device: KernelConnection, fh: int, cmd: int, *, flags: int = 0, in_data: bytes = b"",
           out_size: int = 0) -> Reply:
    layers = [FuseIoctlIn(fh=fh, flags=flags, cmd=cmd, arg=ARG, in_size=len(in_data), out_size=out_size)]
    reply = device.call(c.FUSE_IOCTL, *layers, *([Raw(in_data)] if in_data else []), nodeid=0)
    assert_well_formed(reply)
    return reply


def _out(reply: Reply) -> FuseIoctlOut:
    assert reply.ok and reply.body is not None, f"IOCTL answered {errno_name(reply.error)}"
    out = reply.packet[FuseIoctlOut]
    return out


@rule("CUSE-IOCTL-001",
      "A restricted IOCTL (in and out sizes from the command's _IOC bits) is answered without "
      "FUSE_IOCTL_RETRY, with at most out_size bytes; FIOC_GET_SIZE says how many bytes the device "
      "holds (and the example's FIOC_SET_SIZE sets it)",
      source=f"{KERNEL} (a RETRY to a restricted ioctl fails it with EIO)", area="cuse",
      feature="IOCTL", opcodes=("FUSE_IOCTL",))
def test_restricted(device: KernelConnection, cuse_target: CuseTarget) -> None:
    _example(cuse_target)
    fh = _open(device)
    data = b"0123456789"
    device.call(c.FUSE_WRITE, FuseWriteIn(fh=fh, offset=0, size=len(data)), Raw(data), nodeid=0)
    got = _ioctl(device, fh, FIOC_GET_SIZE, out_size=SIZE_T.size)
    out = _out(got)
    assert not int(out.flags) & c.FUSE_IOCTL_RETRY, "a restricted IOCTL was answered with RETRY"
    payload = bytes(got.raw[16 + 16:])
    assert int(out.result) == 0 and len(payload) <= SIZE_T.size, f"result {out.result}, {len(payload)} bytes"
    assert SIZE_T.unpack(payload.ljust(SIZE_T.size, b"\0"))[0] == len(data), (
        f"FIOC_GET_SIZE after writing {len(data)} bytes says {payload!r}")
    if cuse_target.model != "buffer":
        return  # FIOC_SET_SIZE is the example's alone
    set_reply = _ioctl(device, fh, FIOC_SET_SIZE, in_data=SIZE_T.pack(4))
    assert int(_out(set_reply).result) == 0
    again = _ioctl(device, fh, FIOC_GET_SIZE, out_size=SIZE_T.size)
    assert SIZE_T.unpack(bytes(again.raw[32:40]))[0] == 4, "FIOC_SET_SIZE 4 did not take"


@rule("CUSE-IOCTL-002",
      "With CUSE_UNRESTRICTED_IOCTL negotiated, an unrestricted IOCTL sent with no sizes may be "
      "answered with FUSE_IOCTL_RETRY and at most 256 iovecs in all; asked again with those sizes "
      "(and FUSE_IOCTL_RETRY set), it is answered without RETRY",
      source=f"{KERNEL}; linux fs/fuse/cuse.c (CUSE_UNRESTRICTED_IOCTL)", area="cuse",
      feature="IOCTL", opcodes=("FUSE_IOCTL",))
def test_unrestricted_retry(device: KernelConnection, cuse_target: CuseTarget) -> None:
    _example(cuse_target)
    negotiated = device.session.negotiated
    assert negotiated is not None
    if not negotiated.has(c.CUSE_UNRESTRICTED_IOCTL):
        pytest.skip("not applicable: the server did not take CUSE_UNRESTRICTED_IOCTL")
    fh = _open(device)
    first = _ioctl(device, fh, FIOC_GET_SIZE, flags=c.FUSE_IOCTL_UNRESTRICTED)
    out = _out(first)
    assert int(out.flags) & c.FUSE_IOCTL_RETRY, "no RETRY for an ioctl whose memory the server was not given"
    in_iovs, out_iovs = int(out.in_iovs), int(out.out_iovs)
    assert in_iovs + out_iovs <= c.FUSE_IOCTL_MAX_IOV, f"{in_iovs} + {out_iovs} iovecs"
    iovecs = bytes(first.raw[32:])
    assert len(iovecs) == 16 * (in_iovs + out_iovs), (
        f"{len(iovecs)} bytes of iovecs for {in_iovs} in and {out_iovs} out")
    wanted = [FuseIoctlIovec(iovecs[i:i + 16]) for i in range(0, len(iovecs), 16)]
    out_size = sum(int(v.len) for v in wanted[in_iovs:])
    assert out_iovs == 1 and int(wanted[0].base) == ARG and out_size == SIZE_T.size, (
        f"FIOC_GET_SIZE asked for {[(hex(int(v.base)), int(v.len)) for v in wanted]}")
    retried = _ioctl(device, fh, FIOC_GET_SIZE, flags=c.FUSE_IOCTL_UNRESTRICTED | c.FUSE_IOCTL_RETRY,
                     out_size=out_size)
    final = _out(retried)
    assert not int(final.flags) & c.FUSE_IOCTL_RETRY, "RETRY again after the memory it asked for"
    assert int(final.result) == 0 and len(retried.raw) - 32 <= out_size


FIOC_READ = _ioc(0, "E", 2, 0)  # _IO('E', 2): no size in the command, the data in a struct
RW_ARG = struct.Struct("<qQQQQ")  # struct fioc_rw_arg: offset, buf, size, prev_size, new_size
BUF = 0x7F00_0000_8000  # the caller's buffer the struct points at


@rule("CUSE-IOCTL-003",
      "An unrestricted IOCTL whose memory is found through its argument is served in rounds: "
      "RETRY for the argument struct, RETRY for the memory it points at, then the answer, each "
      "RETRY naming only memory the kernel can copy (the iovecs the example's cuse_client drives)",
      source=f"{KERNEL}; libfuse example/cuse.c fioc_do_rw and cuse_client.c", area="cuse",
      feature="IOCTL", opcodes=("FUSE_IOCTL",))
def test_unrestricted_rounds(device: KernelConnection, cuse_target: CuseTarget) -> None:
    if cuse_target.model != "buffer":
        pytest.skip("not applicable: FIOC_READ is libfuse's example's")
    negotiated = device.session.negotiated
    assert negotiated is not None
    if not negotiated.has(c.CUSE_UNRESTRICTED_IOCTL):
        pytest.skip("not applicable: the server did not take CUSE_UNRESTRICTED_IOCTL")
    fh = _open(device)
    data = b"abcdef"
    device.call(c.FUSE_WRITE, FuseWriteIn(fh=fh, offset=0, size=len(data)), Raw(data), nodeid=0)
    flags = c.FUSE_IOCTL_UNRESTRICTED
    first = _out_iovecs(_ioctl(device, fh, FIOC_READ, flags=flags))
    assert first == ([(ARG, RW_ARG.size)], []), f"round 1 asked for {first}"
    arg = RW_ARG.pack(0, BUF, 4, 0, 0)
    flags |= c.FUSE_IOCTL_RETRY
    second = _out_iovecs(_ioctl(device, fh, FIOC_READ, flags=flags, in_data=arg))
    assert second[0] == [(ARG, RW_ARG.size)] and second[1] == [(ARG + 24, 8), (ARG + 32, 8), (BUF, 4)], (
        f"round 2 asked for {second}")
    final = _ioctl(device, fh, FIOC_READ, flags=flags, in_data=arg, out_size=8 + 8 + 4)
    out = _out(final)
    assert not int(out.flags) & c.FUSE_IOCTL_RETRY, "RETRY a third time"
    payload = bytes(final.raw[32:])
    assert int(out.result) == 4 and payload[16:] == b"abcd", f"result {out.result}, data {payload!r}"
    assert SIZE_T.unpack(payload[:8])[0] == SIZE_T.unpack(payload[8:16])[0] == len(data)


def _out_iovecs(reply: Reply) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (base, len) iovecs a RETRY reply names: in, then out."""
    out = _out(reply)
    assert int(out.flags) & c.FUSE_IOCTL_RETRY, f"no RETRY: result {out.result}"
    raw = bytes(reply.raw[32:])
    pairs = [(int(FuseIoctlIovec(raw[i:i + 16]).base), int(FuseIoctlIovec(raw[i:i + 16]).len))
             for i in range(0, len(raw), 16)]
    assert len(pairs) == int(out.in_iovs) + int(out.out_iovs) <= c.FUSE_IOCTL_MAX_IOV
    return pairs[:int(out.in_iovs)], pairs[int(out.in_iovs):]
