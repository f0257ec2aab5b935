"""The conformance rules run against real libfuse daemons, spoken to in the kernel's role.

Each run is a child pytest (as a user runs it); every rule must print a line
and none may fail: known daemon deviations show as XFAIL with their reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis.errors import FlakyFailure

from conformance.deviations import deviation, failure_text
from targets.build import build_all
from targets.daemons import REGISTRY
from targets.errors import TargetError
from targets.mounts import MOUNT_TARGETS
from targets.skip import require
from targets.vhost_user.virtiofsd import VIRTIOFSD
from tests.helpers import all_rules, rule_outcomes, run_conformance, tiny_daemon


@pytest.fixture(scope="module")
def built() -> None:
    try:
        build_all()
    except TargetError as exc:
        require(False, f"machine lacks the libfuse example daemons: {exc.message}")


@pytest.mark.parametrize("daemon", ["ref", "hello_ll", "passthrough_ll", "squashfuse_ll",
                                    "fuse-overlayfs", "bindfs", "fuse2fs", "squashfuse",
                                    "virtiofsd", "ref:vhost-user", "cuse-example", "ref:cuse"])
def test_rules_against_daemon(built: None, daemon: str, tmp_path: Path) -> None:
    if daemon == "virtiofsd":
        require(os.access(VIRTIOFSD, os.X_OK), f"machine lacks virtiofsd ({VIRTIOFSD}, package "
                "qemu-system-common)")
    try:
        if daemon in REGISTRY:
            REGISTRY[daemon].check_installed()
        for requirement in MOUNT_TARGETS[daemon].requires if daemon in MOUNT_TARGETS else ():
            requirement.check()
    except TargetError as exc:
        require(False, f"machine lacks {daemon}: {exc.message}")
    audit = tmp_path / "audit"  # the reference server judges each of its own replies
    result = run_conformance(f"ref:audit={audit}" if daemon == "ref" else daemon)
    found = rule_outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert set(found) == all_rules(), f"rules without a result line: {all_rules() - set(found)}"
    assert all(o <= {"PASSED", "SKIPPED", "XFAIL"} for o in found.values()), result.stdout[-3000:]
    assert not audit.exists(), f"the reference server sent replies the validators reject:\n" \
        f"{audit.read_text()[:3000]}"


def test_a_deviation_is_seen_inside_a_flaky_failure() -> None:
    """fuse2fs stamps whole seconds: a machine step in the same second as the last shows no
    time change, only sometimes, so hypothesis ends it as FlakyFailure; the documented
    deviation is still the failure it names (not a failure of the target)."""
    known = deviation("fuse2fs", "POSIX-MACHINE-001")
    inner = AssertionError("timestamps moved differently (name: mtime, ctime; + later, = same, "
                           "- earlier):\n    target {'.': '=='}\n    tmpfs  {'.': '++'}")
    flaky = FlakyFailure("Inconsistent results: falsified on the first call, not on a later one", [inner])
    assert known is not None and not known.expected_in(str(flaky))
    assert known.expected_in(failure_text(flaky))
    assert not known.expected_in(failure_text(FlakyFailure("x", [AssertionError("the trees differ")])))


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
    result = run_conformance("exec:sleep 60 {fd}", "--reply-timeout=1")
    assert result.returncode == 4
    assert "did not answer FUSE_INIT" in result.stderr, result.stderr


def test_garbled_init_reply_is_one_line() -> None:
    result = run_conformance(tiny_daemon(misbehave="init-garbage"), "--reply-timeout=2")
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "reply.short" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_notification_flood_cannot_stall_a_test() -> None:
    result = run_conformance(tiny_daemon(misbehave="flood"), "--reply-timeout=1",
                             "--rule=FUSE-GETATTR-001")
    assert result.returncode == 1
    assert "did not answer FUSE_GETATTR" in result.stdout, result.stdout[-2000:]


def test_daemon_dying_mid_test_is_a_one_line_failure() -> None:
    result = run_conformance(tiny_daemon(misbehave="die"), "--reply-timeout=2",
                             "--rule=FUSE-GETATTR-001")
    assert result.returncode == 1
    assert "target died: python exited with status 3" in result.stdout, result.stdout[-2000:]
    assert "dying on purpose" in result.stdout
    assert "Traceback" not in result.stdout
