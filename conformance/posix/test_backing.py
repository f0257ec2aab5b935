"""What the mount shows is what its backing directory on the host holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conformance.rules import rule
from targets.mounts import MountTarget

LIMIT = 2000  # entries compared, at most


def tree(root: Path, hidden: object = None) -> dict[str, tuple[int, int, bytes | str | None]]:
    """name -> (type, size for files, content or link target) for every entry under root."""
    seen: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            if hidden is not None and hidden(name, st):  # type: ignore[operator]
                continue
            kind = stat.S_IFMT(st.st_mode)
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
                content = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            seen[str(path.relative_to(root))] = (kind, st.st_size if kind == stat.S_IFREG else 0,
                                                  content)
            if len(seen) >= LIMIT:
                return seen
    return seen


@rule("POSIX-BACKING-001",
      "The mount shows exactly what its backing directory holds: names, types, sizes, contents, "
      "symlink targets", source="the target's own contract: it serves that directory",
      area="posix")
def test_mount_mirrors_backing(mounted: MountTarget) -> None:
    if mounted.backing is None:
        pytest.skip(f"not applicable: {mounted.name} has no backing directory (give --backing)")
    shown = tree(mounted.path)
    held = tree(mounted.backing, mounted.backing_hidden)
    missing = sorted(set(held) - set(shown))[:5]
    extra = sorted(set(shown) - set(held))[:5]
    assert not missing and not extra, f"only on the host: {missing}; only in the mount: {extra}"
    differ = [name for name in held if held[name] != shown[name]][:5]
    assert not differ, "; ".join(f"{n}: host {held[n][:2]}, mount {shown[n][:2]}" for n in differ)
