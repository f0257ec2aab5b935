"""The reference server's protocol side in memory: a KernelSession talks to ReferenceServer.handle."""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
import time
from pathlib import Path

import pytest

from protocol import constants as c
from protocol.events import Reply
from protocol.layers import (
    FuseCreateIn,
    FuseDirentplusList,
    FuseFileLock,
    FuseGetattrIn,
    FuseLkIn,
    FuseName,
    FuseOpenIn,
    FuseReadIn,
    FuseStatxIn,
)
from protocol.session import KernelSession
from targets.mounts import mount_spec, open_mount_target
from targets.reference.__main__ import seed
from targets.reference.fs import Filesystem
from targets.reference.server import Options, ReferenceServer
from targets.skip import require


class Pair:
    """A kernel session and the server, exchanging bytes in memory."""

    def __init__(self, **options: object) -> None:
        self.relaxed = bool(options.pop("relaxed", False))
        fs = Filesystem()
        seed(fs)
        self.server = ReferenceServer(fs, Options(**options))  # type: ignore[arg-type]
        self.kernel = KernelSession()
        self.lock = threading.Lock()
        assert self.call(self.kernel.init()).ok

    def call(self, data: bytes) -> Reply:
        answer = self.server.handle(data)
        assert answer is not None
        with self.lock:
            reply = self.kernel.receive(answer)
        assert isinstance(reply, Reply)
        assert self.relaxed or not reply.findings, reply.findings
        return reply

    def send(self, opcode: int, *layers: object, **kw: object) -> bytes:
        with self.lock:
            return self.kernel.request(opcode, *layers, **kw)  # type: ignore[arg-type]


def _open_file(pair: Pair, name: bytes) -> tuple[int, int]:
    """Create ``name`` in the root: (nodeid, fh)."""
    reply = pair.call(pair.send(c.FUSE_CREATE, FuseCreateIn(flags=os.O_RDWR, mode=stat.S_IFREG | 0o644),
                                FuseName(name=name)))
    return int(reply.body.nodeid), int(reply.body.payload.fh)  # type: ignore[union-attr]


def _lk(fh: int, owner: int, kind: int, pid: int) -> FuseLkIn:
    return FuseLkIn(fh=fh, owner=owner, lk=FuseFileLock(start=0, end=9, type=kind, pid=pid))


def test_readdirplus_gives_each_name_its_entry() -> None:
    pair = Pair()
    fh = int(pair.call(pair.send(c.FUSE_OPENDIR, FuseOpenIn())).body.fh)  # type: ignore[union-attr]
    reply = pair.call(pair.send(c.FUSE_READDIRPLUS, FuseReadIn(fh=fh, size=4096)))
    records = {bytes(r.dirent.getfieldval("name")): r for r in reply.packet[FuseDirentplusList].dirents}
    assert set(records) == {b".", b"..", b"hello.txt", b"dir", b"link"}
    assert records[b"."].entry_out.nodeid == 0  # no lookup reference for the dots
    for name in (b"hello.txt", b"dir", b"link"):
        entry = records[name].entry_out
        assert entry.nodeid == records[name].dirent.ino and entry.attr.ino == entry.nodeid
        looked = pair.call(pair.send(c.FUSE_LOOKUP, FuseName(name=name)))
        assert looked.body.nodeid == entry.nodeid  # type: ignore[union-attr]
    assert records[b"hello.txt"].entry_out.attr.size == len(b"hello, fusecheck\n")


def test_readdirplus_counts_a_reference_per_record() -> None:
    """A record's nodeid is a lookup: after FORGET of one, the name's inode is still known
    from the other reference only (the model frees inodes at zero)."""
    pair = Pair()
    nodeid, fh = _open_file(pair, b"f")
    pair.call(pair.send(c.FUSE_RELEASE, FuseReadIn(fh=fh)))
    dirfh = int(pair.call(pair.send(c.FUSE_OPENDIR, FuseOpenIn())).body.fh)  # type: ignore[union-attr]
    pair.call(pair.send(c.FUSE_READDIRPLUS, FuseReadIn(fh=dirfh, size=4096)))
    assert isinstance(pair.server.fs, Filesystem)
    assert pair.server.fs.inodes[nodeid].nlookup == 2  # CREATE and the READDIRPLUS record


def test_statx_answers_the_basic_stats() -> None:
    pair = Pair()
    nodeid = int(pair.call(pair.send(c.FUSE_LOOKUP, FuseName(name=b"hello.txt"))).body.nodeid)  # type: ignore[union-attr]
    statx = pair.call(pair.send(c.FUSE_STATX, FuseStatxIn(sx_mask=0xFFF), nodeid=nodeid)).body
    assert statx is not None
    attr = pair.call(pair.send(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)).body.attr  # type: ignore[union-attr]
    assert statx.stat.mask & 0x7FF == 0x7FF and not statx.stat.mask & 0x800  # no btime
    assert (statx.stat.size, statx.stat.mode, statx.stat.ino) == (attr.size, attr.mode, attr.ino)
    assert (statx.stat.mtime.tv_sec, statx.stat.mtime.tv_nsec) == (attr.mtime, attr.mtimensec)


