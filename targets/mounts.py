"""Mount targets: a path where the kernel has the filesystem mounted.

The suite mounts Debian's FUSE filesystems itself (fuse-overlayfs, bindfs,
fuse2fs, squashfuse, libfuse's passthrough_ll), each in the foreground as a
``Daemon`` in a scratch directory, or uses ``mount:PATH``, a mount the user
made.  Every suite mount except the ones that add it themselves gets
``allow_other``, so rules can act as other users.

Teardown is strict after success (unmount, then the daemon must exit with
status 0) and forceful after a failure or a failed strict step (abort the
connection, lazy unmount, terminate, kill, reap).  The scratch directory is
removed only once nothing is mounted below it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

from targets import build, fusedev
from targets.daemons import (
    Requirement,
    mount_options,
    overlay_metadata,
    populate,
    reference_argv,
    reference_source,
)
from targets.errors import TargetDied, TargetError, TargetSpecError
from targets.probe import probe_features
from targets.process import Daemon, wait_ready
from targets.spec import TargetSpec, parse_options, parse_spec

Options = Mapping[str, str | bool]
#: How long a daemon may take to mount, and to exit after its unmount.
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


class MountTarget:
    """A mounted filesystem; a context manager that tears it down (see the module doc)."""

    name: str = "mount"
    #: What it supports with its default options; checked against the probe by the tests.
    declared: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[tuple[Requirement, ...]] = ()

    def __init__(self) -> None:
        self.path = Path()
        self.backing: Path | None = None
        self.features: frozenset[str] = self.declared
        self.daemon: Daemon | None = None
        self.conn_id: int | None = None

    def open(self) -> Self:
        """Mount it (or check it); cleans up after itself when that fails."""
        return self

    def close(self, *, failed: bool = False) -> None:
        """Strict teardown unless ``failed``; forceful on failure."""

    def backing_hidden(self, name: str, st: os.stat_result) -> bool:
        """Whether an entry of the backing dir is the filesystem's own metadata, not in the mount."""
        return False

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(failed=exc_type is not None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} at {self.path}>"


class ExistingMount(MountTarget):
    """``mount:PATH``: a filesystem mounted by the user; nothing to start or stop.

    Its features are probed once, in a scratch directory below PATH.
    """

    def __init__(self, path: str | os.PathLike[str], backing: Path | None = None) -> None:
        super().__init__()
        self.name = f"mount:{os.fspath(path)}"
        self.path = Path(path)
        self.backing = backing

    def open(self) -> Self:
        if not self.path.is_dir():
            raise TargetSpecError(f"{self.name}: {self.path} is not a directory",
                                  hint="mount the filesystem first, then give its mountpoint")
        if self.backing is not None and not self.backing.is_dir():
            raise TargetSpecError(f"--backing {self.backing} is not a directory")
        self.features = frozenset(probe_features(self.path))
        return self


