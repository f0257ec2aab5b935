"""The cache contract (the seed's cache=none|auto|always): what the replies promise.

Applies to targets whose spec declares a cache mode (``ref:cache=...``); the
timeouts and open flags in their replies must say what the mode says.
"""

from __future__ import annotations

import os

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


@rule("FUSE-CACHE-001",
      "With cache=none, entry and attr replies grant no cache time and OPEN asks for direct I/O",
      source=f"{SEED}: cache=none caches nothing", area="coherency", feature="CACHE")
def test_cache_none_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if target_spec.options.get("cache") != "none":
        pytest.skip("not applicable: the target declares no cache=none mode")
    entry = some_entry(ready)
    assert entry is not None, "the root lists nothing to look up"
    lookup = ready.call(c.FUSE_LOOKUP, FuseName(name=entry.name))
    assert lookup.ok and lookup.body is not None, f"LOOKUP answered {errno_name(lookup.error)}"
    body = lookup.body
    assert (body.entry_valid, body.entry_valid_nsec, body.attr_valid, body.attr_valid_nsec) == (
        0, 0, 0, 0), f"LOOKUP grants entry {body.entry_valid} s, attr {body.attr_valid} s"
    attr = ready.call(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=int(body.nodeid))
    assert attr.ok and attr.body is not None and (attr.body.attr_valid, attr.body.attr_valid_nsec) == (
        0, 0), f"GETATTR grants {attr.body.attr_valid if attr.body else '?'} s"
    if entry.type == 8:  # a regular file
        opened = ready.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=int(body.nodeid))
        assert opened.ok and opened.body is not None
        assert int(opened.body.open_flags) & c.FOPEN_DIRECT_IO, "OPEN without FOPEN_DIRECT_IO"
        ready.call(c.FUSE_RELEASE, FuseReleaseIn(fh=int(opened.body.fh)), nodeid=int(body.nodeid))


@rule("FUSE-CACHE-002", "FUSE_WRITEBACK_CACHE is negotiated exactly when the target declares "
      "writeback", source=f"{SEED}: writeback", area="coherency", feature="CACHE")
def test_writeback_negotiated(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if "cache" not in target_spec.options and "writeback" not in target_spec.options:
        pytest.skip("not applicable: the target declares no cache mode")
    negotiated = ready.session.negotiated
    assert negotiated is not None
    declared = bool(target_spec.options.get("writeback"))
    assert negotiated.has(c.FUSE_WRITEBACK_CACHE) == declared, (
        f"writeback declared {declared}, negotiated {negotiated.has(c.FUSE_WRITEBACK_CACHE)}")
