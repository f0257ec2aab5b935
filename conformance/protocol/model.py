"""The kernel's picture of a server's namespace, and the judge of every reply against it.

Sans-IO: ``Model.judge(call, reply)`` takes one request (a ``Call``, parsed at the
negotiated minor) and the server's reply, says what is wrong with the reply given
everything the server said before (the problems, as sentences), and updates the
picture: nodeids and their lookup counts, open handles, file contents, modes, times,
xattrs, directory entries, link counts. The state machine (``machine``) draws the
requests and the replay (``fuzz.replay``) feeds recorded ones; both judge with this.

The model starts at a directory the first request makes (MKDIR in the root); the
rest of the server's tree is not modelled. An optional operation answered ENOSYS is
learned (and must stay ENOSYS), as the kernel remembers it (fs/fuse: ``fc->no_*``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.packet import Packet

from conformance.checks import errno_name
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.base import fixed_size
from protocol.layers.header import FuseInHeader
from protocol.layers.structs import FuseEntryOut, FuseGetxattrOut, FuseOpenOut, FuseWriteOut
from protocol.layers.variable import FuseName
from protocol.sizes import request_layers_at

XATTR_CREATE, XATTR_REPLACE = 1, 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
XATTR_PREFIX = b"user.fc."  # the names the machine sets; others the server has are left alone
DOTS = (b".", b"..")
IN_HEADER = 40
#: what a server may answer ENOSYS (the kernel then stops asking, or falls back)
OPTIONAL = frozenset({c.FUSE_CREATE, c.FUSE_MKNOD, c.FUSE_LINK, c.FUSE_RENAME2, c.FUSE_SETXATTR,
                      c.FUSE_GETXATTR, c.FUSE_LISTXATTR, c.FUSE_REMOVEXATTR, c.FUSE_READDIRPLUS})
#: requests after which the backing directory is compared with the model
MUTATING = frozenset({c.FUSE_CREATE, c.FUSE_MKNOD, c.FUSE_MKDIR, c.FUSE_WRITE, c.FUSE_SETATTR,
                      c.FUSE_RENAME, c.FUSE_RENAME2, c.FUSE_LINK, c.FUSE_UNLINK, c.FUSE_RMDIR,
                      c.FUSE_SETXATTR, c.FUSE_REMOVEXATTR, c.FUSE_OPEN})


@dataclass(frozen=True)
class Call:
    """A request as sent: header fields, its fixed struct, its names, the bytes after them."""

    opcode: int
    unique: int
    nodeid: int
    arg: Packet | None
    names: tuple[bytes, ...]
    data: bytes
    raw: bytes

    @property
    def name(self) -> str:
        return c.OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")

    @property
    def struct(self) -> Packet:
        """The fixed struct, for an opcode that has one."""
        if self.arg is None:
            raise ValueError(f"{self.name} carries no fixed struct")
        return self.arg


def out_struct(reply: Reply) -> Packet:
    """A success reply's struct (the session has checked it is there and well formed)."""
    if reply.body is None:
        raise AssertionError(f"{reply.opcode_name} succeeded without its reply struct")
    return reply.body


def parse_request(raw: bytes, minor: int, flags: int) -> Call:
    """Split a request the way the kernel built it at ``minor`` with INIT ``flags``
    (the security-context extension, if any, is left out)."""
    header = FuseInHeader(raw[:IN_HEADER])
    end = len(raw) - 8 * int(header.total_extlen or 0)
    body = raw[IN_HEADER:end]
    opcode = int(header.opcode)
    layers = request_layers_at(opcode, minor, flags)
    arg: Packet | None = None
    if layers and layers[0] is not FuseName and layers[0].__name__ != "Raw":
        size = fixed_size(layers[0])
        arg, body = layers[0](body[:size]), body[size:]
    names: list[bytes] = []
    for _ in range(sum(1 for layer in layers if layer is FuseName)):
        name, _nul, body = body.partition(b"\0")
        names.append(name)
    return Call(opcode, int(header.unique), int(header.nodeid), arg, tuple(names), body, raw)


@dataclass(eq=False)
class Inode:
    key: int
    mode: int
    ino: int | None = None
    data: bytearray = field(default_factory=bytearray)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    links: list[tuple[int, bytes]] = field(default_factory=list)  # (parent key, name)
    entries: dict[bytes, int] = field(default_factory=dict)  # a directory's names
    atime: tuple[int, int] | None = None  # set by SETATTR, until something moves it
    mtime: tuple[int, int] | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(eq=False)
