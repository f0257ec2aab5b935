"""The reference server's host backend (``ref:source=DIR``): HostFilesystem on a scratch
directory, the server answering from it, and the conformance rules through a mount of it."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import constants as c
from protocol.events import Reply
from protocol.layers import FuseGetattrIn, FuseName
from protocol.session import KernelSession
from targets import fusedev
from targets.daemons import populate, reference_argv, reference_source
from targets.errors import TargetSpecError
from targets.mounts import ReferenceMount, mount_spec, open_mount_target
from targets.reference.fs import ROOT, Cred, FsError
from targets.reference.host import HostFilesystem
from targets.reference.server import Options, ReferenceServer
from targets.skip import require
from tests.helpers import all_rules, rule_outcomes, run_conformance

USER = Cred(uid=1000, gid=1000, groups=(1000,))
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir(mode=0o755)
    return root


@pytest.fixture
def host(source: Path) -> Iterator[HostFilesystem]:
    fs = HostFilesystem(source)
    yield fs
    fs.close()


def root_only() -> None:
    require(os.geteuid() == 0, "HostFilesystem gives files to their callers with chown: needs root")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def errno_of(call: object) -> int:
    with pytest.raises(FsError) as info:
        call()  # type: ignore[operator]
    return info.value.errno or 0


# -- HostFilesystem on a scratch directory -----------------------------------------
def test_create_write_read_rename_link_unlink(host: HostFilesystem, source: Path) -> None:
    inode, fh = host.create(1, b"f", stat.S_IFREG | 0o666, os.O_RDWR, ROOT, umask=0o022)
    assert stat.S_IMODE(inode.mode) == 0o644 and inode.ino == os.stat(source / "f").st_ino
    assert host.write(fh, 0, b"hello, host") == 11
    assert host.read(fh, 7, 100) == b"host" and (source / "f").read_bytes() == b"hello, host"
    host.release(fh)
    host.rename(1, b"f", 1, b"g", ROOT)
    assert sorted(os.listdir(source)) == ["g"]
    linked = host.link(inode.ino, 1, b"h", ROOT)
    assert linked.ino == inode.ino and linked.nlink == 2
    host.unlink(1, b"g", ROOT)
    assert host.getattr(inode.ino).nlink == 1 and (source / "h").read_bytes() == b"hello, host"
    assert errno_of(lambda: host.lookup(1, b"g", ROOT)) == errno.ENOENT
    assert errno_of(lambda: host.rename(1, b"h", 1, b"x", ROOT, flags=4)) == errno.EINVAL


def test_forget_closes_the_fd_at_zero(host: HostFilesystem, source: Path) -> None:
    (source / "f").write_text("x")
    before = open_fds()
    ino = host.lookup(1, b"f", ROOT).ino
    assert host.lookup(1, b"f", ROOT).ino == ino and open_fds() == before + 1  # one fd a node
    host.forget(ino, 1)
    assert ino in host.nodes and open_fds() == before + 1
    host.forget(ino, 1)
    assert ino not in host.nodes and open_fds() == before
    assert errno_of(lambda: host.getattr(ino)) == errno.ENOENT
    host.forget(1, 100)  # the root stays
    assert host.getattr(1).ino == 1 and stat.S_ISDIR(host.getattr(1).mode)


def test_names_stay_inside_the_source(host: HostFilesystem, source: Path) -> None:
    for name in (b"../x", b"a/b", b"", b"a\0b"):
        assert errno_of(lambda name=name: host.lookup(1, name, ROOT)) == errno.EINVAL
    assert errno_of(lambda: host.lookup(1, b"n" * 256, ROOT)) == errno.ENAMETOOLONG
    assert host.lookup(1, b"..", ROOT).ino == 1 and host.lookup(1, b".", ROOT).ino == 1
    sub = host.mkdir(1, b"d", 0o755, ROOT)
    assert host.lookup(sub.ino, b"..", ROOT).ino == 1


def test_xattrs(host: HostFilesystem, source: Path) -> None:
    (source / "f").write_text("x")
    ino = host.lookup(1, b"f", ROOT).ino
    host.setxattr(ino, b"user.a", b"1", 0, ROOT)
    assert errno_of(lambda: host.setxattr(ino, b"user.a", b"2", 1, ROOT)) == errno.EEXIST
    assert errno_of(lambda: host.setxattr(ino, b"user.b", b"2", 2, ROOT)) == errno.ENODATA
    host.setxattr(ino, b"user.b", b"22", 0, ROOT)
    assert host.getxattr(ino, b"user.b", ROOT) == b"22" and os.getxattr(source / "f", "user.a") == b"1"
    assert sorted(host.listxattr(ino, ROOT)) == [b"user.a", b"user.b"]
    host.removexattr(ino, b"user.a", ROOT)
    assert errno_of(lambda: host.getxattr(ino, b"user.a", ROOT)) == errno.ENODATA
    assert errno_of(lambda: host.removexattr(ino, b"user.a", ROOT)) == errno.ENODATA
    assert errno_of(lambda: host.getxattr(ino, b"system.posix_acl_access", ROOT)) == errno.EOPNOTSUPP


def test_fallocate_and_lseek(host: HostFilesystem, source: Path) -> None:
    _inode, fh = host.create(1, b"f", stat.S_IFREG | 0o644, os.O_RDWR, ROOT)
    host.fallocate(fh, 0, 0, 65536)
    assert os.stat(source / "f").st_size == 65536
    host.fallocate(fh, FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
    assert os.stat(source / "f").st_size == 65536
    host.write(fh, 0, b"x" * 65536)
    host.fallocate(fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 32768)
    assert host.read(fh, 0, 4) == b"\0" * 4 and host.read(fh, 32768, 2) == b"xx"
    assert host.lseek(fh, 0, os.SEEK_DATA) == 32768 and host.lseek(fh, 32768, os.SEEK_HOLE) == 65536
    assert errno_of(lambda: host.lseek(fh, 65536, os.SEEK_DATA)) == errno.ENXIO
    assert errno_of(lambda: host.lseek(fh, 0, os.SEEK_END)) == errno.EINVAL
    assert errno_of(lambda: host.fallocate(fh, 0, 0, 0)) == errno.EINVAL
    _inode, out = host.create(1, b"g", stat.S_IFREG | 0o644, os.O_WRONLY, ROOT)
    assert host.copy_file_range(fh, 32768, out, 0, 100) == 100
    assert (source / "g").read_bytes() == b"x" * 100
    assert errno_of(lambda: host.read(out, 0, 1)) == errno.EBADF  # a write-only handle


def test_writeback_reads_through_write_only_handles(source: Path) -> None:
    """With the writeback cache the kernel fills pages through any handle and places O_APPEND
    writes itself: a write-only handle reads, and an offset is an offset."""
    (source / "f").write_bytes(b"0123456789")
    fs = HostFilesystem(source, writeback=True)
    try:
        fh = fs.open(fs.lookup(1, b"f", ROOT).ino, os.O_WRONLY | os.O_APPEND, ROOT)
        assert fs.read(fh, 0, 4) == b"0123"
        fs.write(fh, 2, b"ab")
        assert (source / "f").read_bytes() == b"01ab456789"
        fs.release(fh)
    finally:
        fs.close()
    plain = HostFilesystem(source)
    try:
        fh = plain.open(plain.lookup(1, b"f", ROOT).ino, os.O_WRONLY | os.O_APPEND, ROOT)
        assert errno_of(lambda: plain.read(fh, 0, 4)) == errno.EBADF
        plain.write(fh, 2, b"cd")  # O_APPEND: at the end, whatever the offset
        assert (source / "f").read_bytes() == b"01ab456789cd"
        plain.release(fh)
    finally:
        plain.close()


def test_special_files_are_never_opened_on_the_host(host: HostFilesystem, source: Path) -> None:
    """A FIFO opened for writing would block the server: its handle refuses I/O (as the model)."""
    fifo = host.mknod(1, b"p", stat.S_IFIFO | 0o644, 0, ROOT)
    fh = host.open(fifo.ino, os.O_WRONLY, ROOT)
    assert errno_of(lambda: host.write(fh, 0, b"x")) == errno.EINVAL
    host.release(fh)
    _inode, fh = host.create(1, b"p", stat.S_IFREG | 0o644, os.O_WRONLY, ROOT)  # the name exists
    assert errno_of(lambda: host.write(fh, 0, b"x")) == errno.EINVAL
    host.release(fh)
    assert errno_of(lambda: host.create(1, b"p", 0o644, os.O_WRONLY | os.O_EXCL, ROOT)) == errno.EEXIST


def test_readdir_offsets(host: HostFilesystem, source: Path) -> None:
    for name in ("a", "b", "c"):
        (source / name).write_text(name)
    (source / "d").mkdir()
    fh = host.opendir(1, ROOT)
    listing = host.readdir(fh, 0)
    names = [name for name, *_ in listing]
    assert names[:2] == [b".", b".."] and sorted(names[2:]) == [b"a", b"b", b"c", b"d"]
    types = {name: kind for name, _ino, kind, _off in listing}
    assert types[b"d"] == stat.S_IFDIR >> 12 and types[b"a"] == stat.S_IFREG >> 12
    inos = {name: ino for name, ino, _kind, _off in listing}
    assert inos[b"."] == inos[b".."] == 1 and inos[b"a"] == os.stat(source / "a").st_ino
    (source / "e").write_text("e")  # behind the handle's back: not in its snapshot
    for _name, _ino, _kind, off in listing:
        assert [n for n, *_ in host.readdir(fh, off)] == names[off:]
    again = host.opendir(1, ROOT)  # a fresh handle, the same directory: the same positions
    assert [n for n, *_ in host.readdir(again, 3)] == [n for n, *_ in host.readdir(again, 0)][3:]
    assert b"e" in [n for n, *_ in host.readdir(fh, 0)]  # offset 0 again: a rewind sees it
    host.releasedir(again)
    host.releasedir(fh)
    sub = host.lookup(1, b"d", ROOT).ino
    fh = host.opendir(sub, ROOT)
    assert [(n, i) for n, i, *_ in host.readdir(fh, 0)] == [(b".", sub), (b"..", 1)]
    host.rmdir(1, b"d", ROOT)
    assert errno_of(lambda: host.readdir(fh, 0)) == errno.ENOENT  # read again after removal
    host.releasedir(fh)
    assert errno_of(lambda: host.readdir(fh, 0)) == errno.EBADF


def test_new_inodes_belong_to_the_caller(host: HostFilesystem, source: Path) -> None:
    root_only()
    os.chmod(source, 0o777)
    made = host.mkdir(1, b"d", 0o777, USER, umask=0o022)
    inode, fh = host.create(1, b"f", stat.S_IFREG | 0o4755, os.O_WRONLY, USER, umask=0o022)
    host.release(fh)
    link = host.symlink(1, b"l", b"f", USER)
    fifo = host.mknod(1, b"p", stat.S_IFIFO | 0o666, 0, USER, umask=0o077)
    expected = (("d", made, 0o755), ("f", inode, 0o4755), ("l", link, 0o777), ("p", fifo, 0o600))
    for name, node, mode in expected:
        st = os.lstat(source / name)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, mode), name
        assert (node.uid, node.gid, stat.S_IMODE(node.mode)) == (1000, 1000, mode), name
    assert errno_of(lambda: host.mknod(1, b"null", stat.S_IFCHR | 0o666, 0x103, USER)) == errno.EPERM


def test_setgid_directory_rule(host: HostFilesystem, source: Path) -> None:
    root_only()
    shared = source / "shared"
    shared.mkdir()
    os.chown(shared, 0, 50)
    os.chmod(shared, 0o2777)
    parent = host.lookup(1, b"shared", ROOT).ino
    sub = host.mkdir(parent, b"sub", 0o755, USER)
    assert sub.gid == 50 and sub.mode & stat.S_ISGID  # the group, and sgid for directories
    member = Cred(uid=1000, gid=1000, groups=(1000, 50))
    for name, cred, keeps in ((b"mine", member, True), (b"theirs", USER, False)):
        inode, fh = host.create(parent, name, stat.S_IFREG | 0o2755, os.O_WRONLY, cred)
        host.release(fh)
        st = os.stat(shared / os.fsdecode(name))
        assert st.st_gid == 50 and bool(st.st_mode & stat.S_ISGID) == keeps, name
        assert inode.mode == st.st_mode


def test_suid_dropped_as_the_model_drops_it(host: HostFilesystem, source: Path) -> None:
    root_only()
    target = source / "f"
    target.write_text("x")
    os.chown(target, 1000, 1000)
    os.chmod(target, 0o6755)
    ino = host.lookup(1, b"f", ROOT).ino
    fh = host.open(ino, os.O_WRONLY, ROOT)
    host.write(fh, 0, b"root")  # CAP_FSETID: nothing dropped
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o6755
    host.write(fh, 0, b"kill", kill_suidgid=True)  # the kernel says so
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    host.release(fh)
    os.chmod(target, 0o6755)
    fh = host.open(ino, os.O_WRONLY, USER)
    host.write(fh, 0, b"user")
    host.release(fh)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    os.chmod(target, 0o6755)
    host.setattr(ino, USER, size=1)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    os.chmod(target, 0o4755)
    assert stat.S_IMODE(host.setattr(ino, ROOT, uid=0).mode) == 0o755  # chown drops suid
    outsider = Cred(uid=1000, gid=2000)  # the owner, not in the file's group (1000)
    assert stat.S_IMODE(host.setattr(ino, outsider, mode=0o2755).mode) == 0o755
    assert stat.S_IMODE(host.setattr(ino, USER, mode=0o2755).mode) == 0o2755


def test_setattr_times_and_tmpfile(host: HostFilesystem, source: Path) -> None:
    (source / "f").write_text("x")
    ino = host.lookup(1, b"f", ROOT).ino
    done = host.setattr(ino, ROOT, atime=5_000_000_007, mtime=6_000_000_009)
    assert (done.atime, done.mtime) == (5_000_000_007, 6_000_000_009)
    kept = host.setattr(ino, ROOT, mtime_now=True)
    assert kept.atime == 5_000_000_007 and kept.mtime > time.time_ns() - 10 * 10**9
    before_1970 = ((-5) % (1 << 64)) * 10**9 + 7  # the kernel's unsigned seconds, as the model keeps them
    assert host.setattr(ino, ROOT, atime=before_1970).atime == before_1970
    assert os.stat(source / "f").st_atime_ns == -5 * 10**9 + 7
    inode, fh = host.tmpfile(1, 0o600, ROOT)
    assert inode.nlink == 0 and os.listdir(source) == ["f"]
    host.write(fh, 0, b"unnamed")
    assert host.link(inode.ino, 1, b"named", ROOT).nlink == 1
    host.release(fh)
    assert (source / "named").read_bytes() == b"unnamed"


def test_server_answers_from_the_host(source: Path) -> None:
    """The protocol side unchanged: a kernel session against ReferenceServer(HostFilesystem)."""
    populate(source)
    fs = HostFilesystem(source)
    server = ReferenceServer(fs, Options(source=str(source)))
    kernel = KernelSession()

    def call(data: bytes) -> Reply:
        answer = server.handle(data)
        assert answer is not None
        reply = kernel.receive(answer)
        assert isinstance(reply, Reply) and not reply.findings, reply
        return reply

    try:
        assert call(kernel.init()).ok
        found = call(kernel.request(c.FUSE_LOOKUP, FuseName(name=b"hello.txt"), nodeid=1))
        assert found.ok and found.body is not None
        assert int(found.body.attr.size) == 17
        assert int(found.body.nodeid) == (source / "hello.txt").stat().st_ino  # the host's inode number
        attr = call(kernel.request(c.FUSE_GETATTR, FuseGetattrIn(), nodeid=1))
        assert attr.ok and attr.body is not None and int(attr.body.attr.ino) == 1
        assert call(kernel.request(c.FUSE_LOOKUP, FuseName(name=b"absent"), nodeid=1)).error == -errno.ENOENT
    finally:
        fs.close()


# -- the spec: ref:source=DIR and ref:source ----------------------------------------
def test_source_in_the_spec(tmp_path: Path) -> None:
    options, served = reference_source(tmp_path, {"source": True, "cache": "none"})
    assert served == tmp_path / "source" and (served / "hello.txt").is_file()
    argv = reference_argv(options, "MNT")
    assert argv[argv.index("--source") + 1] == str(served) and argv[-1] == "MNT"
    assert reference_source(tmp_path, {"cache": "none"}) == ({"cache": "none"}, None)
    with pytest.raises(TargetSpecError, match="not a directory"):
        reference_source(tmp_path, {"source": str(tmp_path / "absent")})
    with pytest.raises(TargetSpecError, match="source"):
        reference_argv({"source": True})
    result = subprocess.run([sys.executable, "-m", "targets.reference", str(tmp_path),
                             "--source", str(tmp_path / "absent")], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False, timeout=60)
    assert result.returncode == 2 and "not a directory" in result.stderr


def fuse_usable() -> None:
    require(os.geteuid() == 0, "mounting the reference server needs root (mount(2), allow_other)")
    require(os.access(fusedev.FUSE_DEVICE, os.R_OK | os.W_OK), f"{fusedev.FUSE_DEVICE} is not usable")


def test_host_changes_show_through_the_mount() -> None:
    """With cache=none a change made on the host, behind the server's back, shows at once."""
    fuse_usable()
    with open_mount_target(mount_spec("ref:source,cache=none")) as target:
        assert isinstance(target, ReferenceMount) and target.backing is not None
        host, mount = target.backing, target.path
        assert sorted(os.listdir(mount)) == ["dir", "hello.txt", "link"]
        (host / "behind").write_bytes(b"made on the host\n")
        assert "behind" in os.listdir(mount)
        assert (mount / "behind").read_bytes() == b"made on the host\n"
        (host / "behind").write_bytes(b"changed on the host, and longer\n")
        assert (mount / "behind").read_bytes() == b"changed on the host, and longer\n"
        assert os.stat(mount / "behind").st_ino == os.stat(host / "behind").st_ino
        (host / "behind").unlink()
        assert "behind" not in os.listdir(mount) and not (mount / "behind").exists()
        (mount / "through").write_text("through the mount")
        assert (host / "through").read_text() == "through the mount"
    assert target.closed and not fusedev.is_mounted(target.path)


def test_rules_pass_against_a_served_directory(tmp_path: Path) -> None:
    """Every rule (protocol over a socket, POSIX through a mount) passes or is not applicable
    with ``ref:source=DIR``; the backing dir is known, so POSIX-BACKING-001 runs."""
    fuse_usable()
    served = tmp_path / "served"
    populate(served)
    served.chmod(0o755)  # other users reach the mount's root
    result = run_conformance(f"ref:source={served}")
    found = rule_outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert set(found) == all_rules(), f"rules without a result line: {all_rules() - set(found)}"
    assert all(o <= {"PASSED", "SKIPPED"} for o in found.values()), result.stdout[-3000:]
    assert found["POSIX-BACKING-001"] == {"PASSED"} and found["FUSE-READ-001"] == {"PASSED"}
    assert sorted(os.listdir(served)) == ["dir", "hello.txt", "link"]  # the rules cleaned up
