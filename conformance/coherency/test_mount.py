"""Writes made through the mount, and when the host sees them: after write(2), fsync, close, msync.

Without a writeback cache a write(2) reaches the server before it returns; with one
(FUSE_WRITEBACK_CACHE) the data waits in the page cache until writeback, fsync or close, and what
the host saw before that is reported, not failed. fsync, close and msync always deliver it.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import allure
import pytest

from conformance.coherency.conftest import Coherent, Sides
from conformance.coherency.modes import SEED, WRITEBACK_WHY, expected
from conformance.coherency.observe import coherency_rule, judge, look

OLD, NEW = b"o" * 8192, b"n" * 8192
FILE_C = ("linux fs/fuse/file.c fuse_cache_write_iter / fuse_perform_write (write-through), "
          "fuse_fsync, fuse_flush (write_inode_now), fuse_file_mmap")


def host_has(path: Path, data: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read() == data


@contextmanager
def written(sides: Sides) -> Iterator[int]:
    """A file holding OLD on both sides, open through the mount with NEW written over it."""
    (sides.mount / "f").write_bytes(OLD)
    assert host_has(sides.host / "f", OLD), "a file written and closed through the mount is not on the host"
    fd = os.open(sides.mount / "f", os.O_WRONLY)
    try:
        assert os.pwrite(fd, NEW, 0) == len(NEW)
        yield fd
    finally:
        os.close(fd)


def then(rule_id: str, scenario: str, kind: str, coherent: Coherent, sides: Sides) -> None:
    """Look on the host for NEW from now on, judged by ``kind``'s expectation."""
    seen = look(lambda: host_has(sides.host / "f", NEW), time.monotonic())
    why = WRITEBACK_WHY.get(kind, "") if coherent.mode.writeback else ""
    judge(rule_id, scenario, coherent.mode, expected(kind, coherent.mode), seen, why)


def before(sides: Sides) -> None:
    """What the host held before the call that must deliver the data (reported)."""
    held = "the new data" if host_has(sides.host / "f", NEW) else "the old data"
    allure.dynamic.parameter("host before", held, excluded=True)


@coherency_rule(
    "COHERENCY-MOUNT-001",
    "Without a writeback cache the host holds what a write(2) through the mount wrote as "
    "soon as it returns; with one it may wait for writeback, fsync or close",
    source=f"{SEED}; {FILE_C}")
def test_write_reaches_host(coherent: Coherent, sides: Sides) -> None:
    with written(sides):
        then("COHERENCY-MOUNT-001", "mount writes, file still open", "write", coherent, sides)


@coherency_rule(
    "COHERENCY-MOUNT-002",
    "After fsync(2) through the mount returns, the host holds the data written, in every "
    "mode",
    source=f"{SEED}; {FILE_C}", level="must")  # fsync(2), close(2): POSIX's word too
def test_fsync_reaches_host(coherent: Coherent, sides: Sides) -> None:
    with written(sides) as fd:
        before(sides)
        os.fsync(fd)
        then("COHERENCY-MOUNT-002", "mount writes, then fsync", "fsync", coherent, sides)


@coherency_rule(
    "COHERENCY-MOUNT-003",
    "After close(2) through the mount returns, the host holds the data written, in every "
    "mode (the kernel flushes dirty pages at close)",
    source=f"{SEED}; {FILE_C}", level="must")  # fsync(2), close(2): POSIX's word too
def test_close_reaches_host(coherent: Coherent, sides: Sides) -> None:
    with written(sides):
        before(sides)
    then("COHERENCY-MOUNT-003", "mount writes, then close", "close", coherent, sides)


@coherency_rule(
    "COHERENCY-MOUNT-004",
    "A store into a MAP_SHARED mapping of a file of the mount is on the host once "
    "msync(MS_SYNC) returns",
    source=f"{SEED}; {FILE_C}; msync(2)")
def test_msync_reaches_host(coherent: Coherent, sides: Sides) -> None:
    (sides.mount / "f").write_bytes(OLD)
    fd = os.open(sides.mount / "f", os.O_RDWR)
    try:
        try:
            mapped = mmap.mmap(fd, len(OLD), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            if exc.errno == errno.ENODEV and coherent.mode.cache == "none":
                pytest.skip("not applicable: under cache=none (FOPEN_DIRECT_IO) the kernel refuses a "
                            "shared mapping unless FUSE_DIRECT_IO_ALLOW_MMAP was agreed "
                            "(fs/fuse/file.c fuse_file_mmap)")
            raise
        with mapped:
            mapped[:] = NEW
            before(sides)
            mapped.flush()  # msync(MS_SYNC)
            then("COHERENCY-MOUNT-004", "mount stores into a shared mapping, then msync", "msync",
                 coherent, sides)
    finally:
        os.close(fd)
