"""A CUSE device for each rule: the server started behind the stand-in /dev/cuse
(``cuse_target``), and a connection that has sent CUSE_INIT (``device``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protocol.events import Reply
from targets.connection import KernelConnection
from targets.cuse.target import CuseTarget
from targets.spec import TargetSpec, is_cuse


@pytest.fixture
def cuse_target(target_spec: TargetSpec) -> Iterator[CuseTarget]:
    if not is_cuse(target_spec):
        pytest.skip(f"not applicable: {target_spec.text} is not a CUSE server (try cuse-example or "
                    "cuse:COMMAND)")
    with CuseTarget(target_spec) as target:
        yield target


@pytest.fixture
def connection(cuse_target: CuseTarget, request: pytest.FixtureRequest) -> KernelConnection:
    return KernelConnection(cuse_target.channel, timeout=request.config.getoption("--reply-timeout"))


@pytest.fixture
def init_reply(connection: KernelConnection) -> Reply:
    """The server's answer to the kernel's CUSE_INIT."""
    data = connection.session.cuse_init()
    return connection.wait(connection.session.last_unique, data)


@pytest.fixture
def device(connection: KernelConnection, init_reply: Reply) -> KernelConnection:
    """A connection whose CUSE_INIT was accepted."""
    assert init_reply.ok and connection.session.negotiated is not None, (
        f"CUSE_INIT was not accepted: error {init_reply.error}; "
        + "; ".join(f.message for f in init_reply.findings))
    return connection
