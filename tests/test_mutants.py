"""The mutation score: every mutant of the reference server makes a named rule fail.

Each mutant runs the conformance suite (protocol rules over the socket, POSIX
rules through a mount) restricted to the rules it names; a mutant no rule
catches is a hole in the suite.  The score is printed at the end of the run.
"""

from __future__ import annotations

import pytest

from targets.reference.mutants import MUTANTS
from tests.helpers import rule_outcomes, run_conformance


@pytest.mark.parametrize("name", sorted(MUTANTS))
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


def test_enough_mutants_in_every_area() -> None:
    areas = {m.area for m in MUTANTS.values()}
    assert len(MUTANTS) >= 15
    assert {"metadata", "data", "namespace", "xattr", "acl", "protocol", "coherency"} <= areas
