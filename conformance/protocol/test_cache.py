"""The cache contract (the seed's cache=none|auto|always): what the replies promise.

Applies to targets whose spec declares a cache mode (``ref:cache=...``; the reference
server runs cache=auto unless told otherwise); the timeouts and open flags in their
replies must say what the mode says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from conformance.checks import errno_name
from conformance.rules import rule
from conformance.walk import some_entry
from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn, FuseOpenIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection
from targets.spec import TargetSpec

SEED = "Documentation/filesystems/virtiofs.rst and fuse.rst: cache=none|auto|always"


#: The cache mode a target runs without a cache option, where it is known
DEFAULT_CACHE = {"ref": "auto", "virtiofsd": "auto"}  # virtiofsd --help: cache=auto is the default


def declared_cache(spec: TargetSpec) -> str | None:
    """The cache mode the target's spec declares (or the one it is known to default to)."""
    mode = spec.options.get("cache")
    return str(mode) if mode else DEFAULT_CACHE.get(spec.name)


@dataclass(frozen=True)
class Promise:
    """What a target's replies let the kernel cache: seconds of a LOOKUP's entry and attributes,
    of a GETATTR's attributes, and the open_flags of an OPEN (None: no regular file listed)."""

    entry: float
    attr: float
    getattr: float
    open_flags: int | None


def promised(ready: KernelConnection) -> Promise:
    """LOOKUP a listed entry, GETATTR it, and OPEN it if it is a regular file."""
    entry = some_entry(ready)
    assert entry is not None, "the root lists nothing to look up"
    lookup = ready.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
    assert lookup.ok and lookup.body is not None, f"LOOKUP answered {errno_name(lookup.error)}"
    body, nodeid = lookup.body, int(lookup.body.nodeid)
    attr = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=nodeid)
    assert attr.ok and attr.body is not None, f"GETATTR answered {errno_name(attr.error)}"
    flags = None
    if entry.type == 8:  # a regular file
        opened = ready.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=nodeid)
        assert opened.ok and opened.body is not None, f"OPEN answered {errno_name(opened.error)}"
        ready.call(c.FUSE_RELEASE, FuseReleaseIn(fh=int(opened.body.fh)), nodeid=nodeid)
        flags = int(opened.body.open_flags)
    return Promise(entry=body.entry_valid + body.entry_valid_nsec / 1e9,
                   attr=body.attr_valid + body.attr_valid_nsec / 1e9,
                   getattr=attr.body.attr_valid + attr.body.attr_valid_nsec / 1e9, open_flags=flags)


@rule("FUSE-CACHE-001",
      "With cache=none, entry and attr replies grant no cache time and OPEN asks for direct I/O",
      source=f"{SEED}: cache=none caches nothing", area="coherency", feature="CACHE")
def test_cache_none_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) != "none":
        pytest.skip("not applicable: the target declares no cache=none mode")
    got = promised(ready)
    assert (got.entry, got.attr) == (0, 0), f"LOOKUP grants entry {got.entry:g} s, attr {got.attr:g} s"
    assert got.getattr == 0, f"GETATTR grants {got.getattr:g} s"
    if got.open_flags is not None:
        assert got.open_flags & c.FOPEN_DIRECT_IO, "OPEN without FOPEN_DIRECT_IO"
@rule("FUSE-CACHE-002", "FUSE_WRITEBACK_CACHE is negotiated exactly when the target declares "
      "writeback", source=f"{SEED}: writeback", area="coherency", feature="CACHE")
def test_writeback_negotiated(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) is None and "writeback" not in target_spec.options:
        pytest.skip("not applicable: the target declares no cache mode")
    negotiated = ready.session.negotiated
    assert negotiated is not None
    declared = bool(target_spec.options.get("writeback"))
    assert negotiated.has(c.FUSE_WRITEBACK_CACHE) == declared, (
        f"writeback declared {declared}, negotiated {negotiated.has(c.FUSE_WRITEBACK_CACHE)}")


@rule("FUSE-CACHE-003",
      "With cache=auto, entries and attributes may be cached about a second, and OPEN neither "
      "bypasses nor keeps the page cache (data is cached while open, dropped at the next open)",
      source=f"{SEED}: cache=auto (timeouts about 1 s, close-to-open)", area="coherency",
      feature="CACHE")
def test_cache_auto_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) != "auto":
        pytest.skip("not applicable: the target declares no cache=auto mode")
    got = promised(ready)
    for what, granted in (("LOOKUP entry", got.entry), ("LOOKUP attr", got.attr), ("GETATTR", got.getattr)):
        assert 0 < granted <= 2, f"{what} grants {granted:g} s, not about a second"
    if got.open_flags is not None:
        assert not got.open_flags & (c.FOPEN_DIRECT_IO | c.FOPEN_KEEP_CACHE), (
            f"OPEN answers open_flags {got.open_flags:#x}: cache=auto neither bypasses nor keeps "
            "the cache")


@rule("FUSE-CACHE-004",
      "With cache=always, entries and attributes are cached long (more than a minute) and OPEN "
      "keeps the page cache (FOPEN_KEEP_CACHE)",
      source=f"{SEED}: cache=always", area="coherency", feature="CACHE")
def test_cache_always_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) != "always":
        pytest.skip("not applicable: the target declares no cache=always mode")
    got = promised(ready)
    for what, granted in (("LOOKUP entry", got.entry), ("LOOKUP attr", got.attr), ("GETATTR", got.getattr)):
        assert granted > 60, f"{what} grants {granted:g} s: cache=always caches long"
    if got.open_flags is not None:
        assert got.open_flags & c.FOPEN_KEEP_CACHE and not got.open_flags & c.FOPEN_DIRECT_IO, (
            f"OPEN answers open_flags {got.open_flags:#x}: cache=always keeps the page cache")
