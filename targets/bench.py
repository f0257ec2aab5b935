"""How fast the layer talks to a real daemon: ``python -m targets.bench [--seconds S]``.

After INIT, GETATTR of the root is sent and answered in a tight loop (send,
receive, decode the header, check ``unique``/``error``/``len``) over one
SEQPACKET socketpair to one libfuse daemon, three ways in turn:

(a) the fast path: ``codec`` structs packed into a preallocated buffer;
(b) full scapy: ``FuseInHeader()/FuseGetattrIn()`` built, the reply dissected;
(c) a C client compiled now against the system ``linux/fuse.h``, handed the socket.

The goal is (a)/(c) >= 0.9.  Then (root and /dev/fuse needed) the reference
server and libfuse's passthrough_ll are each mounted with caching off
(``ref:cache=none``, ``cache=never``) and run one syscall workload (stat, open,
pread, pwrite, fstat, close, listdir, statvfs); a preloaded shim counts the
requests each daemon reads from /dev/fuse, so the rates are requests served per
second.  The goal is ref within 3x of passthrough_ll.  It lives in ``targets/``
because it does I/O; the whole run is bounded by an alarm, so a stuck daemon
cannot hang it, and the mounts are torn down however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from protocol import constants as c
from protocol.codec import codec
from protocol.layers.header import FuseInHeader, FuseOutHeader
from protocol.layers.structs import FuseAttrOut, FuseGetattrIn
from targets.channel import SeqpacketChannel
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.exec import ExecTarget
from targets.mounts import MountTarget

GOAL = 0.9
BATCH = 256  # round trips between two looks at the clock
RECV_SIZE = 1 << 17

C_CLIENT = r"""
#include <linux/fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: FD SECONDS UNIQUE UID GID PID\n"); return 2; }
    int fd = atoi(argv[1]);
    long long budget = (long long)(atof(argv[2]) * 1e9);
    unsigned long long unique = strtoull(argv[3], NULL, 0);
    struct { struct fuse_in_header h; struct fuse_getattr_in g; } req;
    static char reply[1 << 17];
    memset(&req, 0, sizeof req);
    req.h.len = sizeof req;
    req.h.opcode = FUSE_GETATTR;
    req.h.nodeid = FUSE_ROOT_ID;
    req.h.uid = atoi(argv[4]);
    req.h.gid = atoi(argv[5]);
    req.h.pid = atoi(argv[6]);
    long long start = now_ns(), elapsed;
    unsigned long long count = 0;
    for (;;) {
        for (int i = 0; i < %(batch)d; i++) {
            unique += 2;
            req.h.unique = unique;
            if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) { perror("send"); return 1; }
            ssize_t n = recv(fd, reply, sizeof reply, 0);
            const struct fuse_out_header *out = (const void *)reply;
            if (n < (ssize_t)sizeof *out || out->unique != unique || out->error || out->len != n) {
                fprintf(stderr, "bad reply: %%zd bytes\n", n);
                return 1;
            }
        }
        count += %(batch)d;
        elapsed = now_ns() - start;
        if (elapsed >= budget) break;
    }
    printf("%%llu %%lld %%llu\n", count, elapsed, unique);
    return 0;
}
"""


class Loop:
    """The ways of doing the round trip; each returns its rate in requests per second.

    The two Python ways share one skeleton (``timed``) and only supply the round trip.
    """

    def __init__(self, sock: socket.socket, unique: int, warm_up: float = 0.0) -> None:
        self.sock = sock
        self.unique = unique
        self.ids = (os.getuid(), os.getgid(), os.getpid())
        self.warm_up = warm_up  # seconds of untimed round trips before the first timed run

    def timed(self, round_trip: Callable[[int], None], seconds: float) -> float:
        """The shared skeleton: the warm-up (first run only), then ``round_trip(unique)`` in
        batches of ``BATCH`` until ``seconds`` have passed; the rate."""
        if self.warm_up > 0:
            self._batches(round_trip, self.warm_up)  # warm up the daemon and the caches
            self.warm_up = 0.0
        count, elapsed = self._batches(round_trip, seconds)
        return count / elapsed

    def _batches(self, round_trip: Callable[[int], None], seconds: float) -> tuple[int, float]:
        """(requests, seconds); the clock is read once per batch."""
        unique, count, clock = self.unique, 0, time.perf_counter
        start = clock()
        deadline = start + seconds
        while True:
            for _ in range(BATCH):
                unique += 2
                round_trip(unique)
            count += BATCH
            now = clock()
            if now >= deadline:
                break
        self.unique = unique
        return count, now - start

    def fast(self, seconds: float) -> float:
        """(a) the codec: a request packed once, its unique patched in place, ``recv_into``,
        the reply header unpacked and checked."""
        header, body = codec(FuseInHeader), codec(FuseGetattrIn)
        size = header.size + body.size
        buf = bytearray(size)
        uid, gid, pid = self.ids
        header.pack_into(buf, 0, len=size, opcode=c.FUSE_GETATTR, nodeid=c.FUSE_ROOT_ID,
                         uid=uid, gid=gid, pid=pid)
        body.pack_into(buf, header.size)
        unique_struct, unique_offset = header.field("unique")
        set_unique = unique_struct.pack_into
        reply = bytearray(RECV_SIZE)
        unpack_from = codec(FuseOutHeader).struct.unpack_from
        send, recv_into = self.sock.send, self.sock.recv_into

        def round_trip(unique: int) -> None:
            set_unique(buf, unique_offset, unique)
            send(buf)
            n = recv_into(reply)
            length, error, got = unpack_from(reply)
            if got != unique or error or length != n:
                raise RuntimeError(f"bad reply: unique {got}, error {error}, {n} bytes")

        return self.timed(round_trip, seconds)

    def scapy(self, seconds: float) -> float:
        """(b) scapy objects both ways: build the request, dissect header and attr_out."""
        send, recv = self.sock.send, self.sock.recv
        uid, gid, pid = self.ids

        def round_trip(unique: int) -> None:
            request = FuseInHeader(
                opcode=c.FUSE_GETATTR, unique=unique, nodeid=c.FUSE_ROOT_ID,
                uid=uid, gid=gid, pid=pid,
            ) / FuseGetattrIn()
            send(bytes(request))
            data = recv(RECV_SIZE)
            head = FuseOutHeader(data[:16])
            FuseAttrOut(data[16:])
            if head.unique != unique or head.error or head.len != len(data):
                raise RuntimeError(f"bad reply: {head.summary()}")

        return self.timed(round_trip, seconds)

    def c_client(self, binary: Path, seconds: float) -> float:
        """(c) the C client, given our end of the socket as an inherited fd; it times itself."""
        fd = self.sock.fileno()
        argv = [str(binary), str(fd), str(seconds), str(self.unique), *map(str, self.ids)]
        out = subprocess.run(
            argv, pass_fds=(fd,), capture_output=True, text=True, timeout=seconds + 30, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"C client failed ({out.returncode}): {out.stderr.strip()}")
        count, elapsed_ns, unique = (int(word) for word in out.stdout.split())
        self.unique = unique
        return count / (elapsed_ns / 1e9)


def build_client(workdir: Path) -> Path:
    """Compile the C client; ``RuntimeError`` if gcc is missing or fails."""
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc not found (apt-get install gcc)")
    source, binary = workdir / "bench_client.c", workdir / "bench_client"
    source.write_text(C_CLIENT % {"batch": BATCH})
    cmd = ["gcc", "-O2", "-o", str(binary), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the C client failed:\n{result.stderr}")
    return binary


def init(channel: SeqpacketChannel) -> tuple[int, int, int]:
    """INIT through a KernelSession; the daemon's (major, minor) and the last unique used."""
    conn = KernelConnection(channel, timeout=10)
    reply = conn.init(flags=c.FUSE_INIT_EXT | c.FUSE_ASYNC_READ | c.FUSE_BIG_WRITES
                      | c.FUSE_MAX_PAGES)
    if not reply.ok or reply.body is None:
        raise RuntimeError(f"INIT failed: error {reply.error}")
    return int(reply.body.major), int(reply.body.minor), conn.session.last_unique


