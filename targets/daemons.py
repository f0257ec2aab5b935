"""The daemons ``--target NAME`` knows: how to set each up and spawn it.

Each is served in the kernel's role over ``/dev/fd/N`` (libfuse 3 takes that as
its mountpoint). ``eof_status`` is what its process was seen to exit with when
the channel closes: libfuse 3.14 reads 0 bytes, logs "short read on fuse
device" and fails the session loop (a real /dev/fuse returns ENODEV at unmount
instead, which libfuse treats as a clean exit). SIGTERM is no way out either:
libfuse 3.14 keeps the signal as the session error and they exit non-zero.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from targets.errors import TargetNotInstalled, TargetSpecError

FD_PLACEHOLDER = "{fd}"
#: The suite's mount targets by name (their classes: ``targets.mounts.MOUNT_TARGETS``), here so
#: that ``targets.spec`` knows them without importing ``targets.mounts``, which imports it
MOUNT_NAMES = ("ref", "fuse-overlayfs", "bindfs", "fuse2fs", "squashfuse", "passthrough_ll")
Options = Mapping[str, str | bool]


@dataclass(frozen=True)
class Requirement:
    """A program the target runs, and the apt package that ships it."""

    program: str
    package: str

    def check(self) -> str:
        """The program's path; TargetNotInstalled naming the package otherwise."""
        path = shutil.which(self.program)
        if path is None:
            raise TargetNotInstalled(
                f"{self.program} not found (package {self.package})",
                hint=f"apt-get install {self.package}",
            )
        return path


def nothing_hidden(name: str, st: os.stat_result) -> bool:
    """No entry of the backing dir is the filesystem's own metadata."""
    return False


def overlay_metadata(name: str, st: os.stat_result) -> bool:
    """Overlay metadata in upperdir: whiteouts for removed names (0:0 character
    devices, or ``.wh.NAME``) and opaque-directory markers (``.wh..wh..opq``)."""
    return name.startswith(".wh.") or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)


@dataclass(frozen=True)
class Instance:
    """One prepared daemon: its argv with ``{fd}`` still in it, what it serves, and which
    entries of that directory are the daemon's own metadata (not served)."""

    template: tuple[str, ...]
    backing: Path | None = None
    hidden: Callable[[str, os.stat_result], bool] = nothing_hidden

    def argv(self, fd: int) -> list[str]:
        return [word.replace(FD_PLACEHOLDER, str(fd)) for word in self.template]


@dataclass(frozen=True)
class DaemonEntry:
    """A registry entry; ``setup`` fills the scratch dir and returns the Instance."""

    name: str
    summary: str
    requires: tuple[Requirement, ...]
    setup: Callable[[Path, Options], Instance]
    eof_status: int | None = None
    unservable: str | None = None
    notes: tuple[str, ...] = ()
    #: The entry this one rebuilds (``passthrough_ll`` for ``passthrough_ll-asan``).
    variant_of: str | None = None

    def check_installed(self) -> None:
        for requirement in self.requires:
            requirement.check()

    def prepare(self, scratch: Path, options: Options) -> Instance:
        """Check what it needs, build what is ours to build, then set it up."""
        if self.unservable:
            raise TargetSpecError(
                f"{self.name} cannot be served over a socket: {self.unservable}",
                hint="use a mount:PATH target for it",
            )
        self.check_installed()
        return self.setup(scratch, options)


def mount_options(options: Options, *base: str) -> list[str]:
    """``-o a=1,b`` from fixed options and the spec's; nothing when both are empty."""
    words = [*base]
    for key, value in options.items():
        words.append(key if value is True else f"{key}={value}")
    return ["-o", ",".join(words)] if words else []


def populate(root: Path) -> None:
    """A few files, a dir and a symlink for a writable backing tree."""
    (root / "dir").mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text("hello, fusecheck\n")
    (root / "dir" / "data.bin").write_bytes(bytes(range(256)) * 16)
    (root / "link").symlink_to("hello.txt")


