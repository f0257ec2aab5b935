"""FUSE_INIT negotiation, as the kernel (fs/fuse/inode.c) and libfuse (do_init) do it."""

from __future__ import annotations

import pytest

from conformance.checks import assert_well_formed, errno_name, not_over_virtio_fs
from conformance.rules import rule
from conformance.walk import some_entry
from protocol import constants as c
from protocol.layers.base import fixed_size
from protocol.layers.structs import FuseGetattrIn
from protocol.layers.variable import FuseName
from protocol.sizes import init_out_class
from targets.connection import KernelConnection

KERNEL = "linux fs/fuse/inode.c process_init_reply"
LIBFUSE = "libfuse lib/fuse_lowlevel.c do_init"


@rule("FUSE-INIT-001", "INIT is answered with major 7 and the server's own minor (>= 1)",
      source=f"{KERNEL}: a reply major other than 7 fails the connection")
def test_init_reply_version(conn: KernelConnection) -> None:
    reply = conn.init()
    assert reply.ok, f"INIT answered {errno_name(reply.error)}"
    assert_well_formed(reply)
    body = reply.body
    assert body is not None and body.major == c.FUSE_KERNEL_VERSION, f"major {body and body.major}"
    assert body.minor >= 1, f"minor {body.minor}"


@pytest.mark.parametrize("offered", [45, 36, 23, 22, 12, 9, 5, 4])
@rule("FUSE-INIT-002",
      "The INIT reply fits the fuse_init_out of the offered minor (64 bytes from 7.23, "
      "24 bytes before, 8 before 7.5)",
      source=f"{KERNEL} (out_argvar: a longer reply is EINVAL); {LIBFUSE} (compat sizes)")
def test_init_reply_size_for_offered_minor(conn: KernelConnection, offered: int) -> None:
    reply = conn.init(minor=offered)
    if reply.error:
        pytest.skip(f"not applicable: the server refuses minor 7.{offered} "
                    f"({errno_name(reply.error)}), as it may")
    limit = fixed_size(init_out_class(offered))
    body_len = len(reply.raw) - 16
    assert 8 <= body_len <= limit, (
        f"INIT reply body is {body_len} bytes; a 7.{offered} kernel takes 8..{limit}")
    assert_well_formed(reply)


@pytest.mark.parametrize("offered", [8])
@rule("FUSE-INIT-003",
      "After INIT at a minor before 7.9, entry and attr replies use the compat sizes "
      "(FUSE_COMPAT_ENTRY_OUT_SIZE 120, FUSE_COMPAT_ATTR_OUT_SIZE 96)",
      source=f"{LIBFUSE} and fuse_reply_entry/fuse_reply_attr; uapi FUSE_COMPAT_*_SIZE")
def test_compat_sizes_after_old_minor(conn: KernelConnection, offered: int) -> None:
    reply = conn.init(minor=offered, flags=c.FUSE_ASYNC_READ | c.FUSE_POSIX_LOCKS)
    if reply.error:
        pytest.skip(f"not applicable: the server refuses minor 7.{offered}")
    attr = conn.call(c.FUSE_GETATTR, FuseGetattrIn())
    assert attr.ok, f"GETATTR of the root answered {errno_name(attr.error)}"
    assert_well_formed(attr, "reply.body-size")
    entry = some_entry(conn)
    if entry is not None:
        lookup = conn.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
        assert lookup.ok, f"LOOKUP of listed name {entry.name!r} answered {errno_name(lookup.error)}"
        assert_well_formed(lookup, "reply.body-size")


@rule("FUSE-INIT-004",
      "An INIT with a major newer than 7 is answered with the server's major 7 (not an error), "
      "and the INIT 7.x that follows is accepted",
      source=f"{LIBFUSE}: a newer major gets the server's version so the kernel can fall back")
def test_init_newer_major(conn: KernelConnection) -> None:
    first = conn.init(major=8)
    assert first.ok, f"INIT with major 8 answered {errno_name(first.error)}"
    assert first.body is not None and first.body.major == c.FUSE_KERNEL_VERSION
    second = conn.init()
    assert second.ok and conn.session.negotiated, (
        f"the INIT 7.{conn.session.minor} after it answered {errno_name(second.error)}")


@rule("FUSE-INIT-005", "An INIT with a major older than 7 is refused with an error reply",
      source=f"{LIBFUSE}: major < 7 gets EPROTO")
def test_init_older_major(conn: KernelConnection) -> None:
    reply = conn.init(major=6)
    assert reply.error < 0, "INIT with major 6 was accepted"
    assert_well_formed(reply)


@pytest.mark.parametrize("offer", ["kernel", "minimal"])
@rule("FUSE-INIT-006", "The INIT reply sets no flag the kernel did not offer",
      source=f"{KERNEL}: flags are capabilities both sides share; {LIBFUSE} masks want by capable")
def test_init_flags_subset(conn: KernelConnection, offer: str) -> None:
    flags = None if offer == "kernel" else c.FUSE_ASYNC_READ | c.FUSE_DONT_MASK
    reply = conn.init(flags=flags) if flags is not None else conn.init()
    if offer == "minimal" and reply.error:  # libfuse: a want the kernel cannot give fails INIT
        assert_well_formed(reply)
        pytest.skip(f"not applicable: the server needs more than a minimal offer (INIT answered "
                    f"{errno_name(reply.error)})")
    assert reply.ok, f"INIT answered {errno_name(reply.error)}"
    assert_well_formed(reply, "init.flags-not-offered")


@rule("FUSE-INIT-007", "max_write in the INIT reply is at least 4096",
      source=f"{KERNEL}: max_write below 4096 is raised to 4096, so the server gets such writes")
def test_init_max_write(conn: KernelConnection) -> None:
    reply = conn.init()
    assert reply.ok and reply.body is not None
    assert reply.body.max_write >= 4096, f"max_write {reply.body.max_write}"


@rule("FUSE-INIT-008", "With FUSE_MAX_PAGES set in the reply, max_pages is at least 1",
      source=f"{KERNEL}: max_pages is the page count of the largest request (0 is coerced to 1)")
def test_init_max_pages(conn: KernelConnection) -> None:
    reply = conn.init()
    assert reply.ok and reply.body is not None
    body = reply.body
    if not body.flags & c.FUSE_MAX_PAGES:
        pytest.skip("not applicable: the server does not set FUSE_MAX_PAGES")
    assert body.max_pages >= 1, f"FUSE_MAX_PAGES with max_pages {body.max_pages}"


@rule("FUSE-INIT-009", "A second INIT on an initialized session is refused with an error",
      source=f"{LIBFUSE}: INIT after INIT gets EIO; the kernel sends INIT once")
def test_second_init_refused(ready: KernelConnection) -> None:
    not_over_virtio_fs(ready, "a guest that restarts sends INIT again on the same device, and the "
                              "back-end starts a new session (VIRTIOFS-INIT-002 checks that)")
    reply = ready.init()
    assert reply.error < 0, "a second INIT was accepted"
    assert_well_formed(reply)
