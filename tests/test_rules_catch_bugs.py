"""Proof that the rules catch bugs: a tiny daemon passes every rule, and each bug
injected into it makes the rule meant to catch that bug fail."""

from __future__ import annotations

import pytest

from targets.reference.mutants import MUTANTS
from tests.fakes.tiny_daemon import BUGS
from tests.helpers import all_rules, rule_outcomes, run_conformance, tiny_daemon


def test_correct_daemon_passes_every_rule() -> None:
    result = run_conformance(tiny_daemon(), "--reply-timeout=2")
    found = rule_outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(found) == all_rules(), f"rules without a result line: {all_rules() - set(found)}"
    its_rules = {rule: found[rule] for rule in BUGS.values()}
    assert all(o == {"PASSED"} for o in its_rules.values()), its_rules
    # the rest need what the tiny daemon lacks (a writable tree, xattrs): not applicable
    wire_rules = {rule: found[rule] for rule in all_rules("protocol")}
    assert all(o <= {"PASSED", "SKIPPED"} for o in wire_rules.values()), wire_rules


def test_every_protocol_rule_has_a_bug_that_it_catches() -> None:
    """Each protocol rule is shown failing on an injected fault: a tiny-daemon bug, or a mutant of
    the reference server (tests/test_mutants.py requires each mutant to fail every FUSE rule it names)."""
    caught = set(BUGS.values()) | {rule for m in MUTANTS.values() for rule in m.caught_by}
    unbroken = all_rules("protocol") - caught
    assert not unbroken, f"rules no fault is shown to break: {unbroken}"
    assert set(BUGS.values()) <= all_rules("protocol")


@pytest.mark.parametrize(("bug", "rule"), sorted(BUGS.items()))
def test_injected_bug_fails_its_rule(bug: str, rule: str) -> None:
    result = run_conformance(tiny_daemon(bug), "--reply-timeout=2", f"--rule={rule}")
    found = rule_outcomes(result.stdout)
    assert result.returncode == 1, f"the run with --bug {bug} passed: {found}"
    assert "FAILED" in found.get(rule, set()), f"{rule} did not fail with --bug {bug}: {found}"
