"""Proof that the rules catch bugs: a tiny daemon with one injected bug fails exactly
the rule meant to catch it, and passes every rule without one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.fakes.tiny_daemon import BUGS
from tests.test_conformance_daemons import run_conformance

DAEMON = Path(__file__).resolve().parent / "fakes" / "tiny_daemon.py"
LINE = re.compile(r"^(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\s+(FUSE-[A-Z]+-\d{3})", re.M)


def outcomes(bug: str | None) -> tuple[int, dict[str, set[str]]]:
    flag = f"--bug {bug} " if bug else ""
    result = run_conformance(f"exec:{sys.executable} {DAEMON} {flag}{{fd}}")
    found: dict[str, set[str]] = {}
    for outcome, rule in LINE.findall(result.stdout):
        found.setdefault(rule, set()).add(outcome)
    return result.returncode, found


def test_correct_daemon_passes_every_rule() -> None:
    code, found = outcomes(None)
    assert code == 0, found
    assert all(o <= {"PASSED", "SKIPPED"} for o in found.values()), found


@pytest.mark.parametrize(("bug", "rule"), sorted(BUGS.items()))
def test_injected_bug_fails_its_rule(bug: str, rule: str) -> None:
    code, found = outcomes(bug)
    assert code == 1, f"the run with --bug {bug} passed: {found}"
    assert "FAILED" in found.get(rule, set()), f"{rule} did not fail with --bug {bug}: {found}"
