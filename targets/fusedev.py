"""Mount a FUSE connection ourselves: /dev/fuse, mount(2), umount2(2), fusectl.

Nothing here stats a mountpoint: a stat of a FUSE root waits for the daemon,
so mount state and connection ids come from ``/proc/thread-self/mountinfo``.

Private mount namespace: ``enter_private_mount_namespace()`` (called by the
conftest, never on import) moves the calling thread, and every thread and
process it starts later, into a new mount namespace whose mounts are slaves of
the host's: mounts made by the user still propagate in (a ``mount:PATH`` made
or unmounted during the run is seen where the host shares ``/``), while the
suite's mounts never leak out, and they all go away with the last process in
the namespace, also after SIGKILL (suite daemons die with their parent).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from targets.errors import TargetError, TargetNotInstalled

FUSE_DEVICE = "/dev/fuse"
FUSECTL = Path("/sys/fs/fuse/connections")
MOUNTINFO = "/proc/thread-self/mountinfo"

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_FORCE = 1
MNT_DETACH = 2

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_LIBC.unshare.argtypes = [ctypes.c_int]


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _bytes(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def sys_mount(source: str | None, target: str | os.PathLike[str], fstype: str | None,
              flags: int = 0, data: str | None = None) -> None:
    """mount(2); OSError with the errno."""
    _check(_LIBC.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)),
           "mount", os.fspath(target))


def sys_umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2); OSError with the errno."""
    _check(_LIBC.umount2(_bytes(target), flags), "umount2", os.fspath(target))


# --- mountinfo ------------------------------------------------------------

@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo (proc(5)), octal escapes decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str

    @property
    def dev(self) -> int:
        """The kernel's dev_t (MKDEV): the fusectl directory name of a FUSE mount."""
        return (self.major << 20) | self.minor

    @property
    def is_fuse(self) -> bool:
        return self.fstype in ("fuse", "fuseblk") or self.fstype.startswith(("fuse.", "fuseblk."))


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        major, minor = fields[2].split(":")
        entries.append(MountEntry(
            int(fields[0]), int(fields[1]), int(major), int(minor), _unescape(fields[3]),
            _unescape(fields[4]), fields[5], tail[0], _unescape(tail[1]) if len(tail) > 1 else "",
            tail[2] if len(tail) > 2 else ""))
    return entries


def mounts() -> list[MountEntry]:
    """The calling thread's mount table, in mount order."""
    with open(MOUNTINFO) as f:
        return parse_mountinfo(f.read())


def canonical(path: str | os.PathLike[str]) -> str:
    """An absolute path with its parent's symlinks resolved; never stats ``path`` itself."""
    full = os.path.abspath(path)
    parent, name = os.path.split(full)
    return os.path.join(os.path.realpath(parent), name) if name else full


def mount_at(path: str | os.PathLike[str]) -> MountEntry | None:
    """The topmost mount whose mount point is ``path``, or None."""
    where = canonical(path)
    found = [entry for entry in mounts() if entry.mount_point == where]
    return found[-1] if found else None


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted at ``path`` (from mountinfo, no stat)."""
    return mount_at(path) is not None


def mounts_under(path: str | os.PathLike[str]) -> list[MountEntry]:
    """Every mount at or below ``path``."""
    where = canonical(path)
    prefix = where.rstrip("/") + "/"
    return [e for e in mounts() if e.mount_point == where or e.mount_point.startswith(prefix)]


def connection_id(mountpoint: str | os.PathLike[str]) -> int:
    """The FUSE connection of the mount at ``mountpoint``: its /sys/fs/fuse/connections/N."""
    entry = mount_at(mountpoint)
    if entry is None:
        raise TargetError(f"nothing is mounted at {mountpoint}")
    if not entry.is_fuse:
        raise TargetError(f"{mountpoint} is {entry.fstype}, not a FUSE mount")
    return entry.dev


# --- fusectl ---------------------------------------------------------------

def fusectl_mounted() -> bool:
    return any(e.fstype == "fusectl" and e.mount_point == str(FUSECTL) for e in mounts())


def _in_private_child(action: Callable[[Path], bytes]) -> bytes:
    """Run ``action(fusectl_dir)`` in a forked child with fusectl mounted in its own namespace.

    Used when our namespace has no fusectl mount: mounting one for the host would
    outlive the suite, this one dies with the child.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only syscalls, then _exit
        status = 1
        try:
            os.close(read_end)
            new_mount_namespace(MS_PRIVATE)
            sys_mount("fusectl", FUSECTL, "fusectl")
            os.write(write_end, action(FUSECTL))
            status = 0
        except BaseException as exc:  # reported through the exit status
            os.write(write_end, f"error: {exc}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise TargetError(f"cannot reach fusectl: {out.decode(errors='replace')}",
                          hint="fusectl needs CAP_SYS_ADMIN; or mount it: "
                               "mount -t fusectl fusectl /sys/fs/fuse/connections")
    return out


