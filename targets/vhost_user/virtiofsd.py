"""``--target virtiofsd[:OPTS]``: Debian's virtiofsd (qemu-system-common, QEMU's C
virtiofsd) and its command line. OPTS are the seed's cache modes and switches:
``cache=none|auto|always``, ``writeback``, ``posix_acl``, ``xattr``, and ``fd``: the suite
makes the listening socket and hands it over as ``--fd=N`` (as a management tool does)
instead of virtiofsd making it at ``--socket-path`` (``targets.vhost_user.target`` starts it
and connects)."""

from __future__ import annotations

from pathlib import Path

from targets.errors import TargetSpecError

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
CACHE_MODES = ("none", "auto", "always")
SWITCHES = ("writeback", "posix_acl", "xattr")
HINT = "virtiofsd takes cache=none|auto|always, writeback, posix_acl, xattr, fd"


def virtiofsd_argv(socket: Path | int, source: Path, options: dict[str, str | bool]) -> list[str]:
    """virtiofsd's command line for ``options`` (a spec's), listening at path ``socket`` or
    accepting on the listening socket whose fd is ``socket``."""
    where = f"--fd={socket}" if isinstance(socket, int) else f"--socket-path={socket}"
    argv = [str(VIRTIOFSD), where, "-o", f"source={source}"]
    for key, value in options.items():
        if key == "fd" and value is True:
            continue  # how the socket is passed: ``socket`` says it
        if key == "cache":
            if value not in CACHE_MODES:
                raise TargetSpecError(f"virtiofsd: cache={value} is not a cache mode", hint=HINT)
            argv += ["-o", f"cache={value}"]
        elif key in SWITCHES and value is True:
            argv += ["-o", key]
            if key == "posix_acl" and "xattr" not in options:
                argv += ["-o", "xattr"]  # virtiofsd: "Can't enable posix ACLs. xattrs are disabled."
        else:
            raise TargetSpecError(f"virtiofsd: unknown option {key!r}", hint=HINT)
    return argv
