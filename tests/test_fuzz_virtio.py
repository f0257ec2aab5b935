"""The virtio campaign's machine against the reference back-end and virtiofsd, and proof
that a back-end killed under it is reported as a crash."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from fuzz.stage import CAMPAIGNS, Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from fuzz.virtio import VirtioFuzzMachine, healthy, open_stage
from targets.skip import require
from targets.spec import parse_spec
from targets.vhost_user.virtiofsd import VIRTIOFSD

DEADLINE = 2.0
#: the brief's size for a self-test (the campaign runner sets its own)
SETTINGS = settings(max_examples=15, stateful_step_count=12, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class Stages:
    """One stage reused while healthy, reopened when not (as the campaign runner does)."""

    def __init__(self, spec: str) -> None:
        self.spec, self.tally = parse_spec(spec), Tally()
        self.stage: Stage | None = None

    def machine(self) -> RuleBasedStateMachine:
        if self.stage is not None and not healthy(self.stage):
            self.stage.close()
            self.stage = None
            self.tally.restarts += 1
        if self.stage is None:
            self.stage = open_stage(self.spec, DEADLINE, self.tally)
        self.tally.examples += 1
        return VirtioFuzzMachine(self.stage)

    def close(self) -> None:
        if self.stage is not None:
            self.stage.close()
            self.stage = None


def _available(spec: str) -> None:
    if spec == "virtiofsd":
        require(os.access(VIRTIOFSD, os.X_OK), f"virtiofsd: {VIRTIOFSD} not found (qemu-system-common)")


@pytest.fixture(params=["ref:vhost-user", "virtiofsd"])
def stages(request: pytest.FixtureRequest) -> Iterator[Stages]:
    _available(request.param)
    held = Stages(request.param)
    try:
        yield held
    finally:
        held.close()


def test_registered() -> None:
    campaign = CAMPAIGNS["virtio"]
    assert campaign.applies(parse_spec("virtiofsd")) and campaign.applies(parse_spec("ref:vhost-user"))
    assert not campaign.applies(parse_spec("ref"))


@pytest.mark.parametrize("stages", ["ref:vhost-user"], indirect=True)
def test_machine(stages: Stages) -> None:
    """Valid and hostile steps interleaved; a Defect fails the test (a finding). virtiofsd has
    real findings (tests/test_fuzz_known.py replays them)."""
    run_state_machine_as_test(stages.machine, settings=SETTINGS)  # type: ignore[arg-type]  # a factory
    tally = stages.tally
    print(f"\n{stages.spec.text}: {tally.requests} sent, {tally.replies} answered, {tally.examples} "
          f"examples, {tally.restarts} restarts")
    for (name, outcome), count in sorted(tally.answered.items()):
        print(f"  {name}: {outcome} x{count}")
    assert tally.sent[("FUSE_GETATTR", "valid")], "no valid GETATTR was sent"
    assert any(kind != "valid" for _, kind in tally.sent), "no hostile step was drawn"


@pytest.mark.parametrize("spec", ["ref:vhost-user", "virtiofsd"])
def test_killed_backend_is_a_crash(spec: str) -> None:
    _available(spec)
    stage = open_stage(parse_spec(spec), DEADLINE, Tally())
    try:
        machine = VirtioFuzzMachine(stage)
        machine.getattr(0, "plain")
        daemon = stage.target.daemon
        assert daemon is not None and daemon.pid is not None
        os.killpg(daemon.pid, signal.SIGKILL)  # its own session: the group is what we started
        with pytest.raises(Defect) as caught:
            machine.getattr(0, "split-reply")
        assert caught.value.kind == "crash", caught.value
        assert "SIGKILL" in str(caught.value)
        assert not healthy(stage)
    finally:
        stage.close()