def _abort(ctl: Path, conn_id: int) -> bytes:
    try:
        (ctl / str(conn_id) / "abort").write_text("1")
    except FileNotFoundError:
        return b"gone"
    return b"aborted"


def abort_connection(conn_id: int) -> bool:
    """Abort FUSE connection ``conn_id``: requests in flight fail with ECONNABORTED, later ones ENOTCONN.

    False when the connection no longer exists.
    """
    if fusectl_mounted():
        return _abort(FUSECTL, conn_id) == b"aborted"
    return _in_private_child(lambda ctl: _abort(ctl, conn_id)) == b"aborted"


def live_connections() -> set[int]:
    """The ids of every FUSE connection the kernel still holds (all namespaces)."""
    if fusectl_mounted():
        names = os.listdir(FUSECTL)
    else:
        names = _in_private_child(lambda ctl: " ".join(os.listdir(ctl)).encode()).decode().split()
    return {int(name) for name in names}


# --- mounting --------------------------------------------------------------

def open_fuse_device(path: str = FUSE_DEVICE) -> int:
    """Open /dev/fuse read-write (close-on-exec); TargetNotInstalled when it cannot be."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise TargetNotInstalled(f"cannot open {path}: {exc.strerror}",
                                 hint="load the fuse module (modprobe fuse) and run as root") from exc


def mount_data(fd: int, *, rootmode: int = 0o40000, user_id: int = 0, group_id: int = 0,
               options: Sequence[str] = ()) -> str:
    """The data string of a FUSE mount(2): ``fd=N,rootmode=40000,user_id=0,group_id=0,...``."""
    return ",".join([f"fd={fd}", f"rootmode={rootmode:o}", f"user_id={user_id}",
                     f"group_id={group_id}", *options])


def mount_fuse(mountpoint: str | os.PathLike[str], fd: int, *, rootmode: int = 0o40000,
               user_id: int = 0, group_id: int = 0, options: Sequence[str] = (),
               fsname: str = "fusecheck", subtype: str | None = None, flags: int = 0) -> int:
    """Mount the FUSE connection of ``fd`` at ``mountpoint``; its connection id.

    ``options``: kernel FUSE options such as ``default_permissions``,
    ``allow_other``, ``max_read=N``.  The kernel sends INIT on ``fd`` next;
    until it is answered, requests on the mount wait.
    """
    fstype = f"fuse.{subtype}" if subtype else "fuse"
    data = mount_data(fd, rootmode=rootmode, user_id=user_id, group_id=group_id, options=options)
    sys_mount(fsname, mountpoint, fstype, flags, data)
    try:
        return connection_id(mountpoint)
    except TargetError:  # mounted, yet not in mountinfo as ours: leave nothing behind
        force_unmount(mountpoint, None)
        raise


def unmount(mountpoint: str | os.PathLike[str], *, lazy: bool = False) -> None:
    """umount2; ``lazy`` detaches it now and frees it when the last user leaves (MNT_DETACH)."""
    sys_umount2(mountpoint, MNT_DETACH if lazy else 0)


def force_unmount(mountpoint: str | os.PathLike[str], conn_id: int | None) -> None:
    """Abort the connection, then detach the mount; quiet when it is already gone.

    The abort happens only while the mount still shows ``conn_id``: once it is
    gone the id may already name another worker's new connection.
    """
    entry = mount_at(mountpoint)
    if entry is None:
        return
    if conn_id is not None and entry.dev == conn_id:
        with contextlib.suppress(TargetError):
            abort_connection(conn_id)
    try:
        unmount(mountpoint, lazy=True)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point any more
            raise


def release_mount(mountpoint: str | os.PathLike[str], conn_id: int | None) -> bool:
    """Unmount; if that fails (busy, or the daemon is stuck), abort and detach.

    True if the plain unmount did it.
    """
    try:
        unmount(mountpoint)
    except OSError:
        force_unmount(mountpoint, conn_id)
        return False
    return True


@contextlib.contextmanager
def fuse_mount(mountpoint: str | os.PathLike[str], *, rootmode: int = 0o40000, user_id: int = 0,
               group_id: int = 0, options: Sequence[str] = (), fsname: str = "fusecheck",
               subtype: str | None = None, flags: int = 0) -> Iterator[tuple[int, int]]:
    """Open /dev/fuse, mount it at ``mountpoint``, yield ``(fd, conn_id)``.

    On exit it always unmounts: a plain unmount, else abort and a lazy one; then
    closes ``fd`` (a reader blocked on it gets ENODEV; a connection some other
    namespace still holds is aborted when its last device fd closes).
    """
    fd = open_fuse_device()
    try:
        conn_id = mount_fuse(mountpoint, fd, rootmode=rootmode, user_id=user_id, group_id=group_id,
                             options=options, fsname=fsname, subtype=subtype, flags=flags)
        try:
            yield fd, conn_id
        finally:
            release_mount(mountpoint, conn_id)
    finally:
        os.close(fd)


# --- the private mount namespace ------------------------------------------

class NamespaceError(TargetError):
    """The run's mounts cannot be kept out of the host's mount namespace."""

    default_hint = ("make the chroot's / a mount point before entering it (mount --bind DIR DIR), "
                    "or run the suite outside the chroot")


_private = False
_DIR_FD = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def in_private_mount_namespace() -> bool:
    """Whether ``enter_private_mount_namespace`` succeeded in this process."""
    return _private


def _inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _set_propagation(flags: int) -> None:
    """mount(2) ``flags`` (``MS_REC | MS_SLAVE``...) on /, also in a chroot whose / is no mount point.

    Only a mount point takes a propagation type.  There the calling thread climbs
    to the namespace's root, which always is one, sets it and chroots back (root
    and cwd as before).  Bind-mounting / onto itself instead would put that
    mount in the host's namespace too when the chroot lies on a shared mount.
    """
    try:
        sys_mount(None, "/", None, flags)
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL or mount_at("/") is not None:
            raise
    root, cwd = os.open("/", _DIR_FD), os.open(".", _DIR_FD)
    try:
        os.fchdir(root)
        try:
            below = next((e.path for e in os.scandir("/") if e.is_dir(follow_symlinks=False)), "")
            os.chroot(below)  # the cwd is now above the root: ".." climbs past it
        except OSError as exc:
            raise NamespaceError(f"/ is not a mount point (a chroot?) and the namespace's root "
                                 f"above it is out of reach: {exc}") from exc
        try:
            while _inode(".") != _inode(".."):
                os.chdir("..")
            os.chroot(".")
            sys_mount(None, "/", None, flags)
        finally:
            os.fchdir(root)
            os.chroot(".")
    finally:
        os.fchdir(cwd)
        os.close(root)
        os.close(cwd)


def new_mount_namespace(propagation: int) -> None:
    """Move the calling thread into a new mount namespace where every mount is ``propagation``.

    MS_SLAVE: the host's mounts and unmounts still come in; MS_PRIVATE:
    nothing crosses.  Either way nothing mounted here reaches the host.
    """
    _check(_LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _set_propagation(MS_REC | propagation)


def enter_private_mount_namespace() -> bool:
    """Unshare the mount namespace; mounts become slaves of the host's. False if not permitted.

    Call it from the thread that runs the tests, before it starts daemons: it
    moves that thread and what it starts later, not threads already running.
    fusectl is mounted inside when missing, so connections can be aborted.
    NamespaceError when unshared but unable to keep its mounts from the host.
    """
    global _private
    if _LIBC.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS):
            return False
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    try:
        _set_propagation(MS_REC | MS_SLAVE)
    except OSError as exc:
        raise NamespaceError(f"cannot make the host's mounts slaves of the run's own mount "
                             f"namespace: {exc}") from exc
    _private = True
    if not fusectl_mounted() and FUSECTL.is_dir():
        with contextlib.suppress(OSError):
            sys_mount("fusectl", FUSECTL, "fusectl")
    return True
