"""The kernel-role session against hand-made replies: each malformation is a named finding."""

from __future__ import annotations

import pytest
from scapy.packet import Raw

from protocol import constants as c
from protocol import state as st
from protocol.errors import ProtocolError, RemoteProtocolError
from protocol.events import Notify, Reply
from protocol.layers import (
    FuseAttr,
    FuseAttrOut,
    FuseDirent,
    FuseDirentList,
    FuseEntryOut,
    FuseGetattrIn,
    FuseInHeader,
    FuseInitOut,
    FuseName,
    FuseNotifyInvalEntryOut,
    FuseOutHeader,
    FuseReadIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.session import KernelSession


def started(minor: int = 45) -> KernelSession:
    session = KernelSession()
    session.init()
    reply = FuseOutHeader(unique=session.last_unique) / FuseInitOut(
        major=7, minor=minor, flags=c.FUSE_ASYNC_READ, max_write=65536)
    event = session.receive(bytes(reply))
    assert not event.findings and session.state == st.RUNNING
    return session


def codes(event) -> set[str]:
    return {f.code for f in event.findings}


def test_init_negotiates_the_lower_minor() -> None:
    session = started(minor=31)
    assert session.negotiated is not None
    assert session.negotiated.minor == 31 and session.negotiated.flags == c.FUSE_ASYNC_READ


def test_init_request_bytes_at_old_minor_have_no_flags2() -> None:
    session = KernelSession()
    data = session.init(minor=22)
    assert len(data) == 40 + 16  # fuse_init_in before 7.36: major, minor, max_readahead, flags


def test_clean_reply_has_no_findings() -> None:
    session = started()
    session.request(c.FUSE_LOOKUP, FuseName(name=b"a"))
    reply = FuseOutHeader(unique=session.last_unique) / FuseEntryOut(
        nodeid=5, attr=FuseAttr(ino=5, mode=0o100644))
    event = session.receive(bytes(reply))
    assert isinstance(event, Reply) and not event.findings
    assert event.body is not None and event.body.nodeid == 5


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda u: bytes(FuseOutHeader(unique=u, len=99) / FuseAttrOut()), "reply.len-mismatch"),
        (lambda u: bytes(FuseOutHeader(unique=u + 2) / FuseAttrOut()), "reply.unknown-unique"),
        (lambda u: bytes(FuseOutHeader(unique=u, error=5)), "reply.error-range"),
        (lambda u: bytes(FuseOutHeader(unique=u, error=-600)), "reply.error-range"),
        (lambda u: bytes(FuseOutHeader(unique=u, error=-2) / Raw(b"x")), "reply.body-after-error"),
        (lambda u: bytes(FuseOutHeader(unique=u) / Raw(bytes(FuseAttrOut())[:-8])), "reply.body-size"),
        (lambda u: bytes(FuseOutHeader(unique=u) / FuseAttrOut(attr=FuseAttr(mode=0o7777))),
         "reply.attr-type"),
    ],
)
def test_malformed_getattr_replies(make, code: str) -> None:
    session = started()
    session.request(c.FUSE_GETATTR, FuseGetattrIn())
    assert code in codes(session.receive(make(session.last_unique)))


def test_dirent_findings() -> None:
    session = started()
    session.request(c.FUSE_READDIR, FuseReadIn(size=4096))
    body = bytes(FuseDirentList(dirents=[FuseDirent(ino=1, off=1, type=4, name=b"a/b")]))
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / Raw(body[:-3])))
    assert "reply.dirent-truncated" in codes(event)
    session.request(c.FUSE_READDIR, FuseReadIn(size=4096))
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / Raw(body)))
    assert "reply.dirent-name" in codes(event)


def test_read_longer_than_asked() -> None:
    session = started()
    session.request(c.FUSE_READ, FuseReadIn(size=4))
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / Raw(b"12345")))
    assert "reply.body-size" in codes(event)


def test_write_reply_claims_more_than_sent() -> None:
    session = started()
    session.request(c.FUSE_WRITE, FuseWriteIn(size=3), Raw(b"abc"))
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / FuseWriteOut(size=4)))
    assert "reply.write-size" in codes(event)


def test_compat_entry_size_after_old_minor() -> None:
    session = started(minor=8)
    session.request(c.FUSE_LOOKUP, FuseName(name=b"a"))
    full = FuseOutHeader(unique=session.last_unique) / FuseEntryOut(attr=FuseAttr(mode=0o40755))
    assert "reply.body-size" in codes(session.receive(bytes(full)))


def test_write_request_is_cut_at_old_minor() -> None:
    session = started(minor=8)
    data = session.request(c.FUSE_WRITE, FuseWriteIn(size=3), Raw(b"abc"))
    assert len(data) == 40 + c.FUSE_COMPAT_WRITE_IN_SIZE + 3
    assert FuseInHeader(data).len == len(data)


