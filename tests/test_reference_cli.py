"""``python -m targets.reference MOUNTPOINT``: mounts in the foreground, and Ctrl-C, SIGTERM or an
unmount end it cleanly (exit 0, no mount left)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from targets import fusedev
from targets.skip import require

ROOT = Path(__file__).resolve().parent.parent


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.05)


@pytest.mark.parametrize("end", ["SIGINT", "SIGTERM", "umount"])
def test_foreground_mount_ends_cleanly(end: str, tmp_path: Path) -> None:
    require(os.geteuid() == 0 and os.access(fusedev.FUSE_DEVICE, os.R_OK | os.W_OK),
            "mounting the reference server needs root and /dev/fuse")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = [sys.executable, "-m", "targets.reference", str(mountpoint), "--cache", "none"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: fusedev.is_mounted(mountpoint) or process.poll() is not None, 20, "mounted")
        assert process.poll() is None, process.communicate()[1]
        assert (mountpoint / "hello.txt").read_text() == "hello, fusecheck\n"
        (mountpoint / "new").write_text("made")
        if end == "umount":
            subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)
        else:
            process.send_signal(getattr(signal, end))
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert not fusedev.is_mounted(mountpoint)
        assert "mounted at" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if fusedev.is_mounted(mountpoint):
            fusedev.force_unmount(mountpoint, None)
