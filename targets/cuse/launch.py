"""``python -m targets.cuse.launch STANDIN -- COMMAND [ARGS...]``: run a CUSE server in a
mount namespace of its own where /dev is a small tmpfs (the usual character devices, and
/dev/cuse: the stand-in file ``STANDIN`` bound over it), so the host's /dev is untouched and
the server's open("/dev/cuse") reaches the suite."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from targets import fusedev

#: name -> (major, minor) of the character devices a server may need
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
           "tty": (5, 0), "fuse": (10, 229)}
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
         "stderr": "/proc/self/fd/2"}


def private_dev(standin: Path) -> None:
    """Unshare the mount namespace (private) and lay out /dev with /dev/cuse = ``standin``."""
    try:
        fusedev.new_mount_namespace(fusedev.MS_PRIVATE)
    except OSError as exc:
        raise SystemExit(f"cuse launch: cannot make a private mount namespace ({exc}); a host "
                         "whose / is not a mount point (a chroot) needs `mount --bind / /` first") from exc
    fusedev.sys_mount("fusecheck-dev", "/dev", "tmpfs", fusedev.MS_NOSUID, "mode=0755")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    for name, target in LINKS.items():
        os.symlink(target, f"/dev/{name}")
    for name in ("pts", "shm"):
        os.mkdir(f"/dev/{name}", 0o755)
    Path("/dev/cuse").touch(0o600)
    fusedev.sys_mount(str(standin), "/dev/cuse", None, fusedev.MS_BIND)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    private_dev(Path(argv[0]))
    command = argv[2:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
