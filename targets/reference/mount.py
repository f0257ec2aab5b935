"""The reference server on real /dev/fuse: ``serve_mounted`` mounts it and serves until
Ctrl-C, SIGTERM or an unmount ends it (the kernel then reads ENODEV); with ``record`` every
message read from and written to /dev/fuse goes to a pcap file (targets.reference.record)."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from targets import fusedev
from targets.reference.host import HostFilesystem
from targets.reference.notify import HostWatch
from targets.reference.record import Recorder
from targets.reference.server import ReferenceServer

BUFFER = (1 << 20) + 4096  # a 1 MiB WRITE (max_pages 256) and its headers


def mount_options(server: ReferenceServer) -> list[str]:
    """Kernel options: everyone may use it (the suite's users are forked children), and the
    kernel checks permissions: a path walk through cached dentries never asks the server,
    so only ``default_permissions`` gives POSIX semantics (the server checks too)."""
    del server
    return ["allow_other", "default_permissions", f"max_read={BUFFER - 4096}"]


def _watch(server: ReferenceServer, write: Callable[[bytes], None]) -> HostWatch | None:
    """``notify``: the host tree's changes become notifications (targets.reference.notify)."""
    if server.options.notify is None or not isinstance(server.fs, HostFilesystem):
        return None
    watch = HostWatch(server.fs, server.lock, write, server.session.notify, server.options.notify)
    server.on_notify_reply = watch.retrieved
    return watch.start()


def serve_mounted(server: ReferenceServer, mountpoint: Path, record: Path | None = None) -> int:
    """Mount ``server`` at ``mountpoint`` and serve in the foreground; 0 after a clean end.
    ``record``: the file the kernel's requests and the server's replies are recorded in."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        fusedev.force_unmount(mountpoint, None)  # the reader then sees ENODEV and returns

    with fusedev.fuse_mount(mountpoint, options=mount_options(server), fsname="fusecheck-ref",
                            subtype="fusecheck") as (fd, _conn):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)

        def read() -> bytes:
            """The next request; b"" once stopped or unmounted. This thread reads and answers
            (``workers=0``) and is the only one taking signals: a signal interrupts the read,
            its handler unmounts, and the read retried sees ENODEV."""
            while not stop.is_set():
                try:
                    return os.read(fd, BUFFER)
                except OSError as exc:
                    if exc.errno == errno.ENODEV:  # unmounted
                        return b""
                    if exc.errno not in (errno.EAGAIN, errno.EINTR, errno.ENOENT):
                        raise
            return b""

        def write(data: bytes) -> None:
            os.write(fd, data)

        recorder = Recorder(record) if record is not None else None
        channel = recorder.wrap(read, write) if recorder is not None else (read, write)
        watch = _watch(server, channel[1])
        print(f"fusecheck reference server mounted at {mountpoint}", file=sys.stderr, flush=True)
        try:
            server.serve(*channel, workers=0)
        finally:
            if watch is not None:
                watch.close()
            if recorder is not None:
                recorder.close()
    return 0
