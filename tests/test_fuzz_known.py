"""The real findings the README lists still reproduce on this machine's daemons."""

from __future__ import annotations

import os

import pytest

from fuzz.known import KNOWN, Known, reproduce
from targets.daemons import REGISTRY
from targets.errors import TargetError
from targets.skip import require
from targets.vhost_user.virtiofsd import VIRTIOFSD


def _installed(target: str) -> None:
    if target == "virtiofsd":
        require(os.access(VIRTIOFSD, os.X_OK), f"virtiofsd: {VIRTIOFSD} not found (qemu-system-common)")
    elif target in REGISTRY:
        try:
            REGISTRY[target].check_installed()
        except TargetError as exc:
            require(False, f"{target}: {exc.message}")


@pytest.mark.parametrize("known", KNOWN, ids=[k.name for k in KNOWN])
def test_known_finding_reproduces(known: Known) -> None:
    _installed(known.target)
    defect = reproduce(known)
    assert defect is not None, f"{known.name} no longer reproduces on {known.target}: {known.summary}"
    assert defect.kind == known.kind, f"{known.name}: expected a {known.kind}, got {defect}"