def test_flags_not_offered() -> None:
    session = KernelSession()
    session.init(flags=c.FUSE_ASYNC_READ)
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / FuseInitOut(
        major=7, minor=45, flags=c.FUSE_ASYNC_READ | c.FUSE_POSIX_ACL, max_write=4096)))
    assert "init.flags-not-offered" in codes(event)
    assert session.negotiated is not None and session.negotiated.flags == c.FUSE_ASYNC_READ


def test_wrong_major_refuses_the_session() -> None:
    session = KernelSession()
    session.init()
    event = session.receive(bytes(FuseOutHeader(unique=session.last_unique) / FuseInitOut(major=8)))
    assert "init.major" in codes(event) and session.state == st.AWAIT_INIT


def test_notifications() -> None:
    session = started()
    good = FuseOutHeader(unique=0, error=c.FUSE_NOTIFY_INVAL_ENTRY) / FuseNotifyInvalEntryOut(
        parent=1) / FuseName(name=b"x")
    event = session.receive(bytes(good))
    assert isinstance(event, Notify) and not event.findings
    bad = FuseOutHeader(unique=0, error=c.FUSE_NOTIFY_INVAL_ENTRY) / FuseNotifyInvalEntryOut(
        parent=1, namelen=5) / FuseName(name=b"x")
    assert "notify.body-size" in codes(session.receive(bytes(bad)))
    assert "notify.unknown-code" in codes(session.receive(bytes(FuseOutHeader(unique=0, error=77))))


def test_short_message_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        started().receive(b"\x08\x00\x00\x00")
    assert caught.value.finding.code == "reply.short"


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")


def test_forget_is_not_pending() -> None:
    session = started()
    session.request(c.FUSE_FORGET, nodeid=5)
    assert not session.pending


def test_interrupt_uses_the_targets_unique_with_bit_0() -> None:
    session = started()
    session.request(c.FUSE_GETATTR, FuseGetattrIn())
    target = session.last_unique
    data = session.interrupt(target)
    assert FuseInHeader(data).unique == target | 1
    assert "reply.interrupt-body" in codes(
        session.receive(bytes(FuseOutHeader(unique=target | 1, error=-11) / Raw(b"12345678"))))


def test_interrupt_reply_with_any_errno_is_accepted() -> None:
    session = started()
    session.request(c.FUSE_GETATTR, FuseGetattrIn())
    target = session.last_unique
    session.interrupt(target)
    assert not session.receive(bytes(FuseOutHeader(unique=target | 1, error=-4))).findings


def test_security_context_extension_is_appended_when_agreed() -> None:
    session = KernelSession()
    session.init()
    session.receive(bytes(FuseOutHeader(unique=session.last_unique) / FuseInitOut(
        major=7, minor=45, flags=c.FUSE_INIT_EXT, flags2=c.FUSE_SECURITY_CTX >> 32, max_write=4096)))
    from protocol.layers import FuseMkdirIn

    data = session.request(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"d"))
    header = FuseInHeader(data)
    assert header.total_extlen == 1 and header.len == len(data) == 40 + 8 + 2 + 8


def test_kernel_offer_matches_linux_6_18() -> None:
    session = KernelSession()
    init = FuseInHeader(session.init())
    from protocol.layers import FuseInitIn

    assert init[FuseInitIn].flags == 0x73FFFFFB and init[FuseInitIn].flags2 == 0x5FD


# -- what the kernel accepts must pass; what it refuses must be a finding ------------


def out(unique: int, body: bytes = b"", error: int = 0) -> bytes:
    """A reply (or, with unique 0, a notification) whose len field is right."""
    return bytes(FuseOutHeader(unique=unique, error=error) / Raw(body))


def reply_to(session: KernelSession, opcode: int, *layers, body: bytes = b"", error: int = 0):
    session.request(opcode, *layers)
    return session.receive(out(session.last_unique, body, error))


@pytest.mark.parametrize("size", [0, 4, 12, 100])
def test_short_or_empty_fixed_replies_are_findings_not_crashes(size: int) -> None:
    event = reply_to(started(), c.FUSE_GETATTR, FuseGetattrIn(), body=b"\1" * size)
    assert "reply.body-size" in codes(event)


@pytest.mark.parametrize("size", [4, 12, 28, 40, 64])
def test_short_init_replies_are_zero_filled_as_the_kernel_does(size: int) -> None:
    session = KernelSession()
    session.init()
    body = bytes(FuseInitOut(major=7, minor=31, max_write=8192))[:size]
    event = session.receive(out(session.last_unique, body))
    assert not event.findings and session.state == st.RUNNING


def test_long_dirent_names_and_nul_bytes_are_accepted() -> None:
    entries = [FuseDirent(ino=5, off=1, type=8, name=b"n" * 2000),
               FuseDirent(ino=6, off=2, type=8, name=b"a\0b")]
    event = reply_to(started(), c.FUSE_READDIR, FuseReadIn(size=8192),
                     body=bytes(FuseDirentList(dirents=entries)))
    assert not event.findings


