"""A stage for the CUSE campaign: the server after CUSE_INIT and a first OPEN and RELEASE,
its data limited; and when it is no longer fit for the next example."""

from __future__ import annotations

import resource

from conformance.checks import errno_name
from fuzz.cuse_wire import PROBE_FLAGS
from fuzz.reproducer import Exchange
from fuzz.stage import Stage
from fuzz.stats import Tally
from fuzz.watch import Watch
from protocol import constants as c
from protocol.layers.structs import FuseOpenIn, FuseReleaseIn
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget
from targets.errors import TargetError
from targets.spec import TargetSpec

#: RLIMIT_DATA of the server: a lying size may make it allocate, not take the host's memory
MEMORY_LIMIT = 1 << 30


def _limit_memory(stage: Stage) -> None:
    """Set MEMORY_LIMIT on the server unless its data is near it already (ASan reserves
    terabytes of shadow)."""
    daemon = stage.target.daemon
    pid = getattr(daemon, "pid", None)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/status") as status:
            data = next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:")), 0)
        if data < MEMORY_LIMIT // 2:
            resource.prlimit(pid, resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    except OSError:
        pass  # gone already: the first message says so


def open_stage(spec: TargetSpec, deadline: float, tally: Tally) -> Stage:
    """Start the CUSE server and send CUSE_INIT; stage.init holds how it went."""
    target = CuseTarget(spec).open()
    try:
        conn = KernelConnection(target.channel, timeout=deadline)
        stage = Stage(target=target, tally=tally, deadline=deadline, conn=conn,
                      extra={"watch": Watch(target.daemon)})
        data = conn.session.cuse_init()
        tally.sent_one("CUSE_INIT", "valid")
        reply = conn.wait(conn.session.last_unique, data)
        tally.answer("CUSE_INIT", "ok" if reply.ok else errno_name(reply.error))
        stage.init = Exchange(data, reply.raw)
        if conn.session.negotiated is None:
            raise TargetError(f"{target.channel.name} refused CUSE_INIT ({errno_name(reply.error)}): "
                              + "; ".join(f.message for f in reply.findings))
        _limit_memory(stage)
        tally.sent_one("FUSE_OPEN", "valid")
        opened = conn.call(c.FUSE_OPEN, FuseOpenIn(flags=PROBE_FLAGS), nodeid=0)
        tally.answer("FUSE_OPEN", "ok" if opened.ok else errno_name(opened.error))
        stage.extra["probe_ok"] = opened.ok  # the liveness probe's OPEN: it must go on succeeding
        if opened.ok:
            tally.sent_one("FUSE_RELEASE", "valid")
            fh = int(getattr(opened.body, "fh", 0) or 0)
            released = conn.call(c.FUSE_RELEASE, FuseReleaseIn(fh=fh, flags=PROBE_FLAGS), nodeid=0)
            tally.answer("FUSE_RELEASE", "ok" if released.ok else errno_name(released.error))
    except BaseException:
        target.close()
        raise
    return stage


def healthy(stage: Stage) -> bool:
    daemon = stage.target.daemon
    return not stage.extra.get("broken") and (daemon is None or daemon.alive())
