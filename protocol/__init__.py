"""fusecheck's FUSE message layer: sans-IO, scapy-defined, kernel protocol 7.45.

``from protocol import FuseInitIn, FUSE_INIT, KernelSession, DaemonSession`` gives
every struct class, every constant of ``linux/fuse.h`` and the two session roles.
"""

from __future__ import annotations

from protocol.constants import *  # noqa: F403
from protocol.layers import *  # noqa: F403
from protocol.layers import LAYER_CLASSES, STRUCTS  # noqa: F401
from protocol.server import DaemonSession  # noqa: F401
from protocol.session import KernelSession, Negotiated  # noqa: F401
