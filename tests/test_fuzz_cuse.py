"""The CUSE fuzz campaign (``fuzz.cuse``) against libfuse's example and the reference FIFO:
both survive its valid, near-valid and malformed requests; a server that dies is a crash."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from fuzz.cuse import CAMPAIGN, CuseFuzzMachine, Handle
from fuzz.stage import CAMPAIGNS, Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from targets import fusedev
from targets.build import build_example
from targets.errors import TargetError
from targets.skip import require
from targets.spec import parse_spec

DEADLINE = 3.0
SETTINGS = settings(max_examples=15, stateful_step_count=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(params=["cuse-example", "ref:cuse"])
def spec(request: pytest.FixtureRequest) -> str:
    require(os.path.exists(fusedev.FUSE_DEVICE), "machine lacks /dev/fuse (the stand-in /dev/cuse)")
    if request.param == "cuse-example":
        try:
            build_example("cuse")
        except TargetError as exc:
            require(False, f"machine lacks libfuse's cuse example: {exc.message}")
    return str(request.param)


class Stages:
    """One stage per test, reused while healthy, reopened after a defect."""

    def __init__(self, spec: str) -> None:
        self.spec, self.tally = parse_spec(spec), Tally()
        self.stage: Stage | None = None
        self.opened = 0
        self.defects: list[Defect] = []  # of the stages closed, in order

    def __call__(self) -> CuseFuzzMachine:
        if self.stage is None or not CAMPAIGN.healthy(self.stage):
            if self.stage is not None and isinstance(self.stage.extra.get("broken"), Defect):
                self.defects.append(self.stage.extra["broken"])
            self.close()
            self.stage = CAMPAIGN.open(self.spec, DEADLINE, self.tally)
            self.opened += 1
        self.stage.trail.clear()
        self.tally.examples += 1
        return CuseFuzzMachine(self.stage)

    def close(self) -> None:
        if self.stage is not None:
            self.stage.close()
            self.stage = None


@pytest.fixture
def stages(spec: str) -> Iterator[Stages]:
    owner = Stages(spec)
    try:
        yield owner
    finally:
        owner.close()


def test_campaign_is_registered_for_cuse_targets() -> None:
    assert CAMPAIGNS["cuse"] is CAMPAIGN
    assert CAMPAIGN.applies(parse_spec("cuse-example")) and CAMPAIGN.applies(parse_spec("ref:cuse"))
    assert not CAMPAIGN.applies(parse_spec("ref"))


@pytest.mark.parametrize("spec", ["ref:cuse"], indirect=True)  # libfuse's example has real
def test_server_survives_the_campaign(stages: Stages) -> None:  # findings: test_fuzz_known
    import time

    started = time.monotonic()
    try:
        run_state_machine_as_test(stages, settings=SETTINGS)  # type: ignore[arg-type]  # a factory
    except Flaky as exc:  # the server kept state from earlier examples: shrinking differs
        if stages.stage is not None and isinstance(stages.stage.extra.get("broken"), Defect):
            stages.defects.append(stages.stage.extra["broken"])
        if not stages.defects:
            raise
        raise stages.defects[0] from exc
    tally, seconds = stages.tally, time.monotonic() - started
    print(f"{stages.spec.text}: {tally.requests} requests in {seconds:.1f} s "
          f"({tally.requests / seconds:.0f}/s), {tally.examples} examples, {stages.opened} stage(s)")
    classes = {kind for _, kind in tally.sent}
    assert classes == {"valid", "boundary", "malformed"}, tally.sent
    assert stages.opened == 1, "a stage was reopened: it went unhealthy without a defect"
    assert stages.stage is not None and stages.stage.init is not None


def test_a_killed_server_is_a_crash(stages: Stages) -> None:
    machine = stages()
    stage = stages.stage
    assert stage is not None and stage.target.daemon is not None
    handle = machine.first_open()
    assert isinstance(handle, Handle)
    machine.read(handle, {"size": 16})
    os.kill(stage.target.daemon.pid, signal.SIGKILL)
    with pytest.raises(Defect) as caught:
        machine.write(handle, {"data": b"after the kill"})
    assert caught.value.kind == "crash" and caught.value.opcode == "FUSE_WRITE"
    assert "killed by SIGKILL" in caught.value.explanation, caught.value.explanation
    assert not CAMPAIGN.healthy(stage)
    machine.teardown()  # nothing to release on a dead server: no second error
