"""CUSE-MACHINE-001: random opens, writes, reads, size ioctls and releases against the
target's device model (``conformance.cuse.machine``)."""

from __future__ import annotations

import pytest

from conformance.cuse.machine import RULE_ID, run_device_machine
from conformance.rules import rule
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget


@rule(RULE_ID, "Over random sequences of opens, writes, reads, FIOC_GET_SIZE/SET_SIZE ioctls and "
      "releases, every reply is what the device's model says (libfuse's example: one buffer; the "
      "reference device: a FIFO)",
      source="linux fs/fuse/cuse.c (offsets 0, direct I/O); libfuse example/cuse.c; "
             "targets/reference/cuse.py", area="cuse", feature="MACHINE",
      opcodes=("FUSE_OPEN", "FUSE_READ", "FUSE_WRITE", "FUSE_IOCTL", "FUSE_RELEASE"))
def test_device_machine(device: KernelConnection, cuse_target: CuseTarget) -> None:
    model = cuse_target.model
    if model is None:
        pytest.skip("not applicable: the suite knows no model of this device")
    run_device_machine(device, model)
