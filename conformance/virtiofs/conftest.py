"""A virtio-fs device for each rule: the back-end connected (``device_target``, set-up left
to the rule) or set up with its queues (``device``); the back-end must outlive the rule."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.virtiofs.device import Device
from targets.spec import TargetSpec, is_vhost_user
from targets.vhost_user.target import VhostUserTarget


@pytest.fixture
def device_target(request: pytest.FixtureRequest, target_spec: TargetSpec) -> Iterator[VhostUserTarget]:
    if not is_vhost_user(target_spec):
        pytest.skip(f"not applicable: {target_spec.text} is not a virtio-fs device (try virtiofsd, "
                    "ref:vhost-user or vhost-user:SOCKET)")
    target = VhostUserTarget(target_spec).open(set_up=False)
    try:
        yield target
        call = getattr(request.node, "rep_call", None)
        hung_up = target.frontend is None or not target.frontend.connected  # the rule did it
        if call is not None and call.passed and not hung_up and target.daemon is not None \
                and not target.daemon.alive():
            pytest.fail(f"the back-end {target.daemon.exit_description()} during the rule; stderr: "
                        f"{target.daemon.stderr_tail(500)!r}", pytrace=False)
    finally:
        target.close()


@pytest.fixture
def device(device_target: VhostUserTarget, request: pytest.FixtureRequest) -> Device:
    frontend = device_target.frontend
    assert frontend is not None
    frontend.setup()
    return Device(frontend, timeout=request.config.getoption("--reply-timeout"))
