"""Scapy layers for every struct and message part of the FUSE protocol (7.45).

A field called ``name`` (``fuse_dirent.name``, ``FuseName``) shadows scapy's
``Packet.name`` attribute: read it with ``pkt.getfieldval("name")``.
"""

from __future__ import annotations

from scapy.packet import Packet

from protocol.layers import compat, header, notify, structs, uring, variable
from protocol.layers.base import FuseStruct, fixed_size, flat_names, struct_format
from protocol.layers.compat import *  # noqa: F403
from protocol.layers.header import *  # noqa: F403
from protocol.layers.messages import (
    NO_REPLY,
    NOTIFY_LAYERS,
    REPLY_LAYERS,
    REQUEST_LAYERS,
    VARIABLE_REPLY,
    reply_layers,
)
from protocol.layers.notify import *  # noqa: F403
from protocol.layers.structs import *  # noqa: F403
from protocol.layers.uring import *  # noqa: F403
from protocol.layers.variable import *  # noqa: F403


def _struct_classes() -> dict[str, type[FuseStruct]]:
    found: dict[str, type[FuseStruct]] = {}
    for module in (header, structs, notify, variable, uring):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, FuseStruct) and value.c_name:
                if value.__module__ == module.__name__:
                    found[value.c_name] = value
    return found


STRUCTS: dict[str, type[FuseStruct]] = _struct_classes()
"""Every class that is a kernel struct, by its C name (``fuse_init_in`` -> FuseInitIn)."""

_LAYER_NAMES = sorted(
    name for name, cls in vars().items()
    if isinstance(cls, type) and issubclass(cls, FuseStruct) and cls is not FuseStruct
)
LAYER_CLASSES: list[type[Packet]] = [globals()[name] for name in _LAYER_NAMES]
"""Every layer class (structs, variable parts, compat variants)."""

__all__ = [
    *_LAYER_NAMES, "STRUCTS", "LAYER_CLASSES", "REQUEST_LAYERS", "REPLY_LAYERS", "NOTIFY_LAYERS",
    "NO_REPLY", "VARIABLE_REPLY", "reply_layers", "fixed_size", "flat_names", "struct_format", "compat",
]
