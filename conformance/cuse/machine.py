"""CUSE-MACHINE-001's state machine: random opens, writes, reads, size ioctls and releases
against a CUSE device, each reply judged by the target's device model:

- ``buffer`` (libfuse's example): one buffer for the device; a write at offset 0 (CUSE's
  offsets are always 0) overwrites its start and grows it, a read returns its start;
  FIOC_GET_SIZE is its length, FIOC_SET_SIZE cuts or zero-extends it.
- ``fifo`` (the reference device): writes append up to a capacity, reads take from the front;
  a read of an empty device would wait, so the machine reads an empty FIFO only through a
  handle opened O_NONBLOCK, which must answer EAGAIN.

Each example starts from an emptied device (SET_SIZE 0, or the FIFO drained) on the one
server of the test, as programs come and go on one device.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, rule
from scapy.packet import Raw

from conformance.checks import errno_name
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseIoctlIn, FuseOpenIn, FuseReadIn, FuseReleaseIn, FuseWriteIn
from targets.connection import KernelConnection

RULE_ID = "CUSE-MACHINE-001"
SIZE_T = struct.Struct("<Q")
FIOC_GET_SIZE = 2 << 30 | SIZE_T.size << 16 | ord("E") << 8
FIOC_SET_SIZE = 1 << 30 | SIZE_T.size << 16 | ord("E") << 8 | 1
FIFO_CAPACITY = 64 * 1024  # targets.reference.cuse.CAPACITY
DATA = st.binary(min_size=1, max_size=300)
SIZES = st.integers(0, 600)


@dataclass
class Handle:
    fh: int
    nonblocking: bool


class CuseMachine(RuleBasedStateMachine):
    handles = Bundle("handles")

    def __init__(self, device: KernelConnection, model: str, failures: list[str] | None = None) -> None:
        super().__init__()
        self.device, self.model = device, model
        self.failures = failures if failures is not None else []  # every example's, in order
        self.data = b""  # what the model says the device holds
        self.log: list[str] = []
        self.opened: list[Handle] = []  # released at teardown, as a process's exit closes them

    # -- the wire ---------------------------------------------------------------------
    def call(self, opcode: int, *layers: object, what: str) -> Reply:
        reply = self.device.call(opcode, *layers, nodeid=0)  # type: ignore[arg-type]
        problems = [f.message for f in reply.findings]
        self.log.append(f"{what} -> {errno_name(reply.error)}")
        self.expect(not problems, f"{what}: " + "; ".join(problems))
        return reply

    def trail(self) -> str:
        return "\nthe example's requests:\n  " + "\n  ".join(self.log[-30:])

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(f"{RULE_ID}: {message}{self.trail()}")
            raise AssertionError(self.failures[-1])

    def size(self, handle: Handle) -> int:
        reply = self.call(c.FUSE_IOCTL, FuseIoctlIn(fh=handle.fh, cmd=FIOC_GET_SIZE, arg=0x1000,
                                                    out_size=SIZE_T.size), what="IOCTL FIOC_GET_SIZE")
        self.expect(reply.ok and len(reply.raw) >= 32 + SIZE_T.size,
                    f"FIOC_GET_SIZE answered {errno_name(reply.error)} ({len(reply.raw)} bytes)")
        return int(SIZE_T.unpack_from(reply.raw, 32)[0])

    def open_handle(self, nonblocking: bool) -> Handle:
        flags = os.O_RDWR | (os.O_NONBLOCK if nonblocking else 0)
        reply = self.call(c.FUSE_OPEN, FuseOpenIn(flags=flags), what=f"OPEN flags={flags:#o}")
        self.expect(reply.ok and reply.body is not None, f"OPEN answered {errno_name(reply.error)}")
        assert reply.body is not None
        handle = Handle(int(reply.body.fh), nonblocking)
        self.opened.append(handle)
        return handle

    # -- rules --------------------------------------------------------------------------
    @initialize(target=handles)
    def empty(self) -> Handle:
        """Open a handle and empty the device, so the model starts from nothing."""
        handle = self.open_handle(nonblocking=True)
        if self.model == "buffer":
            self.call(c.FUSE_IOCTL, FuseIoctlIn(fh=handle.fh, cmd=FIOC_SET_SIZE, arg=0x1000,
                                                in_size=SIZE_T.size), Raw(SIZE_T.pack(0)),
                      what="IOCTL FIOC_SET_SIZE 0")
        else:
            left = self.size(handle)
            if left:
                self.call(c.FUSE_READ, FuseReadIn(fh=handle.fh, size=left), what=f"READ {left} (drain)")
        self.expect(self.size(handle) == 0, "the device is not empty after emptying it")
        return handle

    @rule(target=handles, nonblocking=st.booleans())
    def open(self, nonblocking: bool) -> Handle:
        return self.open_handle(nonblocking)

    @rule(handle=handles, data=DATA)
    def write(self, handle: Handle, data: bytes) -> None:
        reply = self.call(c.FUSE_WRITE, FuseWriteIn(fh=handle.fh, offset=0, size=len(data)), Raw(data),
                          what=f"WRITE {len(data)} bytes")
        if self.model == "buffer":
            self.expect(reply.ok and reply.body is not None and int(reply.body.size) == len(data),
                        f"WRITE of {len(data)} bytes answered {errno_name(reply.error)}")
            self.data = data + self.data[len(data):]
            return
        room = FIFO_CAPACITY - len(self.data)
        if not room:
            self.expect(reply.error == -errno.EAGAIN,
                        f"WRITE to a full FIFO answered {errno_name(reply.error)}")
            return
        taken = min(room, len(data))
        self.expect(reply.ok and reply.body is not None and int(reply.body.size) == taken,
                    f"WRITE of {len(data)} bytes with room for {room} answered "
                    f"{errno_name(reply.error)} {getattr(reply.body, 'size', '')}")
        self.data += data[:taken]

    @rule(handle=handles, size=SIZES)
    def read(self, handle: Handle, size: int) -> None:
        if self.model == "fifo" and not self.data and size and not handle.nonblocking:
            return  # it would wait for a writer, as read(2) does
        reply = self.call(c.FUSE_READ, FuseReadIn(fh=handle.fh, size=size), what=f"READ {size}")
        if self.model == "fifo" and not self.data and size:
            self.expect(reply.error == -errno.EAGAIN,
                        f"READ of an empty FIFO through O_NONBLOCK answered {errno_name(reply.error)}")
            return
        self.expect(reply.ok, f"READ {size} answered {errno_name(reply.error)}")
        got, want = reply.raw[16:], self.data[:size]
        self.expect(got == want, f"READ {size} gave {got[:40]!r} ({len(got)} bytes), the model "
                                 f"says {want[:40]!r} ({len(want)} bytes)")
        if self.model == "fifo":
            self.data = self.data[size:]

    @rule(handle=handles)
    def get_size(self, handle: Handle) -> None:
        got = self.size(handle)
        self.expect(got == len(self.data), f"FIOC_GET_SIZE says {got}, the model {len(self.data)}")

    @rule(handle=handles, size=SIZES)
    def set_size(self, handle: Handle, size: int) -> None:
        if self.model != "buffer":
            return  # the FIFO has no FIOC_SET_SIZE
        reply = self.call(c.FUSE_IOCTL, FuseIoctlIn(fh=handle.fh, cmd=FIOC_SET_SIZE, arg=0x1000,
                                                    in_size=SIZE_T.size), Raw(SIZE_T.pack(size)),
                          what=f"IOCTL FIOC_SET_SIZE {size}")
        self.expect(reply.ok, f"FIOC_SET_SIZE {size} answered {errno_name(reply.error)}")
        self.data = self.data[:size].ljust(size, b"\0")

    @rule(handle=consumes(handles))
    def release(self, handle: Handle) -> None:
        reply = self.call(c.FUSE_RELEASE, FuseReleaseIn(fh=handle.fh, flags=os.O_RDWR), what="RELEASE")
        self.opened.remove(handle)
        self.expect(reply.ok, f"RELEASE answered {errno_name(reply.error)}")

    def teardown(self) -> None:
        for handle in self.opened:
            self.device.call(c.FUSE_RELEASE, FuseReleaseIn(fh=handle.fh, flags=os.O_RDWR), nodeid=0)


def run_device_machine(device: KernelConnection, model: str,
                       counts: dict[str, int] | None = None) -> None:
    """Run the machine (the profile's example count); a failure that hypothesis could not
    replay (the device kept state from an earlier example) is raised as the first failure."""
    from hypothesis.errors import Flaky

    from conformance.profiles import run_stateful

    failures: list[str] = []
    try:
        run_stateful(lambda: CuseMachine(device, model, failures), counts=counts)
    except Flaky as exc:
        if not failures:
            raise
        raise AssertionError(f"{failures[0]}\n(the device answered differently when the example "
                             "ran again: it keeps state between examples, so this is not shrunk)") from exc
