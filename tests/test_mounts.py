"""targets.mounts: every suite-mounted filesystem mounts, serves, and always goes away; mount:PATH."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from targets import fusedev
from targets.errors import TargetDied, TargetError, TargetNotInstalled, TargetSpecError, TargetTimeout
from targets.mounts import (
    MOUNT_TARGETS,
    ExistingMount,
    Fuse2fs,
    FuseOverlayfs,
    MountTarget,
    ReferenceMount,
    SuiteMount,
    mount_spec,
    open_mount_target,
)
from targets.probe import FEATURES, probe_features
from targets.skip import require
from targets.spec import TargetSpec

Tree = dict[str, tuple[str, int, bytes]]


def fuse_usable() -> None:
    require(os.geteuid() == 0, "suite mounts need root (mount(2), allow_other, other-user probes)")
    require(os.access(fusedev.FUSE_DEVICE, os.R_OK | os.W_OK), f"{fusedev.FUSE_DEVICE} is not usable")


def usable(name: str) -> None:
    """Skip (fail under CI) unless ``name`` can be mounted here, naming what is missing."""
    fuse_usable()
    for requirement in MOUNT_TARGETS[name].requires:
        found = shutil.which(requirement.program)
        require(found, f"{name}: {requirement.program} not installed (apt-get install {requirement.package})")
    if name == "passthrough_ll":
        from targets import build

        try:
            build.build_example("passthrough_ll")
        except TargetNotInstalled as exc:
            require(False, f"passthrough_ll cannot be built: {exc.message}")


def suite_mount(text: str) -> SuiteMount:
    target = open_mount_target(mount_spec(text))
    assert isinstance(target, SuiteMount)
    return target


def tree(root: Path, hidden: Callable[[str, os.stat_result], bool] | None = None) -> Tree:
    """relative path -> (type, permission bits, content or link target)."""
    found: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            if hidden is not None and hidden(name, st):
                continue
            if stat.S_ISLNK(st.st_mode):
                data, kind = os.readlink(path).encode(), "link"
            elif stat.S_ISREG(st.st_mode):
                data, kind = path.read_bytes(), "file"
            else:
                data, kind = b"", "dir" if stat.S_ISDIR(st.st_mode) else oct(stat.S_IFMT(st.st_mode))
            found[str(path.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), data)
    return found


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (e.g. a unique scratch path)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def assert_gone(target: SuiteMount, scratch: Path) -> None:
    assert not fusedev.is_mounted(target.path)
    assert fusedev.mounts_under(scratch) == []
    assert not scratch.exists(), "scratch dir left behind"
    assert processes_mentioning(str(scratch)) == []
    assert target.daemon is not None and target.daemon.returncode is not None  # reaped


def expected_view(target: SuiteMount) -> Tree:
    """What the mount must show: its backing dir, or the tree fuse2fs's image was made from."""
    if isinstance(target, Fuse2fs | ReferenceMount):
        assert target.initial_tree is not None
        return tree(target.initial_tree)
    assert target.backing is not None
    return tree(target.backing, target.backing_hidden)


@pytest.mark.parametrize("name", sorted(MOUNT_TARGETS))
def test_mounts_serves_and_tears_down(name: str) -> None:
    usable(name)
    target = suite_mount(name)
    with target:
        assert target.scratch is not None
        scratch = target.scratch
        entry = fusedev.mount_at(target.path)
        assert entry is not None and entry.is_fuse and entry.dev == target.conn_id
        assert target.daemon is not None and target.daemon.alive()
        view = tree(target.path)
        view.pop("lost+found", None)  # fuse2fs: mkfs.ext4 makes it
        assert view == expected_view(target)
        if "readonly" in target.features:
            with pytest.raises(OSError) as info:
                (target.path / "new").write_text("x")
            assert info.value.errno == errno.EROFS
        else:
            (target.path / "made").mkdir()
            (target.path / "made" / "file").write_bytes(b"written through the mount\n")
            with open(target.path / "made" / "file", "ab") as f:
                f.write(b"appended\n")
            assert (target.path / "made" / "file").read_bytes() == b"written through the mount\nappended\n"
            assert "made" in os.listdir(target.path) and os.listdir(target.path / "made") == ["file"]
            os.rename(target.path / "hello.txt", target.path / "made" / "hello.txt")
            (target.path / "link").unlink()
            view = tree(target.path)
            view.pop("lost+found", None)
            if target.backing is not None:
                assert view == expected_view(target), "the mount and its backing dir differ"
                assert (target.backing / "made" / "file").read_bytes().endswith(b"appended\n")
    assert target.daemon is not None and target.daemon.returncode == 0
    assert_gone(target, scratch)


