"""FIFOs, devices and sockets as names (mknod, bind, rename, unlink), open's errnos by file type,
and an unlinked open file: against tmpfs."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.rules import rule

POSIX = "POSIX.1-2017"
LINUX = "Linux man-pages"
AREA = "posix"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path less the NUL


def need(features: frozenset[str], feature: str) -> None:
    if feature not in features:
        pytest.skip(f"not applicable: the target does not offer {feature}")


def _nodes(root: Path) -> None:
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(root / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    os.mknod(root / "sock", stat.S_IFSOCK | 0o644)


@rule("POSIX-MKNOD-002", "mknod makes block devices (with their rdev) and socket nodes too; mkfifo "
      "and mknod on an existing name fail with EEXIST", source=f"{POSIX} mknod(), mkfifo(): EEXIST; "
      f"{LINUX} mknod(2): S_IFSOCK", area=AREA)
def test_mknod_types(twin: Twin, features: frozenset[str]) -> None:
    need(features, "mknod")
    twin.same(_nodes, "mkfifo, mknod chr, blk and sock")
    for name, kind in (("fifo", stat.S_IFIFO), ("chr", stat.S_IFCHR), ("blk", stat.S_IFBLK),
                       ("sock", stat.S_IFSOCK)):
        assert twin.same_stat(name, name, follow=False)["type"] == kind
    assert twin.same(lambda r: os.stat(r / "blk").st_rdev, "rdev").value == os.makedev(7, 200)
    for what, call in [("mkfifo over a FIFO", lambda r: os.mkfifo(r / "fifo")),
                       ("mkfifo over a device", lambda r: os.mkfifo(r / "blk")),
                       ("mknod over a FIFO", lambda r: os.mknod(r / "fifo", stat.S_IFCHR, os.makedev(1, 3)))]:
        assert twin.same(call, what).error == "EEXIST"


@rule("POSIX-UNLINK-003", "FIFOs, devices and sockets are renamed (keeping type and rdev) and unlinked "
      "like files", source=f"{POSIX} rename(), unlink()", area=AREA)
def test_special_files_rename_unlink(twin: Twin, features: frozenset[str]) -> None:
    need(features, "mknod")
    twin.same(lambda r: (_nodes(r), os.mkdir(r / "d")), "nodes")
    for name in ("fifo", "chr", "blk", "sock"):
        twin.same(lambda r, name=name: os.rename(r / name, r / "d" / name), f"rename {name}")  # type: ignore[misc]
        twin.same_stat(f"d/{name}", f"{name} moved", follow=False)
    assert twin.same(lambda r: os.stat(r / "d" / "chr").st_rdev, "rdev").value == os.makedev(1, 3)
    assert twin.same_listing() == ["d"]
    for name in ("fifo", "chr", "blk", "sock"):
        twin.same(lambda r, name=name: os.unlink(r / "d" / name), f"unlink {name}")  # type: ignore[misc]
    assert twin.same_listing("d") == []


@contextlib.contextmanager
def _listening(path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(os.fspath(path))
        server.listen(1)
        yield server
    finally:
        server.close()


@rule("POSIX-SOCKET-001", "bind of a UNIX socket makes an S_IFSOCK node in the directory, a client "
      "connects to it by that path, and unlink removes it", source=f"{LINUX} unix(7): pathname sockets",
      area=AREA)
def test_bind_socket(twin: Twin, features: frozenset[str]) -> None:
    need(features, "mknod")
    if max(len(os.fsencode(root / "s")) for root in (twin.target, twin.reference)) > SUN_PATH_MAX:
        pytest.skip("not applicable: the mount's path is too long for a sockaddr_un")

    def serve(root: Path) -> bytes:
        with _listening(root / "s") as server:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with client:
                client.settimeout(5)
                client.connect(os.fspath(root / "s"))
                peer, _ = server.accept()
                with peer:
                    peer.sendall(b"hello")
                    return client.recv(5)

    assert twin.same(serve, "bind, connect, send").value == b"hello"
    assert twin.same_stat("s", "bound socket", follow=False)["type"] == stat.S_IFSOCK
    assert twin.same(lambda r: socket.socket(socket.AF_UNIX).bind(os.fspath(r / "s")), "bind again"
                     ).error == "EADDRINUSE"
    twin.same(lambda r: os.unlink(r / "s"), "unlink")
    assert twin.same_listing() == []


@rule("POSIX-OPEN-006", "open fails with EISDIR for a directory opened for writing, ENXIO for a "
      "socket, and ENXIO for a FIFO opened O_WRONLY|O_NONBLOCK without a reader",
      source=f"{POSIX} open(): EISDIR, ENXIO; {LINUX} open(2): ENXIO for a UNIX socket", area=AREA)
def test_open_errnos_by_type(twin: Twin, features: frozenset[str]) -> None:
    twin.same(lambda r: os.mkdir(r / "d"), "setup")
    cases: list[tuple[str, Callable[[Path], int], str]] = [
        ("directory O_WRONLY", lambda r: os.open(r / "d", os.O_WRONLY), "EISDIR"),
        ("directory O_RDWR", lambda r: os.open(r / "d", os.O_RDWR), "EISDIR")]
    if "mknod" in features:
        twin.same(lambda r: (os.mkfifo(r / "p"), os.mknod(r / "s", stat.S_IFSOCK | 0o644)), "FIFO, socket")
        cases += [("socket", lambda r: os.open(r / "s", os.O_RDONLY), "ENXIO"),
                  ("FIFO without reader", lambda r: os.open(r / "p", os.O_WRONLY | os.O_NONBLOCK), "ENXIO")]
    for what, call, error in cases:
        assert twin.same(call, f"open {what}").error == error


@rule("POSIX-UNLINK-002", "fstat of an open file whose last name was unlinked shows nlink 0, and the "
      "file stays readable and writable through its descriptor", source=f"{POSIX} unlink(): 'the "
      "removal of the file contents shall be postponed until all references ... closed'; fstat()",
      area=AREA)
def test_unlinked_open_file(twin: Twin) -> None:
    def run(root: Path) -> tuple[int, int, bytes]:
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"before")
            os.unlink(root / "f")
            os.pwrite(fd, b"after", 6)
            st = os.fstat(fd)
            return st.st_nlink, st.st_size, os.pread(fd, 20, 0)
        finally:
            os.close(fd)

    assert twin.same(run, "write, unlink, fstat, read").value == (0, 11, b"beforeafter")
    assert twin.same_listing() == []
