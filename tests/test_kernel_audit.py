"""protocol.kernel_audit on synthetic streams: the kernel's requests built by a KernelSession, the
server's replies by a DaemonSession, both fed to the audit in order. Each bad stream gives its
finding; clean ones give none."""

from __future__ import annotations

import errno
import stat

import pytest
from scapy.packet import Packet

from protocol import constants as c
from protocol.events import Request
from protocol.kernel_audit import KernelAudit
from protocol.layers.header import FuseInHeader
from protocol.layers.structs import (
    FuseAttr,
    FuseAttrOut,
    FuseBatchForgetIn,
    FuseEntryOut,
    FuseForgetIn,
    FuseForgetOne,
    FuseGetattrIn,
    FuseInterruptIn,
    FuseLinkIn,
    FuseOpenIn,
    FuseOpenOut,
    FuseReadIn,
    FuseReleaseIn,
    FuseRenameIn,
)
from protocol.layers.variable import FuseDirent, FuseDirentplus, FuseDirentplusList, FuseName
from protocol.server import DaemonSession
from protocol.session import KernelSession

WANT = c.FUSE_DO_READDIRPLUS | c.FUSE_POSIX_LOCKS | c.FUSE_MAX_PAGES | c.FUSE_INIT_EXT


class Stream:
    """The kernel, a server and the audit: every message goes to the audit as it is made."""

    def __init__(self, want: int = WANT, max_pages: int = 32) -> None:
        self.kernel = KernelSession()
        self.server = DaemonSession(want=want, max_pages=max_pages)
        self.audit = KernelAudit()
        self.answer(self.send(self.kernel.init()), init=True)

    def send(self, data: bytes) -> Request:
        self.audit.request(data)
        return self.server.receive(data)

    def request(self, opcode: int, *layers: Packet, nodeid: int = c.FUSE_ROOT_ID) -> Request:
        return self.send(self.kernel.request(opcode, *layers, nodeid=nodeid))

    def answer(self, request: Request, *layers: Packet, init: bool = False, error: int = 0) -> bytes:
        if init:
            data = self.server.accept_init(request)
        elif error:
            data = self.server.error(request, error)
        else:
            data = self.server.reply(request, *layers)
        self.kernel.receive(data)
        self.audit.reply(data)
        return data

    def lookup(self, name: bytes, nodeid: int, parent: int = c.FUSE_ROOT_ID) -> Request:
        request = self.request(c.FUSE_LOOKUP, FuseName(name=name), nodeid=parent)
        self.answer(request, entry(nodeid))
        return request

    def forget(self, nodeid: int, nlookup: int = 1) -> None:
        self.request(c.FUSE_FORGET, FuseForgetIn(nlookup=nlookup), nodeid=nodeid)

    def unlink(self, name: bytes, parent: int = c.FUSE_ROOT_ID) -> None:
        self.answer(self.request(c.FUSE_UNLINK, FuseName(name=name), nodeid=parent))

    def codes(self) -> list[str]:
        return [f.code for f in self.audit.findings]


def entry(nodeid: int, mode: int = stat.S_IFREG | 0o644) -> FuseEntryOut:
    return FuseEntryOut(nodeid=nodeid, attr=FuseAttr(ino=nodeid, mode=mode, nlink=1))


def attr_out(nodeid: int) -> FuseAttrOut:
    return FuseAttrOut(attr=FuseAttr(ino=nodeid, mode=stat.S_IFREG | 0o644, nlink=1))


def test_a_clean_stream_has_no_findings() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.lookup(b"a", 5)  # looked up twice: two lookups to forget
    s.answer(s.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=5), attr_out(5))
    opened = s.request(c.FUSE_OPEN, FuseOpenIn(), nodeid=5)
    s.answer(opened, FuseOpenOut(fh=7))
    s.answer(s.request(c.FUSE_READ, FuseReadIn(fh=7, size=4096), nodeid=5))
    s.unlink(b"a")
    assert s.audit.dropped() == {}  # still open
    s.answer(s.request(c.FUSE_RELEASE, FuseReleaseIn(fh=7), nodeid=5))
    assert s.audit.dropped() == {5: 2}
    s.forget(5, 2)
    assert s.audit.balance() == []
    assert s.codes() == [], s.audit.findings
    assert s.audit.outstanding() == {}