@pytest.mark.parametrize("name", sorted(MOUNT_TARGETS))
def test_declared_features_are_what_the_filesystem_does(name: str) -> None:
    usable(name)
    with open_mount_target(mount_spec(name)) as target:
        assert target.features <= FEATURES
        probed = probe_features(target.path)
        if "readonly" in target.features:
            assert probed == {"readonly"}  # nothing can be created to try the rest
            assert os.statvfs(target.path).f_flag & os.ST_RDONLY
        else:
            assert probed == set(target.features)
        assert not any(n.startswith(".fusecheck-probe") for n in os.listdir(target.path))


@pytest.mark.parametrize("name", sorted(MOUNT_TARGETS))
def test_sigkilled_daemon_leaves_no_stale_mount(name: str) -> None:
    usable(name)
    target = suite_mount(name)
    with pytest.raises(TargetDied) as info, target:
        assert target.scratch is not None and target.daemon is not None
        scratch = target.scratch
        os.kill(target.daemon.pid or 0, signal.SIGKILL)
        assert target.daemon.wait_exit(10) == -signal.SIGKILL
        with pytest.raises(OSError) as dead:
            os.listdir(target.path)  # the mount is still there, its connection is not
        assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        assert fusedev.is_mounted(target.path)
    assert info.value.signal_name == "SIGKILL"  # the strict teardown says how it died
    assert_gone(target, scratch)


def test_hung_daemon_after_a_failure_is_aborted_detached_and_killed() -> None:
    usable("fuse-overlayfs")
    target = FuseOverlayfs()
    with pytest.raises(RuntimeError, match="the test failed"), target:
        assert target.scratch is not None and target.daemon is not None
        scratch = target.scratch
        os.kill(target.daemon.pid or 0, signal.SIGSTOP)  # alive, answering nothing
        child = subprocess.Popen([sys.executable, "-c", "import os, sys; os.stat(sys.argv[1])",
                                  str(target.path / "hello.txt")], stderr=subprocess.DEVNULL)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.5)
        raise RuntimeError("the test failed")
    assert child.wait(10) == 1  # released by the abort, not left hanging
    assert target.daemon is not None and target.daemon.returncode == -signal.SIGKILL
    assert_gone(target, scratch)


def test_hung_daemon_after_a_pass_fails_the_strict_teardown() -> None:
    usable("bindfs")
    target = suite_mount("bindfs")
    with pytest.raises(TargetDied, match="did not exit"), target:
        assert target.scratch and target.daemon
        scratch = target.scratch
        target.exit_timeout = 0.5
        os.kill(target.daemon.pid or 0, signal.SIGSTOP)
    assert_gone(target, scratch)


def test_a_busy_mount_fails_the_strict_teardown_and_is_still_removed() -> None:
    usable("bindfs")
    target = suite_mount("bindfs")
    with pytest.raises(TargetError, match="cannot unmount") as info, target:
        assert target.scratch
        scratch = target.scratch
        held = os.open(target.path / "hello.txt", os.O_RDONLY)  # a test that forgot to close a file
    with pytest.raises(OSError) as closing:
        os.close(held)  # its FLUSH meets the aborted connection
    assert closing.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert "file open" in info.value.hint
    assert_gone(target, scratch)


def test_daemon_that_cannot_mount_fails_fast() -> None:
    usable("fuse-overlayfs")

    class Broken(FuseOverlayfs):
        def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
            return ["fuse-overlayfs", "-f", "-o", f"lowerdir={scratch}/absent", str(mountpoint)]

    target = Broken()
    with pytest.raises(TargetDied, match="before it was mounted"), target:
        pass
    assert target.scratch is None and target.daemon is not None and target.daemon.returncode != 0


