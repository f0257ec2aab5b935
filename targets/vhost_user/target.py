"""Wire targets behind a vhost-user socket, reached as a virtio-fs device through our
front-end: ``virtiofsd[:OPTS]`` (Debian's virtiofsd on a backing dir the suite creates),
``ref:vhost-user[,OPTS]`` (the reference server as a back-end) and ``vhost-user:SOCKET``
(a back-end a user started; it must accept a new connection for every test). The target
offers what ``ExecTarget`` offers (``channel``, ``daemon``, ``backing``), so every wire rule
runs over virtio-fs too; closing stops the rings, hangs up, reaps the back-end it started
and removes its socket and scratch dir.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from targets.channel import DEFAULT_BUFSIZE, Transcript
from targets.daemons import nothing_hidden, populate, reference_argv, reference_source
from targets.errors import TargetNotInstalled, TargetSpecError
from targets.process import Daemon, DaemonOwner
from targets.spec import REF_VHOST_USER, TargetSpec, is_vhost_user, parse_spec
from targets.vhost_user.channel import VirtioFsChannel
from targets.vhost_user.frontend import VhostUserFrontend
from targets.vhost_user.virtiofsd import VIRTIOFSD, virtiofsd_argv

START_TIMEOUT = 10.0
SUN_PATH_MAX = 108  # sockaddr_un.sun_path, its NUL included


class VhostUserTarget(DaemonOwner):
    """A virtio-fs back-end on a vhost-user socket; a context manager."""

    def __init__(self, spec: TargetSpec | str, *, grace: float = 2.0, bufsize: int = DEFAULT_BUFSIZE,
                 transcript: Transcript | None = None, scratch_root: Path | None = None) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if not is_vhost_user(self.spec):
            raise TargetSpecError(f"{self.spec.text or self.spec.kind} is not a vhost-user target")
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
        self._listener: socket.socket | None = None  # virtiofsd:fd, until the back-end has it
        self.exit_status: int | None = None
        self.alive_at_close = False

    @property
    def channel(self) -> VirtioFsChannel:
        if self._channel is None:
            raise RuntimeError("the target is not open")
        return self._channel

    def _command(self, socket_path: Path) -> list[str] | None:
        """The back-end's command line on ``socket_path`` (None: a user's, already running)."""
        assert self.scratch is not None
        if self.spec.kind == "vhost-user":
            return None
        if self.spec.kind == "virtiofsd":
            if not os.access(VIRTIOFSD, os.X_OK):
                raise TargetNotInstalled(f"virtiofsd: {VIRTIOFSD} not found",
                                         hint="apt-get install --no-install-recommends qemu-system-common")
            self.backing = self.scratch / "source"
            self.backing.mkdir()
            populate(self.backing)
            if self.spec.options.get("fd") is True:  # we listen; virtiofsd accepts on our socket
                self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._listener.bind(str(socket_path))
                self._listener.listen(1)
                return virtiofsd_argv(self._listener.fileno(), self.backing, self.spec.options)
            return virtiofsd_argv(socket_path, self.backing, self.spec.options)
        options = {k: value for k, value in self.spec.options.items() if k != REF_VHOST_USER}
        resolved, self.backing = reference_source(self.scratch, options)
        return reference_argv(resolved, "--vhost-user", str(socket_path))

    def open(self, *, set_up: bool = True) -> Self:
        """Start the back-end (if ours) and connect; ``set_up``: negotiate and start the
        queues too, with a channel on them (without: the front-end is left connected only,
        for rules that drive the set-up themselves)."""
        if self.frontend is not None:
            raise RuntimeError("a vhost-user target is opened once")
        try:
            self.scratch = Path(tempfile.mkdtemp(prefix="fusecheck-vhost-user-", dir=self.scratch_root))
            socket_path = self.scratch / "vhost-user.sock"
            if len(bytes(socket_path)) >= SUN_PATH_MAX:  # a deep scratch root: the socket elsewhere
                self.socket_dir = Path(tempfile.mkdtemp(prefix="fusecheck-vu-", dir="/tmp"))
                socket_path = self.socket_dir / "vhost-user.sock"
            argv = self._command(socket_path)
            name = self.spec.text or self.spec.kind
            if argv is None:
                socket_path = Path(self.spec.command[0])
            else:
                passed = (self._listener.fileno(),) if self._listener is not None else ()
                self.daemon = Daemon(argv, name=name, cwd=str(self.scratch), pass_fds=passed).start()
                self.socket_path = socket_path
                if self._listener is not None:  # the back-end holds it now
                    self._listener.close()
                    self._listener = None
            self.frontend = VhostUserFrontend(str(socket_path), name=name)
            self.frontend.connect(time.monotonic() + START_TIMEOUT, self.daemon)
            if not set_up:
                return self
            self.frontend.setup()
            self._channel = VirtioFsChannel(self.frontend, liveness=self.daemon, bufsize=self.bufsize,
                                            transcript=self.transcript)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> int | None:
        """Stop the rings and hang up; a back-end we started then exits: reap it, clean up."""
        try:
            self.alive_at_close = self.daemon is not None and self.daemon.alive()
            if self._channel is not None:
                self._channel.close()
            if self.frontend is not None:
                self.frontend.close()
            self.reap()  # a back-end we started ends by itself, status 0, once we hang up
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for made in (self.scratch, self.socket_dir):
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
            self.scratch = self.socket_dir = None
        return self.exit_status

    def __enter__(self) -> Self:
        return self if self.frontend is not None else self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