class Handle:
    """An open file or directory: the fh the server gave and what it was opened for."""

    token: int
    fh: int
    key: int
    nodeid: int
    flags: int
    directory: bool
    listing: list[bytes] = field(default_factory=list)
    next_offset: int = 0
    done: bool = False

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_WRONLY

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY


Problems = list[str]


class Model:
    """What the server said so far; ``judge`` each reply in order."""

    def __init__(self, *, flags: int = 0) -> None:
        self.flags = flags  # the negotiated INIT flags
        self.inodes: dict[int, Inode] = {}
        self.nodeids: dict[int, int] = {}  # live nodeid -> inode key
        self.lookups: dict[int, int] = {}  # live nodeid -> lookup count
        self.strays: dict[int, int] = {}  # nodeids READDIRPLUS gave for names the model lacks
        self.handles: dict[int, Handle] = {}  # open handles by token, oldest first
        self.top: Inode | None = None
        self.enosys: dict[int, int] = {}  # optional opcode -> ENOSYS answers so far
        self.refused: set[str] = set()  # "fifo", "link", "xattr", "rename flags N"
        self.counts_dir_links: bool | None = None  # None until the first MKDIR answers
        self.dirty: set[int] = set()  # directories whose entries changed since the last listing
        self._keys = 0
        self._tokens = 0

    # -- what the machine asks ------------------------------------------------
    def offers(self, opcode: int) -> bool:
        """Whether to send ``opcode`` at all: not after ENOSYS was answered twice."""
        return self.enosys.get(opcode, 0) < 2

    def resolve(self, path: tuple[bytes, ...]) -> Inode | None:
        node = self.top
        for part in path:
            if node is None or not node.is_dir or part not in node.entries:
                return None
            node = self.inodes[node.entries[part]]
        return node

    def nodeid_of(self, inode: Inode) -> int | None:
        return next((n for n, k in self.nodeids.items() if k == inode.key), None)

    def nodeids_of(self, inode: Inode) -> list[int]:
        return [n for n, k in self.nodeids.items() if k == inode.key]

    def open_handles(self, inode: Inode) -> list[Handle]:
        return [h for h in self.handles.values() if h.key == inode.key]

    def path(self, inode: Inode) -> str:
        if inode is self.top:
            return "."
        if not inode.links:
            return f"(unlinked inode {inode.ino})"
        parent, name = inode.links[0]
        above = self.path(self.inodes[parent])
        return name.decode(errors="replace") if above == "." else f"{above}/{name.decode(errors='replace')}"

    def subdirs(self, inode: Inode) -> int:
        return sum(1 for k in inode.entries.values() if self.inodes[k].is_dir)

    def nlink(self, inode: Inode) -> int:
        if inode.is_dir:
            return 2 + self.subdirs(inode) if self.counts_dir_links is not False else 1
        return len(inode.links)

    def orphans(self) -> list[Inode]:
        """Inodes with no name and no open handle that the kernel still holds: to forget."""
        return [i for i in self.inodes.values() if i is not self.top and not i.links
                and not self.open_handles(i) and self.nodeids_of(i)]

    # -- judging --------------------------------------------------------------
    def judge(self, call: Call, reply: Reply | None) -> Problems:
        """What is wrong with ``reply`` to ``call``; the model takes in what it says."""
        out: Problems = []
        if call.opcode in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET):
            self._forget(call, out)
            return out
        assert reply is not None, f"{call.name} gets a reply"
        out += [f"{call.name}: malformed reply: {f}" for f in reply.findings]
        if call.opcode in self.enosys and reply.error != -errno.ENOSYS:
            out.append(f"{call.name} answered ENOSYS before, now {errno_name(reply.error)}: the kernel "
                       "stops sending an opcode once it was answered ENOSYS (a server must keep to it)")
            return out
        if reply.error == -errno.ENOSYS and call.opcode in OPTIONAL:
            self.enosys[call.opcode] = self.enosys.get(call.opcode, 0) + 1
            return out
        handler = self._HANDLERS.get(call.opcode)
        if handler is None:
            out.append(f"{call.name}: the model does not judge this opcode")
            return out
        handler(self, call, reply, out)
        return out

    def _expect(self, call: Call, reply: Reply, allowed: set[int], what: str, out: Problems) -> bool:
        """True when the reply is a success; a problem when it is an error not ``allowed``."""
        if reply.ok:
            return True
        if -reply.error not in allowed:
            out.append(f"{call.name} {what} answered {errno_name(reply.error)}, expected "
                       f"{' or '.join(errno_name(-e) for e in sorted(allowed)) if allowed else 'success'}")
        return False

    def _error(self, call: Call, reply: Reply, errors: set[int], what: str, why: str,
               out: Problems) -> None:
        """The reply must be one of ``errors`` (``why`` says what the model knows)."""
        if -reply.error not in errors:
            wanted = " or ".join(errno_name(-e) for e in sorted(errors))
            out.append(f"{call.name} {what} answered {errno_name(reply.error)}, expected {wanted}: {why}")

    def _live(self, nodeid: int, call: Call, out: Problems) -> Inode | None:
        key = self.nodeids.get(nodeid)
        if key is None:
            out.append(f"{call.name} sent to nodeid {nodeid}, which the kernel holds no reference to "
                       "(a recording that does not replay against this server?)")
            return None
        return self.inodes[key]

    def _dir(self, call: Call, out: Problems) -> Inode | None:
        node = self._live(call.nodeid, call, out)
        if node is not None and not node.is_dir:
            out.append(f"{call.name} sent to {self.path(node)}, not a directory (harness error)")
            return None
        return node

    def _new(self, mode: int) -> Inode:
        self._keys += 1
        node = Inode(self._keys, mode)
        self.inodes[node.key] = node
        return node

    def _link(self, node: Inode, parent: Inode, name: bytes) -> None:
        parent.entries[name] = node.key
        node.links.append((parent.key, name))
        parent.mtime = None
        self.dirty.add(parent.key)

    def _unlink(self, parent: Inode, name: bytes) -> Inode:
        node = self.inodes[parent.entries.pop(name)]
        node.links.remove((parent.key, name))
        parent.mtime = None
        self.dirty.add(parent.key)
        self._maybe_drop(node)
        return node

    def _maybe_drop(self, node: Inode) -> None:
        if not node.links and not self.nodeids_of(node) and not self.open_handles(node):
            self.inodes.pop(node.key, None)

    def _take_entry(self, entry: Packet, node: Inode, what: str, out: Problems) -> None:
        """A fuse_entry_out for ``node``: one more lookup of its nodeid; its attributes judged."""
        nodeid = int(entry.nodeid)
        if nodeid in (0, c.FUSE_ROOT_ID):
            out.append(f"{what}: entry nodeid {nodeid} for an existing name")
            return
        other = self.nodeids.get(nodeid)
        if other is not None and other != node.key:
            out.append(f"{what}: nodeid {nodeid} is {self.path(self.inodes[other])}'s, which the kernel "
                       "still holds (a nodeid names one inode until it is forgotten)")
            return
        self.nodeids[nodeid] = node.key
        self.lookups[nodeid] = self.lookups.get(nodeid, 0) + 1
        self.check_attr(entry.attr, node, what, out)

    def check_attr(self, attr: Packet, node: Inode, what: str, out: Problems) -> None:
        """A fuse_attr against the model: type and mode, inode number, links, size, set times."""
        mode = int(attr.mode)
        if mode != node.mode:
            out.append(f"{what}: mode {mode:#o}, the model says {node.mode:#o}")
        ino = int(attr.ino)
        if node.ino is None:
            twin = next((i for i in self.inodes.values() if i.ino == ino and i is not node), None)
            if twin is not None:
                out.append(f"{what}: ino {ino} is also that of {self.path(twin)}, a different live inode")
            node.ino = ino
        elif ino != node.ino:
            out.append(f"{what}: ino {ino}, it was {node.ino}")
        nlink = int(attr.nlink)
        if nlink != self.nlink(node):
            out.append(f"{what}: nlink {nlink}, the model says {self.nlink(node)} "
                       f"({self._why_nlink(node)})")
        if node.is_reg and int(attr.size) != len(node.data):
            out.append(f"{what}: size {int(attr.size)}, the model says {len(node.data)}")
        for label, want in (("atime", node.atime), ("mtime", node.mtime)):
            got = (int(getattr(attr, label)), int(getattr(attr, label + "nsec")))
            if want is not None and got != want:
                out.append(f"{what}: {label} {got[0]}.{got[1]:09d}, SETATTR set {want[0]}.{want[1]:09d} "
                           "and nothing changed it since")

    def _why_nlink(self, node: Inode) -> str:
        if node.is_dir:
            return (f"'.', its name and {self.subdirs(node)} subdirectories' '..'"
                    if self.counts_dir_links is not False else "the server does not count directory links")
        names = ", ".join(self.path(self.inodes[p]) + "/" + n.decode() for p, n in node.links)
        return f"names: {names or 'none'}"

    def _take_handle(self, fh: int, node: Inode, nodeid: int, flags: int, directory: bool,
                     what: str, out: Problems) -> None:
        clash = next((h for h in self.handles.values() if h.fh == fh and h.key != node.key), None)
        if fh and clash is not None:
            out.append(f"{what}: fh {fh} is still open for {self.path(self.inodes[clash.key])} "
                       "(not released): an open handle is never handed out again")
        self._tokens += 1
        self.handles[self._tokens] = Handle(self._tokens, fh, node.key, nodeid, flags, directory)

    def _handle(self, call: Call, fh: int, out: Problems, *, directory: bool) -> Handle | None:
        found = next((h for h in self.handles.values()
                      if h.fh == fh and h.nodeid == call.nodeid and h.directory == directory), None)
        if found is None:
            out.append(f"{call.name} with fh {fh} on nodeid {call.nodeid}, which is not open (harness error)")
        return found

    # -- names ----------------------------------------------------------------
    def _lookup(self, call: Call, reply: Reply, out: Problems) -> None:
        parent = self._dir(call, out)
        if parent is None:
            return
        name = call.names[0]
        what = f"of {self._in(parent, name)}"
        key = parent.entries.get(name)
        if key is None:
            if reply.ok and reply.body is not None and int(reply.body.nodeid) != 0:
                out.append(f"LOOKUP {what} found nodeid {int(reply.body.nodeid)}; the name does not exist")
            elif not reply.ok:
                self._error(call, reply, {errno.ENOENT}, what, "the name does not exist", out)
            return
        if self._expect(call, reply, set(), what, out):
            self._take_entry(out_struct(reply), self.inodes[key], f"LOOKUP {what}", out)

    def _in(self, parent: Inode, name: bytes) -> str:
        above = self.path(parent)
        shown = name.decode(errors="replace")
        return repr(shown if above == "." else f"{above}/{shown}")

    def _make(self, call: Call, reply: Reply, mode: int, out: Problems) -> Inode | None:
        """CREATE, MKNOD, MKDIR: EEXIST for a name that exists, else a new inode."""
        parent = self._dir(call, out)
        if parent is None:
            return None
        name = call.names[0]
        what = f"of {self._in(parent, name)}"
        if name in parent.entries:
            self._error(call, reply, {errno.EEXIST}, what, "the name exists", out)
            return None
        if not self._expect(call, reply, set(), what, out):
            return None
        if stat.S_ISDIR(mode) and parent.mode & stat.S_ISGID:
            # Linux (fs/inode.c inode_init_owner) makes a directory made in a setgid directory
            # setgid too; POSIX leaves it to the implementation: either is right
            said = int(reply.packet[FuseEntryOut].attr.mode)
            mode = said if said in (mode, mode | stat.S_ISGID) else mode | stat.S_ISGID
        node = self._new(mode)
        self._link(node, parent, name)
        self._take_entry(reply.packet[FuseEntryOut], node, f"{call.name} {what}", out)
        return node

    def _mkdir(self, call: Call, reply: Reply, out: Problems) -> None:
        mode = stat.S_IFDIR | int(call.struct.mode) & 0o7777
        if self.top is None and call.nodeid == c.FUSE_ROOT_ID:  # the model's own directory
            if self._expect(call, reply, set(), f"of the machine's directory {call.names[0]!r}", out):
                self._start(out_struct(reply), mode, out)
            return
        self._make(call, reply, mode, out)  # the parent's nlink: counted from its subdirectories

    def _start(self, entry: Packet, mode: int, out: Problems) -> None:
        nlink = int(entry.attr.nlink)
        if nlink not in (1, 2):
            out.append(f"MKDIR: a new directory has nlink {nlink}; expected 2 ('.' and its name), or 1 "
                       "from a server that does not count directory links")
        self.counts_dir_links = nlink != 1
        self.top = self._new(mode)
        self._take_entry(entry, self.top, "MKDIR of the machine's directory", out)

    def _mknod(self, call: Call, reply: Reply, out: Problems) -> None:
        mode = int(call.struct.mode)
        if stat.S_ISFIFO(mode) and -reply.error in (errno.EPERM, errno.EOPNOTSUPP):
            self.refused.add("fifo")  # mknod(2): the filesystem does not support the type
            return
        self._make(call, reply, stat.S_IFMT(mode) | mode & 0o7777, out)

    def _create(self, call: Call, reply: Reply, out: Problems) -> None:
        flags = int(call.struct.flags)
        node = self._make(call, reply, stat.S_IFREG | int(call.struct.mode) & 0o7777, out)
        if node is not None and FuseOpenOut in reply.packet:
            entry = reply.packet[FuseEntryOut]
            self._take_handle(int(reply.packet[FuseOpenOut].fh), node, int(entry.nodeid), flags,
                              False, f"CREATE of {self.path(node)!r}", out)

    def _named(self, call: Call, out: Problems) -> tuple[Inode, bytes, str, int | None] | None:
        """The parent directory a one-name call is sent to, the name, how to say it, and the key
        of the inode the name has (None: no such name)."""
        parent = self._dir(call, out)
        if parent is None:
            return None
        name = call.names[0]
        return parent, name, f"of {self._in(parent, name)}", parent.entries.get(name)

    def _unlink_call(self, call: Call, reply: Reply, out: Problems) -> None:
        named = self._named(call, out)
        if named is None:
            return
        parent, name, what, key = named
        if key is None:
            self._error(call, reply, {errno.ENOENT}, what, "the name does not exist", out)
        elif self.inodes[key].is_dir:
            self._error(call, reply, {errno.EISDIR, errno.EPERM}, what, "it is a directory", out)
        elif self._expect(call, reply, set(), what, out):
            self._unlink(parent, name)

    def _rmdir(self, call: Call, reply: Reply, out: Problems) -> None:
        named = self._named(call, out)
        if named is None:
            return
        parent, name, what, key = named
        if key is None:
            self._error(call, reply, {errno.ENOENT}, what, "the name does not exist", out)
        elif not self.inodes[key].is_dir:
            self._error(call, reply, {errno.ENOTDIR}, what, "it is not a directory", out)
        elif self.inodes[key].entries:
            names = ", ".join(repr(n.decode()) for n in self.inodes[key].entries)
            self._error(call, reply, {errno.ENOTEMPTY, errno.EEXIST}, what, f"it holds {names}", out)
        elif self._expect(call, reply, set(), what, out):
            self.dirty.discard(key)
            self._unlink(parent, name)

    def _rename(self, call: Call, reply: Reply, out: Problems) -> None:
        parent = self._dir(call, out)
        newdir = self._live(int(call.struct.newdir), call, out)
        if parent is None or newdir is None:
            return
        flags = int(getattr(call.arg, "flags", 0) or 0)
        old, new = call.names
        what = f"of {self._in(parent, old)} to {self._in(newdir, new)}"
        what += f" (flags {flags})" if flags else ""
        if flags and -reply.error in (errno.EINVAL, errno.ENOSYS):
            self.refused.add(f"rename flags {flags}")  # rename(2): a flag the filesystem lacks
            return
        expected = self._rename_outcome(parent, old, newdir, new, flags)
        if expected is not None:
            self._error(call, reply, expected[0], what, expected[1], out)
            return
        if not self._expect(call, reply, set(), what, out):
            return
        moved = self.inodes[parent.entries[old]]
        if newdir.entries.get(new) == moved.key:
            return  # rename(2): two names of one file: nothing happens
        if flags & RENAME_EXCHANGE:
            other = self.inodes[newdir.entries[new]]
            self._unlink_keep(parent, old)
            self._unlink_keep(newdir, new)
            self._link(other, parent, old)
            self._link(moved, newdir, new)
            for node in (moved, other):
                node.mtime = None if node.is_dir else node.mtime
            return
        if new in newdir.entries:
            self._unlink(newdir, new)
        self._unlink_keep(parent, old)
        self._link(moved, newdir, new)
        if moved.is_dir:
            moved.mtime = None  # its '..' moved

    def _unlink_keep(self, parent: Inode, name: bytes) -> None:
        node = self.inodes[parent.entries.pop(name)]
        node.links.remove((parent.key, name))
        parent.mtime = None
        self.dirty.add(parent.key)

    def _rename_outcome(self, parent: Inode, old: bytes, newdir: Inode, new: bytes,
                        flags: int) -> tuple[set[int], str] | None:
        """The errors a RENAME must answer, or None when it must succeed."""
        if old not in parent.entries:
            return {errno.ENOENT}, "the source does not exist"
        moved = self.inodes[parent.entries[old]]
        node: Inode | None = newdir
        while node is not None:
            if node is moved:
                return {errno.EINVAL}, "the target is inside the directory moved"
            node = self.inodes[node.links[0][0]] if node.links else None
        victim = self.inodes[newdir.entries[new]] if new in newdir.entries else None
        if flags & RENAME_EXCHANGE:
            return ({errno.ENOENT}, "the target does not exist") if victim is None else None
        if victim is None or victim is moved:
            return None
        if flags & RENAME_NOREPLACE:
            return {errno.EEXIST}, "the target exists"
        if moved.is_dir and not victim.is_dir:
            return {errno.ENOTDIR}, "a directory cannot replace a non-directory"
        if victim.is_dir and not moved.is_dir:
            return {errno.EISDIR}, "a non-directory cannot replace a directory"
        if victim.is_dir and victim.entries:
            return {errno.ENOTEMPTY, errno.EEXIST}, "the target directory is not empty"
        return None

    def _link_call(self, call: Call, reply: Reply, out: Problems) -> None:
        parent = self._dir(call, out)
        node = self._live(int(call.struct.oldnodeid), call, out)
        if parent is None or node is None:
            return
        name = call.names[0]
        what = f"of {self.path(node)!r} as {self._in(parent, name)}"
        if -reply.error in (errno.EPERM, errno.EOPNOTSUPP) and name not in parent.entries:
            self.refused.add("link")  # link(2): the filesystem does not support hard links
            return
        if name in parent.entries:
            self._error(call, reply, {errno.EEXIST}, what, "the name exists", out)
            return
        if self._expect(call, reply, set(), what, out):
            self._link(node, parent, name)
            self._take_entry(out_struct(reply), node, f"LINK {what}", out)

    # -- attributes -----------------------------------------------------------
    def _getattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None:
            return
        if int(call.struct.getattr_flags) & c.FUSE_GETATTR_FH:
            self._handle(call, int(call.struct.fh), out, directory=False)
        what = f"of {self.path(node)!r}"
        if self._expect(call, reply, set(), what + " (a live nodeid)", out):
            self.check_attr(out_struct(reply).attr, node, f"GETATTR {what}", out)

    def _setattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None:
            return
        arg = call.struct
        valid = int(arg.valid)
        what = f"of {self.path(node)!r}"
        if valid & c.FATTR_FH:
            self._handle(call, int(arg.fh), out, directory=False)
        if not self._expect(call, reply, set(), what, out):
            return
        if valid & c.FATTR_MODE:
            node.mode = stat.S_IFMT(node.mode) | int(arg.mode) & 0o7777
        if valid & c.FATTR_SIZE:
            size = int(arg.size)
            node.data[:] = node.data[:size].ljust(size, b"\0")
            node.mtime = None
        for label, bit, now in (("atime", c.FATTR_ATIME, c.FATTR_ATIME_NOW),
                                ("mtime", c.FATTR_MTIME, c.FATTR_MTIME_NOW)):
            if valid & now:
                setattr(node, label, None)
            elif valid & bit:
                setattr(node, label, (int(getattr(arg, label)), int(getattr(arg, label + "nsec"))))
        self.check_attr(out_struct(reply).attr, node, f"SETATTR {what}", out)

    # -- files ----------------------------------------------------------------
    def _open(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None:
            return
        flags = int(call.struct.flags)
        what = f"of {self.path(node)!r}"
        if not self._expect(call, reply, set(), what, out):
            return
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            node.data.clear()
            node.mtime = None
        self._take_handle(int(out_struct(reply).fh), node, call.nodeid, flags, False, f"OPEN {what}", out)

    def _read(self, call: Call, reply: Reply, out: Problems) -> None:
        handle = self._handle(call, int(call.struct.fh), out, directory=False)
        if handle is None:
            return
        node = self.inodes[handle.key]
        offset, size = int(call.struct.offset), int(call.struct.size)
        what = f"of {self.path(node)!r} at {offset} for {size}"
        if not self._expect(call, reply, set(), what, out):
            return
        node.atime = None
        got, want = reply.raw[16:], bytes(node.data[offset:offset + size])
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                      min(len(got), len(want)))
            out.append(f"READ {what}: {len(got)} bytes, the file holds {len(want)} there "
                       f"(first difference at byte {at}: got {got[at:at + 8]!r}, "
                       f"wrote {want[at:at + 8]!r})")

    def _write(self, call: Call, reply: Reply, out: Problems) -> None:
        handle = self._handle(call, int(call.struct.fh), out, directory=False)
        if handle is None:
            return
        node = self.inodes[handle.key]
        data = call.data[:int(call.struct.size)]
        offset = len(node.data) if handle.flags & os.O_APPEND else int(call.struct.offset)
        what = f"of {len(data)} bytes to {self.path(node)!r} at {offset}"
        if not self._expect(call, reply, set(), what, out):
            return
        body = reply.body
        written = int(body.size) if isinstance(body, FuseWriteOut) else -1
        if written != len(data):
            out.append(f"WRITE {what}: the reply says {written} bytes written")
        end = offset + len(data)
        node.data[:] = node.data[:offset].ljust(offset, b"\0") + data + node.data[end:]
        node.mtime = None

    def _release(self, call: Call, reply: Reply, out: Problems) -> None:
        directory = call.opcode == c.FUSE_RELEASEDIR
        handle = self._handle(call, int(call.struct.fh), out, directory=directory)
        if handle is None:
            return
        del self.handles[handle.token]
        node = self.inodes[handle.key]
        self._expect(call, reply, set(), f"of {self.path(node)!r}", out)
        self._maybe_drop(node)

    def _forget(self, call: Call, out: Problems) -> None:
        pairs = ([(call.nodeid, int(call.struct.nlookup))] if call.opcode == c.FUSE_FORGET
                 else [(int.from_bytes(call.data[i:i + 8], "little"),
                        int.from_bytes(call.data[i + 8:i + 16], "little"))
                       for i in range(0, len(call.data) - 15, 16)])
        for nodeid, count in pairs:
            if nodeid in self.strays:
                self.strays[nodeid] -= count
                if self.strays[nodeid] <= 0:
                    del self.strays[nodeid]
                continue
            left = self.lookups.get(nodeid, 0) - count
            if left < 0:
                out.append(f"FORGET of nodeid {nodeid} by {count}: its lookup count would be {left} "
                           "(the kernel forgets only what replies gave it)")
            if left <= 0:
                key = self.nodeids.pop(nodeid, None)
                self.lookups.pop(nodeid, None)
                if key is not None:
                    self._maybe_drop(self.inodes[key])
            else:
                self.lookups[nodeid] = left

    # -- directories ----------------------------------------------------------
    def _opendir(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._dir(call, out)
        if node is not None and self._expect(call, reply, set(), f"of {self.path(node)!r}", out):
            self._take_handle(int(out_struct(reply).fh), node, call.nodeid, int(call.struct.flags), True,
                              f"OPENDIR of {self.path(node)!r}", out)

    def _readdir(self, call: Call, reply: Reply, out: Problems) -> None:
        handle = self._handle(call, int(call.struct.fh), out, directory=True)
        if handle is None:
            return
        node = self.inodes[handle.key]
        what = f"of {self.path(node)!r} from offset {int(call.struct.offset)}"
        if not self._expect(call, reply, set(), what, out):
            return
        body = reply.body
        records = list(body.dirents) if body is not None and hasattr(body, "dirents") else []
        if not records:
            self._listed(handle, node, out)
            return
        plus = call.opcode == c.FUSE_READDIRPLUS
        for record in records:
            dirent = record.dirent if plus else record
            name = bytes(dirent.getfieldval("name"))
            handle.listing.append(name)
            handle.next_offset = int(dirent.off)
            key = node.entries.get(name)
            if key is None:
                if plus and name not in DOTS and int(record.entry_out.nodeid):
                    nodeid = int(record.entry_out.nodeid)
                    self.strays[nodeid] = self.strays.get(nodeid, 0) + 1
                continue
            child = self.inodes[key]
            label = f"{call.name} {what}: {self._in(node, name)}"
            kind = int(dirent.type)
            if kind not in (0, stat.S_IFMT(child.mode) >> 12):
                out.append(f"{label} has dirent type {kind}, the model says {stat.S_IFMT(child.mode) >> 12}")
            if child.ino is not None and int(dirent.ino) != child.ino:
                out.append(f"{label} has dirent ino {int(dirent.ino)}, the inode's is {child.ino}")
            if plus and int(record.entry_out.nodeid):
                self._take_entry(record.entry_out, child, label, out)

    def _listed(self, handle: Handle, node: Inode, out: Problems) -> None:
        handle.done = True
        node.atime = None
        seen = [n for n in handle.listing if n not in DOTS]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            out.append(f"the listing of {self.path(node)!r} names {twice} more than once")
        got, want = set(seen), set(node.entries)
        if got != want:
            out.append(f"the listing of {self.path(node)!r} is {sorted(got)}, the model has {sorted(want)} "
                       f"(missing {sorted(want - got)}, extra {sorted(got - want)})")
        self.dirty.discard(node.key)

    # -- xattrs ---------------------------------------------------------------
    def _xattr_refused(self, reply: Reply) -> bool:
        if -reply.error == errno.EOPNOTSUPP:  # the filesystem has no user xattrs
            self.refused.add("xattr")
            return True
        return False

    def _setxattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None or self._xattr_refused(reply):
            return
        name, flags = call.names[0], int(call.struct.flags)
        value = call.data[:int(call.struct.size)]
        what = f"of {name.decode()} on {self.path(node)!r}"
        if flags & XATTR_CREATE and name in node.xattrs:
            self._error(call, reply, {errno.EEXIST}, what, "XATTR_CREATE and the name is set", out)
        elif flags & XATTR_REPLACE and name not in node.xattrs:
            self._error(call, reply, {errno.ENODATA}, what, "XATTR_REPLACE and the name is not set", out)
        elif self._expect(call, reply, set(), what, out):
            node.xattrs[name] = value

    def _getxattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None or self._xattr_refused(reply):
            return
        name, size = call.names[0], int(call.struct.size)
        what = f"of {name.decode()} on {self.path(node)!r}" + (" (size probe)" if not size else "")
        if name not in node.xattrs:
            self._error(call, reply, {errno.ENODATA}, what, "the name is not set", out)
            return
        value = node.xattrs[name]
        if size and len(value) > size:
            self._error(call, reply, {errno.ERANGE}, what, f"the value has {len(value)} bytes", out)
            return
        if not self._expect(call, reply, set(), what, out):
            return
        if not size:
            got = int(reply.packet[FuseGetxattrOut].size) if FuseGetxattrOut in reply.packet else -1
            if got != len(value):
                out.append(f"GETXATTR {what}: size {got}, the value set has {len(value)} bytes")
        elif reply.raw[16:] != value:
            out.append(f"GETXATTR {what}: {reply.raw[16:]!r}, SETXATTR set {value!r}")

    def _listxattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None or self._xattr_refused(reply):
            return
        size = int(call.struct.size)
        ours = sorted(node.xattrs)
        need = sum(len(n) + 1 for n in ours)
        what = f"of {self.path(node)!r}" + (" (size probe)" if not size else "")
        if not self._expect(call, reply, {errno.ERANGE} if size and size < need else set(), what, out):
            return
        if not size:
            got = int(reply.packet[FuseGetxattrOut].size) if FuseGetxattrOut in reply.packet else -1
            if got < need:
                out.append(f"LISTXATTR {what}: size {got}, the names set take {need} bytes ({ours})")
            return
        listed = sorted(n for n in reply.raw[16:].split(b"\0") if n.startswith(XATTR_PREFIX))
        if listed != ours:
            out.append(f"LISTXATTR {what}: {listed}, the model has {ours}")

    def _removexattr(self, call: Call, reply: Reply, out: Problems) -> None:
        node = self._live(call.nodeid, call, out)
        if node is None or self._xattr_refused(reply):
            return
        name = call.names[0]
        what = f"of {name.decode()} on {self.path(node)!r}"
        if name not in node.xattrs:
            self._error(call, reply, {errno.ENODATA}, what, "the name is not set", out)
        elif self._expect(call, reply, set(), what, out):
            del node.xattrs[name]

    _HANDLERS: dict[int, Callable[[Model, Call, Reply, Problems], None]] = {
        c.FUSE_LOOKUP: _lookup, c.FUSE_MKDIR: _mkdir, c.FUSE_MKNOD: _mknod, c.FUSE_CREATE: _create,
        c.FUSE_UNLINK: _unlink_call, c.FUSE_RMDIR: _rmdir, c.FUSE_RENAME: _rename,
        c.FUSE_RENAME2: _rename, c.FUSE_LINK: _link_call, c.FUSE_GETATTR: _getattr,
        c.FUSE_SETATTR: _setattr, c.FUSE_OPEN: _open, c.FUSE_READ: _read, c.FUSE_WRITE: _write,
        c.FUSE_RELEASE: _release, c.FUSE_RELEASEDIR: _release, c.FUSE_OPENDIR: _opendir,
        c.FUSE_READDIR: _readdir, c.FUSE_READDIRPLUS: _readdir, c.FUSE_SETXATTR: _setxattr,
        c.FUSE_GETXATTR: _getxattr, c.FUSE_LISTXATTR: _listxattr, c.FUSE_REMOVEXATTR: _removexattr,
    }
