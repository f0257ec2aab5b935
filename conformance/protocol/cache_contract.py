"""The cache contract of the seed's modes (cache=none|auto|always, writeback), as data: what
a target's replies promise (``Promise``, read with ``promised``) and what is wrong with that
for the mode it declares (``contract_problems``). The FUSE-CACHE rules assert it; the
coherency matrix (``reports.coherency``) tabulates it per mode and transport."""

from __future__ import annotations

import os
from dataclasses import dataclass

from conformance.checks import errno_name
from conformance.walk import named_entries
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn, FuseOpenIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

SEED = "Documentation/filesystems/virtiofs.rst and fuse.rst: cache=none|auto|always"
MODES = ("none", "auto", "always")
#: how long cache=auto may cache (about a second) and how long cache=always must (long)
AUTO_MAX, ALWAYS_MIN = 2.0, 60.0
DT_REG = 8  # a dirent's type for a regular file


@dataclass(frozen=True)
class Promise:
    """What a target's replies let the kernel cache: seconds of a LOOKUP's entry and attributes,
    of a GETATTR's attributes, the open_flags of an OPEN (None: no regular file listed), and
    whether INIT gave FUSE_WRITEBACK_CACHE."""

    entry: float
    attr: float
    getattr: float
    open_flags: int | None
    writeback: bool

    def describe(self) -> str:
        opened = "-" if self.open_flags is None else " ".join(
            name for flag, name in ((c.FOPEN_DIRECT_IO, "DIRECT_IO"), (c.FOPEN_KEEP_CACHE, "KEEP_CACHE"))
            if self.open_flags & flag) or "0"
        return (f"entry {self.entry:g} s, attr {self.attr:g} s, getattr {self.getattr:g} s, open {opened}, "
                f"writeback {'on' if self.writeback else 'off'}")


def promised(ready: KernelConnection) -> Promise:
    """LOOKUP a listed entry (a regular file when the root lists one), GETATTR it, and OPEN
    it if it is a regular file."""
    entries = named_entries(ready)
    assert entries, "the root lists nothing to look up"
    entry = next((e for e in entries if e.type == DT_REG), entries[0])
    lookup = ready.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
    assert lookup.ok and lookup.body is not None, f"LOOKUP answered {errno_name(lookup.error)}"
    body, nodeid = lookup.body, int(lookup.body.nodeid)
    attr = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
    assert attr.ok and attr.body is not None, f"GETATTR answered {errno_name(attr.error)}"
    flags = None
    if entry.type == DT_REG:
        opened = ready.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=nodeid)
        assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
        ready.call(c.FUSE_RELEASE, FuseReleaseIn(fh=int(opened.body.fh)), nodeid=nodeid)
        flags = int(opened.body.open_flags)
    negotiated = ready.session.negotiated
    return Promise(entry=body.entry_valid + body.entry_valid_nsec / 1e9,
                   attr=body.attr_valid + body.attr_valid_nsec / 1e9,
                   getattr=attr.body.attr_valid + attr.body.attr_valid_nsec / 1e9, open_flags=flags,
                   writeback=negotiated is not None and negotiated.has(c.FUSE_WRITEBACK_CACHE))


def contract_problems(mode: str, got: Promise) -> list[str]:
    """What in ``got`` breaks cache=``mode``'s contract (empty: it keeps it)."""
    times = (("LOOKUP entry", got.entry), ("LOOKUP attr", got.attr), ("GETATTR", got.getattr))
    flags = got.open_flags
    out: list[str] = []
    if mode == "none":
        out += [f"{what} grants {granted:g} s" for what, granted in times if granted != 0]
        if flags is not None and not flags & c.FOPEN_DIRECT_IO:
            out.append("OPEN without FOPEN_DIRECT_IO")
    elif mode == "auto":
        out += [f"{what} grants {granted:g} s, not about a second" for what, granted in times
                if not 0 < granted <= AUTO_MAX]
        if flags is not None and flags & (c.FOPEN_DIRECT_IO | c.FOPEN_KEEP_CACHE):
            out.append(f"OPEN answers open_flags {flags:#x}: cache=auto neither bypasses nor keeps the cache")
    elif mode == "always":
        out += [f"{what} grants {granted:g} s: cache=always caches long" for what, granted in times
                if granted <= ALWAYS_MIN]
        if flags is not None and not (flags & c.FOPEN_KEEP_CACHE and not flags & c.FOPEN_DIRECT_IO):
            out.append(f"OPEN answers open_flags {flags:#x}: cache=always keeps the page cache")
    else:
        raise ValueError(f"no cache mode {mode!r}")
    return out


def writeback_problems(declared: bool, got: Promise) -> list[str]:
    if got.writeback != declared:
        return [f"writeback declared {declared}, negotiated {got.writeback}"]
    return []
