"""The cache contract (the seed's cache=none|auto|always): what the replies promise.

Applies to targets whose spec declares a cache mode (``ref:cache=...``; the reference
server runs cache=auto unless told otherwise); the timeouts and open flags in their
replies must say what the mode says.
"""

from __future__ import annotations

import allure
import pytest

from conformance.protocol.cache_contract import SEED, contract_problems, promised
from conformance.rules import rule
from protocol import constants as c
from reports import coherency
from targets.connection import KernelConnection
from targets.spec import TargetSpec

#: The cache mode a target runs without a cache option, where it is known
DEFAULT_CACHE = {"ref": "auto", "virtiofsd": "auto"}  # virtiofsd --help: cache=auto is the default


def declared_cache(spec: TargetSpec) -> str | None:
    """The cache mode the target's spec declares (or the one it is known to default to)."""
    mode = spec.options.get("cache")
    return str(mode) if mode else DEFAULT_CACHE.get(spec.name)


@rule("FUSE-CACHE-001",
      "With cache=none, entry and attr replies grant no cache time and OPEN asks for direct I/O",
      source=f"{SEED}: cache=none caches nothing", area="coherency", feature="CACHE")
def test_cache_none_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) != "none":
        pytest.skip("not applicable: the target declares no cache=none mode")
    problems = contract_problems("none", promised(ready))
    assert not problems, "; ".join(problems)


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
    problems = contract_problems("auto", promised(ready))
    assert not problems, "; ".join(problems)


@rule("FUSE-CACHE-004",
      "With cache=always, entries and attributes are cached long (more than a minute) and OPEN "
      "keeps the page cache (FOPEN_KEEP_CACHE)",
      source=f"{SEED}: cache=always", area="coherency", feature="CACHE")
def test_cache_always_contract(ready: KernelConnection, target_spec: TargetSpec) -> None:
    if declared_cache(target_spec) != "always":
        pytest.skip("not applicable: the target declares no cache=always mode")
    problems = contract_problems("always", promised(ready))
    assert not problems, "; ".join(problems)


@rule("FUSE-CACHE-005",
      "In every cache mode its family runs in (cache=none, auto, always; writeback off and on) the "
      "target's replies keep that mode's contract (the coherency matrix, contract level)",
      source=f"{SEED}; DESIGN.md Coherency", area="coherency", feature="CACHE")
def test_contract_in_every_mode(target_spec: TargetSpec) -> None:
    family = coherency.family_of(target_spec)
    if family is None:
        pytest.skip(f"not applicable: {target_spec.text} is not run in chosen cache modes "
                    f"(families that are: {', '.join(coherency.FAMILIES)})")
    table = coherency.matrix([family], keep=dict(target_spec.options))
    allure.attach(coherency.html(table), name="coherency matrix (contract)",
                  attachment_type=allure.attachment_type.HTML)
    wrong = [f"{row}: {cell.error or '; '.join(cell.problems)}" for row, cells in table.items()
             for cell in cells.values() if cell.verdict != "kept"]
    assert not wrong, "\n".join(wrong)
