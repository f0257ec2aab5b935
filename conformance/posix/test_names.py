"""Name and symlink-target lengths: NAME_MAX is the filesystem's to enforce (FUSE passes names of up
to 1024 bytes to the daemon), PATH_MAX is the kernel's; against tmpfs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"
LONGEST = "n" * 255
TOO_LONG = "n" * 256


@rule("POSIX-NAME-001", "A 255-byte name can be created, linked, renamed and removed; a 256-byte one "
      "fails with ENAMETOOLONG in open(O_CREAT), mkdir, mkfifo, symlink, link, rename and stat",
      source=f"{POSIX} 'ENAMETOOLONG: the length of a component of a pathname is longer than "
      "{NAME_MAX}'; Linux leaves NAME_MAX to the filesystem", area=AREA)
def test_name_max(twin: Twin, features: frozenset[str]) -> None:
    twin.same(lambda r: (r / "f").write_bytes(b"data"), "setup")
    ok: list[tuple[str, Callable[[Path], object]]] = [
        ("create", lambda r: os.close(os.open(r / LONGEST, os.O_CREAT | os.O_WRONLY, 0o644))),
        ("rename to it", lambda r: os.rename(r / "f", r / LONGEST)),
        ("rename from it", lambda r: os.rename(r / LONGEST, r / "f")),
        ("mkdir", lambda r: os.mkdir(r / LONGEST)),
        ("rmdir", lambda r: os.rmdir(r / LONGEST))]
    if "hardlink" in features:
        ok += [("link", lambda r: os.link(r / "f", r / LONGEST)),
               ("unlink", lambda r: os.unlink(r / LONGEST))]
    if "symlink" in features:
        ok += [("symlink", lambda r: os.symlink(LONGEST, r / LONGEST)),
               ("readlink", lambda r: os.readlink(r / LONGEST)), ("unlink", lambda r: os.unlink(r / LONGEST))]
    for what, call in ok:
        assert twin.same(call, f"{what}: a 255-byte name").ok
    assert twin.same_listing() == ["f"]
    refused: list[tuple[str, Callable[[Path], object]]] = [
        ("open O_CREAT", lambda r: os.open(r / TOO_LONG, os.O_CREAT | os.O_WRONLY, 0o644)),
        ("mkdir", lambda r: os.mkdir(r / TOO_LONG)),
        ("rename from it", lambda r: os.rename(r / TOO_LONG, r / "g")),
        ("stat", lambda r: os.stat(r / TOO_LONG)),
        ("unlink", lambda r: os.unlink(r / TOO_LONG))]
    if "mknod" in features:
        refused.append(("mkfifo", lambda r: os.mkfifo(r / TOO_LONG)))
    if "symlink" in features:
        refused.append(("symlink", lambda r: os.symlink("f", r / TOO_LONG)))
    if "hardlink" in features:
        refused.append(("link", lambda r: os.link(r / "f", r / TOO_LONG)))
    # last: fuse2fs 1.47 renames to a 256-byte name, and its directory then lists with EIO
    refused.append(("rename to it", lambda r: os.rename(r / "f", r / TOO_LONG)))
    for what, call in refused:
        assert twin.same(call, f"{what}: a 256-byte name").error == "ENAMETOOLONG"
    assert twin.same_listing() == ["f"]


@rule("POSIX-NAME-002", "A symlink holds a target of 4095 bytes (PATH_MAX less the NUL) and readlink "
      "returns it whole; a target of 4096 bytes fails with ENAMETOOLONG",
      source=f"{POSIX} symlink(): ENAMETOOLONG; Linux: getname() limits strings to PATH_MAX", area=AREA)
def test_symlink_path_max(twin: Twin, features: frozenset[str]) -> None:
    if "symlink" not in features:
        pytest.skip("not applicable: the target does not offer symlink")
    longest = ("d" * 254 + "/") * 16 + "e" * 15
    assert len(longest) == 4095
    twin.same(lambda r: os.symlink(longest, r / "l"), "symlink with a 4095-byte target")
    assert twin.same(lambda r: os.readlink(r / "l"), "readlink").value == longest
    assert twin.same(lambda r: os.symlink(longest + "x", r / "m"), "symlink with a 4096-byte target"
                     ).error == "ENAMETOOLONG"
