"""Assertions shared by the rules; each failure message explains what was seen."""

from __future__ import annotations

import errno

import pytest

from protocol.events import Notify, Reply
from targets.connection import KernelConnection

VIRTIO_FS = "virtio-fs"


def assert_well_formed(event: Reply | Notify, *codes: str) -> None:
    """No findings (or none of ``codes``, when given) on this message."""
    found = [f for f in event.findings if not codes or f.code in codes]
    assert not found, "; ".join(str(f) for f in found)


def errno_name(error: int) -> str:
    return errno.errorcode.get(-error, str(error)) if error else "success"


def assert_error(reply: Reply, expected: int, why: str) -> None:
    """The reply is the error ``-expected``."""
    assert reply.error == -expected, (
        f"{reply.opcode_name} answered {errno_name(reply.error)} ({reply.error}); "
        f"expected {errno_name(-expected)} (-{expected}): {why}")


def assert_absent(reply: Reply, why: str) -> None:
    """LOOKUP says the name does not exist: ENOENT, or a negative entry (nodeid 0)."""
    if reply.ok and reply.body is not None and int(reply.body.nodeid) == 0:
        return  # linux fs/fuse/dir.c fuse_lookup_name: nodeid 0 is a negative dentry
    assert_error(reply, 2, why)


def not_over_virtio_fs(conn: KernelConnection, why: str) -> None:
    """Not applicable when ``conn`` is a virtio-fs device: ``why`` says what differs there."""
    if conn.channel.transport == VIRTIO_FS:
        pytest.skip(f"not applicable over virtio-fs: {why}")
