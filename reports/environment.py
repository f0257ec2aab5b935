"""The run's environment, as allure shows it (``environment.properties`` in the results):
the suite's version, the target and its version, the kernel and the FUSE minor it speaks,
Python and hypothesis, the hypothesis profile and seed."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from targets.spec import parse_spec
from targets.versions import kernel_fuse_minor, kernel_release, target_version

REPO = Path(__file__).resolve().parent.parent
FILE = "environment.properties"


def suite_version() -> str:
    """The package version and, in a git checkout, the commit ("0.1.0+g1a2b3c4", "-dirty")."""
    try:
        version = metadata.version("fusecheck")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=10"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{version}+g{commit}" if commit else version


def collect(target: str, profile: str, seed: str) -> dict[str, str]:
    minor = kernel_fuse_minor()
    return {
        "fusecheck": suite_version(),
        "target": target,
        "target.version": target_version(parse_spec(target)),
        "kernel": kernel_release(),
        "kernel.fuse": f"7.{minor}" if minor is not None else "unknown (no FUSE mount could be made)",
        "python": platform.python_version(),
        "hypothesis": metadata.version("hypothesis"),
        "hypothesis.profile": profile,
        "hypothesis.seed": seed,
        "hypothesis.examples": examples(profile),
    }


def examples(profile: str) -> str:
    """How many examples the profile draws: per property test, and per state machine."""
    from hypothesis import settings

    from conformance import profiles

    try:
        each = settings.get_profile(profile).max_examples
    except Exception:  # an unregistered profile: hypothesis's own default applies
        each = settings.default.max_examples if settings.default is not None else 100
    tables = (("state machines", profiles.STATEFUL_EXAMPLES),
              ("kernel-role machine", profiles.PROTOCOL_MACHINE_EXAMPLES),
              ("random ACLs", profiles.ACL_RANDOM_EXAMPLES))
    machines = ", ".join(f"{name} {table.get(profile, each)}" for name, table in tables)
    return f"{each} per property test; {machines}"


def write(results: Path, values: dict[str, str]) -> Path:
    """``environment.properties`` in ``results`` (``key = value`` lines, as allure reads them)."""
    path = results / FILE
    path.write_text("".join(f"{key} = {value}\n" for key, value in values.items()))
    return path


def read(results: Path) -> dict[str, str]:
    path = results / FILE
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}