def test_missing_program_is_target_not_installed_before_any_scratch(tmp_path: Path) -> None:
    from targets.daemons import Requirement

    class Absent(SuiteMount):
        name = "absentfs"
        requires = (Requirement("fusecheck-no-such-fs", "fusecheck-absentfs"),)

    with pytest.raises(TargetNotInstalled, match="fusecheck-no-such-fs"), \
            Absent(scratch_root=tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_options_are_passed_and_features_then_probed() -> None:
    usable("passthrough_ll")
    with open_mount_target(mount_spec("passthrough_ll:xattr")) as target:
        assert "xattr" in target.features and "xattr" not in type(target).declared
        assert target.daemon is not None and "xattr" in target.daemon.argv[3].split(",")


def test_bindfs_serves_a_backing_dir_of_the_user_and_leaves_it(tmp_path: Path) -> None:
    usable("bindfs")
    source = tmp_path / "mine"
    source.mkdir()
    (source / "keep.txt").write_text("the user's data\n")
    with open_mount_target(mount_spec("bindfs"), backing=source) as target:
        assert target.backing == source and os.listdir(target.path) == ["keep.txt"]
        (target.path / "new.txt").write_text("through bindfs\n")
    assert sorted(os.listdir(source)) == ["keep.txt", "new.txt"]  # served, never deleted
    assert (source / "keep.txt").read_text() == "the user's data\n"


def test_reference_server_serves_a_backing_dir_given_with_backing(tmp_path: Path) -> None:
    """``--target ref --backing DIR`` is ``ref:source=DIR``."""
    fuse_usable()
    source = tmp_path / "mine"
    source.mkdir()
    (source / "keep.txt").write_text("the user's data\n")
    with open_mount_target(mount_spec("ref"), backing=source) as target:
        assert target.backing == source.resolve() and os.listdir(target.path) == ["keep.txt"]
        (target.path / "new.txt").write_text("through ref\n")
    assert sorted(os.listdir(source)) == ["keep.txt", "new.txt"]
    with pytest.raises(TargetSpecError, match="different dirs"):
        open_mount_target(mount_spec(f"ref:source={tmp_path}"), backing=source)


def test_factory_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(TargetSpecError, match="unknown mount target"):
        mount_spec("nosuchfs")
    with pytest.raises(TargetSpecError, match="makes its own backing dir"):
        open_mount_target(mount_spec("fuse2fs"), backing=tmp_path)
    with pytest.raises(TargetSpecError, match="not a mount target"):
        open_mount_target(TargetSpec("daemon", "hello_ll", (), {}, "hello_ll"))
    with pytest.raises(TargetSpecError, match="not a directory"), ExistingMount(tmp_path / "absent"):
        pass


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    path = tmp_path / "tmpfs"
    path.mkdir()
    fusedev.sys_mount("tmpfs", path, "tmpfs", 0, "size=4m,mode=0755")
    try:
        yield path
    finally:
        fusedev.unmount(path, lazy=True)


def test_existing_mount_on_a_tmpfs(tmpfs: Path, tmp_path: Path) -> None:
    (tmpfs / "there.txt").write_text("before\n")
    backing = tmp_path / "host"
    backing.mkdir()
    target: MountTarget = open_mount_target(mount_spec(f"mount:{tmpfs}"), backing=backing)
    with target:
        assert target.path == tmpfs and target.backing == backing and target.daemon is None
        assert target.features >= {"symlink", "hardlink", "xattr", "mknod", "rename_exchange",
                                   "fallocate", "other_users", "permissions", "acl"}
        assert "readonly" not in target.features
        assert os.listdir(tmpfs) == ["there.txt"]  # the probe cleaned up after itself
    assert fusedev.is_mounted(tmpfs), "a user's mount is not ours to unmount"
    assert (tmpfs / "there.txt").read_text() == "before\n"


def test_existing_read_only_mount(tmpfs: Path) -> None:
    fusedev.sys_mount(None, tmpfs, None, fusedev.MS_REMOUNT | fusedev.MS_RDONLY)
    with ExistingMount(tmpfs) as target:
        assert target.features == {"readonly"}


def test_a_failed_setup_never_touches_a_mount_at_the_working_directory(
        tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    class FailsInSetup(SuiteMount):
        name = "fails-in-setup"

        def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
            raise TargetError("setup failed")

    monkeypatch.chdir(tmpfs)
    with pytest.raises(TargetError, match="setup failed"), FailsInSetup():
        pass
    assert fusedev.is_mounted(tmpfs)


#: A "daemon" that mounts a FUSE connection and then does what argv[2] says.
FAKE_DAEMON = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from targets import fusedev
fd = fusedev.open_fuse_device()
fusedev.mount_fuse(sys.argv[3], fd)
if sys.argv[2] == "exit":
    sys.stderr.write("fake: mounted, now leaving\\n")
    sys.exit(4)
time.sleep(600)  # "hang": INIT is never answered
"""


class FakeDaemon(SuiteMount):
    name = "fake"
    behaviour = "hang"

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        return [sys.executable, "-c", FAKE_DAEMON, str(Path(__file__).parent.parent), self.behaviour,
                str(mountpoint)]


def test_daemon_that_never_answers_init_times_out_and_is_cleaned_up() -> None:
    fuse_usable()
    target = FakeDaemon()
    target.ready_timeout = 1.0
    with pytest.raises(TargetTimeout, match="was not answering within 1 s"), target:
        pass
    assert target.daemon is not None and target.daemon.returncode is not None
    assert target.scratch is None and not fusedev.is_mounted(target.path)


def test_daemon_that_exits_after_mounting_is_target_died() -> None:
    fuse_usable()
    target = FakeDaemon()
    target.behaviour = "exit"
    with pytest.raises(TargetDied, match="fake: mounted, now leaving") as info, target:
        pass
    assert info.value.returncode == 4
    assert target.scratch is None and not fusedev.is_mounted(target.path)
