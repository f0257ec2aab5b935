"""Proof that the rules catch bugs: a tiny daemon passes every rule, and each bug
injected into it makes the rule meant to catch that bug fail."""

from __future__ import annotations

import pytest

from tests.fakes.tiny_daemon import BUGS
from tests.helpers import all_rules, rule_outcomes, run_conformance, tiny_daemon


def test_correct_daemon_passes_every_rule() -> None:
    result = run_conformance(tiny_daemon(), "--reply-timeout=2")
    found = rule_outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(found) == all_rules(), f"rules without a result line: {all_rules() - set(found)}"
    wire_rules = {rule: found[rule] for rule in all_rules("protocol")}
    assert all(o == {"PASSED"} for o in wire_rules.values()), wire_rules


def test_every_protocol_rule_has_a_bug_that_it_catches() -> None:
    assert set(BUGS.values()) == all_rules("protocol")


@pytest.mark.parametrize(("bug", "rule"), sorted(BUGS.items()))
def test_injected_bug_fails_its_rule(bug: str, rule: str) -> None:
    result = run_conformance(tiny_daemon(bug), "--reply-timeout=2", f"--rule={rule}")
    found = rule_outcomes(result.stdout)
    assert result.returncode == 1, f"the run with --bug {bug} passed: {found}"
    assert "FAILED" in found.get(rule, set()), f"{rule} did not fail with --bug {bug}: {found}"
