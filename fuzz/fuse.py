"""The FUSE campaign: valid work interleaved with near-valid and malformed requests, in the
kernel's role, over a socket or a virtio-fs queue.

The machine keeps what the kernel would know (the nodeids it was given and how often, the
open handles, the names it made) and sends requests only with those, as the kernel does:
a libfuse daemon's nodeids and directory handles are pointers, so a nodeid it never gave
out is a crash nobody could cause. Past a trust boundary (virtio-fs: the guest drives the
device) and for the reference server, ``wild`` ids are drawn too.

How each message is sent and judged is ``fuzz.fuse_wire``; the stage (a target after its
INIT) is ``fuzz.fuse_stage``.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule
from scapy.packet import Packet, Raw

from fuzz import burst, strategies
from fuzz.fuse_stage import BURST, healthy, open_stage
from fuzz.fuse_wire import MAY_WAIT, ROOT, FuseWire, opcode_name
from fuzz.hostile import BOUNDARY_NAMES, VALID, Twist, boundary, frame, malformed
from fuzz.stage import Campaign, Stage, register
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.base import fixed_size
from protocol.layers.messages import NO_REPLY, REQUEST_LAYERS
from protocol.layers.structs import (
    FuseCreateIn,
    FuseForgetIn,
    FuseGetattrIn,
    FuseMkdirIn,
    FuseMknodIn,
    FuseOpenIn,
    FuseReleaseIn,
)
from protocol.layers.variable import FuseName
from protocol.sizes import request_layers_at
from targets.capabilities import serves_wire
from targets.spec import is_cuse

NAMES = (b"a", b"b", b"c", b"d")
INDEX = st.integers(0, 255)  # which of the known nodeids / handles / names (modulo their count)
#: Opcodes the generic rules draw: all but the ones with rules of their own and those that
#: belong to other sessions (CUSE_INIT) or need a request in flight (INTERRUPT).
SPECIAL = {c.FUSE_INIT, c.FUSE_DESTROY, c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_INTERRUPT,
           c.FUSE_NOTIFY_REPLY, c.CUSE_INIT, c.FUSE_RELEASE, c.FUSE_RELEASEDIR}
DRAWN = sorted(op for op in REQUEST_LAYERS if op not in SPECIAL and op in c.OPCODE_NAMES)
DIR_OPS = {c.FUSE_LOOKUP, c.FUSE_MKDIR, c.FUSE_MKNOD, c.FUSE_CREATE, c.FUSE_SYMLINK, c.FUSE_UNLINK,
           c.FUSE_RMDIR, c.FUSE_RENAME, c.FUSE_RENAME2, c.FUSE_LINK, c.FUSE_OPENDIR, c.FUSE_TMPFILE}
NAMED = {op for op, layers in REQUEST_LAYERS.items() if FuseName in layers and op in DRAWN}
#: Offsets and sizes of the data path, and the requests that carry them (``huge``)
EXTENTS = {"offset", "size", "length", "off_in", "off_out", "len"}
DATA_OPS = {c.FUSE_READ, c.FUSE_WRITE, c.FUSE_FALLOCATE, c.FUSE_LSEEK, c.FUSE_COPY_FILE_RANGE,
            c.FUSE_COPY_FILE_RANGE_64}
MAKERS = {c.FUSE_MKDIR, c.FUSE_MKNOD, c.FUSE_CREATE, c.FUSE_SYMLINK, c.FUSE_LINK, c.FUSE_TMPFILE}
DIR_FH_OPS = {c.FUSE_READDIR, c.FUSE_READDIRPLUS, c.FUSE_FSYNCDIR}
FILE_FH_OPS = {c.FUSE_READ, c.FUSE_WRITE, c.FUSE_FLUSH, c.FUSE_FSYNC, c.FUSE_FALLOCATE, c.FUSE_LSEEK,
               c.FUSE_COPY_FILE_RANGE, c.FUSE_COPY_FILE_RANGE_64, c.FUSE_GETLK, c.FUSE_SETLK,
               c.FUSE_SETLKW, c.FUSE_POLL, c.FUSE_IOCTL}
#: Fields whose size the kernel bounds (max_read, max_write, a page of names): valid draws stay
#: under this; past it is the boundary rule's work. Lengths stay small so that nothing a
#: target does with them can fill the host (fallocate, copy_file_range).
SIZE_FIELDS = {"size", "in_size", "out_size", "len", "length", "count"}
MAX_VALID_SIZE = 128 * 1024
#: What a MKNOD may make: never a device node (root could then write any disk through it).
SAFE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK)
#: Fields that name what the target handed out: at a boundary only past a trust boundary
ID_FIELDS = ("fh", "fh_in", "fh_out", "nodeid", "oldnodeid", "newdir", "nodeid_out")


def _burstable(opcode: int) -> bool:
    """Whether a burst can vary ``opcode``: a reply due, a first body struct with integers."""
    layers = REQUEST_LAYERS[opcode]
    if not layers or layers[0] is Raw or opcode in NO_REPLY or opcode in MAY_WAIT:
        return False
    try:
        return bool(burst.points(layers[0], fixed_size(layers[0])))
    except TypeError:
        return False


SCALES = st.integers(0, 12)  # a burst of 2**scale copies, up to the stage's cap
#: What the burst rule draws from (those whose handle is open)
BURSTABLE = tuple(op for op in DRAWN if _burstable(op))


@dataclass
class Node:
    nodeid: int
    is_dir: bool
    lookups: int = 1
    fifo: bool = False  # opening one for reading waits for a writer, in the daemon too


class FuseFuzzMachine(FuseWire):
    def __init__(self, stage: Stage) -> None:
        super().__init__(stage)
        self.wild: bool = stage.extra.get("wild", False)
        self.nodes: dict[int, Node] = {ROOT: Node(ROOT, True, 0)}
        self.fhs: list[tuple[int, int]] = []  # (fh, nodeid) of open files
        self.dir_fhs: list[tuple[int, int]] = []
        self.made: list[tuple[int, bytes]] = []  # (parent, name) this example made
        self.own: list[int] = []  # directories this example made: where it changes names
        self.home = ROOT
        self.serial = 0
        self.destroyed = False

    # -- what the kernel knows ----------------------------------------------------
    def learn(self, reply: Reply | None, parent: int, name: bytes) -> None:
        body = reply.body if reply is not None and reply.ok else None
        nodeid = int(getattr(body, "nodeid", 0) or 0)
        if not nodeid:
            return
        attr = getattr(body, "attr", None)
        is_dir = attr is not None and stat.S_ISDIR(int(attr.mode))
        node = self.nodes.get(nodeid)
        if node is None:
            self.nodes[nodeid] = Node(nodeid, is_dir, fifo=attr is not None and stat.S_ISFIFO(int(attr.mode)))
        else:
            node.lookups += 1
        fh = getattr(getattr(body, "payload", None), "fh", None)  # CREATE: entry_out/open_out
        if fh is not None:
            self.fhs.append((int(fh), nodeid))

    def pick_own(self, index: int) -> int:
        """A directory this example made (the root on a read-only tree)."""
        own = [n for n in self.own if n in self.nodes]
        return own[index % len(own)] if own else ROOT

    def fresh(self) -> bytes:
        self.serial += 1
        return b"n%d" % self.serial

    def pick_node(self, index: int, *, dirs: bool = False) -> int:
        ids = [n.nodeid for n in self.nodes.values() if n.is_dir or not dirs]
        return ids[index % len(ids)]

    def pick_fh(self, index: int, *, dirs: bool) -> int | None:
        fhs = self.dir_fhs if dirs else self.fhs
        return fhs[index % len(fhs)][0] if fhs else None

    def _name_at(self, index: int) -> bytes:
        known = [name for _, name in self.made]
        pool = (*NAMES, *known)
        return pool[index % len(pool)]

    # -- valid work -------------------------------------------------------------
    @initialize()
    def home_directory(self) -> None:
        from conformance.protocol.scratch import unique_name

        name = unique_name("fuzz")
        reply = self.send(c.FUSE_MKDIR, (FuseMkdirIn(mode=0o755, umask=0), FuseName(name=name)),
                          nodeid=ROOT)
        if reply is not None and reply.ok and reply.body is not None:
            self.learn(reply, ROOT, name)
            self.home = int(reply.body.nodeid)
            self.own.append(self.home)
            made = self.send(c.FUSE_CREATE, (FuseCreateIn(flags=os.O_RDWR, mode=stat.S_IFREG | 0o644),
                                              FuseName(name=b"f")), nodeid=self.home)
            if made is not None and made.ok:  # an open file from the start: the data path is in reach
                self.made.append((self.home, b"f"))
                self.learn(made, self.home, b"f")

    @precondition(lambda self: not self.destroyed)
    @rule(kind=st.sampled_from(["dir", "file", "fifo"]), where=INDEX, name=INDEX)
    def make(self, kind: str, where: int, name: int) -> None:
        parent = self.pick_own(where)
        taken = {n for p, n in self.made if p == parent}
        called = next((n for n in (*NAMES[name % 4:], *NAMES) if n not in taken), None) or self.fresh()
        layers: tuple[Packet, ...]
        if kind == "dir":
            opcode, layers = c.FUSE_MKDIR, (FuseMkdirIn(mode=0o755, umask=0o022), FuseName(name=called))
        elif kind == "file":
            opcode, layers = c.FUSE_CREATE, (FuseCreateIn(flags=os.O_RDWR, mode=0o644, umask=0o022),
                                             FuseName(name=called))
        else:
            opcode, layers = c.FUSE_MKNOD, (FuseMknodIn(mode=stat.S_IFIFO | 0o644, umask=0o022),
                                            FuseName(name=called))
        reply = self.send(opcode, layers, nodeid=parent)
        if reply is not None and reply.ok:
            self.made.append((parent, called))
            self.learn(reply, parent, called)
            if kind == "dir" and reply.body is not None:
                self.own.append(int(reply.body.nodeid))

    @precondition(lambda self: not self.destroyed)
    @rule(where=INDEX, name=INDEX)
    def lookup(self, where: int, name: int) -> None:
        parent = self.pick_node(where, dirs=True)
        called = self._name_at(name)
        self.learn(self.send(c.FUSE_LOOKUP, (FuseName(name=called),), nodeid=parent), parent, called)

    @precondition(lambda self: not self.destroyed and len(self.nodes) > 1)
    @rule(which=INDEX)
    def forget(self, which: int) -> None:
        """FORGET all lookups of an inode no handle holds, as the kernel does at eviction."""
        held = {nodeid for _, nodeid in self.fhs + self.dir_fhs}
        ids = [n for n in self.nodes if n not in (ROOT, self.home) and n not in held]
        if not ids:
            return
        node = self.nodes.pop(ids[which % len(ids)])
        self.send(c.FUSE_FORGET, (FuseForgetIn(nlookup=node.lookups),), nodeid=node.nodeid)

    @precondition(lambda self: not self.destroyed)
    @rule(which=INDEX, directory=st.booleans())
    def open(self, which: int, directory: bool) -> None:
        nodeid = self.pick_node(which, dirs=directory)
        if self.nodes[nodeid].is_dir != directory or self.nodes[nodeid].fifo:
            return
        opcode = c.FUSE_OPENDIR if directory else c.FUSE_OPEN
        reply = self.send(opcode, (FuseOpenIn(flags=os.O_RDONLY if directory else os.O_RDWR),),
                          nodeid=nodeid)
        if reply is not None and reply.ok and reply.body is not None:
            (self.dir_fhs if directory else self.fhs).append((int(reply.body.fh), nodeid))

    @precondition(lambda self: not self.destroyed and bool(self.fhs or self.dir_fhs))
    @rule(which=INDEX)
    def release(self, which: int) -> None:
        handles = [(fh, node, False) for fh, node in self.fhs]
        handles += [(fh, node, True) for fh, node in self.dir_fhs]
        fh, nodeid, directory = handles[which % len(handles)]
        (self.dir_fhs if directory else self.fhs).remove((fh, nodeid))
        opcode = c.FUSE_RELEASEDIR if directory else c.FUSE_RELEASE
        self.send(opcode, (FuseReleaseIn(fh=fh),), nodeid=nodeid)

    def _fitted(self, opcode: int, parts: list[Packet],
                ids: tuple[int, int, int]) -> tuple[tuple[Packet, ...], bool]:
        """Drawn body parts with the ids the kernel would use, sizes in its bounds; False when
        the request needs a handle and none is open (the caller still draws what it draws,
        so that an example's draws do not hang on the target's answers)."""
        other, fh_index, name_index = ids
        fitted: list[Packet] = []
        fit = True
        for part in parts:
            if isinstance(part, Raw):
                fitted.append(part)
                continue
            if isinstance(part, FuseName):  # a new name for what makes one (the dentry was negative)
                new = opcode in MAKERS and not any(isinstance(p, FuseName) for p in fitted)
                part.name = self.fresh() if new else self._name_at(name_index + len(fitted))
            for field in part.fields_desc:
                key = field.name
                if key == "fh" and (opcode in DIR_FH_OPS or opcode in FILE_FH_OPS):
                    fh = self.pick_fh(fh_index, dirs=opcode in DIR_FH_OPS)
                    fit &= fh is not None
                    part.fh = fh or 0
                elif key in ("fh_in", "fh_out"):
                    fh = self.pick_fh(fh_index, dirs=False)
                    fit &= fh is not None
                    part.setfieldval(key, fh or 0)
                elif key == "newdir":
                    part.setfieldval(key, self.pick_own(other))
                elif key in ("oldnodeid", "nodeid_out"):
                    part.setfieldval(key, self.pick_node(other))
                elif key in SIZE_FIELDS and isinstance(part.getfieldval(key), int):
                    part.setfieldval(key, part.getfieldval(key) % (MAX_VALID_SIZE + 1))
            if "umask" in part.fieldtype:  # current_umask(): permission bits
                part.umask = int(part.umask) & 0o777
            if isinstance(part, FuseMknodIn):
                part.mode = SAFE_TYPES[int(part.mode) % 3] | int(part.mode) & 0o7777
            elif isinstance(part, FuseMkdirIn):  # the VFS passes permission bits only
                part.mode = int(part.mode) & 0o7777
            elif isinstance(part, FuseCreateIn):
                part.mode = stat.S_IFREG | int(part.mode) & 0o7777
            fitted.append(part)
        return tuple(fitted), fit

    def _handle_open(self, opcode: int) -> bool:
        """Whether a request with ``opcode`` can name an open handle, if it needs one."""
        if opcode in DIR_FH_OPS:
            return bool(self.dir_fhs)
        return opcode not in FILE_FH_OPS or bool(self.fhs)

    def _target(self, opcode: int, which: int) -> int:
        if opcode in DIR_FH_OPS:
            return next((n for _, n in self.dir_fhs), ROOT)
        if opcode in FILE_FH_OPS:
            return next((n for _, n in self.fhs), ROOT)
        if opcode == c.FUSE_OPEN:  # a FIFO's open blocks until the other end opens: not a hang
            files = [n.nodeid for n in self.nodes.values() if not n.fifo]
            return files[which % len(files)]
        return self.pick_own(which) if opcode in DIR_OPS else self.pick_node(which)

    @precondition(lambda self: not self.destroyed)
    @rule(opcode=st.sampled_from(DRAWN), data=st.data(), which=INDEX, ids=st.tuples(INDEX, INDEX, INDEX))
    def request(self, opcode: int, data: st.DataObject, which: int, ids: tuple[int, int, int]) -> None:
        """Any request, valid as the kernel sends it, on what the kernel knows."""
        parts, fit = self._fitted(opcode, data.draw(strategies.bodies(opcode)), ids)
        if fit:
            self.send(opcode, parts, nodeid=self._target(opcode, which))

    @precondition(lambda self: not self.destroyed)
    @rule(opcode=st.sampled_from(DRAWN), data=st.data(), which=INDEX, ids=st.tuples(INDEX, INDEX, INDEX))
    def near_valid(self, opcode: int, data: st.DataObject, which: int, ids: tuple[int, int, int]) -> None:
        """The same with one field at a boundary of its type."""
        parts, fit = self._fitted(opcode, data.draw(strategies.bodies(opcode)), ids)
        if not parts:
            return
        layers, twist = data.draw(boundary(parts, keep=() if self.wild else ID_FIELDS))
        if fit:
            self.send(opcode, layers, nodeid=self._target(opcode, which), twist=twist)

    @precondition(lambda self: not self.destroyed)
    @rule(opcode=st.sampled_from(sorted(NAMED)), name=st.sampled_from(BOUNDARY_NAMES), data=st.data(),
          which=INDEX, ids=st.tuples(INDEX, INDEX, INDEX))
    def odd_name(self, opcode: int, name: bytes, data: st.DataObject, which: int,
                 ids: tuple[int, int, int]) -> None:
        """A request whose name is at an edge the kernel keeps to: NAME_MAX and past it, '.',
        '..', '/' inside, a NUL inside, empty."""
        parts, fit = self._fitted(opcode, data.draw(strategies.bodies(opcode)), ids)
        named = [i for i, part in enumerate(parts) if isinstance(part, FuseName)]
        if not fit or not named:
            return
        odd = list(parts)
        odd[named[0]] = FuseName(name=name)
        shown = repr(name) if len(name) <= 8 else f"{len(name)} bytes"
        self.send(opcode, tuple(odd), nodeid=self._target(opcode, which),
                  twist=Twist("boundary", f"the name is {shown}"))

    @precondition(lambda self: not self.destroyed)
    @rule(opcode=st.sampled_from(sorted(DATA_OPS)), data=st.data(), which=INDEX,
          ids=st.tuples(INDEX, INDEX, INDEX))
    def huge(self, opcode: int, data: st.DataObject, which: int, ids: tuple[int, int, int]) -> None:
        """A data request (READ, WRITE, FALLOCATE, LSEEK, COPY_FILE_RANGE...) with an offset or
        a size at a boundary: huge, negative as loff_t, zero."""
        parts, fit = self._fitted(opcode, data.draw(strategies.bodies(opcode)), ids)
        others = tuple(f.name for f in parts[0].fields_desc if f.name not in EXTENTS) if parts else ()
        layers, twist = data.draw(boundary(parts[:1], keep=others)) if parts else ((), VALID)
        if fit and layers:
            self.send(opcode, (*layers, *parts[1:]), nodeid=self._target(opcode, which), twist=twist)

    @precondition(lambda self: not self.destroyed)
    @rule(opcode=st.sampled_from(DRAWN), data=st.data(), which=INDEX, ids=st.tuples(INDEX, INDEX, INDEX))
    def broken(self, opcode: int, data: st.DataObject, which: int, ids: tuple[int, int, int]) -> None:
        """A request with its framing broken (``fuzz.hostile.frame``)."""
        parts, fit = self._fitted(opcode, data.draw(strategies.bodies(opcode)), ids)
        framing = data.draw(malformed())
        if not fit:  # no handle to name: broken or not, the kernel would not send it
            return
        encoded = self.encode(opcode, *parts, nodeid=self._target(opcode, which))
        mangled, twist = frame(encoded, framing)
        sent_opcode = struct.unpack_from("<I", mangled, 4)[0] if len(mangled) >= 8 else opcode
        self.exchange(sent_opcode if sent_opcode in c.OPCODE_NAMES else opcode, mangled, twist)

    @precondition(lambda self: not self.destroyed)
    @rule(pick=INDEX, scale=SCALES, back=st.integers(0, 2**16 - 1),
          data=st.data(), which=INDEX, ids=st.tuples(INDEX, INDEX, INDEX))
    def burst(self, pick: int, scale: int, back: int, data: st.DataObject, which: int,
              ids: tuple[int, int, int]) -> None:
        """2**scale copies (up to the stage's cap; to a C daemon, half the time the cap) of one
        request in flight together, each with one field at a boundary: the window of
        ``fuzz.burst``'s sequence from element ``-back`` (a failing burst shrinks to its failing
        copy). The campaign's volume: a step of hypothesis costs milliseconds, a copy
        microseconds. The request is one of those with a struct to vary whose handle is open
        (``pick`` of them), so that a burst drawn is a burst sent."""
        ready = [op for op in BURSTABLE if self._handle_open(op)]
        opcode = ready[pick % len(ready)]
        parts, fit = self._fitted(opcode, data.draw(strategies.plain_bodies(opcode)), ids)
        cap = self.stage.extra.get("burst", BURST)
        largest = self.stage.extra.get("volume", False) and data.draw(st.booleans())  # shrinks to False
        session = self.conn.session
        try:
            size = fixed_size(request_layers_at(opcode, session.proto_minor, session.proto_flags)[0])
        except (TypeError, IndexError):
            return
        where = tuple(p for p in burst.points(type(parts[0]), size) if self.wild or p.name not in ID_FIELDS)
        if not fit or not where:
            return
        template = self.encode(opcode, *parts, nodeid=self._target(opcode, which))
        first = session.next_unique()
        if largest:
            scale = cap.bit_length() - 1
        count = min(1 << scale, cap)
        for _ in range(count - 1):
            session.next_unique()
        self.burst_out(opcode_name(opcode), list(burst.copies(template, where, back, count, first)))

    @precondition(lambda self: not self.destroyed and self.wild)
    @rule(opcode=st.sampled_from(DRAWN), data=st.data(),
          nodeid=st.sampled_from([0, 2, 0xFFFFFFFF, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1))
    def wild_id(self, opcode: int, data: st.DataObject, nodeid: int) -> None:
        """Past a trust boundary: a request on a nodeid the target never gave out."""
        if nodeid in self.nodes:
            return
        parts = tuple(data.draw(strategies.bodies(opcode)))
        self.send(opcode, parts, nodeid=nodeid,
                  twist=Twist("boundary", f"fuse_in_header.nodeid = {nodeid:#x} (never given)"))

    @precondition(lambda self: not self.destroyed)
    @rule(again=st.integers(0, 199))
    def out_of_order(self, again: int) -> None:
        """A second INIT (malformed: the kernel sends one), or (1 in 200) DESTROY and a request after it."""
        if again:
            data = self.encode(c.FUSE_INIT, *self._init_body(), nodeid=0)
            self.exchange(c.FUSE_INIT, data, Twist("malformed", "a second FUSE_INIT"))
            return
        self.destroyed = True
        self.stage.extra["broken"] = True  # whatever it does next, the stage is done
        self.exchange(c.FUSE_DESTROY, self.encode(c.FUSE_DESTROY, nodeid=0),
                      Twist("valid", "end of the session"))
        after = self.encode(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=ROOT)
        self.exchange(c.FUSE_GETATTR, after, Twist("malformed", "a request after DESTROY"))

    @precondition(lambda self: self.destroyed)
    @rule()
    def session_over(self) -> None:
        """After DESTROY the example has nothing left to send."""

    def _init_body(self) -> tuple[Packet, ...]:
        assert self.stage.init is not None
        return (Raw(self.stage.init.request[40:]),)


CAMPAIGN = register(Campaign(
    "fuse", "FUSE requests in the kernel's role (socket or virtio-fs queue)",
    applies=lambda spec: serves_wire(spec) and not is_cuse(spec), open=open_stage,
    machine=FuseFuzzMachine, healthy=healthy))