class SuiteMount(MountTarget):
    """A FUSE daemon the suite starts in the foreground on a scratch mountpoint."""

    #: ``-o`` options the suite adds to the daemon's own defaults.
    base_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Options | None = None, *,
                 scratch_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.options = dict(options or {})
        self.scratch_root = scratch_root
        self.scratch: Path | None = None
        self.ready_timeout = READY_TIMEOUT
        self.exit_timeout = EXIT_TIMEOUT
        self.closed = False

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        """Set up the scratch dir (and ``self.backing``); the daemon's command line."""
        raise NotImplementedError

    def open(self) -> Self:
        for requirement in self.requires:
            requirement.check()
        try:
            self._start()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def _start(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=f"fusecheck-{self.name}-", dir=self.scratch_root))
        self.scratch.chmod(0o755)  # other users reach the mount through it
        self.path = self.scratch / "mnt"
        self.path.mkdir()
        self.daemon = Daemon(self.argv(self.scratch, self.path), name=self.name).start()
        wait_ready(self.daemon, lambda: fusedev.is_mounted(self.path), self.ready_timeout, what="mounted")
        self.conn_id = fusedev.connection_id(self.path)
        self._stat_root(self.daemon)
        # Options change what it supports: then ask the filesystem, not the declaration.
        self.features = frozenset(probe_features(self.path)) if self.options else self.declared

    def _stat_root(self, daemon: Daemon) -> None:
        """Mounted is not ready: its root must answer a stat (INIT, then GETATTR).

        The stat runs in a thread; a daemon that never answers is a TargetTimeout,
        and the forceful teardown's abort then releases the thread.
        """
        outcome: list[BaseException | None] = []

        def stat_root() -> None:
            try:
                os.stat(self.path)
                outcome.append(None)
            except OSError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=stat_root, name=f"{self.name}-ready", daemon=True)
        thread.start()
        wait_ready(daemon, lambda: not thread.is_alive(), self.ready_timeout, what="answering")
        if outcome[0] is not None:
            returncode = daemon.wait_exit(0.5)
            if returncode is not None:
                raise TargetDied(self.name, returncode=returncode, stderr_tail=daemon.stderr_tail(),
                                 detail=f"{daemon.exit_description()} after it mounted")
            raise TargetError(f"{self.name} mounted, but a stat of its root failed: {outcome[0]}")

    def close(self, *, failed: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if failed:
                self._forceful()
            else:
                try:
                    self._strict()
                except BaseException:
                    self._forceful()
                    raise
        finally:
            self._remove_scratch()

    def _strict(self) -> None:
        """Unmount; the daemon must then exit by itself, with status 0."""
        if self.daemon is None:
            return
        if fusedev.is_mounted(self.path):
            try:
                fusedev.unmount(self.path)
            except OSError as exc:
                raise TargetError(f"{self.name}: cannot unmount {self.path}: {exc.strerror}",
                                  hint="a test left a file open or a working directory inside") from exc
        returncode = self.daemon.wait_exit(self.exit_timeout)
        if returncode != 0:
            detail = (f"did not exit within {self.exit_timeout:g} s of its unmount" if returncode is None
                      else f"{self.daemon.exit_description()} (teardown expects status 0)")
            raise TargetDied(self.name, returncode=returncode, stderr_tail=self.daemon.stderr_tail(),
                             detail=detail)

    def _forceful(self) -> None:
        """Abort the connection, detach the mount, stop the daemon; never waits on the daemon."""
        try:
            if self.scratch is not None:  # only our own mountpoint, never a path not yet set
                fusedev.force_unmount(self.path, self.conn_id)
        finally:
            if self.daemon is not None:
                self.daemon.stop()

    def _remove_scratch(self) -> None:
        if self.scratch is None:
            return
        left = fusedev.mounts_under(self.scratch)
        if left:  # never delete through a mount: it would empty the filesystem it serves
            where = ", ".join(entry.mount_point for entry in left)
            raise TargetError(f"{self.name}: still mounted after teardown: {where}",
                              hint=f"unmount it (umount -l), then remove {self.scratch}")
        shutil.rmtree(self.scratch)
        self.scratch = None


class FuseOverlayfs(SuiteMount):
    """fuse-overlayfs over an empty lowerdir: the view equals upperdir, the backing dir."""

    name = "fuse-overlayfs"
    requires = (Requirement("fuse-overlayfs", "fuse-overlayfs"),)
    declared = frozenset({"symlink", "hardlink", "xattr", "mknod", "rename_exchange", "fallocate",
                          "other_users", "permissions", "acl"})

    def backing_hidden(self, name: str, st: os.stat_result) -> bool:
        return overlay_metadata(name, st)

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        lower, upper, work = (scratch / d for d in ("lower", "upper", "work"))
        for directory in (lower, upper, work):
            directory.mkdir()
        populate(upper)
        self.backing = upper
        opts = mount_options(self.options, f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}")
        return ["fuse-overlayfs", "-f", *opts, str(mountpoint)]


class Bindfs(SuiteMount):
    """bindfs mirroring a source dir (the backing dir); given, or a populated scratch one."""

    name = "bindfs"
    requires = (Requirement("bindfs", "bindfs"),)
    declared = frozenset({"symlink", "hardlink", "xattr", "mknod", "other_users", "permissions"})

    def __init__(self, options: Options | None = None, *, source: Path | None = None,
                 scratch_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(options, scratch_root=scratch_root)
        self.source = source

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        self.backing = self.source or _populated(scratch / "source")
        return ["bindfs", "-f", *mount_options(self.options), str(self.backing), str(mountpoint)]


class PassthroughLl(SuiteMount):
    """libfuse's passthrough_ll example, mounted by the kernel, serving a source dir.

    As built by targets.build it has no fallocate (HAVE_FALLOCATE unset) and
    xattrs only with ``-o xattr``; running as root without
    default_permissions, it lets every user do anything.
    """

    name = "passthrough_ll"
    base_options = ("allow_other",)
    declared = frozenset({"symlink", "hardlink", "mknod", "other_users"})

    def __init__(self, options: Options | None = None, *, source: Path | None = None,
                 scratch_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(options, scratch_root=scratch_root)
        self.source = source

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        binary = build.build_example("passthrough_ll")
        self.backing = self.source or _populated(scratch / "source")
        opts = mount_options(self.options, *self.base_options, f"source={self.backing}")
        return [str(binary), "-f", *opts, str(mountpoint)]


class Fuse2fs(SuiteMount):
    """fuse2fs on an ext4 image it creates, filled from a populated tree; no backing dir.

    The image has no journal: fuse2fs 1.47 cannot write one ("Writing to the
    journal is not supported").  As root, fuse2fs adds neither allow_other nor
    default_permissions and checks mode bits itself (not ACLs); ``fakeroot``
    is for non-root users and not needed.
    """

    name = "fuse2fs"
    requires = (Requirement("fuse2fs", "fuse2fs"), Requirement("mkfs.ext4", "e2fsprogs"))
    base_options = ("allow_other",)
    declared = frozenset({"symlink", "hardlink", "xattr", "mknod", "fallocate", "other_users",
                          "permissions"})
    image_size = 64 << 20
    #: The tree the image was made from: what the mount shows at first.
    initial_tree: Path | None = None

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        tree = _populated(scratch / "tree")
        self.initial_tree = tree  # what the image held when it was made
        image = scratch / "image.ext4"
        with open(image, "wb") as f:
            f.truncate(self.image_size)
        # 256-byte inodes: nanosecond timestamps (a small image defaults to 128, whole seconds)
        _run(["mkfs.ext4", "-q", "-F", "-I", "256", "-O", "^has_journal", "-d", str(tree), str(image)],
             "mkfs.ext4")
        return ["fuse2fs", str(image), str(mountpoint), "-f",
                *mount_options(self.options, *self.base_options)]


class Squashfuse(SuiteMount):
    """squashfuse on the image from targets.build, read-only; backing: the tree it holds.

    Mounted ``-o ro``: without it squashfuse answers ENOSYS to every write.
    """

    name = "squashfuse"
    requires = (Requirement("squashfuse", "squashfuse"), Requirement("mksquashfs", "squashfs-tools"))
    base_options = ("ro", "allow_other")
    declared = frozenset({"readonly", "symlink", "other_users"})

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        image = build.build_squashfs_image()
        self.backing = build.squashfs_tree()  # shared by every instance: never write to it
        opts = mount_options(self.options, *self.base_options)
        return ["squashfuse", "-f", *opts, str(image), str(mountpoint)]


class ReferenceMount(SuiteMount):
    """fusecheck's reference server on /dev/fuse: an in-memory filesystem (no backing dir), or
    with ``ref:source=DIR`` a host directory passed through, DIR its backing dir; a bare
    ``ref:source`` serves a scratch directory the suite fills (``populate``)."""

    name = "ref"
    declared = frozenset({"symlink", "hardlink", "xattr", "mknod", "rename_exchange", "fallocate",
                          "other_users", "permissions", "acl"})

    #: What it holds at the start (the server seeds the same entries): for comparisons.
    initial_tree: Path | None = None

    def argv(self, scratch: Path, mountpoint: Path) -> list[str]:
        options, source = reference_source(scratch, self.options)
        if source is None:
            self.initial_tree = _populated(scratch / "tree")
        else:
            if mountpoint.resolve().is_relative_to(source):
                raise TargetSpecError(f"ref: source={source} holds the mountpoint {mountpoint}: the "
                                      "server would serve its own mount",
                                      hint="serve a directory outside the scratch root (TMPDIR)")
            self.backing = self.initial_tree = source
        return reference_argv(options, str(mountpoint))


def _populated(root: Path) -> Path:
    populate(root)
    return root


def _run(argv: Sequence[str], name: str) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise TargetError(f"{name} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


MOUNT_TARGETS: dict[str, type[SuiteMount]] = {
    cls.name: cls for cls in (ReferenceMount, FuseOverlayfs, Bindfs, Fuse2fs, Squashfuse,
                              PassthroughLl)
}
#: Suite mounts that serve a directory of the user's when --backing names one.
SERVES_BACKING = {"bindfs": Bindfs, "passthrough_ll": PassthroughLl}


def mount_spec(text: str) -> TargetSpec:
    """``mount:PATH`` or ``NAME[:options]`` of a suite mount, as a TargetSpec."""
    if text.startswith("mount:"):
        return parse_spec(text, allow_reserved=True)
    name, _, rest = text.partition(":")
    if name not in MOUNT_TARGETS:
        raise TargetSpecError(f"unknown mount target {name!r}",
                              hint=f"use mount:PATH or one of {', '.join(MOUNT_TARGETS)}")
    return TargetSpec("daemon", name, (), parse_options(rest, spec=text), text)


def open_mount_target(spec: TargetSpec, backing: Path | None = None, *,
                      scratch_root: str | os.PathLike[str] | None = None) -> MountTarget:
    """The (unopened) MountTarget for ``spec``: ``mount:PATH`` or a suite mount by name.

    ``backing`` is the host dir the target serves: for ``mount:PATH`` as given;
    bindfs and passthrough_ll serve it, and ref (as ``source``); the others choose their own.
    """
    if spec.kind == "mount":
        return ExistingMount(spec.command[0], backing)
    cls = MOUNT_TARGETS.get(spec.name)
    if cls is None:
        raise TargetSpecError(f"{spec.text or spec.name!r} is not a mount target",
                              hint=f"use mount:PATH or one of {', '.join(MOUNT_TARGETS)}")
    if backing is None:
        return cls(spec.options, scratch_root=scratch_root)
    if cls is ReferenceMount:  # --backing DIR is ref:source=DIR
        given = spec.options.get("source")
        if isinstance(given, str) and Path(given).resolve() != backing.resolve():
            raise TargetSpecError(f"ref: source={given} and --backing {backing} name different dirs",
                                  hint="give one of them")
        return cls({**spec.options, "source": str(backing)}, scratch_root=scratch_root)
    served = SERVES_BACKING.get(spec.name)
    if served is None:
        raise TargetSpecError(f"{spec.name} makes its own backing dir; --backing is not used with it",
                              hint="drop --backing, or use ref, bindfs or passthrough_ll to serve a dir")
    return served(spec.options, source=backing, scratch_root=scratch_root)

