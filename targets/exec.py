"""ExecTarget: a daemon on one end of a SEQPACKET socketpair, the suite on the other."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from targets.channel import (
    DEFAULT_BUFSIZE,
    SeqpacketChannel,
    Transcript,
    seqpacket_pair,
)
from targets.daemons import REGISTRY, Instance, nothing_hidden
from targets.errors import TargetSpecError
from targets.process import Daemon, DaemonOwner
from targets.spec import TargetSpec, parse_spec


class ExecTarget(DaemonOwner):
    """A spawned daemon serving FUSE over a socket; use it as a context manager.

    Closing closes the channel, gives the daemon ``grace`` s to exit by itself,
    then stops it (SIGTERM, SIGKILL), reaps it and removes the scratch dir.

    A socket can only end a session with EOF, never the ENODEV a real
    /dev/fuse gives at unmount, and libfuse 3.14 exits 1 on EOF ("short read on
    fuse device"; on SIGTERM too). So a clean exit is one without a signal
    from us, with status 0 or the ``eof_status`` the daemon is known to use.
    """

    def __init__(
        self,
        spec: TargetSpec | str,
        *,
        grace: float = 2.0,
        eof_status: int | None = None,
        bufsize: int = DEFAULT_BUFSIZE,
        transcript: Transcript | None = None,
        scratch_root: Path | None = None,
    ) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if self.spec.kind not in ("exec", "daemon"):
            raise TargetSpecError(f"ExecTarget cannot open a {self.spec.kind!r} target")
        if eof_status is None and self.spec.kind == "daemon":
            eof_status = REGISTRY[self.spec.name].eof_status
        self.clean_statuses = frozenset({0} if eof_status is None else {0, eof_status})
        self.grace = grace
        self.bufsize = bufsize
        self.transcript = transcript if transcript is not None else Transcript()
        self.scratch_root = scratch_root
        self.scratch: Path | None = None
        self.backing: Path | None = None
        #: which entries of ``backing`` are the daemon's own metadata, not served
        self.backing_hidden: Callable[[str, os.stat_result], bool] = nothing_hidden
        self.daemon: Daemon | None = None
        self._channel: SeqpacketChannel | None = None
        self.exit_status: int | None = None
        #: Whether the daemon was still running when the channel was closed.
        self.alive_at_close = False

    @property
    def channel(self) -> SeqpacketChannel:
        if self._channel is None:
            raise RuntimeError("the target is not open")
        return self._channel

    def _instance(self, scratch: Path) -> Instance:
        if self.spec.kind == "exec":
            return Instance(self.spec.command)
        return REGISTRY[self.spec.name].prepare(scratch, self.spec.options)

    def open(self) -> Self:
        """Set up the scratch dir, the socketpair and the daemon."""
        if self.daemon is not None:
            raise RuntimeError("an ExecTarget is opened once")
        try:
            prefix = f"fusecheck-{self.spec.name}-"
            self.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch_root))
            instance = self._instance(self.scratch)
            self.backing = instance.backing
            self.backing_hidden = instance.hidden
            ours, theirs = seqpacket_pair(self.bufsize)
            with theirs:  # the daemon's end: ours to close once it is passed on
                self._channel = SeqpacketChannel(
                    ours,
                    name=self.spec.name,
                    bufsize=self.bufsize,
                    transcript=self.transcript,
                )
                fd = theirs.fileno()
                self.daemon = Daemon(
                    instance.argv(fd),
                    name=self.spec.name,
                    pass_fds=[fd],
                )
                self._channel.liveness = self.daemon
                self.daemon.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> int | None:
        """Close the channel, stop and reap the daemon, remove the scratch dir."""
        try:
            self.alive_at_close = self.daemon is not None and self.daemon.alive()
            if self._channel is not None:
                self._channel.close()
            self.reap()
        finally:
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
                self.scratch = None
        return self.exit_status

    def __enter__(self) -> Self:
        return self if self.daemon is not None else self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
