"""What several self-tests share: running the conformance suite as a user would."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import conformance.acl
import conformance.coherency
import conformance.cuse
import conformance.kernel
import conformance.posix
import conformance.protocol
import conformance.virtiofs
from conformance.rules import RULES

ROOT = Path(__file__).resolve().parent.parent
TINY_DAEMON = ROOT / "tests" / "fakes" / "tiny_daemon.py"
RULE_LINE = re.compile(r"^(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\s+([A-Z]+-[A-Z]+-\d{3})", re.M)


def run_conformance(target: str, *extra: str, prefix: Sequence[str] = (),
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``pytest conformance --target=TARGET EXTRA...`` in a child process; ``prefix`` is a
    command that runs it (a chroot), as in ``PREFIX... python -m pytest ...``; ``env``
    overrides the environment (``HYPOTHESIS_PROFILE``)."""
    # a quick profile: these runs check the rules' plumbing against real daemons; the
    # default profile (200 machine examples) is what a user's run gets
    env = {"HYPOTHESIS_PROFILE": "smoke", **os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider", "-q",
         f"--target={target}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def rule_outcomes(stdout: str) -> dict[str, set[str]]:
    """Rule id -> the outcomes its summary lines show."""
    found: dict[str, set[str]] = {}
    for outcome, rule in RULE_LINE.findall(stdout):
        found.setdefault(rule, set()).add(outcome)
    return found


def all_rules(*areas: str) -> set[str]:
    """Every rule id the conformance modules declare (importing them fills RULES), or
    those of the given areas ("protocol", "posix", "acl", "kernel", "virtiofs", "cuse", "coherency")."""
    for package in (conformance.protocol, conformance.posix, conformance.acl, conformance.kernel,
                    conformance.virtiofs, conformance.cuse, conformance.coherency):
        for module in pkgutil.iter_modules(package.__path__):
            if module.name.startswith("test_"):
                importlib.import_module(f"{package.__name__}.{module.name}")
    return {r.id for r in RULES.values() if not areas or r.area in areas}


def tiny_daemon(bug: str | None = None, misbehave: str | None = None) -> str:
    """The exec: spec of the tiny daemon, with one injected bug (or misbehaviour) or none."""
    flags = (f"--bug {bug} " if bug else "") + (f"--misbehave {misbehave} " if misbehave else "")
    return f"exec:{sys.executable} {TINY_DAEMON} {flags}{{fd}}"
