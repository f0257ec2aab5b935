"""The CUSE fuzz campaign: valid device work on one CUSE server, interleaved with near-valid
and malformed requests.

Valid work is what the kernel's fs/fuse/cuse.c sends for programs using the device: OPEN,
READ and WRITE at offset 0, IOCTL (restricted, or unrestricted with its RETRY legs), POLL,
FLUSH, FSYNC and RELEASE of open handles. Near-valid requests put one field of the body at a
boundary of its type (``fuzz.hostile.boundary``) or a size past the server's buffer;
malformed ones break the framing (``fuzz.hostile.frame``), reuse a unique or send a second
CUSE_INIT. After each message the server must be alive, have answered within
``Stage.deadline`` (a malformed message may go unanswered; a READ may block until it is
interrupted), with a reply the kernel would accept, and still answer OPEN and RELEASE.
Errors are fine answers: this judges robustness, not what the device does.
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, initialize, multiple, rule
from scapy.packet import Packet, Raw

from fuzz import hostile
from fuzz.cuse_stage import healthy, open_stage
from fuzz.cuse_wire import CuseWire, Message
from fuzz.hostile import Framing, Twist, frame, malformed
from fuzz.stage import Campaign, Stage, register
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import (
    CuseInitIn,
    FuseFlushIn,
    FuseFsyncIn,
    FuseIoctlIn,
    FuseIoctlIovec,
    FuseOpenIn,
    FusePollIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseWriteIn,
)
from targets.spec import is_cuse

MAX_IOCTL = 16 * 4096  # bytes of one RETRY leg the machine sends
MAX_LEGS = 4  # IOCTL requests per ioctl(2), RETRY legs included


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | ord(kind) << 8 | nr


#: libfuse's example's ioctls (example/ioctl.h), their neighbours, and any command at all
CMDS = st.one_of(st.sampled_from([_ioc(d, "E", nr, size) for d, size in ((0, 0), (1, 8), (2, 8), (3, 8))
                                  for nr in range(4)]), st.integers(0, 2**32 - 1))
OPEN_FLAGS = st.builds(lambda mode, bits: mode | sum(bits),
                       st.sampled_from([os.O_RDONLY, os.O_WRONLY, os.O_RDWR]),
                       st.sets(st.sampled_from([os.O_NONBLOCK, os.O_APPEND, os.O_SYNC, os.O_DSYNC])))
EVENTS = st.sets(st.sampled_from([select.POLLIN, select.POLLPRI, select.POLLOUT, select.POLLERR,
                                  select.POLLHUP, select.POLLRDNORM, select.POLLWRNORM])).map(sum)
#: what each opcode's request is drawn from, beyond the handle
ARGS: dict[int, st.SearchStrategy[dict[str, Any]]] = {
    c.FUSE_OPEN: st.fixed_dictionaries({"flags": OPEN_FLAGS}),
    c.FUSE_READ: st.fixed_dictionaries({"size": st.integers(1, 4096)}),
    c.FUSE_WRITE: st.fixed_dictionaries({"data": st.binary(min_size=1, max_size=512)}),
    c.FUSE_IOCTL: st.fixed_dictionaries({"cmd": CMDS, "arg": st.integers(0, 2**47),
                                         "fill": st.binary(max_size=16)}),
    c.FUSE_POLL: st.fixed_dictionaries({"kh": st.integers(1, 2**64 - 1), "schedule": st.booleans(),
                                        "events": EVENTS}),
    c.FUSE_FLUSH: st.fixed_dictionaries({"lock_owner": st.integers(0, 2**64 - 1)}),
    c.FUSE_FSYNC: st.fixed_dictionaries({"datasync": st.booleans()}),
    c.FUSE_RELEASE: st.fixed_dictionaries({}),
}
#: the framings fuzz.hostile knows but fuse_in_header cut short: a kernel never writes less
#: than a header, and libfuse ends its session on one (a "short read on fuse device")
FRAMINGS = malformed().filter(lambda f: f.how != "cut-header")


@dataclass
class Handle:
    fh: int
    flags: int  # as opened: READ and WRITE carry them, as the kernel's file->f_flags


class CuseFuzzMachine(CuseWire):
    handles = Bundle("handles")

    def __init__(self, stage: Stage) -> None:
        super().__init__(stage)
        self.opened: list[Handle] = []  # released at teardown

    def valid(self, opcode: int, handle: Handle | None, args: dict[str, Any]) -> Reply:
        message = self.build(opcode, *self.layers(opcode, handle, args))
        return self.call(message, may_block=opcode == c.FUSE_READ)

    def near_valid(self, message: Message) -> None:
        self.call(message, may_block=message.opcode == c.FUSE_READ)
        self.probe(message)

    # -- requests as the kernel makes them ----------------------------------------------
    def layers(self, opcode: int, handle: Handle | None, args: dict[str, Any]) -> tuple[Packet, ...]:
        fh, flags = (handle.fh, handle.flags) if handle else (0, os.O_RDWR)
        if opcode == c.FUSE_OPEN:
            return (FuseOpenIn(flags=args["flags"]),)
        if opcode == c.FUSE_READ:  # O_NONBLOCK as fcntl(F_SETFL) sets it: an empty device says EAGAIN
            return (FuseReadIn(fh=fh, offset=0, size=args["size"], flags=flags | os.O_NONBLOCK),)
        if opcode == c.FUSE_WRITE:
            return FuseWriteIn(fh=fh, offset=0, size=len(args["data"]), flags=flags), Raw(args["data"])
        if opcode == c.FUSE_IOCTL:
            return self.ioctl_leg(fh, args, 0, 0, first=True)
        if opcode == c.FUSE_POLL:
            return (FusePollIn(fh=fh, kh=args["kh"], events=args["events"],
                               flags=c.FUSE_POLL_SCHEDULE_NOTIFY if args["schedule"] else 0),)
        if opcode == c.FUSE_FLUSH:
            return (FuseFlushIn(fh=fh, lock_owner=args["lock_owner"]),)
        if opcode == c.FUSE_FSYNC:
            return (FuseFsyncIn(fh=fh, fsync_flags=1 if args["datasync"] else 0),)
        assert opcode == c.FUSE_RELEASE, opcode
        return (FuseReleaseIn(fh=fh, flags=flags),)

    @property
    def unrestricted(self) -> bool:
        negotiated = self.conn.session.negotiated
        return bool(negotiated and negotiated.flags & c.CUSE_UNRESTRICTED_IOCTL)

    def ioctl_leg(self, fh: int, args: dict[str, Any], in_size: int, out_size: int, *,
                  first: bool) -> tuple[Packet, ...]:
        """fuse_do_ioctl's request: restricted, the sizes from the command; unrestricted,
        none at first, then what the RETRY asked for. The data is ``fill`` then zeros."""
        cmd = args["cmd"]
        if first and not self.unrestricted:
            size = cmd >> 16 & 0x3FFF
            in_size, out_size = (size if cmd >> 30 & 1 else 0), (size if cmd >> 30 & 2 else 0)
        flags = c.FUSE_IOCTL_UNRESTRICTED if self.unrestricted else 0
        body = FuseIoctlIn(fh=fh, flags=flags, cmd=cmd, arg=args["arg"], in_size=in_size, out_size=out_size)
        data = (args["fill"] + bytes(in_size))[:in_size]
        return (body, Raw(data)) if data else (body,)

    def ioctl(self, handle: Handle, args: dict[str, Any]) -> None:
        reply = self.valid(c.FUSE_IOCTL, handle, args)
        for _ in range(MAX_LEGS - 1):
            body = reply.body if reply.ok else None
            if body is None or not int(body.flags) & c.FUSE_IOCTL_RETRY:
                return
            iovs = [FuseIoctlIovec(reply.raw[32 + 16 * i:48 + 16 * i])
                    for i in range(int(body.in_iovs) + int(body.out_iovs))]
            in_size = sum(int(v.len) for v in iovs[:int(body.in_iovs)])
            out_size = sum(int(v.len) for v in iovs[int(body.in_iovs):])
            if max(in_size, out_size) > MAX_IOCTL:
                return  # more than the machine lends it
            leg = self.ioctl_leg(handle.fh, args, in_size, out_size, first=False)
            reply = self.call(self.build(c.FUSE_IOCTL, *leg))

    # -- rules: valid work --------------------------------------------------------------
    def open_handle(self, flags: int) -> Any:
        reply = self.valid(c.FUSE_OPEN, None, {"flags": flags})
        if not reply.ok:
            return multiple()
        handle = Handle(int(getattr(reply.body, "fh", 0) or 0), flags)
        self.opened.append(handle)
        return handle

    @initialize(target=handles)
    def first_open(self) -> Any:
        return self.open_handle(os.O_RDWR)

    @rule(target=handles, flags=OPEN_FLAGS)
    def open(self, flags: int) -> Any:
        return self.open_handle(flags)

    @rule(handle=handles, args=ARGS[c.FUSE_READ])
    def read(self, handle: Handle, args: dict[str, Any]) -> None:
        self.valid(c.FUSE_READ, handle, args)

    @rule(handle=handles, args=ARGS[c.FUSE_WRITE])
    def write(self, handle: Handle, args: dict[str, Any]) -> None:
        self.valid(c.FUSE_WRITE, handle, args)

    @rule(handle=handles, args=ARGS[c.FUSE_IOCTL])
    def ioctl_call(self, handle: Handle, args: dict[str, Any]) -> None:
        self.ioctl(handle, args)

    @rule(handle=handles, args=ARGS[c.FUSE_POLL])
    def poll(self, handle: Handle, args: dict[str, Any]) -> None:
        self.valid(c.FUSE_POLL, handle, args)

    @rule(handle=handles, args=ARGS[c.FUSE_FLUSH])
    def flush(self, handle: Handle, args: dict[str, Any]) -> None:
        self.valid(c.FUSE_FLUSH, handle, args)

    @rule(handle=handles, args=ARGS[c.FUSE_FSYNC])
    def fsync(self, handle: Handle, args: dict[str, Any]) -> None:
        self.valid(c.FUSE_FSYNC, handle, args)

    @rule(handle=consumes(handles))
    def release(self, handle: Handle) -> None:
        self.opened.remove(handle)
        self.valid(c.FUSE_RELEASE, handle, {})

    # -- rules: near-valid and malformed --------------------------------------------------
    @rule(handle=handles, opcode=st.sampled_from(sorted(ARGS)), data=st.data())
    def boundary(self, handle: Handle, opcode: int, data: st.DataObject) -> None:
        """One body field at a boundary of its type, or a size past the server's buffer."""
        layers = self.layers(opcode, handle, data.draw(ARGS[opcode], label="args"))
        changed, twist = data.draw(st.one_of(hostile.boundary(layers), self.past_buffer(layers)),
                                   label="twist")
        self.near_valid(self.build(opcode, *changed, twist=twist))

    def past_buffer(self, layers: tuple[Packet, ...]) -> st.SearchStrategy[tuple[tuple[Packet, ...], Twist]]:
        negotiated = self.conn.session.negotiated
        biggest = int(getattr(negotiated.reply, "max_write", 0) or 0) if negotiated else 0
        sized = [name for name in ("size", "in_size", "out_size") if name in layers[0].fields]
        if not sized:
            return st.nothing()

        def apply(name: str, value: int) -> tuple[tuple[Packet, ...], Twist]:
            body = layers[0].copy()
            body.setfieldval(name, value)
            return (body, *layers[1:]), Twist("boundary", f"{layers[0].c_name}.{name} = {value:#x} "
                                                          "(past max_write and the server's buffer)")

        return st.builds(apply, st.sampled_from(sized), st.sampled_from([biggest + 1, 1 << 24]))

    @rule(handle=handles, opcode=st.sampled_from(sorted(ARGS)), args=st.data(), framing=FRAMINGS)
    def broken(self, handle: Handle, opcode: int, args: st.DataObject, framing: Framing) -> None:
        """A valid request with its framing broken: the length lies, the body is cut or
        followed by garbage, the opcode is unknown, the unique 0."""
        message = self.build(opcode, *self.layers(opcode, handle, args.draw(ARGS[opcode], label="args")))
        wire, twist = frame(message.data, framing)
        name = "UNKNOWN_OPCODE" if framing.how == "opcode" else message.name
        self.hostile(Message(opcode, message.data, message.unique, twist, message.shown, name), wire,
                     wire_unique=0 if framing.how == "unique=0" else message.unique)

    @rule()
    def second_init(self) -> None:
        init = CuseInitIn(major=c.FUSE_KERNEL_VERSION, minor=c.FUSE_KERNEL_MINOR_VERSION,
                          flags=c.CUSE_UNRESTRICTED_IOCTL)
        message = self.build(c.CUSE_INIT, init, twist=Twist("malformed", "a second CUSE_INIT"))
        self.hostile(message, message.data, wire_unique=message.unique)

    @rule(flags=OPEN_FLAGS)
    def reused_unique(self, flags: int) -> None:
        """OPEN under the unique of the request answered last: done with, so a reply is due."""
        unique = self.answered or None
        message = self.build(c.FUSE_OPEN, FuseOpenIn(flags=flags), unique=unique,
                             twist=Twist("malformed", f"fuse_in_header.unique = {unique or 0:#x}, reused"))
        reply = self.call(message)
        if reply.ok:
            release = FuseReleaseIn(fh=int(getattr(reply.body, "fh", 0) or 0), flags=flags)
            self.call(self.build(c.FUSE_RELEASE, release), culprit=message)
        self.probe(message)

    def teardown(self) -> None:
        """Close what the example left open, as its programs' exits would."""
        while self.opened and healthy(self.stage):
            self.valid(c.FUSE_RELEASE, self.opened.pop(), {})


CAMPAIGN = register(Campaign(
    "cuse", "a CUSE server: device work (open, read, write, ioctl, poll, flush, fsync, release) "
            "among near-valid and malformed requests", applies=is_cuse, open=open_stage,
    machine=CuseFuzzMachine, healthy=healthy))

__all__ = ["CAMPAIGN", "CuseFuzzMachine", "Handle", "healthy", "open_stage"]