def _background(pair: Pair, data: bytes) -> queue.Queue[bytes | None]:
    answers: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=lambda: answers.put(pair.server.handle(data)), daemon=True).start()
    return answers


def test_setlkw_waits_for_the_unlock() -> None:
    pair = Pair()
    _nodeid, fh = _open_file(pair, b"f")
    assert pair.call(pair.send(c.FUSE_SETLK, _lk(fh, 1, 1, 100))).ok  # F_WRLCK by owner 1
    busy = pair.call(pair.send(c.FUSE_SETLK, _lk(fh, 2, 1, 200)))
    assert busy.error == -errno.EAGAIN
    answers = _background(pair, pair.send(c.FUSE_SETLKW, _lk(fh, 2, 1, 200)))
    with pytest.raises(queue.Empty):
        answers.get(timeout=0.3)  # waits while owner 1 holds it
    assert pair.call(pair.send(c.FUSE_SETLK, _lk(fh, 1, 2, 100))).ok  # F_UNLCK
    answer = answers.get(timeout=5)
    assert answer is not None
    with pair.lock:
        assert pair.kernel.receive(answer).error == 0  # type: ignore[union-attr]


def test_interrupt_ends_a_waiting_setlkw_with_eintr() -> None:
    pair = Pair()
    _nodeid, fh = _open_file(pair, b"f")
    assert pair.call(pair.send(c.FUSE_SETLK, _lk(fh, 1, 1, 100))).ok
    data = pair.send(c.FUSE_SETLKW, _lk(fh, 2, 1, 200))
    unique = pair.kernel.last_unique
    pair.server.pending.add(unique)  # as serve() does when it reads the request
    answers = _background(pair, data)
    with pytest.raises(queue.Empty):
        answers.get(timeout=0.3)
    with pair.lock:
        interrupt = pair.kernel.interrupt(unique)
    assert pair.server.handle(interrupt) is None  # no answer to the INTERRUPT itself
    answer = answers.get(timeout=5)
    assert answer is not None
    with pair.lock:
        assert pair.kernel.receive(answer).error == -errno.EINTR  # type: ignore[union-attr]
    assert not pair.server.interrupted and not pair.server.pending


def test_interrupt_of_an_answered_request_is_ignored() -> None:
    pair = Pair()
    pair.call(pair.send(c.FUSE_GETATTR, FuseGetattrIn()))
    unique = pair.kernel.last_unique
    with pair.lock:
        interrupt = pair.kernel.interrupt(unique)
    assert pair.server.handle(interrupt) is None
    assert not pair.server.interrupted


def test_audit_judges_every_reply(tmp_path: Path) -> None:
    """``ref:audit=FILE``: the server checks its replies as the kernel would; a correct one
    writes nothing, a mutant that sends error replies with a body is caught."""
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    for path, mutant in ((clean, None), (broken, "error-with-body")):
        pair = Pair(audit=str(path), mutant=mutant, relaxed=mutant is not None)
        fh = int(pair.call(pair.send(c.FUSE_OPENDIR, FuseOpenIn())).body.fh)  # type: ignore[union-attr]
        pair.call(pair.send(c.FUSE_READDIRPLUS, FuseReadIn(fh=fh, size=4096)))
        pair.call(pair.send(c.FUSE_LOOKUP, FuseName(name=b"absent")))
    assert not clean.exists()
    assert "reply.body-after-error" in broken.read_text()


def _used_inodes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def _settles(path: Path, want: int, seconds: float = 10.0) -> int:
    """The used-inode count once it reaches ``want`` (FORGETs come asynchronously), or the last seen."""
    deadline = time.monotonic() + seconds
    while (used := _used_inodes(path)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return used


def test_mounted_server_frees_inodes_after_forget() -> None:
    """Through the real kernel: an unlinked inode lives while it is open, and goes once the kernel
    has FORGOTten it and the last handle is released (statfs counts the model's live inodes);
    inodes that keep a name survive the kernel dropping its caches."""
    require(os.geteuid() == 0 and os.access("/dev/fuse", os.R_OK | os.W_OK), "needs root and /dev/fuse")
    target = open_mount_target(mount_spec("ref"))
    with target:
        root = target.path
        base = _used_inodes(root)
        for i in range(50):
            (root / f"f{i}").write_bytes(b"x" * 100)
        assert _used_inodes(root) == base + 50
        held = os.open(root / "f0", os.O_RDONLY)
        try:
            for i in range(50):
                os.unlink(root / f"f{i}")
            assert _settles(root, base + 1) == base + 1  # only the open one is left
            assert os.read(held, 10) == b"x" * 10
        finally:
            os.close(held)
        assert _settles(root, base) == base
        kept = root / "kept"
        kept.write_bytes(b"still here")
        Path("/proc/sys/vm/drop_caches").write_text("2\n")  # the kernel forgets what it cached
        assert _settles(root, base + 1, 1.0) == base + 1
        assert kept.read_bytes() == b"still here"
