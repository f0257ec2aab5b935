"""Hostile vhost-user control messages for the virtio campaign: request codes the back-end
does not implement, a header whose ``size`` lies about the payload that follows, and
SET_VRING_NUM with a size no split queue can have, sent to a running queue.

``build(control, need_reply)`` gives the bytes to send and what was done, in the spec's names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol.vhost import constants as v
from protocol.vhost.messages import VhostUserVringState, message

#: Codes no virtio-fs back-end serves: undefined ones, and other devices' (net, crypto, gpu)
UNKNOWN_CODES = (0, 44, 99, 1000, 0x7FFFFFFF, 0xFFFFFFFF)
FOREIGN_CODES = (v.VHOST_USER_SEND_RARP, v.VHOST_USER_NET_SET_MTU, v.VHOST_USER_CREATE_CRYPTO_SESSION,
                 v.VHOST_USER_GPU_SET_SOCKET)
#: How a header's size lies: bytes more or fewer than sent, or a size past every payload
SIZE_LIES = ("more", "fewer", "huge", "zero")
BAD_NUMS = (0, 1, 3, 100, 129, 32768, 65535, 0xFFFFFFFF)  # 1 is a power of 2 but smaller than in use


@dataclass(frozen=True)
class Control:
    how: str  # "code", "size" or "vring-num"
    value: int = 0  # the code, the lie's amount, the queue size
    lie: str = ""  # for "size": one of SIZE_LIES


def name(code: int) -> str:
    return v.REQUEST_NAMES.get(code, f"VHOST_USER request {code:#x}")


def build(control: Control, *, need_reply: bool) -> tuple[bytes, str]:
    """The message's bytes, and what they are."""
    if control.how == "code":
        data = bytes(message(control.value, None, need_reply=need_reply)) + bytes(8)
        data = data[:8] + struct.pack("<I", 8) + data[12:]
        return data, f"request code {name(control.value)} with an 8-byte payload"
    if control.how == "vring-num":
        data = bytes(message(v.VHOST_USER_SET_VRING_NUM, VhostUserVringState(index=1, num=control.value),
                             need_reply=need_reply))
        return data, f"SET_VRING_NUM {control.value:#x} for the running request queue"
    body = bytes(VhostUserVringState(index=1, num=1))  # SET_VRING_ENABLE 1: what is already so
    header = bytes(message(v.VHOST_USER_SET_VRING_ENABLE, None, need_reply=need_reply))[:8]
    lie = control.lie
    size = {"more": len(body) + control.value, "fewer": max(0, len(body) - control.value),
            "huge": control.value, "zero": 0}[lie]
    sent = b"" if lie == "zero" else body
    what = f"SET_VRING_ENABLE whose size says {size:#x} with {len(sent)} payload bytes"
    return header + struct.pack("<I", size & 0xFFFFFFFF) + sent, what