def test_resend_and_epoch_notifications_ignore_their_body() -> None:
    session = started()
    for code in (c.FUSE_NOTIFY_RESEND, c.FUSE_NOTIFY_INC_EPOCH):
        assert not session.receive(out(0, b"\0" * 8, code)).findings


def test_tmpfile_is_never_shrunk() -> None:
    from protocol.layers import FuseCreateIn, FuseOpenOut

    event = reply_to(started(minor=8), c.FUSE_TMPFILE, FuseCreateIn(mode=0o100600), FuseName(name=b"t"),
                     body=bytes(FuseEntryOut(nodeid=9, attr=FuseAttr(mode=0o100600))) + bytes(FuseOpenOut()))
    assert not event.findings


def test_cuse_init_needs_the_whole_struct() -> None:
    from protocol.layers import CuseInitIn, CuseInitOut

    session = KernelSession()
    session.request(c.CUSE_INIT, CuseInitIn(major=7, minor=45), nodeid=0)
    event = session.receive(out(session.last_unique, bytes(CuseInitOut())[:40]))
    assert "reply.body-size" in codes(event)
    session.request(c.CUSE_INIT, CuseInitIn(major=7, minor=45), nodeid=0)
    good = bytes(CuseInitOut(major=7, minor=45)) + b"DEVNAME=x\0"
    assert not session.receive(out(session.last_unique, good)).findings


def test_ioctl_reply_bounded_by_out_size() -> None:
    from protocol.layers import FuseIoctlIn, FuseIoctlOut

    event = reply_to(started(), c.FUSE_IOCTL, FuseIoctlIn(out_size=4),
                     body=bytes(FuseIoctlOut()) + b"12345678")
    assert "reply.ioctl-size" in codes(event)
    huge = reply_to(started(), c.FUSE_IOCTL, FuseIoctlIn(out_size=4),
                    body=bytes(FuseIoctlOut()) + b"x" * 5000)
    assert "reply.body-size" in codes(huge)  # past the kernel's page: EINVAL
    assert not reply_to(started(), c.FUSE_IOCTL, FuseIoctlIn(out_size=4),
                        body=bytes(FuseIoctlOut()) + b"1234").findings


def test_xattr_size_probe_is_exactly_getxattr_out() -> None:
    from protocol.layers import FuseGetxattrIn, FuseGetxattrOut

    short = reply_to(started(), c.FUSE_GETXATTR, FuseGetxattrIn(size=0), FuseName(name=b"user.a"),
                     body=bytes(FuseGetxattrOut())[:4])
    assert "reply.body-size" in codes(short)
    listing = reply_to(started(), c.FUSE_LISTXATTR, FuseGetxattrIn(size=64), body=b"user.a\0abc")
    assert "reply.xattr-list" in codes(listing)


def test_created_entries_need_a_fresh_nodeid_of_the_right_type() -> None:
    from protocol.layers import FuseMkdirIn

    root = reply_to(started(), c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"d"),
                    body=bytes(FuseEntryOut(nodeid=1, attr=FuseAttr(mode=0o40755))))
    assert "reply.entry-nodeid" in codes(root)
    wrong = reply_to(started(), c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"d"),
                     body=bytes(FuseEntryOut(nodeid=5, attr=FuseAttr(mode=0o100644))))
    assert "reply.entry-type" in codes(wrong)


def test_copy_reply_more_than_asked() -> None:
    from protocol.layers import FuseCopyFileRangeIn, FuseCopyFileRangeOut

    event = reply_to(started(), c.FUSE_COPY_FILE_RANGE_64, FuseCopyFileRangeIn(len=10),
                     body=bytes(FuseCopyFileRangeOut(bytes_copied=11)))
    assert "reply.copy-size" in codes(event)


def test_ioctl_retry_iovecs_are_decoded_and_counted() -> None:
    from protocol.layers import FuseIoctlIn, FuseIoctlIovec, FuseIoctlOut

    session = started()
    request = FuseIoctlIn(flags=c.FUSE_IOCTL_UNRESTRICTED, out_size=64)
    retry = FuseIoctlOut(flags=c.FUSE_IOCTL_RETRY, in_iovs=1, out_iovs=1)
    iovecs = bytes(FuseIoctlIovec(base=0x1000, len=8)) + bytes(FuseIoctlIovec(base=0x2000, len=4))
    event = reply_to(session, c.FUSE_IOCTL, request, body=bytes(retry) + iovecs)
    assert not event.findings
    assert [int(v.base) for v in event.packet.iterpayloads() if isinstance(v, FuseIoctlIovec)] == [
        0x1000, 0x2000]
    short = reply_to(session, c.FUSE_IOCTL, request, body=bytes(retry) + iovecs[:16])
    assert "reply.ioctl-retry" in codes(short)
    restricted = reply_to(session, c.FUSE_IOCTL, FuseIoctlIn(out_size=64), body=bytes(retry) + iovecs)
    assert "reply.ioctl-retry" in codes(restricted)
