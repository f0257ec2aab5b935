"""Where FUSE-MACHINE-001's examples run: one daemon for as long as it serves, a new one
after it died or stopped answering (so hypothesis can go on shrinking a crash).

Each example gets a ``Bench``: the connection after INIT, a directory name of its own,
the host directory the server serves (if known), where a failure is saved and the
command that replays it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from conformance.checks import errno_name
from conformance.protocol.machine import Bench
from conformance.protocol.scratch import READ_ONLY, remove_tree, unique_name
from fuzz.reproducer import Exchange
from protocol import constants as c
from protocol.layers.structs import FuseForgetIn, FuseMkdirIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.spec import TargetSpec
from targets.wire import WireTarget, wire_target


class Rig:
    """The daemon the examples use, reopened when an example left it dead or stuck."""

    def __init__(self, spec: TargetSpec, *, timeout: float, backing: Path | None, save_to: Path) -> None:
        self.spec = spec
        self.timeout = timeout
        self.backing = backing
        self.save_to = save_to
        self.replay = f"python -m fuzz replay {{file}} --target {shlex.quote(spec.text)}"
        self.target: WireTarget | None = None
        self.conn: KernelConnection | None = None
        self.init: Exchange | None = None
        self.restarts = 0
        self.examples = 0
        self.made: list[bytes] = []  # example directories not removed yet
        self.failures: list[str] = []  # the problems of each failed example, in order
        self._failures_seen = 0

    def bench(self) -> Bench:
        """A bench for the next example, on the running daemon if it is still well."""
        failed = len(self.failures) != self._failures_seen
        self._failures_seen = len(self.failures)
        if self.target is None or failed or not self._well():
            self._reopen()  # after a failure too: what it left must not steer the next example
        self._clean_up()
        if not self._well():  # what an earlier example left killed it: not this example's doing
            self._reopen()
        assert self.conn is not None and self.init is not None and self.target is not None
        self.examples += 1
        name = unique_name("machine")
        self.made.append(name)
        backing, hidden = (self.backing, None) if self.backing else (self.target.backing,
                                                                     self.target.backing_hidden)
        return Bench(self.conn, self.init, name, backing, hidden, self.save_to, self.replay, self.failures)

    def _clean_up(self) -> None:
        """Remove the directories earlier examples made (the served tree may outlive us)."""
        assert self.conn is not None
        while self.made:
            try:
                remove_tree(self.conn, self.made[-1])
            except (TargetError, AssertionError):
                pass  # what an example broke: the next bench reopens the daemon if need be
            self.made.pop()

    def _well(self) -> bool:
        assert self.target is not None and self.conn is not None
        daemon = self.target.daemon
        return daemon is not None and daemon.alive() and not self.conn.session.pending

    def _reopen(self) -> None:
        if self.target is not None:
            self.close()
            self.restarts += 1
        self.target = wire_target(self.spec).open()
        self.conn = KernelConnection(self.target.channel, timeout=self.timeout)
        data = self.conn.session.init()
        reply = self.conn.wait(self.conn.session.last_unique, data)
        assert reply.ok and self.conn.session.negotiated, f"INIT refused: {errno_name(reply.error)}"
        self.init = Exchange(data, reply.raw)
        if self.restarts == 0:
            self._check_writable()

    def _check_writable(self) -> None:
        """Not applicable to a read-only tree: the machine's steps all make or change names."""
        assert self.conn is not None
        name = unique_name("machine-probe")
        made = self.conn.call(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755, umask=0), FuseName(name=name),
                              nodeid=c.FUSE_ROOT_ID)
        if -made.error in READ_ONLY:
            self.close()
            pytest.skip("not applicable: the server's tree is not writable (MKDIR answered "
                        f"{errno_name(made.error)}); the machine creates, changes and removes names")
        assert made.ok, f"MKDIR of a probe directory in the root answered {errno_name(made.error)}"
        self.conn.call(c.FUSE_RMDIR, FuseName(name=name), nodeid=c.FUSE_ROOT_ID)
        if made.body is not None:
            self.conn.send(c.FUSE_FORGET, FuseForgetIn(nlookup=1), nodeid=int(made.body.nodeid))

    def close(self) -> None:
        if self.target is not None:
            try:
                if self._well():
                    self._clean_up()
            except (TargetError, AssertionError):
                pass
            try:
                self.target.close()
            except TargetError:
                pass
        self.target = self.conn = self.init = None
