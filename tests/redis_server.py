"""A throwaway redis-server for tests, ``with redis_server() as url:``; it keeps nothing on
disk and is always stopped and reaped. Tests wrap it in a fixture of their own."""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from targets.errors import TargetDied
from targets.process import Daemon, wait_ready
from targets.skip import require

REDIS_SERVER = "/usr/bin/redis-server"
READY_TIMEOUT = 10.0
ATTEMPTS = 3  # a free port may be taken between our probe and the server's bind


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server on 127.0.0.1 and a free port; yield ``redis://127.0.0.1:PORT/0``."""
    require(os.access(REDIS_SERVER, os.X_OK),
            f"redis-server not installed ({REDIS_SERVER}; apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="fusecheck-redis-") as scratch:
        for attempt in range(ATTEMPTS):
            port = _free_port()
            argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", scratch, "--daemonize", "no"]
            with Daemon(argv, name="redis-server", cwd=scratch) as daemon:
                try:
                    answers = functools.partial(_answers, port)
                    wait_ready(daemon, answers, READY_TIMEOUT, what="answering PING")
                except TargetDied:
                    if attempt + 1 < ATTEMPTS and "in use" in daemon.stdout_tail() + daemon.stderr_tail():
                        continue
                    raise
                yield f"redis://127.0.0.1:{port}/0"
                return
