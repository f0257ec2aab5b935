"""How fast the suite drives a virtio-fs device: ``python -m targets.vhost_user.bench``.

For GETATTR of the root and for 64 KiB READs of a file, in interleaved rounds:

(f) the front-end: the virtio-fs channel's ``send`` and ``recv`` of request bytes built
    once (laid into a slot, chained, kicked, reaped, the reply copied out) to virtiofsd;
(k) a loop that only kicks and reaps: the same chain offered again and again, nothing
    copied, built or decoded;
(w) the whole path over virtio-fs: the session builds each request and judges each reply;
(s) the same whole path over the SEQPACKET socket to passthrough_ll.

virtiofsd runs with cache=none. The goal is (f)/(k) >= 0.8: the front-end is not the
bottleneck. (w) shows what building and judging add (as on the socket). Everything runs
pinned to one CPU unless ``--no-pin`` (as ``python -m targets.bench``); an alarm bounds the
run and the daemons are reaped however it ends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from protocol import constants as c
from protocol.layers.structs import FuseGetattrIn, FuseOpenIn, FuseReadIn
from protocol.layers.variable import FuseName
from targets.bench import bench_conditions
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.vhost_user.channel import VirtioFsChannel, layout
from targets.wire import WireTarget, wire_target

GOAL = 0.8
READ_SIZE = 64 * 1024
FILE = b"bench-64k.bin"
BATCH = 64


class Subject:
    """One target after INIT, with the bench file looked up and open."""

    def __init__(self, target: WireTarget) -> None:
        self.target = target
        assert target.backing is not None, "the bench needs a backing dir"
        (target.backing / FILE.decode()).write_bytes(os.urandom(READ_SIZE))
        self.conn = KernelConnection(target.channel, timeout=5.0)
        assert self.conn.init().ok, "INIT refused"
        looked = self.conn.call(c.FUSE_LOOKUP, FuseName(name=FILE), nodeid=c.FUSE_ROOT_ID)
        assert looked.ok and looked.body is not None, "LOOKUP of the bench file failed"
        self.nodeid = int(looked.body.nodeid)
        opened = self.conn.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=self.nodeid)
        assert opened.ok and opened.body is not None, "OPEN of the bench file failed"
        self.fh = int(opened.body.fh)

    def request(self, what: str) -> tuple[int, tuple[object, ...], int]:
        if what == "GETATTR":
            return c.FUSE_GETATTR, (FuseGetattrIn(),), c.FUSE_ROOT_ID
        return c.FUSE_READ, (FuseReadIn(fh=self.fh, size=READ_SIZE),), self.nodeid

    def whole(self, what: str, seconds: float) -> float:
        """(w), (s): build, send, receive, judge."""
        opcode, layers, nodeid = self.request(what)
        call = self.conn.call
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(BATCH):
                reply = call(opcode, *layers, nodeid=nodeid)  # type: ignore[arg-type]
                if not reply.ok:
                    raise TargetError(f"{what} answered {reply.error}")
            done += BATCH
        return done / elapsed

    def frontend(self, what: str, seconds: float) -> float:
        """(f): the channel's send and recv of bytes built once."""
        opcode, layers, nodeid = self.request(what)
        session = self.conn.session
        data = session.request(opcode, *layers, nodeid=nodeid)  # type: ignore[arg-type]
        session.forget_pending(session.last_unique)
        channel = self.target.channel
        send, recv = channel.send, channel.recv
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(BATCH):
                send(data)
                recv(5.0)
            done += BATCH
        return done / elapsed

    def kick_and_reap(self, what: str, seconds: float) -> float:
        """(k): one chain laid out once and offered again and again."""
        channel = self.target.channel
        if not isinstance(channel, VirtioFsChannel):
            raise TargetError("kick and reap needs a virtio-fs target")
        frontend = channel.frontend
        opcode, layers, nodeid = self.request(what)
        data = self.conn.session.request(opcode, *layers, nodeid=nodeid)  # type: ignore[arg-type]
        self.conn.session.forget_pending(self.conn.session.last_unique)
        room = self.conn.session.reply_room(data) or 0
        slot = channel.free[-1]  # borrowed: the channel has nothing in flight now
        memory = frontend.memory
        assert memory is not None
        memory.write(slot.request, data)
        ring = frontend.queue(1)
        readable, writable = layout(slot.request, len(data), slot.reply, room)  # as the channel does
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(BATCH):
                ring.add(readable, writable)
                frontend.kick(1)
                while not ring.take_used():
                    frontend.wait(1.0)
            done += BATCH
        return done / elapsed


def measure(seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, list[float]]] = {}
    with wire_target("virtiofsd:cache=none") as device, wire_target("passthrough_ll") as daemon:
        over_device, over_socket = Subject(device), Subject(daemon)
        ways: dict[str, Callable[[str], float]] = {
            "(f) virtio-fs, front-end": lambda what: over_device.frontend(what, seconds),
            "(k) virtio-fs, kick+reap": lambda what: over_device.kick_and_reap(what, seconds),
            "(w) virtio-fs, whole path": lambda what: over_device.whole(what, seconds),
            "(s) socket, whole path": lambda what: over_socket.whole(what, seconds),
        }
        for what in ("GETATTR", "READ 64 KiB"):
            rates[what] = {label: [] for label in ways}
            for _ in range(rounds):
                for label, run in ways.items():
                    rates[what][label].append(run(what.split()[0]))
    medians: dict[str, dict[str, float]] = {}
    for what, per_way in rates.items():
        print(f"{what}: virtiofsd (cache=none) over virtio-fs, passthrough_ll over SEQPACKET, "
              f"{rounds} rounds of {seconds:g} s")
        medians[what] = {}
        for label, seen in per_way.items():
            rate = statistics.median(seen)
            medians[what][label[:3]] = rate
            spread = ", ".join(f"{r:,.0f}" for r in seen)
            print(f"  {label:28} {rate:>9,.0f} req/s {1e6 / rate:8.1f} us/req   (rounds: {spread})")
        got = medians[what]
        print(f"  (f)/(k) = {got['(f)'] / got['(k)']:.2f}   (w)/(s) = {got['(w)'] / got['(s)']:.2f}")
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets.vhost_user.bench",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per way and round (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--no-pin", action="store_true", help="do not run everything on one CPU")
    args = parser.parse_args(argv)
    try:
        with bench_conditions(pin=not args.no_pin, budget=int(args.rounds * args.seconds * 6 + 60),
                              who="this process and the daemons"):
            medians = measure(args.seconds, args.rounds)
    except (TargetError, RuntimeError, OSError, AssertionError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    worst = min(m["(f)"] / m["(k)"] for m in medians.values())
    print(f"goal: the front-end >= {GOAL} x kick+reap for both: {'met' if worst >= GOAL else 'not met'} "
          f"(worst {worst:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
