"""FUSE-MACHINE-001's state machine: random request sequences in the kernel's role.

Rules draw paths from a small set under the example's own directory and send what the
kernel sends for them: it resolves a path to nodeids (looking a name up again once it
forgot it), forgets an inode once nothing holds it, and answers by itself what the VFS
refuses before asking the server (unlink of a directory, a rename into itself): such
draws send nothing. Every reply is judged by the model (``model``); with a backing
directory the host tree is compared after each change (``backing``). After every step,
each nodeid the kernel holds must answer GETATTR and each changed directory must list
what the model has.

A failure prints the example's requests and replies, saves them as a pcap and says how
to replay it. The recording holds every step's requests and the failing check's; checks
that passed are left out (they only read).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from scapy.packet import Packet, Raw

from conformance.protocol.backing import Hidden, host_problems
from conformance.protocol.model import (
    MUTATING,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    XATTR_CREATE,
    XATTR_REPLACE,
    Inode,
    Model,
    Problems,
    parse_request,
)
from conformance.walk import O_DIRECTORY
from fuzz.reproducer import Exchange, describe, save
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import (
    FuseCreateIn,
    FuseForgetIn,
    FuseGetattrIn,
    FuseGetxattrIn,
    FuseLinkIn,
    FuseMkdirIn,
    FuseMknodIn,
    FuseOpenIn,
    FuseReadIn,
    FuseReleaseIn,
    FuseRename2In,
    FuseRenameIn,
    FuseSetattrIn,
    FuseSetxattrIn,
    FuseWriteIn,
)
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection
from targets.errors import TargetError

RULE_ID = "FUSE-MACHINE-001"
PATHS = st.sampled_from(["a", "b", "d", "d/a", "d/b"])
FILE_MODES = st.sampled_from([0o644, 0o600, 0o755, 0o400])
DIR_MODES = st.sampled_from([0o755, 0o700])
CHMOD_MODES = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o000, 0o777])
ACCESS = st.sampled_from([os.O_RDONLY, os.O_WRONLY, os.O_RDWR])
DATA = st.binary(min_size=1, max_size=200)
OFFSETS = st.integers(0, 600)
SIZES = st.integers(0, 700)
READ_SIZES = st.integers(1, 1024)
TIMES = st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 999_999_999))
XNAMES = st.sampled_from([b"user.fc.a", b"user.fc.b"])
NAMED = st.integers(0, 15)  # which of the names that exist (see ProtocolMachine.named)
XFLAGS = st.sampled_from([0, XATTR_CREATE, XATTR_REPLACE])
LISTING_SIZE = 4096  # the kernel reads directories a page at a time
MAX_READDIRS = 64


class MachineFailure(AssertionError):
    """The server disagreed with the model; the message holds the sequence and the replay."""


@dataclass
class Bench:
    """What one example works with: the connection, INIT as it went, where to record."""

    conn: KernelConnection
    init: Exchange
    workdir: bytes  # this example's directory, made in the root
    backing: Path | None  # the host directory the server serves, if known
    hidden: Hidden | None  # which entries of it are the daemon's own metadata
    save_to: Path  # where a failing sequence is saved
    replay: str  # the command that replays it, with {file}
    failures: list[str] = field(default_factory=list)  # what failed, example after example


def _path(text: str) -> tuple[bytes, ...]:
    return tuple(part.encode() for part in text.split("/"))


class ProtocolMachine(RuleBasedStateMachine):
    handles = Bundle("handles")

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.conn = bench.conn
        negotiated = self.conn.session.negotiated
        assert negotiated is not None, "the machine runs after INIT"
        self.flags = negotiated.flags
        self.model = Model(flags=self.flags)
        self.steps: list[Exchange] = []
        self.checking: list[Exchange] | None = None
        self.failed = False

    # -- the wire -------------------------------------------------------------
    def ask(self, opcode: int, *layers: Packet, nodeid: int) -> Reply:
        """Send one request, wait for its reply, judge it (and the backing dir after a change)."""
        session = self.conn.session
        data = session.request(opcode, *layers, nodeid=nodeid)
        try:
            reply = self.conn.wait(session.last_unique, data)
        except (AssertionError, TargetError) as exc:  # no reply, a dead daemon, a stray reply
            self._record(Exchange(data))
            self.fail([f"{c.OPCODE_NAMES.get(opcode, opcode)}: {exc}"])
        self._record(Exchange(data, reply.raw))
        call = parse_request(data, session.proto_minor, session.proto_flags)
        problems = self.model.judge(call, reply)
        if not problems and opcode in MUTATING and self.bench.backing is not None:
            problems = host_problems(self.model, self.bench.backing / self.bench.workdir.decode(),
                                     self.bench.hidden)
        if problems:
            self.fail(problems)
        return reply

    def tell(self, opcode: int, *layers: Packet, nodeid: int) -> None:
        """Send a request that gets no reply (FORGET)."""
        session = self.conn.session
        data = session.request(opcode, *layers, nodeid=nodeid)
        try:
            self.conn.send_raw(data)
        except (AssertionError, TargetError) as exc:
            self._record(Exchange(data))
            self.fail([f"{c.OPCODE_NAMES.get(opcode, opcode)}: {exc}"])
        self._record(Exchange(data))
        problems = self.model.judge(parse_request(data, session.proto_minor, session.proto_flags), None)
        if problems:
            self.fail(problems)

    def _record(self, exchange: Exchange) -> None:
        (self.steps if self.checking is None else self.checking).append(exchange)

    def fail(self, problems: Problems) -> Any:
        """Raise the failure: what is wrong, the sequence, the pcap saved, the replay command."""
        if self.failed:  # teardown after a failure: the first one is what counts
            raise MachineFailure("; ".join(problems))
        self.failed = True
        self.bench.failures.append("\n".join(problems))
        sequence = [self.bench.init, *self.steps, *(self.checking or [])]
        what = "\n".join(f"- {p}" for p in problems)
        command = self.bench.replay.format(file=self.bench.save_to)
        path = save(self.bench.save_to, sequence, [f"{RULE_ID}: {what}", f"replay: {command}"])
        raise MachineFailure(
            f"{RULE_ID}: the server disagrees with what it said before:\n{what}\n\n"
            f"the example's {len(sequence)} requests and their replies:\n{describe(sequence)}\n\n"
            f"saved as {path}\nreplay: {command}")

    # -- what the kernel would do to reach a path -----------------------------
    def nodeid(self, inode: Inode) -> int:
        """A nodeid the kernel holds for ``inode``: LOOKUP (as a step) when it has none."""
        known = self.model.nodeid_of(inode)
        if known is not None:
            return known
        parent_key, name = inode.links[0]
        parent = self.nodeid(self.model.inodes[parent_key])
        saved, self.checking = self.checking, None
        try:
            self.ask(c.FUSE_LOOKUP, FuseName(name=name), nodeid=parent)
        finally:
            self.checking = saved
        found = self.model.nodeid_of(inode)
        assert found is not None, f"LOOKUP of {self.model.path(inode)!r} gave the kernel no nodeid"
        return found

    def held(self, *inodes: Inode | None) -> None:
        """The VFS looks a name up before it unlinks, removes or renames it (or over it): the
        kernel holds each existing inode then, however long ago it was FORGOTTEN (linux
        fs/namei.c do_unlinkat, do_rmdir, do_renameat2 via lookup_one_qstr_excl)."""
        for inode in inodes:
            if inode is not None:
                self.nodeid(inode)

    def where(self, text: str) -> tuple[int, bytes] | None:
        """The parent directory's nodeid and the last name of ``text``, if the parent exists."""
        path = _path(text)
        parent = self.model.resolve(path[:-1])
        if parent is None or not parent.is_dir:
            return None
        return self.nodeid(parent), path[-1]

    def existing(self, text: str | None) -> Inode | None:
        return None if text is None else self.model.resolve(_path(text))

    def named(self, which: int, kind: Callable[[Inode], bool]) -> str | None:
        """The path of existing name number ``which`` (modulo their count) among those of
        ``kind``: the draw is the same whatever exists, and it always names something."""
        found: list[str] = []

        def visit(directory: Inode, prefix: str) -> None:
            for name, key in sorted(directory.entries.items()):
                child, path = self.model.inodes[key], prefix + name.decode(errors="replace")
                if kind(child):
                    found.append(path)
                if child.is_dir:
                    visit(child, path + "/")

        if self.model.top is not None:
            visit(self.model.top, "")
        return found[which % len(found)] if found else None

    def new_handles(self, before: set[int]) -> Any:
        return multiple(*[token for token in self.model.handles if token not in before])

    # -- steps ----------------------------------------------------------------
    @initialize(target=handles, data=DATA)
    def start(self, data: bytes) -> Any:
        """The example's directory and in it file "a" holding ``data``, open read-write (a program
        that made a file and wrote it): each example has contents to read and a name to use."""
        self.ask(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755, umask=0), FuseName(name=self.bench.workdir),
                 nodeid=c.FUSE_ROOT_ID)
        assert self.model.top is not None
        top, name, before = self.nodeid(self.model.top), FuseName(name=b"a"), set(self.model.handles)
        made = self.ask(c.FUSE_CREATE, FuseCreateIn(flags=os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                                    mode=stat.S_IFREG | 0o644, umask=0), name, nodeid=top)
        if made.error == -errno.ENOSYS:  # the kernel falls back to MKNOD and OPEN
            self.ask(c.FUSE_MKNOD, FuseMknodIn(mode=stat.S_IFREG | 0o644, rdev=0, umask=0), name, nodeid=top)
            made_file = self.existing("a")
            if made_file is not None:
                self.ask(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDWR), nodeid=self.nodeid(made_file))
        opened = [token for token in self.model.handles if token not in before]
        if opened:
            self.write(opened[0], 0, data)
        return multiple(*opened)

    @precondition(lambda self: self.model.offers(c.FUSE_CREATE))
    @rule(target=handles, path=PATHS, mode=FILE_MODES, access=ACCESS)
    def create(self, path: str, mode: int, access: int) -> Any:
        at = self.where(path)
        if at is None:
            return multiple()
        before = set(self.model.handles)
        self.ask(c.FUSE_CREATE, FuseCreateIn(flags=access | os.O_CREAT | os.O_EXCL, mode=stat.S_IFREG | mode,
                                             umask=0), FuseName(name=at[1]), nodeid=at[0])
        return self.new_handles(before)

    @precondition(lambda self: self.model.offers(c.FUSE_MKNOD))
    @rule(path=PATHS, fifo=st.booleans(), mode=FILE_MODES)
    def mknod(self, path: str, fifo: bool, mode: int) -> None:
        at = self.where(path)
        if at is None or (fifo and "fifo" in self.model.refused):
            return
        kind = stat.S_IFIFO if fifo else stat.S_IFREG
        self.ask(c.FUSE_MKNOD, FuseMknodIn(mode=kind | mode, rdev=0, umask=0), FuseName(name=at[1]),
                 nodeid=at[0])

    @rule(path=PATHS, mode=DIR_MODES)
    def mkdir(self, path: str, mode: int) -> None:
        at = self.where(path)
        if at is not None:
            self.ask(c.FUSE_MKDIR, FuseMkdirIn(mode=mode, umask=0), FuseName(name=at[1]), nodeid=at[0])

    @rule(path=PATHS)
    def lookup(self, path: str) -> None:
        at = self.where(path)
        if at is not None:
            self.ask(c.FUSE_LOOKUP, FuseName(name=at[1]), nodeid=at[0])

    @rule(target=handles, which=NAMED, access=ACCESS, append=st.booleans(), truncate=st.booleans())
    def open(self, which: int, access: int, append: bool, truncate: bool) -> Any:
        node = self.existing(self.named(which, lambda node: node.is_reg))
        if node is None:
            return multiple()
        flags = access | (os.O_APPEND if append else 0)
        if truncate and access != os.O_RDONLY and self.flags & c.FUSE_ATOMIC_O_TRUNC:
            flags |= os.O_TRUNC  # without ATOMIC_O_TRUNC the kernel truncates with SETATTR first
        before = set(self.model.handles)
        self.ask(c.FUSE_OPEN, FuseOpenIn(flags=flags), nodeid=self.nodeid(node))
        return self.new_handles(before)

    @rule(handle=handles, offset=OFFSETS, data=DATA)
    def write(self, handle: int, offset: int, data: bytes) -> None:
        opened = self.model.handles[handle]
        if not opened.writable:
            return  # EBADF from the kernel
        if opened.flags & os.O_APPEND:
            offset = len(self.model.inodes[opened.key].data)  # the kernel writes at its i_size
        self.ask(c.FUSE_WRITE, FuseWriteIn(fh=opened.fh, offset=offset, size=len(data), flags=opened.flags),
                 Raw(data), nodeid=opened.nodeid)

    @rule(handle=handles, offset=OFFSETS, size=READ_SIZES)
    def read(self, handle: int, offset: int, size: int) -> None:
        opened = self.model.handles[handle]
        if opened.readable:
            self.ask(c.FUSE_READ, FuseReadIn(fh=opened.fh, offset=offset, size=size, flags=opened.flags),
                     nodeid=opened.nodeid)

    @rule(handle=handles, size=SIZES)
    def ftruncate(self, handle: int, size: int) -> None:
        opened = self.model.handles[handle]
        if opened.writable:
            self.ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_SIZE | c.FATTR_FH, fh=opened.fh, size=size),
                     nodeid=opened.nodeid)

    @rule(path=PATHS, size=SIZES)
    def truncate(self, path: str, size: int) -> None:
        node = self.existing(path)
        if node is not None and node.is_reg:
            self.ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_SIZE, size=size), nodeid=self.nodeid(node))

    @rule(path=PATHS, mode=CHMOD_MODES)
    def chmod(self, path: str, mode: int) -> None:
        node = self.existing(path)
        if node is not None:
            self.ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=mode), nodeid=self.nodeid(node))

    @rule(path=PATHS, atime=TIMES, mtime=TIMES)
    def utimens(self, path: str, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
        node = self.existing(path)
        if node is not None:
            self.ask(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_ATIME | c.FATTR_MTIME, atime=atime[0],
                                                   atimensec=atime[1], mtime=mtime[0], mtimensec=mtime[1]),
                     nodeid=self.nodeid(node))

    @rule(which=NAMED, new=PATHS)
    def rename(self, which: int, new: str) -> None:
        """rename(2): FUSE_RENAME."""
        self.rename2(which, new, 0)

    @rule(which=NAMED, new=PATHS, flags=st.sampled_from([RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename2(self, which: int, new: str, flags: int) -> None:
        """renameat2(2) with flags: FUSE_RENAME2 (the kernel sends RENAME for flags 0)."""
        old = self.named(which, lambda node: True)
        moved, victim = self.existing(old), self.existing(new)
        if old is None:
            return
        if moved is None or new.startswith(old + "/") or old.startswith(new + "/"):
            return  # ENOENT from the lookup; EINVAL / ENOTEMPTY from the VFS
        if victim is moved or (flags and f"rename flags {flags}" in self.model.refused):
            return  # two names of one file: rename does nothing; the kernel remembers EINVAL
        if flags and not self.model.offers(c.FUSE_RENAME2):
            return
        if flags == RENAME_NOREPLACE and victim is not None:
            return  # EEXIST from the VFS
        if flags == RENAME_EXCHANGE and victim is None:
            return  # ENOENT from the VFS
        if not flags and victim is not None and moved.is_dir != victim.is_dir:
            return  # ENOTDIR / EISDIR from the VFS
        source, target = self.where(old), self.where(new)
        if source is None or target is None:
            return
        self.held(moved, victim)
        names = FuseName(name=source[1]), FuseName(name=target[1])
        if flags:
            self.ask(c.FUSE_RENAME2, FuseRename2In(newdir=target[0], flags=flags), *names, nodeid=source[0])
        else:
            self.ask(c.FUSE_RENAME, FuseRenameIn(newdir=target[0]), *names, nodeid=source[0])

    @precondition(lambda self: self.model.offers(c.FUSE_LINK) and "link" not in self.model.refused)
    @rule(which=NAMED, new=PATHS)
    def link(self, which: int, new: str) -> None:
        node = self.existing(self.named(which, lambda node: not node.is_dir))  # directories: EPERM
        if node is None:
            return
        target = self.where(new)
        if target is not None:
            self.ask(c.FUSE_LINK, FuseLinkIn(oldnodeid=self.nodeid(node)), FuseName(name=target[1]),
                     nodeid=target[0])

    @rule(which=NAMED)
    def unlink(self, which: int) -> None:
        path = self.named(which, lambda node: not node.is_dir)
        node = self.existing(path)
        at = self.where(path) if path is not None else None
        if at is not None:
            self.held(node)
            self.ask(c.FUSE_UNLINK, FuseName(name=at[1]), nodeid=at[0])

    @rule(which=NAMED)
    def rmdir(self, which: int) -> None:
        path = self.named(which, lambda node: node.is_dir)
        node = self.existing(path)
        at = self.where(path) if path is not None else None
        if at is not None:
            self.held(node)
            self.ask(c.FUSE_RMDIR, FuseName(name=at[1]), nodeid=at[0])

    @rule(path=st.sampled_from([".", "d"]), plus=st.booleans())
    def readdir(self, path: str, plus: bool) -> None:
        node = self.model.top if path == "." else self.existing(path)
        if node is not None and node.is_dir:
            self.listing(node, plus=plus and self.readdirplus())

    def readdirplus(self) -> bool:
        return bool(self.flags & c.FUSE_DO_READDIRPLUS) and self.model.offers(c.FUSE_READDIRPLUS)

    @precondition(lambda self: self.xattrs(c.FUSE_SETXATTR))
    @rule(path=PATHS, name=XNAMES, value=st.binary(max_size=40), flags=XFLAGS)
    def setxattr(self, path: str, name: bytes, value: bytes, flags: int) -> None:
        node = self.xattr_holder(path)
        if node is not None:
            self.ask(c.FUSE_SETXATTR, FuseSetxattrIn(size=len(value), flags=flags), FuseName(name=name),
                     Raw(value), nodeid=self.nodeid(node))

    @precondition(lambda self: self.xattrs(c.FUSE_GETXATTR))
    @rule(path=PATHS, name=XNAMES, probe=st.booleans())
    def getxattr(self, path: str, name: bytes, probe: bool) -> None:
        node = self.xattr_holder(path)
        if node is not None:
            self.ask(c.FUSE_GETXATTR, FuseGetxattrIn(size=0 if probe else 4096), FuseName(name=name),
                     nodeid=self.nodeid(node))

    @precondition(lambda self: self.xattrs(c.FUSE_LISTXATTR))
    @rule(path=PATHS, probe=st.booleans())
    def listxattr(self, path: str, probe: bool) -> None:
        node = self.xattr_holder(path)
        if node is not None:
            self.ask(c.FUSE_LISTXATTR, FuseGetxattrIn(size=0 if probe else 4096), nodeid=self.nodeid(node))

    @precondition(lambda self: self.xattrs(c.FUSE_REMOVEXATTR))
    @rule(path=PATHS, name=XNAMES)
    def removexattr(self, path: str, name: bytes) -> None:
        node = self.xattr_holder(path)
        if node is not None:
            self.ask(c.FUSE_REMOVEXATTR, FuseName(name=name), nodeid=self.nodeid(node))

    def xattrs(self, opcode: int) -> bool:
        return self.model.offers(opcode) and "xattr" not in self.model.refused

    def xattr_holder(self, path: str) -> Inode | None:
        """user.* xattrs live on regular files and directories only (the VFS refuses others)."""
        node = self.existing(path)
        return node if node is not None and (node.is_reg or node.is_dir) else None

    @rule(handle=consumes(handles))
    def release(self, handle: int) -> None:
        opened = self.model.handles[handle]
        self.ask(c.FUSE_RELEASE, FuseReleaseIn(fh=opened.fh, flags=opened.flags), nodeid=opened.nodeid)

    @rule(path=PATHS)
    def forget(self, path: str) -> None:
        """The kernel drops an inode nothing uses: not open, no child it still holds."""
        node = self.existing(path)
        if node is None or self.model.open_handles(node) or self.holds_children(node):
            return
        for nodeid in self.model.nodeids_of(node):
            self.tell(c.FUSE_FORGET, FuseForgetIn(nlookup=self.model.lookups[nodeid]), nodeid=nodeid)

    def holds_children(self, node: Inode) -> bool:
        return any(self.model.nodeids_of(self.model.inodes[k]) for k in node.entries.values())

    # -- checks ---------------------------------------------------------------
    @invariant()
    def server_agrees(self) -> None:
        """Forget what nothing holds (a step, as the kernel evicts), then check: every nodeid the
        kernel holds answers GETATTR; every directory changed lists what the model has."""
        if self.model.top is None:
            return
        self.settle()
        self.checking = []
        try:
            for node in list(self.model.inodes.values()):
                for nodeid in self.model.nodeids_of(node):
                    self.getattr(node, nodeid)
            for key in sorted(self.model.dirty):
                changed = self.model.inodes.get(key)
                if changed is not None and changed.is_dir and (changed.links or changed is self.model.top):
                    self.listing(changed, plus=False)
            self.model.dirty.clear()
        finally:
            self.checking = None

    def getattr(self, node: Inode, nodeid: int) -> None:
        opened = self.model.open_handles(node)
        if node.links or node is self.model.top or not opened:
            self.ask(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
        else:  # unlinked but open: only fstat reaches it, and the kernel passes the handle
            self.ask(c.FUSE_GETATTR, FuseGetattrIn(getattr_flags=c.FUSE_GETATTR_FH, fh=opened[0].fh),
                     nodeid=nodeid)

    def listing(self, node: Inode, *, plus: bool) -> None:
        """OPENDIR, READDIR(PLUS) until an empty reply, RELEASEDIR; the model judges the names."""
        nodeid = self.nodeid(node)
        before = set(self.model.handles)
        self.ask(c.FUSE_OPENDIR, FuseOpenIn(flags=os.O_RDONLY | O_DIRECTORY), nodeid=nodeid)
        token = next(t for t in self.model.handles if t not in before)
        opened = self.model.handles[token]
        opcode = c.FUSE_READDIRPLUS if plus else c.FUSE_READDIR
        for _ in range(MAX_READDIRS):
            self.ask(opcode, FuseReadIn(fh=opened.fh, offset=opened.next_offset, size=LISTING_SIZE),
                     nodeid=nodeid)
            if opened.done or token not in self.model.handles:
                break
        else:
            self.fail([f"READDIR of {self.model.path(node)!r} did not end after {MAX_READDIRS} calls"])
        self.ask(c.FUSE_RELEASEDIR, FuseReleaseIn(fh=opened.fh), nodeid=nodeid)

    def settle(self) -> None:
        """FORGET the inodes nothing holds any more, and nodeids READDIRPLUS gave for no name."""
        for node in self.model.orphans():
            for nodeid in self.model.nodeids_of(node):
                self.tell(c.FUSE_FORGET, FuseForgetIn(nlookup=self.model.lookups[nodeid]), nodeid=nodeid)
        for nodeid, count in list(self.model.strays.items()):
            self.tell(c.FUSE_FORGET, FuseForgetIn(nlookup=count), nodeid=nodeid)

    def teardown(self) -> None:
        """Release what is open, remove what the example made (names deepest first, each looked
        up first as the VFS does), and forget every nodeid, children before their parents (the
        kernel at umount: a dentry pins its parent)."""
        try:
            for opened in list(self.model.handles.values()):
                opcode = c.FUSE_RELEASEDIR if opened.directory else c.FUSE_RELEASE
                self.ask(opcode, FuseReleaseIn(fh=opened.fh, flags=opened.flags), nodeid=opened.nodeid)
            if self.model.top is not None and not self.failed:
                self.empty(self.model.top)
            held = sorted(self.model.nodeids.items(), key=lambda item: -self.depth(item[1]))
            for nodeid, _key in held:
                self.tell(c.FUSE_FORGET, FuseForgetIn(nlookup=self.model.lookups[nodeid]), nodeid=nodeid)
            for nodeid, count in list(self.model.strays.items()):
                self.tell(c.FUSE_FORGET, FuseForgetIn(nlookup=count), nodeid=nodeid)
        except AssertionError:
            if not self.failed:
                raise

    def empty(self, directory: Inode) -> None:
        """UNLINK and RMDIR everything under ``directory``, as ``rm -r`` through the kernel."""
        for name, key in sorted(directory.entries.items()):
            child = self.model.inodes[key]
            if child.is_dir:
                self.empty(child)
            parent = self.nodeid(directory)
            self.held(child)
            self.ask(c.FUSE_RMDIR if child.is_dir else c.FUSE_UNLINK, FuseName(name=name), nodeid=parent)

    def depth(self, key: int) -> int:
        """How many directories above inode ``key`` (an unlinked inode pins none: 0)."""
        node, depth = self.model.inodes.get(key), 0
        while node is not None and node.links:
            node, depth = self.model.inodes.get(node.links[0][0]), depth + 1
        return depth
