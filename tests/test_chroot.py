"""The suite in a chroot whose / is not a mount point (Debian build chroots, some CI runners)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from targets.skip import require
from tests.helpers import ROOT, rule_outcomes, run_conformance
from tests.test_fusedev import fuse_usable

RULES = ("POSIX-RW-001", "POSIX-MKDIR-001", "POSIX-RENAME-001")

# argv: BASE DIR... -- COMMAND...  In a mount namespace of its own: a tmpfs on BASE, shared
# like a host's /; BASE/root, a plain directory of it, with each DIR bound at its own path
# and an empty /tmp; COMMAND run chrooted there (killed if this process dies).  Exit 97 when
# a mount COMMAND made shows here: it would have leaked into the host.
CHROOT = textwrap.dedent("""
    import ctypes, os, signal, subprocess, sys
    from targets import fusedev
    MS_BIND, MS_SHARED, PR_SET_PDEATHSIG = 0x1000, 1 << 20, 1
    fusedev.new_mount_namespace(fusedev.MS_PRIVATE)
    sep = sys.argv.index("--")
    base, dirs, command = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1:]
    fusedev.sys_mount("fusecheck-chroot", base, "tmpfs", 0, "mode=0755")
    fusedev.sys_mount(None, base, None, MS_SHARED)
    root = os.path.join(base, "root")
    os.makedirs(root + "/tmp")
    os.chmod(root + "/tmp", 0o1777)
    for path in dirs:
        inside = root + path
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), inside)
        else:
            os.mkdir(inside)
            fusedev.sys_mount(path, inside, None, MS_BIND | fusedev.MS_REC)
    before = {e.mount_point for e in fusedev.mounts_under(base)}
    cwd, libc = os.getcwd(), ctypes.CDLL(None, use_errno=True)

    def enter():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.chroot(root)
        os.chdir(cwd)

    child = subprocess.Popen(command, preexec_fn=enter)
    try:
        code = child.wait(timeout=240)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        sys.exit("the chrooted command timed out")
    leaked = sorted({e.mount_point for e in fusedev.mounts_under(base)} - before)
    if leaked:
        print("LEAKED out of the chroot:", *leaked, file=sys.stderr)
        sys.exit(97)
    sys.exit(code if code >= 0 else 128 - code)
""")

# run as PYTHON -c DENY PYTHON -m pytest ARGS...: pytest ARGS with chroot(2) refused
DENY_CHROOT = textwrap.dedent("""
    import errno, os, runpy, sys

    def deny(path):
        raise PermissionError(errno.EPERM, "chroot refused by the test", path)

    os.chroot = deny
    sys.argv = ["pytest", *sys.argv[4:]]  # after -c PYTHON -m pytest
    runpy.run_module("pytest", run_name="__main__", alter_sys=True)
""")


def _host_dirs() -> list[str]:
    """What the chroot takes from the host: the system, devices and kernel views, this
    checkout (the venv is in it) and the Python the venv was made from."""
    wanted = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc", "/dev", "/proc", "/sys",
              str(ROOT), os.path.realpath(sys.base_prefix)]
    found: list[str] = []
    for path in wanted:
        if os.path.lexists(path) and not any(path == d or path.startswith(d + "/") for d in found):
            found.append(path)
    return found


@pytest.fixture
def chroot(tmp_path: Path) -> list[str]:
    """The command prefix that runs a command in a fresh chroot (see CHROOT)."""
    usable, reason = fuse_usable()
    require(usable, reason)
    base = tmp_path / "chroot"
    base.mkdir()
    return [sys.executable, "-c", CHROOT, str(base), *_host_dirs(), "--"]


def _python(prefix: list[str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-c", code], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_rules_run_in_a_chroot_whose_root_is_not_a_mount_point(chroot: list[str]) -> None:
    probe = _python(chroot, "from targets import fusedev; print(fusedev.mount_at('/'))")
    assert (probe.returncode, probe.stdout) == (0, "None\n"), probe.stderr  # / is a plain directory
    rules = [arg for rule in RULES for arg in ("--rule", rule)]
    result = run_conformance("ref", *rules, prefix=chroot)
    output = result.stdout + result.stderr
    assert "INTERNALERROR" not in output and "LEAKED" not in output, output
    assert result.returncode == 0, output
    assert rule_outcomes(result.stdout) == {rule: {"PASSED"} for rule in RULES}, output


def test_fusectl_is_reached_from_a_chroot(chroot: list[str]) -> None:
    code = ("from targets import fusedev\n"
            "if fusedev.fusectl_mounted():\n"  # this run's fusectl, come in with /sys
            "    fusedev.unmount(fusedev.FUSECTL)\n"
            "print(sorted(fusedev.live_connections()))\n")  # so a private child mounts one
    result = _python(chroot, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("["), result.stdout


def test_a_chroot_without_a_way_out_ends_the_run_with_one_line(chroot: list[str]) -> None:
    result = run_conformance("ref", "--rule", RULES[0],
                             prefix=[*chroot, sys.executable, "-c", DENY_CHROOT])
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr
    assert "not a mount point" in lines[0] and "mount --bind" in lines[0], lines[0]


def test_a_namespace_error_becomes_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import conftest
    from targets import fusedev

    def fail() -> bool:
        raise fusedev.NamespaceError("/ is not a mount point")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(fusedev, "enter_private_mount_namespace", fail)
    with pytest.raises(pytest.UsageError) as info:
        conftest._private_mounts()
    [line] = str(info.value).splitlines()
    assert line.startswith("/ is not a mount point; ") and fusedev.NamespaceError.default_hint in line
