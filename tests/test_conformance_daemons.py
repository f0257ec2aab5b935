"""The conformance rules run against real libfuse daemons, spoken to in the kernel's role.

Each run is a child pytest (as a user runs it); every rule must print a line
and none may fail: known daemon deviations show as XFAIL with their reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from targets.build import build_all
from targets.daemons import REGISTRY
from targets.errors import TargetError
from targets.skip import require

ROOT = Path(__file__).resolve().parent.parent
RULE_LINE = re.compile(r"^(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\s+(FUSE-[A-Z]+-\d{3})", re.M)


def run_conformance(target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider", "-q",
         f"--target={target}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def built() -> None:
    try:
        build_all()
    except TargetError as exc:
        require(False, f"machine lacks the libfuse example daemons: {exc.message}")


@pytest.mark.parametrize("daemon", ["hello_ll", "passthrough_ll", "squashfuse_ll", "fuse-overlayfs"])
def test_rules_against_daemon(built: None, daemon: str) -> None:
    try:
        REGISTRY[daemon].check_installed()
    except TargetError as exc:
        require(False, f"machine lacks {daemon}: {exc.message}")
    result = run_conformance(daemon)
    outcomes = RULE_LINE.findall(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    rules = {rule for _, rule in outcomes}
    assert {"FUSE-INIT-001", "FUSE-PROTO-001", "FUSE-READDIR-001"} <= rules, result.stdout[-3000:]
    assert not [o for o, _ in outcomes if o in ("FAILED", "XPASS", "ERROR")], result.stdout[-3000:]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no-such-daemon", "unknown target"),
        ("exec:/bin/true", "{fd}"),
        ("exec:/nonexistent/daemon /dev/fd/{fd}", "/nonexistent/daemon"),
        ("hello_ll:=", "bad option"),
    ],
)
def test_bad_target_is_one_line(spec: str, says: str) -> None:
    result = run_conformance(spec)
    assert result.returncode == 4, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: fusecheck:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_silent_target_times_out_in_one_line() -> None:
    result = run_conformance("exec:sleep 60 {fd}")
    assert result.returncode == 4
    assert "did not answer FUSE_INIT" in result.stderr, result.stderr
