"""What the kernel sends under each cache mode, counted in the recording.

The reference server's modes (targets.reference.server): cache=none answers
entry/attr timeouts of 0 and FOPEN_DIRECT_IO, auto 1 s and no open flag, always
a day and FOPEN_KEEP_CACHE. Each rule acts on a file of its own directory, times
each step and counts the requests of that window about the file: LOOKUPs of its
name, and requests naming its nodeid. The counts go to allure (``report``) for the
coherency report.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance.kernel.probe import Probe, Probes, Tally, Window, report, tally
from conformance.rules import rule
from protocol import constants as c

ATTR = (c.FUSE_LOOKUP, c.FUSE_GETATTR, c.FUSE_STATX)
DIR_C = "linux fs/fuse/dir.c fuse_dentry_revalidate, fuse_update_get_attr"
FILE_C = "linux fs/fuse/file.c fuse_open (FOPEN_KEEP_CACHE), fuse_direct_io (FOPEN_DIRECT_IO)"
TIMEOUTS = "targets/reference/server.py CACHE_TIMEOUTS and CACHE_OPEN_FLAGS"
AUTO_TIMEOUT = 1.0
#: A stat this long after the last one is past cache=auto's 1 s timeout, with room for jiffies
PAST_AUTO = AUTO_TIMEOUT + 1.5
#: A second stat this soon after the first is still within it, on a loaded machine
WITHIN_AUTO = AUTO_TIMEOUT / 2
_counter = itertools.count()


@dataclass
class Subject:
    """A file of the rule's own directory on a probe, and its nodeid and parent's."""

    probe: Probe
    path: Path
    nodeid: int
    parent: int

    def count(self, window: Window, opcodes: tuple[int, ...] = ATTR) -> Tally:
        return tally(self.probe.sync().seen, window, nodeid=self.nodeid, parent=self.parent,
                     name=self.path.name.encode(), opcodes=opcodes)

    def measure(self, action: Callable[[], Any], opcodes: tuple[int, ...] = ATTR) -> Tally:
        """Run ``action`` through the mount; the requests it made about the file."""
        with self.probe.step() as window:
            action()
        return self.count(window, opcodes)


@pytest.fixture
def subject(request: pytest.FixtureRequest, probes: Probes) -> Iterator[Subject]:
    """A 16 KiB file in a new directory of the probe for the mode the test names."""
    probe = probes.get(request.param)
    directory = probe.path / f"k{os.getpid()}-{next(_counter)}"
    with probe.watchdog():
        os.mkdir(directory)
        (directory / "f").write_bytes(bytes(range(256)) * 64)
    try:
        yield Subject(probe, directory / "f", probe.nodeid(directory.name, "f"),
                      probe.nodeid(directory.name))
    finally:
        with probe.watchdog():
            shutil.rmtree(directory, ignore_errors=True)


def modes(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("subject", names, indirect=True, ids=[f"cache={n}" for n in names])


def read_through(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@rule("FUSE-KERNEL-010", "Under cache=none (entry and attr timeouts 0) every stat(2) of a file "
      "reaches the server: each one sends a LOOKUP of its name or a GETATTR (or STATX)",
      source=f"{DIR_C}; {TIMEOUTS}", area="kernel", feature="cache")
@modes("none")
def test_no_cache_every_stat_asks(subject: Subject) -> None:
    counts = [subject.measure(lambda: os.stat(subject.path)) for _ in range(5)]
    report("FUSE-KERNEL-010", {"cache": "none", "scenario": "5 stats",
                               "requests_per_stat": [t.total for t in counts],
                               "by_opcode": [dict(t.counts) for t in counts]})
    assert all(t.total >= 1 for t in counts), \
        f"stats that sent no LOOKUP/GETATTR for the file: {[dict(t.counts) for t in counts]}"


@rule("FUSE-KERNEL-011", "Under cache=always (timeouts of a day) a stat(2) of a file within the "
      "timeout of the last one reaches the server no more: no LOOKUP, GETATTR or STATX for it",
      source=f"{DIR_C}; {TIMEOUTS}", area="kernel", feature="cache")
@modes("always")
def test_always_cache_stat_stays_local(subject: Subject) -> None:
    first = subject.measure(lambda: os.stat(subject.path))
    counts = [subject.measure(lambda: os.stat(subject.path)) for _ in range(5)]
    report("FUSE-KERNEL-011", {"cache": "always", "scenario": "stat, then 5 stats",
                               "first_stat_requests": first.total,
                               "requests_per_later_stat": [t.total for t in counts]})
    assert all(t.total == 0 for t in counts), \
        f"stats within the timeout that reached the server: {[dict(t.counts) for t in counts]}"


@rule("FUSE-KERNEL-012", "Under cache=auto (timeouts of 1 s) a stat(2) of a file once the timeout "
      "has passed reaches the server again (a LOOKUP of its name, or a GETATTR or STATX)",
      source=f"{DIR_C}; {TIMEOUTS}", area="kernel", feature="cache")
@modes("auto")
def test_auto_cache_stat_after_timeout_asks(subject: Subject) -> None:
    first = subject.measure(lambda: os.stat(subject.path))
    time.sleep(PAST_AUTO)
    later = subject.measure(lambda: os.stat(subject.path))
    report("FUSE-KERNEL-012", {"cache": "auto", "scenario": f"stat, wait {PAST_AUTO} s, stat",
                               "first_stat_requests": first.total, "later_stat_requests": later.total,
                               "later_by_opcode": dict(later.counts)})
    assert later.total >= 1, f"a stat {PAST_AUTO} s after the last sent nothing for the file"


@rule("FUSE-KERNEL-013", "Under cache=auto (timeouts of 1 s) a second stat(2) of a file well "
      "within the timeout does not reach the server", source=f"{DIR_C}; {TIMEOUTS}", area="kernel",
      feature="cache")
@modes("auto")
def test_auto_cache_stat_within_timeout_stays_local(subject: Subject) -> None:
    for attempts in range(1, 6):  # noqa: B007 (reported after the loop)
        with subject.probe.step() as first:
            os.stat(subject.path)
        with subject.probe.step() as second:
            os.stat(subject.path)
        span = second.end - first.start  # the first reply came after first.start
        if span < WITHIN_AUTO:
            break
        time.sleep(PAST_AUTO)  # too slow to tell: let the entry expire and try again
    else:
        pytest.skip(f"not measurable: two stats took more than {WITHIN_AUTO} s five times")
    later = subject.count(second)
    report("FUSE-KERNEL-013", {"cache": "auto", "scenario": "stat, stat at once",
                               "attempts": attempts, "span_seconds": round(span, 4),
                               "first_stat_requests": subject.count(first).total,
                               "second_stat_requests": later.total})
    assert later.total == 0, f"a stat {span:.3f} s after the last began sent {dict(later.counts)}"


@rule("FUSE-KERNEL-014", "With FUSE_DO_READDIRPLUS agreed, listing a directory from its start "
      "reads it with READDIRPLUS (READDIRPLUS_AUTO keeps plain READDIR for later offsets)",
      source="linux fs/fuse/readdir.c fuse_use_readdirplus", area="kernel", feature="readdir")
@modes("auto")
def test_readdirplus_when_agreed(subject: Subject) -> None:
    negotiated = subject.probe.sync().kernel.negotiated
    assert negotiated is not None
    agreed = negotiated.has(c.FUSE_DO_READDIRPLUS)
    with subject.probe.step() as window:
        names = os.listdir(subject.path.parent)
    assert names == ["f"]
    listing = tally(subject.probe.sync().seen, window, nodeid=subject.parent,
                    opcodes=(c.FUSE_READDIR, c.FUSE_READDIRPLUS))
    first = next((s.opcode for s in subject.probe.audit.seen if window.start <= s.time <= window.end
                  and s.nodeid == subject.parent and s.opcode in (c.FUSE_READDIR, c.FUSE_READDIRPLUS)),
                 None)
    report("FUSE-KERNEL-014", {"cache": "auto", "scenario": "listdir", "readdirplus_agreed": agreed,
                               "by_opcode": dict(listing.counts)})
    if not agreed:
        pytest.skip("not applicable: the probe did not agree on FUSE_DO_READDIRPLUS")
    assert first == c.FUSE_READDIRPLUS, f"the listing began with {c.OPCODE_NAMES.get(first or 0)}"


def _reread(subject: Subject) -> tuple[Tally, Tally]:
    """Read the whole file, close it, reopen and read it again: the READs of each pass."""
    data = bytes(range(256)) * 64
    first = subject.measure(lambda: read_through(subject.path), (c.FUSE_READ, c.FUSE_OPEN))
    with subject.probe.step() as window:
        again = read_through(subject.path)
    assert again == data
    return first, subject.count(window, (c.FUSE_READ, c.FUSE_OPEN))


@rule("FUSE-KERNEL-015", "With FOPEN_KEEP_CACHE (cache=always) the page cache outlives the file's "
      "close: reading a file again after reopening it sends no READ",
      source=FILE_C, area="kernel", feature="cache", opcodes=("FUSE_READ", "FUSE_OPEN"))
@modes("always")
def test_keep_cache_rereads_locally(subject: Subject) -> None:
    first, second = _reread(subject)
    report("FUSE-KERNEL-015", {"cache": "always", "scenario": "read, reopen, read",
                               "first_reads": first.of(c.FUSE_READ), "second_reads": second.of(c.FUSE_READ),
                               "second_opens": second.of(c.FUSE_OPEN)})
    assert second.of(c.FUSE_OPEN) == 1, f"the reopen sent {dict(second.counts)}"
    assert second.of(c.FUSE_READ) == 0, f"the second read sent {second.of(c.FUSE_READ)} READ(s)"


@rule("FUSE-KERNEL-016", "Without FOPEN_KEEP_CACHE (cache=auto) the kernel drops a file's page cache "
      "when it opens it: reading a file again after reopening it sends READ",
      source=FILE_C, area="kernel", feature="cache", opcodes=("FUSE_READ", "FUSE_OPEN"))
@modes("auto")
def test_open_drops_page_cache(subject: Subject) -> None:
    first, second = _reread(subject)
    report("FUSE-KERNEL-016", {"cache": "auto", "scenario": "read, reopen, read",
                               "first_reads": first.of(c.FUSE_READ), "second_reads": second.of(c.FUSE_READ)})
    assert second.of(c.FUSE_READ) >= 1, "the read after the reopen came from the page cache"


@rule("FUSE-KERNEL-017", "With FOPEN_DIRECT_IO (cache=none) every read(2) reaches the server: "
      "reading the same bytes twice through one open file sends READ both times",
      source=FILE_C, area="kernel", feature="cache", opcodes=("FUSE_READ",))
@modes("none")
def test_direct_io_every_read_asks(subject: Subject) -> None:
    with subject.probe.watchdog(), open(subject.path, "rb", buffering=0) as f:
        counts = [subject.measure(lambda: os.pread(f.fileno(), 4096, 0), (c.FUSE_READ,))
                  for _ in range(2)]
    report("FUSE-KERNEL-017", {"cache": "none", "scenario": "pread the same 4 KiB twice",
                               "reads_per_pread": [t.total for t in counts]})
    assert all(t.total >= 1 for t in counts), f"READs per pread: {[t.total for t in counts]}"
