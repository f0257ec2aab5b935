"""Which ways a target can be reached: spoken to over a socket (``wire``), or used
through a mount (``mount``).  Protocol rules need the first, POSIX rules the second;
a target that offers neither for an area makes its rules "not applicable"."""

from __future__ import annotations

from targets.daemons import REGISTRY
from targets.mounts import MOUNT_TARGETS
from targets.spec import TargetSpec, is_cuse, is_vhost_user


def serves_wire(spec: TargetSpec) -> bool:
    """The suite can play the kernel to it: over a SEQPACKET socket, or virtio-fs queues."""
    if is_cuse(spec):
        return False  # a character device: the CUSE rules speak to it
    return spec.kind == "exec" or is_vhost_user(spec) or (spec.kind == "daemon" and spec.name in REGISTRY)


def serves_mount(spec: TargetSpec) -> bool:
    """The suite can use it through a kernel mount (one it makes, or the user's); not a
    virtio-fs device (this kernel has no virtio-fs driver to mount it with)."""
    if is_cuse(spec):
        return False
    return spec.kind == "mount" or (spec.kind == "daemon" and spec.name in MOUNT_TARGETS
                                    and not is_vhost_user(spec))


def capabilities(spec: TargetSpec) -> frozenset[str]:
    return frozenset({"wire"} if serves_wire(spec) else set()) | (
        {"mount"} if serves_mount(spec) else set())
