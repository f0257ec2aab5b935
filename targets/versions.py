"""What a run ran on: the versions of the daemons (their Debian packages), the kernel, and
the FUSE protocol minor the kernel offers (read from the INIT it sends to a mount made for
the purpose, in a forked child's own mount namespace, so nothing outlives it)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import cache

from targets.spec import TargetSpec

#: Debian packages the named targets come from
PACKAGES = {"passthrough_ll": "libfuse3-dev", "hello_ll": "libfuse3-dev", "fuse-overlayfs": "fuse-overlayfs",
            "squashfuse_ll": "squashfuse", "virtiofsd": "qemu-system-common", "cuse-example": "libfuse3-dev",
            "bindfs": "bindfs", "fuse2fs": "fuse2fs"}
KERNEL_INIT_WAIT = 5.0  # seconds the kernel may take to send INIT after mount(2)


@cache
def debian_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out.strip()


def target_version(spec: TargetSpec) -> str:
    """The daemon's package and version ("fuse-overlayfs 1.10-1"), or what the target is."""
    name = spec.name.removesuffix("-asan")
    package = PACKAGES.get(name)
    if package is None:
        return "fusecheck reference server" if name == "ref" else "unknown"
    return f"{package} {debian_version(package)}".strip()


def kernel_release() -> str:
    return os.uname().release


@cache
def kernel_fuse_minor() -> int | None:
    """The minor of the FUSE_INIT the running kernel sends, or None when no mount can be made
    here (no /dev/fuse, no right to mount) or none came within ``KERNEL_INIT_WAIT``."""
    import select
    import signal

    where = tempfile.mkdtemp(prefix="fusecheck-minor-")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: mount in a namespace of its own, read INIT, exit
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, _init_offer(where))
            status = 0
        except BaseException:
            pass
        finally:
            os._exit(status)
    os.close(write_end)
    data = b""
    try:
        ready, _, _ = select.select([read_end], [], [], KERNEL_INIT_WAIT * 2)
        data = os.read(read_end, 1 << 17) if ready else b""
    finally:
        os.close(read_end)
        if not data:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.rmdir(where)  # never mounted here: the mount was the child's namespace's
    if len(data) < 48:
        return None
    from protocol.layers import FuseInHeader, FuseInitIn

    offer = FuseInHeader(data).getlayer(FuseInitIn)
    return int(offer.minor) if offer is not None else None


def _init_offer(where: str) -> bytes:
    """In the child: mount at ``where``, read what the kernel sends first (INIT), then close
    the device without answering: the connection ends, and the mount with the namespace."""
    import select

    from targets import fusedev

    fusedev.new_mount_namespace(fusedev.MS_PRIVATE)
    fd = fusedev.open_fuse_device()
    fusedev.mount_fuse(where, fd, fsname="fusecheck-probe")
    ready, _, _ = select.select([fd], [], [], KERNEL_INIT_WAIT)
    return os.read(fd, 1 << 17) if ready else b""
