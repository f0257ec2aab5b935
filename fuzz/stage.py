"""The pieces every fuzz campaign is made of, whatever the transport.

A ``Campaign`` says which targets it applies to, opens a ``Stage`` (one running target
instance after its INIT) and makes a state machine for one example on that stage. The
runner (``fuzz.campaign``) reuses a stage while it stays healthy and opens a new one after
a defect, so hypothesis can run a failing example again on a fresh target while it shrinks.

``Stage.trail`` holds what an example sent and what came back (``fuzz.reproducer.Exchange``):
the runner clears it before each example and saves it as the finding's pcap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis.stateful import RuleBasedStateMachine

from fuzz.reproducer import Exchange
from fuzz.stats import Tally
from targets.spec import TargetSpec


@dataclass
class Stage:
    """One running target instance."""

    target: Any  # .daemon (targets.process.Daemon or None) and .close()
    tally: Tally
    deadline: float  # seconds a reply may take
    conn: Any = None  # the KernelConnection after INIT, for the FUSE and CUSE machines
    init: Exchange | None = None  # INIT as it went: the first message of every reproducer
    trail: list[Exchange] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # what a transport needs besides

    def close(self) -> None:
        closer = self.extra.get("close")
        if closer is not None:
            closer()
        self.target.close()


@dataclass(frozen=True)
class Campaign:
    name: str  # "fuse", "cuse", "virtio": part of the test id and of the database key
    description: str
    applies: Callable[[TargetSpec], bool]
    open: Callable[[TargetSpec, float, Tally], Stage]
    machine: Callable[[Stage], RuleBasedStateMachine]
    healthy: Callable[[Stage], bool]  # still fit for the next example


CAMPAIGNS: dict[str, Campaign] = {}


def register(campaign: Campaign) -> Campaign:
    CAMPAIGNS[campaign.name] = campaign
    return campaign
