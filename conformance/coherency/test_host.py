"""Changes made on the host, and how soon the mount shows them, per cache mode.

Each rule first lets the mount see the old state (so the kernel may cache it), then changes the
backing directory directly and looks through the mount until the change shows or the deadline
passes. Under cache=always a change may stay stale until invalidated: reported, not failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from conformance.coherency.conftest import Coherent, Sides
from conformance.coherency.modes import SEED, WRITEBACK_WHY, expected
from conformance.coherency.observe import coherency_rule, judge, look

OLD, NEW = b"o" * 4096, b"n" * 4096
DIR_C = "linux fs/fuse/dir.c fuse_dentry_revalidate (entry_valid), fuse_update_get_attr (attr_valid)"
FILE_C = "linux fs/fuse/file.c fuse_finish_open (no FOPEN_KEEP_CACHE: the page cache is dropped)"


def exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def read_through(path: Path) -> bytes:
    """Open, read and close: what a new open of the file shows (close-to-open)."""
    with open(path, "rb") as f:
        return f.read()


def observe(rule_id: str, scenario: str, kind: str, coherent: Coherent,
            change: Callable[[], None], shows: Callable[[], bool]) -> None:
    """Make the host-side ``change`` and look through the mount until ``shows``."""
    assert not shows(), f"{scenario}: the mount shows the change before it was made"
    change()
    since = time.monotonic()
    seen = look(shows, since)
    judge(rule_id, scenario, coherent.mode, expected(kind, coherent.mode), seen,
          WRITEBACK_WHY.get(kind, "") if coherent.mode.writeback else "")


def _create(path: Path) -> None:
    path.write_bytes(b"n")


def _host_write(path: Path, data: bytes) -> None:
    """Overwrite in place (same inode, same size), as an editor writing through would."""
    with open(path, "r+b") as f:
        f.write(data)


@coherency_rule(
    "COHERENCY-HOST-001",
    "A file's new content written on the host is read by the next open through the mount:"
    " at once under cache=none and cache=auto (close-to-open); cache=always may keep the "
    "old pages",
    source=f"{SEED}; {FILE_C}")
def test_content_at_next_open(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "f").write_bytes(OLD)
    assert read_through(sides.mount / "f") == OLD  # now in the page cache
    observe("COHERENCY-HOST-001", "host writes new content, the mount reopens", "data", coherent,
            lambda: _host_write(sides.host / "f", NEW), lambda: read_through(sides.mount / "f") == NEW)


@coherency_rule(
    "COHERENCY-HOST-002",
    "A chmod on the host shows in stat(2) through the mount: at once under cache=none, "
    "within the attribute timeout under cache=auto; cache=always may stay stale",
    source=f"{SEED}; {DIR_C}")
def test_mode_change(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "f").write_bytes(b"x")
    os.chmod(sides.mount / "f", 0o644)
    assert os.stat(sides.mount / "f").st_mode & 0o7777 == 0o644
    observe("COHERENCY-HOST-002", "host chmods a file", "attr", coherent,
            lambda: os.chmod(sides.host / "f", 0o600),
            lambda: os.stat(sides.mount / "f").st_mode & 0o7777 == 0o600)


@coherency_rule(
    "COHERENCY-HOST-003",
    "A file grown on the host shows its new size through the mount: at once under "
    "cache=none, within the attribute timeout under cache=auto; cache=always, and any "
    "mode with a writeback cache (the kernel keeps the size), may stay stale",
    source=f"{SEED}; {DIR_C}; linux fs/fuse/inode.c fuse_change_attributes_i")
def test_size_change(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "f").write_bytes(b"s" * 100)
    assert os.stat(sides.mount / "f").st_size == 100
    observe("COHERENCY-HOST-003", "host grows a file", "size", coherent,
            lambda: os.truncate(sides.host / "f", 5000),
            lambda: os.stat(sides.mount / "f").st_size == 5000)


@coherency_rule(
    "COHERENCY-HOST-004",
    "A name created on the host is found through the mount after a failed lookup of it: "
    "at once under cache=none, within the entry timeout under cache=auto; cache=always "
    "may stay stale",
    source=f"{SEED}; {DIR_C}")
def test_new_name(coherent: Coherent, sides: Sides) -> None:
    assert not exists(sides.mount / "new")
    observe("COHERENCY-HOST-004", "host creates a name", "name", coherent,
            lambda: _create(sides.host / "new"), lambda: exists(sides.mount / "new"))


@coherency_rule(
    "COHERENCY-HOST-005",
    "A name removed on the host is gone through the mount: at once under cache=none, "
    "within the entry timeout under cache=auto; cache=always may stay stale",
    source=f"{SEED}; {DIR_C}")
def test_removed_name(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "gone").write_bytes(b"g")
    assert exists(sides.mount / "gone")
    observe("COHERENCY-HOST-005", "host removes a name", "name", coherent,
            lambda: os.unlink(sides.host / "gone"), lambda: not exists(sides.mount / "gone"))


@coherency_rule(
    "COHERENCY-HOST-006",
    "A rename on the host shows through the mount (the old name gone, the new one found):"
    " at once under cache=none, within the entry timeout under cache=auto; cache=always "
    "may stay stale",
    source=f"{SEED}; {DIR_C}")
def test_renamed(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "a").write_bytes(b"r")
    assert exists(sides.mount / "a") and not exists(sides.mount / "b")
    observe("COHERENCY-HOST-006", "host renames a file", "name", coherent,
            lambda: os.rename(sides.host / "a", sides.host / "b"),
            lambda: not exists(sides.mount / "a") and exists(sides.mount / "b"))
