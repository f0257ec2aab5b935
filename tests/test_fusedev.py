"""targets.fusedev: mount(2) a /dev/fuse connection served by a thread; teardown that never leaks."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from targets import fusedev
from targets.skip import require
from tests.fakes.dev_server import FILE_DATA, FILE_NAME, STATFS, DevServer
from tests.helpers import ROOT


def fuse_usable() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "mount(2) of a FUSE connection needs root (CAP_SYS_ADMIN)"
    try:
        os.close(fusedev.open_fuse_device())
    except Exception as exc:
        return False, f"/dev/fuse is unusable: {exc}"
    return True, ""


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    usable, reason = fuse_usable()
    require(usable, reason)
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    assert fusedev.mounts_under(tmp_path) == [], "a mount outlived its test"


def stat_in_child(path: Path) -> subprocess.Popen[str]:
    """A stat of ``path`` in another process, which may hang for as long as the mount does."""
    code = "import os, sys; os.stat(sys.argv[1])"
    return subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True)


def test_mountinfo_parsing_unescapes_and_reads_dev() -> None:
    line = ("42 27 0:39 / /tmp/a\\040b rw,relatime shared:1 - fuse.devtest my\\134src "
            "rw,user_id=0,group_id=0\n")
    [entry] = fusedev.parse_mountinfo(line)
    assert entry.mount_point == "/tmp/a b" and entry.source == "my\\src"
    assert entry.fstype == "fuse.devtest" and entry.is_fuse and entry.dev == 39
    assert fusedev.mount_data(5, options=["default_permissions", "max_read=4096"]) == (
        "fd=5,rootmode=40000,user_id=0,group_id=0,default_permissions,max_read=4096")


def test_thread_served_mount_is_seen_by_stat_listdir_read_statfs(mountpoint: Path) -> None:
    with fusedev.fuse_mount(mountpoint, subtype="devtest") as (fd, conn_id):
        server = DevServer(fd).start()
        entry = fusedev.mount_at(mountpoint)
        assert entry is not None and entry.fstype == "fuse.devtest" and entry.source == "fusecheck"
        assert fusedev.connection_id(mountpoint) == conn_id == entry.dev
        assert "user_id=0,group_id=0" in entry.super_options
        root = os.stat(mountpoint)
        assert root.st_ino == 1 and oct(root.st_mode) == oct(0o40755) and root.st_dev == conn_id
        assert os.listdir(mountpoint) == [FILE_NAME]
        assert (mountpoint / FILE_NAME).read_bytes() == FILE_DATA
        assert os.stat(mountpoint / FILE_NAME).st_size == len(FILE_DATA)
        with pytest.raises(FileNotFoundError):
            os.stat(mountpoint / "absent")
        vfs = os.statvfs(mountpoint)
        assert (vfs.f_blocks, vfs.f_bfree, vfs.f_bavail, vfs.f_bsize) == (
            STATFS["blocks"], STATFS["bfree"], STATFS["bavail"], STATFS["bsize"])
        assert conn_id in fusedev.live_connections()
    assert server.join(5.0), "the server thread outlived the mount"
    assert server.ended == "ENODEV" and server.failure is None  # the connection ended with the unmount
    assert {"FUSE_INIT", "FUSE_GETATTR", "FUSE_LOOKUP", "FUSE_READDIR", "FUSE_STATFS"} <= set(server.seen)
    assert not fusedev.is_mounted(mountpoint)


def test_stopped_server_hung_stat_is_released_by_teardown(mountpoint: Path) -> None:
    with fusedev.fuse_mount(mountpoint) as (fd, _):
        server = DevServer(fd).start()
        assert os.listdir(mountpoint) == [FILE_NAME]
        server.stop()  # it stops answering: the mount is now hung
        child = stat_in_child(mountpoint)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.5)
    # The unmount was busy (the child is inside): the connection was aborted and detached.
    assert child.wait(5.0) == 1
    assert "ConnectionAbortedError" in (child.stderr.read() if child.stderr else "")
    assert not fusedev.is_mounted(mountpoint)


def test_abort_first_then_stat_fails_at_once(mountpoint: Path) -> None:
    with fusedev.fuse_mount(mountpoint) as (fd, conn_id):
        server = DevServer(fd).start()
        server.stop()
        assert fusedev.abort_connection(conn_id)
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            os.stat(mountpoint)
        assert info.value.errno in (errno.ECONNABORTED, errno.ENOTCONN)
        assert time.monotonic() - started < 2.0
    assert not fusedev.is_mounted(mountpoint)


def test_teardown_unmounts_when_the_body_raises(mountpoint: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), fusedev.fuse_mount(mountpoint) as (fd, _):
        DevServer(fd).start()
        assert fusedev.is_mounted(mountpoint)
        raise RuntimeError("boom")
    assert not fusedev.is_mounted(mountpoint)


def test_force_unmount_of_a_dead_mount_and_of_nothing(mountpoint: Path) -> None:
    fd = fusedev.open_fuse_device()
    try:
        conn_id = fusedev.mount_fuse(mountpoint, fd)
        assert fusedev.is_mounted(mountpoint)
    finally:
        os.close(fd)  # nobody serves it any more: the kernel aborts the connection
    with pytest.raises(OSError) as info:
        os.stat(mountpoint)
    assert info.value.errno in (errno.ECONNABORTED, errno.ENOTCONN)
    fusedev.force_unmount(mountpoint, conn_id)
    assert not fusedev.is_mounted(mountpoint)
    fusedev.force_unmount(mountpoint, conn_id)  # again: nothing there, quietly


CHILD = textwrap.dedent("""
    import os, socket, sys, time
    sys.path.insert(0, sys.argv[1])
    from targets import fusedev
    from tests.fakes.dev_server import DevServer
    mnt, pre, sock_fd = sys.argv[2], sys.argv[3], int(sys.argv[4])
    assert fusedev.enter_private_mount_namespace()
    assert fusedev.fusectl_mounted()
    seen = open(os.path.join(pre, "marker")).read()  # a mount made before: still there
    fd = fusedev.open_fuse_device()
    conn = fusedev.mount_fuse(mnt, fd)
    server = DevServer(fd).start()
    names = os.listdir(mnt)
    socket.send_fds(socket.socket(fileno=sock_fd), [f"{conn} {seen} {names[0]}".encode()], [fd])
    time.sleep(60)