def encode_decode_cost(rounds: int = 20000) -> tuple[float, float]:
    """Seconds of CPU per request for (a) and (b) without any I/O."""
    reply = bytes(FuseOutHeader(unique=4) / FuseAttrOut())
    hdr, out = codec(FuseInHeader).struct, codec(FuseOutHeader).struct
    buf = bytearray(hdr.size + codec(FuseGetattrIn).size)
    start = time.perf_counter()
    for unique in range(rounds):
        hdr.pack_into(buf, 0, len(buf), c.FUSE_GETATTR, unique, 1, 0, 0, 0, 0, 0)
        out.unpack_from(reply)
    fast = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for unique in range(rounds // 20):
        bytes(FuseInHeader(opcode=c.FUSE_GETATTR, unique=unique, nodeid=1) / FuseGetattrIn())
        FuseOutHeader(reply[:16]), FuseAttrOut(reply[16:])
    slow = (time.perf_counter() - start) / (rounds // 20)
    return fast, slow


def _pin(enabled: bool) -> set[int] | None:
    """Run on one CPU (the daemon and the C client inherit it); the old set, to restore."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return None
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(old)})
    return old


@contextlib.contextmanager
def bench_conditions(*, pin: bool, budget: int, who: str) -> Iterator[None]:
    """A bench's run: pinned to one CPU (``who`` inherits it; said once) unless ``pin`` is
    false, and ended by an alarm after ``budget`` s, both undone however it ends."""
    old_cpus = _pin(pin)
    signal.signal(signal.SIGALRM, _overrun)
    signal.alarm(budget)
    try:
        if old_cpus is not None:
            print(f"pinned to CPU {max(old_cpus)}: {who}")
        yield
    finally:
        signal.alarm(0)
        if old_cpus is not None:
            os.sched_setaffinity(0, old_cpus)


def measure(target: str, seconds: float, rounds: int) -> dict[str, float]:
    """Median req/s of each way over ``rounds`` interleaved rounds; prints as it goes."""
    with tempfile.TemporaryDirectory(prefix="fusecheck-bench-") as tmp, ExecTarget(target) as t:
        binary = build_client(Path(tmp))
        sock = t.channel.sock
        major, minor, unique = init(t.channel)
        pid = t.daemon.pid if t.daemon else "?"
        print(f"{target} (pid {pid}) answered INIT with {major}.{minor}; GETATTR of the root, "
              f"{rounds} rounds of {seconds:g} s per way")
        loop = Loop(sock, unique=unique, warm_up=min(0.3, seconds))  # spent by the first way
        ways: dict[str, Callable[[], float]] = {
            "(a) fast path (codec)": lambda: loop.fast(seconds),
            "(b) scapy objects": lambda: loop.scapy(seconds),
            "(c) C client": lambda: loop.c_client(binary, seconds),
        }
        rates: dict[str, list[float]] = {label: [] for label in ways}
        for _ in range(rounds):
            for label, run in ways.items():
                rates[label].append(run())
    for label, seen in rates.items():
        rate = statistics.median(seen)
        spread = ", ".join(f"{r:,.0f}" for r in seen)
        print(f"  {label:22} {rate:>9,.0f} req/s {1e6 / rate:7.2f} us/req   (rounds: {spread})")
    return {label[:3]: statistics.median(seen) for label, seen in rates.items()}


COUNTER_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static unsigned long long *counter;
static int fuse_fd = -1;
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);

__attribute__((constructor)) static void setup(void) {
    real_read = dlsym(RTLD_NEXT, "read");
    real_splice = dlsym(RTLD_NEXT, "splice");
    const char *path = getenv("FUSECHECK_BENCH_COUNTER");
    int fd = path ? open(path, O_RDWR) : -1;
    if (fd >= 0) {
        void *map = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        counter = map == MAP_FAILED ? NULL : map;
        close(fd);
    }
}

static void count(int fd, ssize_t n) {
    struct stat st;
    if (n <= 0 || !counter)
        return;
    if (fd != fuse_fd) {
        if (fstat(fd, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 229))
            return;
        fuse_fd = fd;
    }
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

ssize_t read(int fd, void *buf, size_t size) {
    ssize_t n = real_read(fd, buf, size);
    count(fd, n);
    return n;
}

ssize_t splice(int in, loff_t *in_off, int out, loff_t *out_off, size_t len, unsigned int flags) {
    ssize_t n = real_splice(in, in_off, out, out_off, len, flags);
    count(in, n);
    return n;
}
"""
MOUNT_GOAL = 3.0  # ref may take up to this many times passthrough_ll's time per request
BLOCK = 4096


def build_shim(workdir: Path) -> Path:
    """Compile the request-counting shim (LD_PRELOAD): every read or splice from /dev/fuse."""
    source, library = workdir / "count_requests.c", workdir / "count_requests.so"
    source.write_text(COUNTER_SHIM)
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the counting shim failed:\n{result.stderr}")
    return library


def workload(root: Path, seconds: float) -> int:
    """Syscalls that each reach the daemon with caching off, until ``seconds`` pass; rounds done."""
    path, block = root / "bench.dat", b"x" * BLOCK
    path.write_bytes(block)
    rounds, clock = 0, time.perf_counter
    deadline = clock() + seconds
    while clock() < deadline:
        os.stat(path)
        fd = os.open(path, os.O_RDWR)
        try:
            os.pread(fd, BLOCK, 0)
            os.pwrite(fd, block, 0)
            os.fstat(fd)
        finally:
            os.close(fd)
        os.listdir(root)
        os.statvfs(root)
        rounds += 1
    return rounds


@dataclass
class Mounted:
    """One mounted daemon under the workload: its request counter and what each round saw."""

    label: str
    mount: MountTarget
    counter: Path
    rates: list[float] = field(default_factory=list)  # requests per second
    cpu: list[float] = field(default_factory=list)  # the daemon's CPU seconds per request
    per_round: list[float] = field(default_factory=list)  # requests per workload round

    def requests(self) -> int:
        return int.from_bytes(self.counter.read_bytes()[:8], "little")

    def cpu_seconds(self) -> float:
        """User + system time of the daemon, all its threads (/proc/PID/stat)."""
        pid = self.mount.daemon.pid if self.mount.daemon else None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self, seconds: float) -> None:
        """One timed round of the workload."""
        before, cpu, start = self.requests(), self.cpu_seconds(), time.perf_counter()
        done = workload(self.mount.path, seconds)
        elapsed, requests = time.perf_counter() - start, max(self.requests() - before, 1)
        self.rates.append(requests / elapsed)
        self.cpu.append((self.cpu_seconds() - cpu) / requests)
        self.per_round.append(requests / max(done, 1))


@contextlib.contextmanager
def preloaded(shim: Path, counter: Path) -> Iterator[None]:
    """Daemons started meanwhile run with the counting shim, counting into ``counter``."""
    counter.write_bytes(bytes(8))
    saved = {key: os.environ.get(key) for key in ("LD_PRELOAD", "FUSECHECK_BENCH_COUNTER")}
    os.environ.update(LD_PRELOAD=str(shim), FUSECHECK_BENCH_COUNTER=str(counter))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure_mounts(seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    """(requests/s, daemon CPU s/request) of ref and passthrough_ll mounted with caching off,
    same workload, medians of interleaved rounds."""
    from targets import fusedev
    from targets.mounts import PassthroughLl, ReferenceMount

    if os.geteuid() != 0 or not os.path.exists(fusedev.FUSE_DEVICE):
        raise RuntimeError("the mount bench needs root and /dev/fuse")
    fusedev.enter_private_mount_namespace()  # nothing mounted here reaches the host
    targets: dict[str, Callable[[], MountTarget]] = {
        "ref:cache=none": lambda: ReferenceMount({"cache": "none"}),
        "passthrough_ll -o cache=never": lambda: PassthroughLl({"cache": "never"}),
    }
    print(f"mounted, caching off: stat, open, pread, pwrite, fstat, close, listdir, statvfs; "
          f"{rounds} interleaved rounds of {seconds:g} s each")
    with tempfile.TemporaryDirectory(prefix="fusecheck-bench-") as tmp, contextlib.ExitStack() as stack:
        shim = build_shim(Path(tmp))
        daemons: list[Mounted] = []
        for i, (label, make) in enumerate(targets.items()):
            counter = Path(tmp) / f"counter{i}"
            with preloaded(shim, counter):
                daemons.append(Mounted(label, stack.enter_context(make()), counter))
        for daemon in daemons:
            workload(daemon.mount.path, min(0.3, seconds))  # warm up
        for _ in range(rounds):
            for daemon in daemons:
                daemon.run(seconds)
    rates: dict[str, tuple[float, float]] = {}
    for daemon in daemons:
        rate, cpu = statistics.median(daemon.rates), statistics.median(daemon.cpu)
        rates[daemon.label] = rate, cpu
        spread = ", ".join(f"{r:,.0f}" for r in daemon.rates)
        print(f"  {daemon.label:30} {rate:>9,.0f} req/s {1e6 / rate:7.1f} us/req, daemon CPU "
              f"{cpu * 1e6:5.1f} us/req, "
              f"{statistics.median(daemon.per_round):.0f} requests per round   (rounds: {spread})")
    return rates


def _overrun(signum: int, frame: object) -> None:
    raise RuntimeError("the bench ran past its time budget: is the daemon stuck?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per way and round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--target", default="hello_ll", help="daemon to ask (default hello_ll)")
    parser.add_argument("--no-pin", action="store_true", help="do not run everything on one CPU")
    parser.add_argument("--only", choices=("socket", "mount"), help="run one of the two benches")
    args = parser.parse_args(argv)

    budget = int(args.rounds * args.seconds * 5 + 120)  # five ways, plus builds, mounts, start-up
    try:
        with bench_conditions(pin=not args.no_pin, budget=budget,
                              who="this process, the daemons and the C client"):
            if args.only != "mount":
                socket_bench(args.target, args.seconds, args.rounds)
            if args.only != "socket":
                mount_bench(args.seconds, args.rounds)
    except (TargetError, RuntimeError, OSError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


def socket_bench(target: str, seconds: float, rounds: int) -> None:
    """The socket bench (a)-(c) and its verdict."""
    rates = measure(target, seconds, rounds)
    fast_cpu, scapy_cpu = encode_decode_cost()
    ratio_a, ratio_b = rates["(a)"] / rates["(c)"], rates["(b)"] / rates["(c)"]
    print(f"  (a)/(c) = {ratio_a:.2f}   (b)/(c) = {ratio_b:.3f}")
    print(f"  encode+decode alone, no I/O: fast path {fast_cpu * 1e6:.2f} us/req, "
          f"scapy {scapy_cpu * 1e6:.0f} us/req")
    verdict = "met" if ratio_a >= GOAL else "not met"
    print(f"  goal: fast path >= {GOAL} x C client: {verdict}")


def mount_bench(seconds: float, rounds: int) -> None:
    """The mount bench and its verdict."""
    (ref, ref_cpu), (c_rate, c_cpu) = measure_mounts(seconds, rounds).values()
    slower = c_rate / ref
    verdict = "met" if slower <= MOUNT_GOAL else "not met"
    print(f"  passthrough_ll/ref = {slower:.2f}: ref takes {slower:.2f}x the C daemon's time per "
          f"request ({ref_cpu / c_cpu:.1f}x its CPU)")
    print(f"  goal: ref within {MOUNT_GOAL:g}x of passthrough_ll: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
