"""CUSE targets: ``cuse:COMMAND`` (a CUSE server's command line), ``cuse-example[:name=N]``
(libfuse's example ``cuse``, compiled from Debian's libfuse3-dev sources) and
``ref:cuse[,name=N]`` (the reference FIFO device, ``targets.reference.cuse``). The server runs
with /dev/cuse served by the suite (``targets.cuse.standin``, through ``targets.cuse.launch``);
``channel`` is the kernel's end of it. Closing stops the stand-in (the server's next read
fails), reaps the server and removes the scratch directory."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from targets.channel import SeqpacketChannel, Transcript, seqpacket_pair
from targets.cuse.standin import StandIn, StandInChannel
from targets.daemons import REPO_ROOT
from targets.errors import TargetSpecError
from targets.process import Daemon, DaemonOwner
from targets.spec import TargetSpec, is_cuse, parse_spec

EXAMPLE_DEVNAME = "fusecheck-cuse"
#: What a target's device does with data, for the rules that check it: "buffer" (libfuse's
#: example: writes store at the offset, reads return what is stored there; CUSE's offsets are
#: always 0), or None when the suite knows nothing of it
MODELS = {"cuse-example": "buffer", "ref:cuse": "fifo"}
REF_DEVNAME = "fusecheck-fifo"


class CuseTarget(DaemonOwner):
    """A CUSE server behind the stand-in /dev/cuse; a context manager."""

    def __init__(self, spec: TargetSpec | str, *, grace: float = 2.0,
                 scratch_root: Path | None = None) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if not is_cuse(self.spec):
            raise TargetSpecError(f"{self.spec.text or self.spec.kind} is not a CUSE target")
        self.grace, self.scratch_root = grace, scratch_root
        self.scratch: Path | None = None
        self.standin: StandIn | None = None
        self._socket_channel: SeqpacketChannel | None = None
        self.daemon: Daemon | None = None
        self.exit_status: int | None = None
        self.alive_at_close = False

    @property
    def family(self) -> str:
        """"cuse", "cuse-example" or "ref:cuse"."""
        return "ref:cuse" if self.spec.kind == "daemon" else self.spec.kind

    @property
    def devname(self) -> str | None:
        """The DEVNAME the target is started with, where the suite chooses it."""
        default = {"cuse-example": EXAMPLE_DEVNAME, "ref:cuse": REF_DEVNAME}.get(self.family)
        return None if default is None else str(self.spec.options.get("name", default))

    @property
    def model(self) -> str | None:
        return MODELS.get(self.family)

    @property
    def over_socket(self) -> bool:
        """``ref:cuse,socket``: CUSE over a SEQPACKET socket instead of the stand-in (no mount,
        no namespace: for hosts without /dev/fuse or a private mount namespace)."""
        return self.family == "ref:cuse" and bool(self.spec.options.get("socket"))

    @property
    def channel(self) -> StandInChannel | SeqpacketChannel:
        if self._socket_channel is not None:
            return self._socket_channel
        if self.standin is None:
            raise RuntimeError("the target is not open")
        return self.standin.channel

    @property
    def transcript(self) -> Transcript:
        return self.channel.transcript

    def command(self) -> list[str]:
        if self.family == "ref:cuse":
            unknown = set(self.spec.options) - {"cuse", "name", "mutant", "socket"}
            if unknown:
                raise TargetSpecError(f"ref:cuse: unknown option {sorted(unknown)[0]!r}",
                                      hint="ref:cuse takes name=DEVNAME, mutant=NAME, socket")
            mutant = self.spec.options.get("mutant")
            return [sys.executable, "-m", "targets.reference", "--cuse", str(self.devname),
                    *(["--mutant", str(mutant)] if mutant else [])]
        if self.spec.kind == "cuse-example":
            from targets.build import build_example

            unknown = set(self.spec.options) - {"name"}
            if unknown:
                raise TargetSpecError(f"cuse-example: unknown option {sorted(unknown)[0]!r}",
                                      hint="cuse-example takes name=DEVNAME")
            return [str(build_example("cuse")), "-f", "-s", f"--name={self.devname}"]
        return list(self.spec.command)

    def open(self) -> Self:
        try:
            command = self.command()
            self.scratch = Path(tempfile.mkdtemp(prefix="fusecheck-cuse-", dir=self.scratch_root))
            name = self.spec.text or self.spec.kind
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            if self.over_socket:
                ours, theirs = seqpacket_pair()
                try:
                    self.daemon = Daemon([*command, "--cuse-fd", str(theirs.fileno())], name=name,
                                         cwd=str(self.scratch), env=env, pass_fds=(theirs.fileno(),)).start()
                finally:
                    theirs.close()
                self._socket_channel = SeqpacketChannel(ours, liveness=self.daemon, name=name)
                return self
            self.standin = StandIn(self.scratch / "standin", name=name).start()
            argv = [sys.executable, "-m", "targets.cuse.launch", str(self.standin.path), "--", *command]
            self.daemon = Daemon(argv, name=name, cwd=str(self.scratch), env=env).start()
            self.standin.channel.liveness = self.daemon
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> int | None:
        try:
            self.alive_at_close = self.daemon is not None and self.daemon.alive()
            if self.standin is not None:
                self.standin.close()  # the server's next read of /dev/cuse fails: it ends
            if self._socket_channel is not None:
                self._socket_channel.close()  # the server reads EOF: it ends
            self.reap()
        finally:
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
        return self.exit_status

    def __enter__(self) -> Self:
        return self if self.standin is not None or self._socket_channel is not None else self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
