"""The benchmark scripts run to the end (their figures are read by people, not asserted:
a timed self-test on a shared CI machine would fail for the wrong reasons)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from targets import build
from targets.errors import TargetNotInstalled
from targets.skip import require
from targets.vhost_user.virtiofsd import VIRTIOFSD
from tests.helpers import ROOT


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("argv", [("targets.bench", "--only", "socket"), ("targets.vhost_user.bench",)],
                         ids=["socket", "virtio-fs"])
def test_bench_prints_its_figures(argv: tuple[str, ...]) -> None:
    if argv[0] == "targets.vhost_user.bench":
        require(os.access(VIRTIOFSD, os.X_OK), f"machine lacks virtiofsd ({VIRTIOFSD})")
    result = _run(*argv, "--seconds", "0.05", "--rounds", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "req/s" in result.stdout and "goal" in result.stdout, result.stdout


def test_fuzz_bench_prints_the_rates_and_goals() -> None:
    require(shutil.which("gcc"), "gcc not found: the fuzz bench compiles a C client (apt-get install gcc)")
    try:
        build.build_example("hello_ll")
    except TargetNotInstalled as exc:
        require(False, f"machine lacks hello_ll: {exc}")
    result = _run("fuzz", "bench", "--target", "hello_ll", "--seconds", "3")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for text in ("C client", "campaign, 1 worker", "campaign, 2 workers", "x C client", "x 1 worker"):
        assert text in result.stdout, result.stdout
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("  campaign, ")
                and " met " in line]
    assert len(verdicts) == 2, result.stdout
