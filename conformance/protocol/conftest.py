"""The protocol rules' scratch directories are removed after each test, while the daemon lives."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from conformance.protocol.scratch import MADE
from protocol.state import CLOSED
from targets.errors import TargetError


@pytest.fixture(autouse=True)
def _remove_scratch_dirs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Torn down before the daemon: the target fixture is set up first, on purpose."""
    request.getfixturevalue("target")
    MADE.clear()
    yield
    made, MADE[:] = list(MADE), []
    for workdir in reversed(made):
        if workdir.conn.session.state == CLOSED:
            continue  # DESTROY sent: the daemon serves no more
        with contextlib.suppress(TargetError, AssertionError):
            workdir.remove()