def test_a_reused_unique_is_found() -> None:
    s = Stream()
    first = s.request(c.FUSE_GETATTR, FuseGetattrIn())  # not answered yet
    again = bytes(FuseInHeader(opcode=c.FUSE_GETATTR, unique=first.unique, nodeid=1) / FuseGetattrIn())
    s.audit.request(again)
    assert "request.unique-reused" in s.codes()


def test_a_unique_may_come_back_once_answered() -> None:
    s = Stream()
    first = s.request(c.FUSE_GETATTR, FuseGetattrIn())
    s.answer(first, attr_out(1))
    s.audit.request(bytes(FuseInHeader(opcode=c.FUSE_GETATTR, unique=first.unique, nodeid=1)
                          / FuseGetattrIn()))
    assert s.codes() == []


def test_forget_of_an_unknown_nodeid_is_found() -> None:
    s = Stream()
    s.forget(42)
    assert s.codes() == ["forget.unknown-nodeid"]


def test_forget_of_more_than_was_given_is_found() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.forget(5, 2)
    assert s.codes() == ["forget.exceeds-lookups"]


def test_forget_with_nlookup_zero_is_found() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.forget(5, 0)
    assert s.codes() == ["forget.zero"]


def test_batch_forget_is_counted_entry_by_entry() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.lookup(b"b", 6)
    s.request(c.FUSE_BATCH_FORGET, FuseBatchForgetIn(count=3), FuseForgetOne(nodeid=5, nlookup=1),
              FuseForgetOne(nodeid=6, nlookup=1), FuseForgetOne(nodeid=6, nlookup=1), nodeid=0)
    assert s.codes() == ["forget.unknown-nodeid"]  # the third: 6 was already forgotten
    assert s.audit.outstanding() == {}


def test_batch_forget_count_must_match_its_body() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.request(c.FUSE_BATCH_FORGET, FuseBatchForgetIn(count=2), FuseForgetOne(nodeid=5, nlookup=1),
              nodeid=0)
    assert s.codes() == ["request.batch-count"]


def test_a_request_after_destroy_is_found() -> None:
    s = Stream()
    s.answer(s.request(c.FUSE_DESTROY, nodeid=0))
    s.request(c.FUSE_GETATTR, FuseGetattrIn())
    assert s.codes() == ["request.after-destroy"]


def test_unbalanced_lookups_are_found() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.lookup(b"a", 5)
    s.unlink(b"a")
    s.forget(5, 1)  # one of two
    assert [f.code for f in s.audit.balance()] == ["forget.unbalanced"]
    assert "1 lookup(s) were never forgotten" in s.audit.findings[-1].message


def test_a_nodeid_with_a_name_left_is_not_due() -> None:
    """Hard links: a name the kernel knows keeps the inode (and its lookups) alive."""
    s = Stream()
    s.lookup(b"a", 5)
    s.answer(s.request(c.FUSE_LINK, FuseLinkIn(oldnodeid=5), FuseName(name=b"b")), entry(5))
    s.unlink(b"a")
    assert s.audit.dropped() == {} and s.audit.balance() == []
    s.unlink(b"b")
    assert s.audit.dropped() == {5: 2}


def test_rename_over_a_name_drops_the_old_inode() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.lookup(b"b", 6)
    s.answer(s.request(c.FUSE_RENAME, FuseRenameIn(newdir=1), FuseName(name=b"a"), FuseName(name=b"b")))
    assert s.audit.dropped() == {6: 1}
    assert s.audit.resolve("b") == 5 and s.audit.resolve("a") is None


