"""Targets the suite speaks to in the kernel's role, whatever carries the messages: a
daemon on a SEQPACKET socket (``ExecTarget``) or a virtio-fs device behind vhost-user
(``VhostUserTarget``). ``wire_target(spec)`` opens the right one."""

from __future__ import annotations

from typing import Any

from targets.exec import ExecTarget
from targets.spec import TargetSpec, is_vhost_user, parse_spec
from targets.vhost_user.target import VhostUserTarget

WireTarget = ExecTarget | VhostUserTarget


def wire_target(spec: TargetSpec | str, **kwargs: Any) -> WireTarget:
    """The unopened target for ``spec`` (``with wire_target(spec) as t:`` opens it)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if is_vhost_user(parsed):
        return VhostUserTarget(parsed, **kwargs)
    return ExecTarget(parsed, **kwargs)
