"""``ref:source=DIR,notify``: the reference server tells the kernel what changed on the host.

``HostWatch`` watches, with inotify, every directory of the served tree the kernel holds a
nodeid of, and turns each change made behind the server's back into the notification that
makes the kernel drop what it cached about it:

- a file's data changed: FUSE_NOTIFY_INVAL_INODE from offset 0 (attributes and pages), or with
  ``notify=store`` FUSE_NOTIFY_STORE of the new content (up to ``STORE_MAX`` bytes), then
  FUSE_NOTIFY_RETRIEVE of it, the kernel's FUSE_NOTIFY_REPLY checked against what was stored;
- attributes changed: FUSE_NOTIFY_INVAL_INODE with offset -1 (attributes only);
- a name appeared: FUSE_NOTIFY_INVAL_ENTRY (a negative or stale dentry goes);
- a name was removed: FUSE_NOTIFY_DELETE when the server knows which nodeid it named (it
  answered a LOOKUP of it), and FUSE_NOTIFY_INVAL_ENTRY; renamed away: FUSE_NOTIFY_INVAL_ENTRY.

Names the server itself creates, removes or renames for the kernel are not notified (their
events are matched with the marks the server leaves, ``HostFilesystem.own_names``); data
and attribute changes it makes are (they only make the kernel ask again). Notifications are
written outside the server's lock, from this thread: the kernel may wait for a reply of the
server's before it takes a notification.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.packet import Raw

from protocol import constants as c
from protocol.layers.notify import (
    FuseNotifyDeleteOut,
    FuseNotifyInvalEntryOut,
    FuseNotifyInvalInodeOut,
    FuseNotifyRetrieveOut,
    FuseNotifyStoreOut,
)
from protocol.layers.variable import FuseName
from targets.reference.host import HostFilesystem, Node, proc

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_IGNORED, IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x8000, 0x01000000, 0o4000, 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENT = struct.Struct("iIII")
STORE_MAX = 1 << 16
OWN_FOR = 2.0  # seconds an inotify event of the server's own change may take to arrive
MODES = ("inval", "store")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


@dataclass
class HostWatch:
    """The watcher of one mounted server (see the module doc); ``write`` sends to /dev/fuse."""

    fs: HostFilesystem
    lock: threading.Lock
    write: Callable[[bytes], None]
    notify: Callable[..., bytes]  # DaemonSession.notify: (code, *layers) -> bytes
    mode: str = "inval"
    wds: dict[int, int] = field(default_factory=dict)  # watch descriptor -> directory nodeid
    watched: dict[int, int] = field(default_factory=dict)  # directory nodeid -> watch descriptor
    stored: dict[int, bytes] = field(default_factory=dict)  # RETRIEVE's notify_unique -> the data
    mismatches: list[str] = field(default_factory=list)
    next_retrieve: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"notify={self.mode}: one of {', '.join(MODES)}")
        self.fd = _inotify_init()
        self.fs.names = {}  # the server now remembers which nodeid each looked-up name gave
        self.fs.on_new_node = self._watch  # a directory is watched before the kernel hears of it
        self.fs.own_names = {}  # names the server changes itself: their events are not news
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="ref-notify", daemon=True)

    def start(self) -> HostWatch:
        with self.lock:
            for node in list(self.fs.nodes.values()):  # the root, before any request
                self._watch(node)
        self.thread.start()
        return self

    def close(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join(timeout=5)
        for fd in (self.fd, self.stop_r, self.stop_w):
            os.close(fd)

    # -- watches: one per directory nodeid the kernel holds -------------------
    def _sync(self) -> None:
        """Forget the watches of nodes the kernel forgot (under the server's lock)."""
        nodes = self.fs.nodes
        for nodeid in [n for n in self.watched if n not in nodes]:
            wd = self.watched.pop(nodeid)
            self.wds.pop(wd, None)
            _libc.inotify_rm_watch(self.fd, wd)

    def _watch(self, node: Node) -> None:
        """Watch ``node`` if it is a directory (IN_ONLYDIR refuses anything else)."""
        wd = _libc.inotify_add_watch(self.fd, proc(node.fd).encode(), MASK | IN_ONLYDIR)
        if wd >= 0:
            self.wds[wd] = node.nodeid
            self.watched[node.nodeid] = wd

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self.stop_r], [], [], 0.05)
            if self.stop_r in ready:
                return
            with self.lock:
                self._sync()
            if self.fd in ready:
                self._events()

    def _events(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        messages: list[bytes] = []
        with self.lock:
            offset = 0
            while offset + EVENT.size <= len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size:offset + EVENT.size + length].split(b"\0", 1)[0]
                offset += EVENT.size + length
                parent = self.wds.get(wd)
                if parent is None or mask & IN_IGNORED:
                    continue
                for message in self._messages(parent, name, mask):
                    if message not in messages:
                        messages.append(message)
        for message in messages:
            self._send(message)

    def _messages(self, parent: int, name: bytes, mask: int) -> list[bytes]:
        """The notifications one event calls for (under the server's lock)."""
        if not name:  # the directory itself
            return [self._inval_inode(parent, -1)] if mask & IN_ATTRIB else []
        if mask & (IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) and self._own(parent, name):
            return []
        if mask & (IN_CREATE | IN_MOVED_TO):
            return [self._inval_entry(parent, name)]
        if mask & IN_MOVED_FROM:  # the inode lives on under another name: only the dentry goes
            (self.fs.names or {}).pop((parent, name), None)
            return [self._inval_entry(parent, name)]
        if mask & IN_DELETE:
            # DELETE names the child; INVAL_ENTRY after it drops the dentry also when the
            # child was not the one remembered (the kernel then refuses the DELETE: ENOENT)
            names = self.fs.names or {}
            child = names.pop((parent, name), None)
            delete = [] if child is None else [self.notify(
                c.FUSE_NOTIFY_DELETE, FuseNotifyDeleteOut(parent=parent, child=child) / FuseName(name=name))]
            return [*delete, self._inval_entry(parent, name)]
        found = self._child(parent, name)
        if found is None:
            return []
        nodeid, st = found
        if mask & (IN_MODIFY | IN_CLOSE_WRITE) and stat.S_ISREG(st.st_mode):
            if self.mode == "store" and st.st_size <= STORE_MAX:
                return self._store(nodeid)
            return [self._inval_inode(nodeid, 0)]
        return [self._inval_inode(nodeid, -1)]

    def _own(self, parent: int, name: bytes) -> bool:
        """Whether the server itself changed this name lately (its mark is used up); marks older
        than OWN_FOR seconds are dropped, so a stale one hides no host change for long."""
        marks = (self.fs.own_names or {}).get((parent, name))
        now = time.monotonic()
        while marks and now - marks[0] > OWN_FOR:
            marks.pop(0)
        if not marks:
            (self.fs.own_names or {}).pop((parent, name), None)
            return False
        marks.pop(0)
        return True

    def _child(self, parent: int, name: bytes) -> tuple[int, os.stat_result] | None:
        node = self.fs.nodes.get(parent)
        if node is None:
            return None
        try:
            st = os.stat(name, dir_fd=node.fd, follow_symlinks=False)
        except OSError:
            return None
        nodeid = self.fs.by_key.get((st.st_dev, st.st_ino))
        return None if nodeid is None else (nodeid, st)

    def _inval_inode(self, nodeid: int, offset: int) -> bytes:
        return self.notify(c.FUSE_NOTIFY_INVAL_INODE, FuseNotifyInvalInodeOut(ino=nodeid, off=offset, len=0))

    def _inval_entry(self, parent: int, name: bytes) -> bytes:
        entry = FuseNotifyInvalEntryOut(parent=parent) / FuseName(name=name)
        return self.notify(c.FUSE_NOTIFY_INVAL_ENTRY, entry)

    def _store(self, nodeid: int) -> list[bytes]:
        """STORE the file's content, then RETRIEVE it (its reply is checked in ``retrieved``);
        the attributes are invalidated first, so the kernel asks for the new size."""
        node = self.fs.nodes[nodeid]
        try:
            with open(proc(node.fd), "rb") as f:
                content = f.read(STORE_MAX)
        except OSError:
            return [self._inval_inode(nodeid, 0)]
        unique, self.next_retrieve = self.next_retrieve, self.next_retrieve + 1
        self.stored[unique] = content
        store = FuseNotifyStoreOut(nodeid=nodeid, offset=0, size=len(content))
        return [self._inval_inode(nodeid, -1), self.notify(c.FUSE_NOTIFY_STORE, store, Raw(content)),
                self.notify(c.FUSE_NOTIFY_RETRIEVE, FuseNotifyRetrieveOut(
                    notify_unique=unique, nodeid=nodeid, offset=0, size=len(content)))]

    def retrieved(self, notify_unique: int, data: bytes) -> None:
        """The kernel's NOTIFY_REPLY: it must hand back what was stored (a short reply is a
        page the kernel dropped since, which it may)."""
        expected = self.stored.pop(notify_unique, None)
        if expected is not None and data != expected[:len(data)]:
            problem = (f"NOTIFY_REPLY {notify_unique}: {len(data)} bytes that differ from the "
                       f"{len(expected)} stored")
            self.mismatches.append(problem)
            print(f"fusecheck reference server: {problem}", file=sys.stderr, flush=True)

    def _send(self, message: bytes) -> None:
        try:
            self.write(message)
        except OSError as exc:
            # ENOENT: the kernel holds no such inode or dentry (any more): nothing to drop
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
                print(f"fusecheck reference server: notification {message[:48].hex()} failed: {exc}",
                      file=sys.stderr, flush=True)


def _inotify_init() -> int:
    fd = int(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    return fd