def test_a_negative_lookup_ends_the_name() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.answer(s.request(c.FUSE_LOOKUP, FuseName(name=b"a")), error=errno.ENOENT)
    assert s.audit.dropped() == {5: 1}


def test_readdirplus_entries_count_but_dots_do_not() -> None:
    s = Stream()
    opened = s.request(c.FUSE_OPENDIR, FuseOpenIn())
    s.answer(opened, FuseOpenOut(fh=3))
    listing = FuseDirentplusList(dirents=[
        FuseDirentplus(entry_out=entry(1, stat.S_IFDIR | 0o755), dirent=FuseDirent(ino=1, name=b".")),
        FuseDirentplus(entry_out=entry(1, stat.S_IFDIR | 0o755), dirent=FuseDirent(ino=1, name=b"..")),
        FuseDirentplus(entry_out=entry(5), dirent=FuseDirent(ino=5, name=b"a")),
        FuseDirentplus(entry_out=FuseEntryOut(), dirent=FuseDirent(ino=6, name=b"b")),  # no entry
    ])
    s.answer(s.request(c.FUSE_READDIRPLUS, FuseReadIn(fh=3, size=4096)), listing)
    assert s.audit.outstanding() == {5: 1}
    s.forget(5)
    s.forget(1)  # the dots gave the root no lookup
    assert s.codes() == ["forget.unknown-nodeid"]


def test_a_refused_reply_gives_nothing() -> None:
    s = Stream()
    request = s.lookup(b"a", 5)
    s.audit.refused(request.unique)
    assert s.audit.outstanding() == {}


def test_a_request_for_a_forgotten_nodeid_is_found() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.forget(5)
    s.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=5)
    s.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=99)
    assert s.codes() == ["request.nodeid-unknown", "request.nodeid-unknown"]


def test_release_may_follow_forget() -> None:
    s = Stream()
    s.lookup(b"a", 5)
    s.answer(s.request(c.FUSE_OPEN, FuseOpenIn(), nodeid=5), FuseOpenOut(fh=1))
    s.forget(5)
    s.request(c.FUSE_RELEASE, FuseReleaseIn(fh=1), nodeid=5)
    assert s.codes() == []


def test_readdirplus_without_the_flag_is_found() -> None:
    s = Stream(want=c.FUSE_POSIX_LOCKS)
    s.request(c.FUSE_READDIRPLUS, FuseReadIn(fh=3, size=4096))
    assert s.codes() == ["request.not-negotiated"]


@pytest.mark.parametrize(("want", "limit"), [(WANT, 64 * 4096), (WANT & ~c.FUSE_MAX_PAGES, 32 * 4096)])
def test_a_read_beyond_max_pages_is_found(want: int, limit: int) -> None:
    """max_pages from INIT with FUSE_MAX_PAGES; the kernel's default of 32 pages without."""
    s = Stream(want=want, max_pages=64)
    s.request(c.FUSE_READ, FuseReadIn(fh=1, size=limit), nodeid=1)
    assert s.codes() == []
    s.request(c.FUSE_READ, FuseReadIn(fh=1, size=limit + 1), nodeid=1)
    assert s.codes() == ["request.size-limit"]


def test_a_malformed_request_is_found() -> None:
    s = Stream()
    s.audit.request(bytes(FuseInHeader(opcode=c.FUSE_GETATTR, unique=1000, nodeid=1)))  # no body
    assert "request.body-size" in s.codes()


def test_an_interrupt_names_a_request_that_was_read() -> None:
    s = Stream()
    waiting = s.request(c.FUSE_GETATTR, FuseGetattrIn())
    s.send(s.kernel.interrupt(waiting.unique))
    assert s.codes() == []
    s.audit.request(bytes(FuseInHeader(opcode=c.FUSE_INTERRUPT, unique=777, nodeid=0)
                          / FuseInterruptIn(unique=776)))
    assert s.codes() == ["request.interrupt-unique"]
