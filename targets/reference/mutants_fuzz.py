"""Mutants only a fuzzer finds: the server dies or stops answering on a request no rule sends.

``crash-on-long-name``: a name past NAME_MAX kills the server (SIGABRT), as a C server that
copies names into a ``char[NAME_MAX + 1]`` would. ``hang-on-huge-offset``: a READ or WRITE
at an offset with the sign bit set never comes back and holds the server's lock, as a loop
``while (off < end)`` over a negative ``loff_t`` would. The fuzz self-tests show the
campaign finds, shrinks and replays each (``FUZZ-FUSE``).

Registered into ``mutants.MUTANTS`` when ``mutants`` is imported.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from protocol import constants as c
from protocol.events import Request
from protocol.layers import FuseReadIn, FuseWriteIn
from targets.reference.mutants import _on, mutant

NAME_MAX = 255
NAMED = {c.FUSE_LOOKUP, c.FUSE_MKDIR, c.FUSE_MKNOD, c.FUSE_CREATE, c.FUSE_SYMLINK, c.FUSE_UNLINK,
         c.FUSE_RMDIR, c.FUSE_RENAME, c.FUSE_RENAME2, c.FUSE_LINK}
FUZZ_AREA = "fuzz"  # conformance rules do not send these requests: the fuzz self-tests catch them


def _abort_on_long_name(srv: Any, req: Request) -> None:
    if any(len(name) > NAME_MAX for name in req.names()):
        os.abort()


def _stuck_on_huge_offset(srv: Any, req: Request) -> None:
    try:
        arg = req.layer(FuseReadIn if req.opcode == c.FUSE_READ else FuseWriteIn)
    except (IndexError, KeyError):  # a body too short to hold one: refused later
        return
    if arg is not None and int(arg.offset) >= 1 << 63:
        threading.Event().wait()  # never set: the request, and the lock, are held for good


mutant("crash-on-long-name", FUZZ_AREA, "a name longer than NAME_MAX kills the server (SIGABRT)",
       "FUZZ-FUSE", request=_on(NAMED, _abort_on_long_name))
mutant("hang-on-huge-offset", FUZZ_AREA, "a READ or WRITE at an offset >= 2**63 never returns and "
       "holds the server's lock", "FUZZ-FUSE",
       request=_on({c.FUSE_READ, c.FUSE_WRITE}, _stuck_on_huge_offset))
