"""``--target virtiofsd[:OPTS]``: Debian's virtiofsd (qemu-system-common) on a backing
directory the suite creates, reached as a virtio-fs device through our vhost-user
front-end. OPTS are the seed's cache modes and switches: ``cache=none|auto|always``,
``writeback``, ``posix_acl``, ``xattr``. The target offers what ``ExecTarget`` offers
(``channel``, ``daemon``, ``backing``), so every wire rule runs over virtio-fs too;
closing stops the rings, ends virtiofsd, reaps it and removes its socket and scratch dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from targets.channel import DEFAULT_BUFSIZE, Transcript
from targets.daemons import nothing_hidden, populate
from targets.errors import TargetNotInstalled, TargetSpecError
from targets.process import Daemon
from targets.spec import TargetSpec, parse_spec
from targets.vhost_user.channel import VirtioFsChannel
from targets.vhost_user.frontend import VhostUserFrontend

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
CACHE_MODES = ("none", "auto", "always")
SWITCHES = ("writeback", "posix_acl", "xattr")
HINT = "virtiofsd takes cache=none|auto|always, writeback, posix_acl, xattr"
START_TIMEOUT = 10.0
SUN_PATH_MAX = 108  # sockaddr_un.sun_path, its NUL included


def virtiofsd_argv(socket_path: Path, source: Path, options: dict[str, str | bool]) -> list[str]:
    """virtiofsd's command line for ``options`` (a spec's)."""
    argv = [str(VIRTIOFSD), f"--socket-path={socket_path}", "-o", f"source={source}"]
    for key, value in options.items():
        if key == "cache":
            if value not in CACHE_MODES:
                raise TargetSpecError(f"virtiofsd: cache={value} is not a cache mode", hint=HINT)
            argv += ["-o", f"cache={value}"]
        elif key in SWITCHES and value is True:
            argv += ["-o", key]
        else:
            raise TargetSpecError(f"virtiofsd: unknown option {key!r}", hint=HINT)
    return argv


class VirtiofsdTarget:
    """virtiofsd behind a vhost-user socket in a scratch dir; a context manager."""

    def __init__(self, spec: TargetSpec | str, *, grace: float = 2.0, bufsize: int = DEFAULT_BUFSIZE,
                 transcript: Transcript | None = None, scratch_root: Path | None = None) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if self.spec.kind != "virtiofsd":
            raise TargetSpecError(f"VirtiofsdTarget cannot open a {self.spec.kind!r} target")
        self.grace, self.bufsize, self.scratch_root = grace, bufsize, scratch_root
        self.transcript = transcript if transcript is not None else Transcript()
        self.scratch: Path | None = None
        self.socket_dir: Path | None = None  # only when the scratch dir's path is too long
        self.socket_path: Path | None = None
        self.backing: Path | None = None
        self.backing_hidden = nothing_hidden
        self.daemon: Daemon | None = None
        self.frontend: VhostUserFrontend | None = None
        self._channel: VirtioFsChannel | None = None
        self.exit_status: int | None = None
        self.alive_at_close = False

    @property
    def channel(self) -> VirtioFsChannel:
        if self._channel is None:
            raise RuntimeError("the target is not open")
        return self._channel

    @property
    def exited_by_itself(self) -> bool:
        return self.daemon is not None and self.exit_status is not None and self.daemon.signalled is None

    @property
    def exited_cleanly(self) -> bool:
        """virtiofsd ends by itself, status 0, once the front-end hangs up."""
        return self.alive_at_close and self.exited_by_itself and self.exit_status == 0

    def open(self) -> Self:
        if self.daemon is not None:
            raise RuntimeError("a VirtiofsdTarget is opened once")
        if not os.access(VIRTIOFSD, os.X_OK):
            raise TargetNotInstalled(f"virtiofsd: {VIRTIOFSD} not found",
                                     hint="apt-get install --no-install-recommends qemu-system-common")
        try:
            self.scratch = Path(tempfile.mkdtemp(prefix="fusecheck-virtiofsd-", dir=self.scratch_root))
            self.backing = self.scratch / "source"
            self.backing.mkdir()
            populate(self.backing)
            socket_path = self.scratch / "vhost-user.sock"
            if len(bytes(socket_path)) >= SUN_PATH_MAX:  # a deep scratch root: the socket elsewhere
                self.socket_dir = Path(tempfile.mkdtemp(prefix="fusecheck-vu-", dir="/tmp"))
                socket_path = self.socket_dir / "vhost-user.sock"
            self.socket_path = socket_path
            argv = virtiofsd_argv(socket_path, self.backing, self.spec.options)
            self.daemon = Daemon(argv, name=self.spec.text or "virtiofsd").start()
            self.frontend = VhostUserFrontend(str(socket_path), name=self.daemon.name)
            self.frontend.connect(time.monotonic() + START_TIMEOUT).setup()
            self._channel = VirtioFsChannel(self.frontend, liveness=self.daemon, bufsize=self.bufsize,
                                            transcript=self.transcript)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> int | None:
        """Stop the rings and hang up; virtiofsd then exits; reap it, remove the scratch dir."""
        try:
            self.alive_at_close = self.daemon is not None and self.daemon.alive()
            if self._channel is not None:
                self._channel.close()
            if self.frontend is not None:
                self.frontend.close()
            if self.daemon is not None and self.daemon.proc is not None:
                self.daemon.wait_exit(self.grace)
                self.exit_status = self.daemon.stop(self.grace)
        finally:
            for made in (self.scratch, self.socket_dir):
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
            self.scratch = self.socket_dir = None
        return self.exit_status

    def __enter__(self) -> Self:
        return self if self.daemon is not None else self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