def _hello_ll(scratch: Path, options: Options, *, sanitize: bool = False) -> Instance:
    from targets import build

    binary = build.build_example("hello_ll", sanitize=sanitize)
    return Instance((str(binary), "-f", *mount_options(options), "/dev/fd/{fd}"))


def _passthrough_ll(scratch: Path, options: Options, *, sanitize: bool = False) -> Instance:
    from targets import build

    binary = build.build_example("passthrough_ll", sanitize=sanitize)
    source = scratch / "source"
    populate(source)
    opts = mount_options(options, f"source={source}")
    return Instance((str(binary), "-f", *opts, "/dev/fd/{fd}"), backing=source)


def _squashfuse_ll(scratch: Path, options: Options) -> Instance:
    from targets import build

    image = build.build_squashfs_image()
    argv = ("squashfuse_ll", "-f", *mount_options(options), str(image), "/dev/fd/{fd}")
    # Read-only, shared by every instance: compare against it, never write to it.
    return Instance(argv, backing=build.squashfs_tree())


def _fuse_overlayfs(scratch: Path, options: Options) -> Instance:
    lower, upper, work = (scratch / d for d in ("lower", "upper", "work"))
    for directory in (lower, upper, work):
        directory.mkdir()
    populate(upper)
    # An empty lowerdir makes the merged view equal upperdir, where writes land:
    # upperdir is then a true backing directory.
    opts = mount_options(options, f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}")
    return Instance(("fuse-overlayfs", "-f", *opts, "/dev/fd/{fd}"), backing=upper, hidden=overlay_metadata)


_TOOLCHAIN = (Requirement("gcc", "gcc"), Requirement("pkg-config", "pkg-config"))

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Runs targets.reference from any working directory (the daemon's cwd is its scratch dir).
REFERENCE_MAIN = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
                  "from targets.reference.__main__ import main; sys.exit(main(sys.argv[1:]))")


REFERENCE_HINT = ("ref takes cache=none|auto|always, writeback, acl=on|off (on by default), mutant=NAME, "
                  "audit=FILE, record=FILE (every message on its channel, as pcap), source=DIR (serve a "
                  "host directory) or source (serve a scratch directory the suite fills), "
                  "notify[=inval|store] (with source, mounted: tell the kernel of changes on the host)")


def reference_argv(options: Options, *where: str) -> list[str]:
    """The reference server's command line; ``ref:cache=none,writeback,acl,mutant=X,source=DIR,
    record=FILE`` (a bare ``source`` must be resolved to a directory first: ``reference_source``)."""
    flags: list[str] = []
    for key, value in options.items():
        if key not in ("cache", "writeback", "acl", "mutant", "audit", "source", "record", "notify"):
            raise TargetSpecError(f"ref: unknown option {key!r}", hint=REFERENCE_HINT)
        if key == "record":  # the daemon runs in its scratch dir: a relative name is the caller's
            if value is True:
                raise TargetSpecError("ref: record needs a file: record=FILE", hint=REFERENCE_HINT)
            value = str(Path(str(value)).expanduser().resolve())
        if key == "source" and value is True:
            raise TargetSpecError("ref: source needs a directory here (resolve it with reference_source)",
                                  hint=REFERENCE_HINT)
        if key == "acl":  # on by default: acl=off is --no-acl
            flags.append("--acl" if _switch(key, value) else "--no-acl")
            continue
        flags += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return [sys.executable, "-c", REFERENCE_MAIN, *flags, *where]


def _switch(key: str, value: str | bool) -> bool:
    """An on/off option: a bare flag, or on|yes|true|1 / off|no|false|0."""
    word = "on" if value is True else str(value).strip().lower()
    if word not in ("on", "yes", "true", "1", "off", "no", "false", "0"):
        raise TargetSpecError(f"ref: {key}={value}: say {key}=on or {key}=off", hint=REFERENCE_HINT)
    return word in ("on", "yes", "true", "1")


