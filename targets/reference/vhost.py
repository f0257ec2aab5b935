"""The reference server as a vhost-user virtio-fs back-end (``ref:vhost-user``): it listens
on a socket, serves one front-end through ``targets.vhost_user.backend`` and ends when the
front-end hangs up. A reply longer than the device-writable buffers becomes an error reply
that fits (EOVERFLOW), never a write past them. ``mutant=NAME`` names a FUSE mutant of the
server or a device mutant of the back-end (``targets.reference.device_mutants``)."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from protocol.codec import codec
from protocol.layers.header import FUSE_OUT_HEADER_SIZE, FuseInHeader, FuseOutHeader
from targets.reference.device_mutants import DeviceMutant
from targets.reference.server import ReferenceServer
from targets.vhost_user.backend import Answer, VhostUserBackend

_UNIQUE, _UNIQUE_AT = codec(FuseInHeader).field("unique")
_OUT = codec(FuseOutHeader)


def fit(request: bytes, reply: bytes | None, room: int) -> bytes | None:
    """``reply``, or an EOVERFLOW error reply when it does not fit in ``room`` bytes (nothing
    when not even a header does)."""
    if reply is None or len(reply) <= room:
        return reply
    if room < FUSE_OUT_HEADER_SIZE:
        return None
    unique = _UNIQUE.unpack_from(request, _UNIQUE_AT)[0]
    return _OUT.struct.pack(FUSE_OUT_HEADER_SIZE, -errno.EOVERFLOW, unique)


def serve_vhost_user(server: ReferenceServer, path: Path, mutant: DeviceMutant | None = None,
                     connections: int = 1) -> int:
    """Listen on ``path``, serve ``connections`` front-ends one after another (0: until killed),
    remove the socket; ``mutant``: with that device fault. Each front-end is a new guest: a
    new FUSE session (it starts with INIT) on the same filesystem."""
    fits = mutant is None or mutant.fits
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(str(path))
        listener.listen(1)
        served = 0
        while not connections or served < connections:
            session = server if served == 0 else ReferenceServer(server.fs, server.options)
            backend = mutant.backend if mutant is not None else VhostUserBackend
            backend(_answerer(session, fits), request_queues=2).serve(listener)
            served += 1
    finally:
        listener.close()
        if path.is_socket():
            os.unlink(path)
    return 0


def _answerer(server: ReferenceServer, fits: bool) -> Answer:
    def answer(request: bytes, room: int, done: Callable[[bytes | None], None]) -> None:
        def reply() -> None:
            answered = server.handle(request)
            done(fit(request, answered, room) if fits else answered)

        if server.takes_long(request):
            threading.Thread(target=reply, daemon=True).start()
        else:
            reply()

    return answer