""")


def test_private_namespace_mounts_die_with_a_sigkilled_process(mountpoint: Path, tmp_path: Path) -> None:
    pre = tmp_path / "pre"
    pre.mkdir()
    fusedev.sys_mount("tmpfs", pre, "tmpfs", 0, "size=1m")
    try:
        (pre / "marker").write_text("premounted")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ROOT), str(mountpoint), str(pre), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stderr=subprocess.PIPE, text=True)
        theirs.close()
        try:
            ours.settimeout(20)
            message, fds, _, _ = socket.recv_fds(ours, 256, 1)
            assert fds, f"child failed: {child.stderr.read() if child.stderr else ''}"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        dev_fd = fds[0]  # our copy of its /dev/fuse fd keeps the device open, not the mount
        try:
            _conn, seen, name = message.decode().split()
            assert (seen, name) == ("premounted", FILE_NAME)
            assert not fusedev.is_mounted(mountpoint), "the child's mount leaked into our namespace"
            # The namespace died with the child, so the mount, its superblock and the
            # connection went too: a read on the device says ENODEV.
            assert select.select([dev_fd], [], [], 10)[0] == [dev_fd]
            with pytest.raises(OSError) as info:
                os.read(dev_fd, 1 << 21)
            assert info.value.errno == errno.ENODEV
        finally:
            os.close(dev_fd)
            ours.close()
    finally:
        fusedev.unmount(pre)