def reference_source(scratch: Path, options: Options) -> tuple[dict[str, str | bool], Path | None]:
    """``ref:source=DIR`` serves DIR (which must exist); a bare ``ref:source`` serves a directory
    made in ``scratch`` and filled by ``populate``. The options with source as a path, and the
    directory served (the backing dir; None without source, the in-memory model)."""
    resolved = dict(options)
    value = resolved.get("source")
    if value is None or value is False:
        return resolved, None
    if value is True:
        path = scratch / "source"
        populate(path)
    else:
        path = Path(str(value)).expanduser().resolve()
        if not path.is_dir():
            raise TargetSpecError(f"ref: source={value} is not a directory",
                                  hint="create it, or write ref:source (no value) for a scratch directory "
                                       "the suite creates and fills")
    resolved["source"] = str(path)
    return resolved, path


def _reference(scratch: Path, options: Options) -> Instance:
    resolved, source = reference_source(scratch, options)
    return Instance(tuple(reference_argv(resolved, "--fd", "{fd}")), backing=source)


def sanitized(entry: DaemonEntry, setup: Callable[[Path, Options], Instance]) -> DaemonEntry:
    """``NAME-asan``: ``entry`` with its example built with ASan and UBSan (``targets.build``),
    which print a report to stderr and die of SIGABRT; ``setup`` differs only in the binary."""
    return replace(entry, name=f"{entry.name}-asan", summary=f"{entry.summary}; built with ASan+UBSan",
                   setup=setup, variant_of=entry.name)


_PLAIN: dict[str, DaemonEntry] = {
    entry.name: entry
    for entry in (
        DaemonEntry(
            "ref",
            "fusecheck's reference server (in-memory POSIX filesystem, or a host dir with source=DIR)",
            (),
            _reference,
            eof_status=0,
        ),
        DaemonEntry(
            "hello_ll",
            "libfuse's hello_ll example: one read-only file, no backing dir",
            _TOOLCHAIN,
            _hello_ll,
            eof_status=1,
        ),
        DaemonEntry(
            "passthrough_ll",
            "libfuse's passthrough_ll example, serving a scratch source dir",
            _TOOLCHAIN,
            _passthrough_ll,
            eof_status=1,
        ),
        DaemonEntry(
            "squashfuse_ll",
            "squashfuse's low-level daemon, serving a generated squashfs image",
            (
                Requirement("squashfuse_ll", "squashfuse"),
                Requirement("mksquashfs", "squashfs-tools"),
            ),
            _squashfuse_ll,
            eof_status=5,
        ),
        # fuse-overlayfs 1.10 does serve over /dev/fd/N (INIT answered, 7.31) when:
        # - it runs with -f: otherwise fuse_daemonize() forks, the spawned pid
        #   exits 0 at once and an unreaped, setsid()ed child serves the socket;
        # - lowerdir exists, and workdir is given with upperdir: else it exits 1
        #   before reading ("cannot read lower dirs", "workdir not specified"),
        #   and our pending INIT makes the recv fail with ECONNRESET;
        # - the INIT offers FUSE_DONT_MASK (flags bit 6): it requests
        #   FUSE_CAP_DONT_MASK unconditionally, so libfuse answers EPROTO
        #   ("filesystem requested capabilities 0x40 that are not supported by
        #   kernel, aborting") and exits 1. A kernel always offers that flag.
        DaemonEntry(
            "fuse-overlayfs",
            "fuse-overlayfs over an empty lowerdir; upperdir is the backing dir",
            (Requirement("fuse-overlayfs", "fuse-overlayfs"),),
            _fuse_overlayfs,
            eof_status=1,
            notes=("INIT must offer FUSE_DONT_MASK (flags bit 6), else EPROTO and exit 1",),
        ),
    )
}
_SANITIZED = (
    sanitized(_PLAIN["hello_ll"], functools.partial(_hello_ll, sanitize=True)),
    sanitized(_PLAIN["passthrough_ll"], functools.partial(_passthrough_ll, sanitize=True)),
)
REGISTRY: dict[str, DaemonEntry] = _PLAIN | {entry.name: entry for entry in _SANITIZED}
