"""CUSE_INIT: what the kernel needs of the reply to make a character device of it."""

from __future__ import annotations

from conformance.checks import errno_name
from conformance.rules import rule
from protocol import constants as c
from protocol import cuse
from protocol.events import Reply
from protocol.layers.base import fixed_size
from protocol.layers.header import FUSE_OUT_HEADER_SIZE
from protocol.layers.structs import CuseInitOut
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget

KERNEL = "linux fs/fuse/cuse.c"


def _body(reply: Reply) -> CuseInitOut:
    assert reply.ok, f"CUSE_INIT answered {errno_name(reply.error)}"
    assert reply.body is not None and isinstance(reply.body, CuseInitOut), (
        f"CUSE_INIT reply of {len(reply.raw)} bytes has no cuse_init_out")
    return reply.body


def _info(reply: Reply) -> bytes:
    return reply.raw[FUSE_OUT_HEADER_SIZE + fixed_size(CuseInitOut):]


@rule("CUSE-INIT-001", "CUSE_INIT is answered with major 7 and a minor of at least 11",
      source=f"{KERNEL} cuse_process_init_reply (a reply below 7.11 or of another major fails the "
             "device)", area="cuse", feature="CUSE_INIT", opcodes=("CUSE_INIT",))
def test_version(init_reply: Reply) -> None:
    body = _body(init_reply)
    assert int(body.major) == c.FUSE_KERNEL_VERSION, f"major {body.major}"
    assert int(body.minor) >= cuse.MIN_MINOR, f"minor {body.minor}: the kernel needs 7.11 at least"


@rule("CUSE-INIT-002", "The reply's flags are among those CUSE_INIT offered (CUSE_UNRESTRICTED_IOCTL)",
      source=f"{KERNEL} cuse_send_init (the offer), cuse_process_init_reply (unrestricted_ioctl)",
      area="cuse", feature="CUSE_INIT", opcodes=("CUSE_INIT",))
def test_flags_offered(init_reply: Reply) -> None:
    body = _body(init_reply)
    extra = int(body.flags) & ~c.CUSE_UNRESTRICTED_IOCTL
    assert not extra, f"flags {int(body.flags):#x}: {extra:#x} was never offered"


@rule("CUSE-INIT-003",
      "The device info is NUL-ended KEY=VALUE strings within 4096 bytes, with DEVNAME=NAME (a name "
      "without '/'); a server told its name uses it",
      source=f"{KERNEL} cuse_parse_devinfo (DEVNAME required, CUSE_INIT_INFO_MAX); uapi linux/fuse.h",
      area="cuse", feature="CUSE_INIT", opcodes=("CUSE_INIT",))
def test_device_info(init_reply: Reply, cuse_target: CuseTarget) -> None:
    _body(init_reply)
    info = cuse.parse_devinfo(_info(init_reply))
    assert not info.problems, "; ".join(info.problems)
    assert info.devname, f"no DEVNAME in {_info(init_reply)!r}"
    assert "/" not in info.devname, f"DEVNAME {info.devname!r} holds '/'"
    if cuse_target.devname is not None:
        assert info.devname == cuse_target.devname, (
            f"started as {cuse_target.devname!r}, the device says DEVNAME={info.devname}")


@rule("CUSE-INIT-004",
      "dev_major and dev_minor fit a dev_t (12 and 20 bits; 0:0 asks for a free number), and "
      "max_read and max_write are not below a page (the kernel raises them to 4096)",
      source=f"{KERNEL} cuse_process_init_reply (MKDEV, register_chrdev_region, max_t(4096))",
      area="cuse", feature="CUSE_INIT", opcodes=("CUSE_INIT",))
def test_numbers(init_reply: Reply) -> None:
    body = _body(init_reply)
    assert int(body.dev_major) <= cuse.MAX_MAJOR and int(body.dev_minor) <= cuse.MAX_MINOR, (
        f"device {body.dev_major}:{body.dev_minor} does not fit a dev_t")
    for what in ("max_read", "max_write"):
        value = int(getattr(body, what))
        assert value == 0 or value >= 4096, (
            f"{what} {value}: below a page, the kernel uses 4096 instead (the server's buffers "
            "must take that)")


@rule("CUSE-INIT-005",
      "Offered a CUSE_INIT of a newer major (8), the server answers, with an error or with its own "
      "major 7 (a reply a kernel of major 8 could fall back on), and stays alive",
      source="libfuse do_init (a newer major gets the server's own version); "
             f"{KERNEL} cuse_process_init_reply", area="cuse", feature="CUSE_INIT", opcodes=("CUSE_INIT",))
def test_newer_major(connection: KernelConnection, cuse_target: CuseTarget) -> None:
    data = connection.session.cuse_init(major=8)
    reply = connection.wait(connection.session.last_unique, data)
    if reply.ok:
        body = _body(reply)
        assert int(body.major) == c.FUSE_KERNEL_VERSION, f"offered major 8, it answered {body.major}"
    assert cuse_target.daemon is not None and cuse_target.daemon.alive(), (
        f"the server {cuse_target.daemon.exit_description() if cuse_target.daemon else 'is gone'}")
