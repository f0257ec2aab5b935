"""The mutation score: every mutant of the reference server makes a named rule fail.

Each mutant runs the conformance suite (protocol rules over the socket, POSIX
rules through a mount) restricted to the rules it names; a mutant no rule
catches is a hole in the suite.  The score is printed at the end of the run.
"""

from __future__ import annotations

import pytest

from targets.reference.cuse import CUSE_MUTANTS
from targets.reference.device_mutants import DEVICE_MUTANTS
from targets.reference.mutants import MUTANTS
from targets.reference.mutants_fuzz import FUZZ_AREA
from tests.helpers import rule_outcomes, run_conformance


@pytest.mark.parametrize("name", sorted(n for n, m in MUTANTS.items() if m.area != FUZZ_AREA))
def test_mutant_is_caught(name: str, record_property: object) -> None:
    mutant = MUTANTS[name]
    options = ",".join(filter(None, (f"mutant={name}", mutant.runs_with)))
    rules = [f"--rule={rule}" for rule in mutant.caught_by]
    result = run_conformance(f"ref:{options}", "--reply-timeout=3", "--op-timeout=30", *rules)
    found = rule_outcomes(result.stdout)
    killed = sorted(rule for rule, outcomes in found.items() if "FAILED" in outcomes)
    record_property("mutant", f"{name}={'killed' if killed else 'survived'}")  # type: ignore[operator]
    assert killed, (f"mutant {name} ({mutant.description}) survived rules {mutant.caught_by}: "
                    f"{found}\n{result.stdout[-2000:]}")
    # a protocol rule named here is shown to catch this fault (test_rules_catch_bugs counts on it)
    spared = [rule for rule in mutant.caught_by if rule.startswith("FUSE-") and rule not in killed]
    assert not spared, f"mutant {name} did not fail the protocol rules it names: {spared}: {found}"


@pytest.mark.parametrize("name", sorted(DEVICE_MUTANTS))
def test_device_mutant_is_caught(name: str, record_property: object) -> None:
    """A fault of the reference server's virtio-fs back-end fails every virtio-fs rule it names."""
    mutant = DEVICE_MUTANTS[name]
    rules = [f"--rule={rule}" for rule in mutant.caught_by]
    result = run_conformance(f"ref:vhost-user,mutant={name}", "--reply-timeout=3", *rules)
    found = rule_outcomes(result.stdout)
    spared = sorted(rule for rule in mutant.caught_by if "FAILED" not in found.get(rule, set()))
    record_property("mutant", f"{name}={'survived' if spared else 'killed'}")  # type: ignore[operator]
    assert not spared, (f"device mutant {name} ({mutant.description}) survived {spared}: {found}\n"
                        f"{result.stdout[-2000:]}{result.stderr[-1000:]}")


@pytest.mark.parametrize("name", sorted(CUSE_MUTANTS))
def test_cuse_mutant_is_caught(name: str, record_property: object) -> None:
    """A fault of the reference CUSE device fails every CUSE rule it names."""
    mutant = CUSE_MUTANTS[name]
    rules = [f"--rule={rule}" for rule in mutant.caught_by]
    result = run_conformance(f"ref:cuse,mutant={name}", "--reply-timeout=3", *rules)
    found = rule_outcomes(result.stdout)
    spared = sorted(rule for rule in mutant.caught_by if "FAILED" not in found.get(rule, set()))
    record_property("mutant", f"{name}={'survived' if spared else 'killed'}")  # type: ignore[operator]
    assert not spared, (f"CUSE mutant {name} ({mutant.description}) survived {spared}: {found}\n"
                        f"{result.stdout[-2000:]}{result.stderr[-1000:]}")


def test_enough_mutants_in_every_area() -> None:
    areas = {m.area for registry in (MUTANTS, DEVICE_MUTANTS, CUSE_MUTANTS) for m in registry.values()}
    assert len(MUTANTS) >= 15 and len(DEVICE_MUTANTS) >= 5 and len(CUSE_MUTANTS) >= 5
    assert {"metadata", "data", "namespace", "xattr", "acl", "protocol", "coherency", "virtiofs",
            "cuse"} <= areas
